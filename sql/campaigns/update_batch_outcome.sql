update campaign_results
set
    state = :state,
    attempts = attempts + :extra_attempts,
    content_key = coalesce(:content_key, content_key),
    subject = coalesce(:subject, subject),
    batch_id = coalesce(:batch_id, batch_id),
    resolved_by = coalesce(:resolved_by, resolved_by),
    http_status = :http_status,
    problem_title = :problem_title,
    problem_detail = :problem_detail,
    field_errors = cast(:field_errors as json),
    last_attempt_at = :now,
    done_at = coalesce(cast(:done_at as timestamptz), done_at)
where batch_key = :batch_key
