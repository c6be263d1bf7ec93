-- A reconcile run starts: what it read.
delete from reconciliation_runs where run_id = :run_id;
insert into reconciliation_runs (
    run_id, export_key, export_files, started_at, crm_rows, rejected_rows
)
values (:run_id, :export_key, cast(:export_files as json), :started_at, :crm_rows, :rejected_rows)
