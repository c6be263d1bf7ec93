-- The current plan's actions an apply tried and did not settle, by ledger state, with the
-- latest attempt: what a retry must still send (a guard-stopped plan never tried has none).
select
    r.state,
    count(*) as actions,
    max(r.last_attempt_at) as last_attempt_at
from reconciliation_plan as p
join pushback_results as r on r.action_key = p.action_key
where r.state in ('sending', 'ambiguous', 'retry')
group by r.state
order by r.state
