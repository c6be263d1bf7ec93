-- An action tried before, claimed again by this apply but never sent (it stopped first): back
-- to the state and attempts it had, so no attempt is counted that did not happen.
update pushback_results
set state = :previous_state, attempts = :attempts
where action_key = :action_key and claim = :claim and state = 'sending'
