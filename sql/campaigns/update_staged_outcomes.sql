-- Each sent or looked-up batch's outcome, from the staged rows.
update campaign_results
set
    state = s.state,
    attempts = s.attempts,
    content_key = s.content_key,
    subject = s.subject,
    batch_id = coalesce(s.batch_id, campaign_results.batch_id),
    resolved_by = coalesce(s.resolved_by, campaign_results.resolved_by),
    http_status = s.http_status,
    problem_title = s.problem_title,
    problem_detail = s.problem_detail,
    field_errors = s.field_errors,
    last_attempt_at = s.last_attempt_at,
    done_at = coalesce(s.done_at, campaign_results.done_at)
from {stage} as s
where campaign_results.batch_key = s.batch_key
