-- Written and committed before the action is sent.
update pushback_results
set state = 'sending', run_id = :run_id, attempts = :attempts, last_attempt_at = :now
where action_key = :action_key
