-- Claims the staged actions tried before, each only if nobody has touched it since this apply
-- read it (same attempts, not settled): two applies at once cannot both send it.
update pushback_results
set
    state = 'sending',
    run_id = s.run_id,
    claim = s.claim,
    attempts = s.attempts + 1,
    last_attempt_at = s.last_attempt_at
from {stage} as s
where pushback_results.action_key = s.action_key
  and s.state is not null
  and pushback_results.attempts = s.attempts
  and pushback_results.state not in ('done', 'rejected')
