update pushback_results
set
    state = :state,
    contact_id = :contact_id,
    http_status = :http_status,
    problem_title = :problem_title,
    problem_detail = :problem_detail,
    field_errors = cast(:field_errors as json),
    last_attempt_at = :now,
    done_at = coalesce(:done_at, done_at),
    contact_updated_at = coalesce(cast(:contact_updated_at as timestamptz), contact_updated_at),
    contact_blocked_reason = coalesce(:contact_blocked_reason, contact_blocked_reason)
where action_key = :action_key
