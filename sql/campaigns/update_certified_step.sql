-- Where a certified batch stands: the step claimed next (or done / reverted), its batch id
-- once known, and the last answer's problem when one was refused.
update campaign_results
set
    state = :state,
    batch_id = coalesce(:batch_id, batch_id),
    attempts = attempts + cast(:sent as bigint),
    resolved_by = coalesce(:resolved_by, resolved_by),
    http_status = :http_status,
    problem_title = :problem_title,
    problem_detail = :problem_detail,
    last_attempt_at = cast(:now as timestamptz),
    done_at = case when :state = 'done' then cast(:now as timestamptz) else done_at end
where batch_key = :batch_key
