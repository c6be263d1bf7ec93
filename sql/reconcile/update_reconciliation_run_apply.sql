update reconciliation_runs
set
    dry_run = :dry_run,
    applied_done = :applied_done,
    applied_rejected = :applied_rejected,
    applied_retry = :applied_retry,
    skipped = :skipped,
    finished_at = :finished_at
where run_id = :run_id
