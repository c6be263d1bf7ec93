update reconciliation_runs
set
    conflicts = :conflicts,
    planned_create = :planned_create,
    planned_block = :planned_block,
    planned_unblock = :planned_unblock,
    planned_update = :planned_update,
    missing_from_crm = :missing_from_crm,
    guards_tripped = cast(:guards_tripped as json),
    overrides = cast(:overrides as json),
    override_reason = :override_reason
where run_id = :run_id
