-- Claims the staged actions never claimed before (written and committed before they are
-- sent). When another apply claimed one first, nothing is inserted and the read-back shows
-- the action is not ours.
insert into pushback_results (
    action_key, run_id, claim, action, email, contact_id, state, attempts,
    first_attempt_at, last_attempt_at
)
select
    action_key, run_id, claim, action, email, contact_id, 'sending', attempts + 1,
    last_attempt_at, last_attempt_at
from {stage}
where state is null
on conflict (action_key) do nothing
