-- Claims an action tried before, only if nobody has touched it since this apply read it
-- (same attempts, not settled): two applies at once cannot both send it.
update pushback_results
set state = 'sending', run_id = :run_id, claim = :claim, attempts = :attempts,
    last_attempt_at = :now
where action_key = :action_key
  and attempts = :previous_attempts
  and state not in ('done', 'rejected')
