-- One row per reconcile run: what was read, planned and applied, and which guards tripped.
create table if not exists reconciliation_runs (
    run_id text not null primary key, -- Reconcile run (the Dagster run id)
    export_key text, -- Content hash of the export file(s)
    export_files json, -- File names read
    started_at timestamptz, -- When the run read the exports
    finished_at timestamptz, -- When the apply finished (null for a dry run or a stopped run)
    crm_rows bigint, -- Good lines read
    rejected_rows bigint, -- Lines rejected
    conflicts bigint, -- Emails listed with conflicting flags
    planned_create bigint, -- Creates planned
    planned_block bigint, -- Blocks planned
    planned_unblock bigint, -- Unblocks planned
    planned_update bigint, -- Name updates planned
    missing_from_crm bigint, -- Active platform contacts the CRM does not list
    guards_tripped json, -- Guards that failed, with their figures
    overrides json, -- Guards overridden by run config
    override_reason text, -- The reason given for the override
    dry_run boolean, -- Planned only, nothing applied
    applied_done bigint, -- Actions confirmed done in this run
    applied_rejected bigint, -- Actions the API rejected for good
    applied_retry bigint, -- Actions left to retry next run
    skipped bigint -- Actions skipped (already done or rejected before)
);
