-- Claims a new action (written and committed before it is sent). When another apply claimed
-- it first, nothing is inserted and the read-back shows the action is not ours.
insert into pushback_results (
    action_key, run_id, claim, action, email, contact_id, state, attempts,
    first_attempt_at, last_attempt_at
)
values (
    :action_key, :run_id, :claim, :action, :email, :contact_id, 'sending', :attempts, :now, :now
)
on conflict (action_key) do nothing
