-- One row per reconcile run: the export files it read, what it planned, applied, left to retry
-- and skipped, by action, and the guards it tripped or overrode. Per-action outcomes come
-- from the push-back ledger, which remembers only the run that last tried each action: see
-- done_create. Rebuilt as a whole after each reconcile run and each sync.
create table if not exists reconciliation_history (
    run_id text not null primary key, -- Reconcile run (the Dagster run id that read the exports)
    started_at timestamptz, -- When the run read the exports
    finished_at timestamptz, -- When its apply finished; null for a dry run and for a run that was stopped or has not finished
    status text, -- applied (the apply finished), dry_run (planned only), stopped_by_guard (a guard tripped and was not overridden, so nothing was sent), not_planned (exports read, no plan recorded) or unfinished (planned, but no apply recorded: still running, failed or killed)
    dry_run boolean, -- True for a dry run; null when no apply step was recorded (stopped by a guard, failed, still running)
    export_files json, -- JSON array of the export file names read
    export_key text, -- Content hash of the export files: runs of the same exports share it and their action keys
    crm_rows bigint, -- Export lines read into crm_contacts
    rejected_rows bigint, -- Export lines rejected (crm_rejected_rows)
    conflicts bigint, -- Emails listed more than once with conflicting flags (most restrictive wins)
    missing_from_crm bigint, -- Active platform contacts no export line listed (reported, never deleted)
    planned_create bigint, -- Creates planned; null when the run recorded no plan
    planned_block bigint, -- Blocks planned
    planned_unblock bigint, -- Unblocks planned
    planned_update bigint, -- Name updates planned (0 unless updates were asked for)
    planned_total bigint, -- All actions planned
    done_create bigint, -- Creates confirmed done by this run: ledger actions whose last attempt was made by this run and are done. Done is final, so this never changes later
    done_block bigint, -- Blocks done by this run (as done_create)
    done_unblock bigint, -- Unblocks done by this run (as done_create)
    done_update bigint, -- Name updates done by this run (as done_create)
    rejected_create bigint, -- Creates the API rejected for good on this run's attempt (final, like done)
    rejected_block bigint, -- Blocks rejected for good on this run's attempt
    rejected_unblock bigint, -- Unblocks rejected for good on this run's attempt
    rejected_update bigint, -- Name updates rejected for good on this run's attempt
    retry_create bigint, -- Creates this run left unsettled (retry, ambiguous, or sending when the run stopped mid-send) and no later run has tried since; one a later run retried counts for that run instead (applied_retry keeps this run's own figure)
    retry_block bigint, -- Blocks left unsettled by this run (as retry_create)
    retry_unblock bigint, -- Unblocks left unsettled by this run (as retry_create)
    retry_update bigint, -- Name updates left unsettled by this run (as retry_create)
    skipped_create bigint, -- Planned creates not sent because an earlier run had settled them (done or rejected for good); 0 when nothing was sent (dry run, stopped); null once a later plan replaced this run's (only the latest plan is kept)
    skipped_block bigint, -- Planned blocks skipped (as skipped_create)
    skipped_unblock bigint, -- Planned unblocks skipped (as skipped_create)
    skipped_update bigint, -- Planned name updates skipped (as skipped_create)
    applied_done bigint, -- Actions done, as the apply counted them when it finished (null without an apply)
    applied_rejected bigint, -- Actions rejected for good, as the apply counted them
    applied_retry bigint, -- Actions left to retry (retry or ambiguous), as the apply counted them; unlike retry_create, later runs do not change it
    skipped bigint, -- Actions the apply did not send because they were already settled, as it counted them
    guards_tripped text, -- Guards that failed (max_creates, max_block_share, max_snapshot_age), comma-separated; null when none did
    guards_overridden text, -- Tripped guards that run config let pass anyway, comma-separated; null when none
    override_reason text, -- The reason given for the override (null without one)
    guard_messages json -- JSON object: each tripped guard with its figure and limit, in words
);
