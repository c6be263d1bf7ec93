-- The planned actions with what the ledger knows: their own row, whether another create of
-- the same email (from an earlier export) may have landed, and for an unblock what the
-- contact looked like when the connector blocked it.
with last_own_block as (
    select
        contact_id,
        contact_updated_at,
        contact_blocked_reason,
        row_number() over (partition by contact_id order by done_at desc) as recency
    from pushback_results
    where state = 'done' and action in ('block', 'unblock')
)

select
    p.action_key,
    p.action,
    p.email,
    p.contact_id,
    p.name,
    r.state,
    r.attempts,
    exists (
        select 1
        from pushback_results as other
        where other.action = 'create'
          and other.email = p.email
          and other.action_key <> p.action_key
          and other.state in ('sending', 'ambiguous', 'retry', 'done')
    ) as create_may_have_landed,
    b.contact_updated_at as blocked_at_updated_at,
    b.contact_blocked_reason as blocked_with_reason
from reconciliation_plan as p
left join pushback_results as r on r.action_key = p.action_key
left join last_own_block as b on b.contact_id = p.contact_id and b.recency = 1
order by p.action, p.action_key
