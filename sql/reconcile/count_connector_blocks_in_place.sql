-- Contacts this connector blocked (its last done state change on them is a block) that are
-- still Blocked in the synced snapshot: what the max_unblocks guard's share is taken of.
with last_own_state_change as (
    select
        contact_id,
        action,
        row_number() over (partition by contact_id order by done_at desc) as recency
    from pushback_results
    where state = 'done' and action in ('block', 'unblock') and contact_id is not null
)

select count(*)
from last_own_state_change as own
join contacts as c on c.id = own.contact_id
where own.recency = 1
  and own.action = 'block'
  and c.deleted_at is null
  and c.status = 'Blocked'
