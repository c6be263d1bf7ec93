update pushback_results
set
    state = :state,
    contact_id = :contact_id,
    http_status = :http_status,
    problem_title = :problem_title,
    problem_detail = :problem_detail,
    field_errors = cast(:field_errors as json),
    last_attempt_at = :now,
    done_at = coalesce(:done_at, done_at)
where action_key = :action_key
