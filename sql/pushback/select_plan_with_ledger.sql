-- The planned actions with what the ledger already knows about them.
select
    p.action_key, p.action, p.email, p.contact_id, p.name, r.state, r.attempts
from reconciliation_plan as p
left join pushback_results as r on r.action_key = p.action_key
order by p.action, p.action_key
