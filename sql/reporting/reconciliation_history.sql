-- reconciliation_history: one row per reconcile run (reconciliation_runs), with what it read,
-- planned, applied and skipped by action, and the guards it tripped or overrode.
--
-- What "applied in this run" means. The push-back ledger (pushback_results) keeps one row per
-- action key, and its run_id is the run that LAST tried the action. So done_<action>,
-- rejected_<action> and retry_<action> count the ledger rows whose last attempt belongs to
-- this run, in the state they are in now:
-- - done and rejected are final (never sent again), so a run keeps its done and rejected
--   actions for good: these counts are exact;
-- - an action left to retry (retry, ambiguous, or sending when a run was killed) is only
--   tried again by a later run of the same exports (same export_key, same action keys); the
--   later run then owns it, and the earlier run's retry_<action> no longer counts it. The
--   earlier run's own figure stays in applied_retry, recorded when its apply finished.
-- skipped_<action> (planned, not sent because an earlier run had settled it) needs the run's
-- plan, and reconciliation_plan holds only the latest: older runs get null there, except
-- where nothing can have been skipped (nothing planned of that action, dry run, stopped).
--
-- Guards are read from the JSON the plan step records (guards_tripped: an object keyed by
-- guard name; overrides: an array of names) as text, which both engines keep as written;
-- the guard names are those of connector.reconcile.GUARD_NAMES.

with

reconciliation_runs as (
    select
        run_id,
        export_key,
        export_files,
        started_at,
        finished_at,
        crm_rows,
        rejected_rows,
        conflicts,
        planned_create,
        planned_block,
        planned_unblock,
        planned_update,
        missing_from_crm,
        guards_tripped,
        overrides,
        override_reason,
        dry_run,
        applied_done,
        applied_rejected,
        applied_retry,
        skipped
    from reconciliation_runs
),

pushback_results as (
    select
        action_key,
        run_id,
        action,
        state
    from pushback_results
),

reconciliation_plan as (
    select
        action_key,
        run_id,
        action
    from reconciliation_plan
),

ledger_outcomes as (
    -- Each ledger row under the run that last tried it; retry, ambiguous and sending (a run
    -- stopped mid-send) are all "to be tried again".
    select
        run_id,
        action,
        case when state in ('retry', 'ambiguous', 'sending') then 'retry' else state end
            as outcome
    from pushback_results
    where run_id is not null
),

ledger_by_run as (
    select
        run_id,
        sum(case when action = 'create' and outcome = 'done' then 1 else 0 end) as done_create,
        sum(case when action = 'block' and outcome = 'done' then 1 else 0 end) as done_block,
        sum(case when action = 'unblock' and outcome = 'done' then 1 else 0 end) as done_unblock,
        sum(case when action = 'update' and outcome = 'done' then 1 else 0 end) as done_update,
        sum(case when action = 'create' and outcome = 'rejected' then 1 else 0 end)
            as rejected_create,
        sum(case when action = 'block' and outcome = 'rejected' then 1 else 0 end)
            as rejected_block,
        sum(case when action = 'unblock' and outcome = 'rejected' then 1 else 0 end)
            as rejected_unblock,
        sum(case when action = 'update' and outcome = 'rejected' then 1 else 0 end)
            as rejected_update,
        sum(case when action = 'create' and outcome = 'retry' then 1 else 0 end) as retry_create,
        sum(case when action = 'block' and outcome = 'retry' then 1 else 0 end) as retry_block,
        sum(case when action = 'unblock' and outcome = 'retry' then 1 else 0 end)
            as retry_unblock,
        sum(case when action = 'update' and outcome = 'retry' then 1 else 0 end) as retry_update
    from ledger_outcomes
    group by run_id
),

current_plan as (
    select distinct run_id
    from reconciliation_plan
),

settled_before as (
    -- Actions of the current plan that another (earlier) run had already settled: the apply
    -- of the plan's run skipped them.
    select
        plan.run_id,
        sum(case when plan.action = 'create' then 1 else 0 end) as skipped_create,
        sum(case when plan.action = 'block' then 1 else 0 end) as skipped_block,
        sum(case when plan.action = 'unblock' then 1 else 0 end) as skipped_unblock,
        sum(case when plan.action = 'update' then 1 else 0 end) as skipped_update
    from reconciliation_plan as plan
    inner join pushback_results as ledger
        on ledger.action_key = plan.action_key
    where ledger.state in ('done', 'rejected')
        and coalesce(ledger.run_id, '') <> plan.run_id
    group by plan.run_id
),

guards as (
    select
        run_id,
        position('"max_creates":' in guards_text) > 0 as tripped_max_creates,
        position('"max_block_share":' in guards_text) > 0 as tripped_max_block_share,
        position('"max_snapshot_age":' in guards_text) > 0 as tripped_max_snapshot_age,
        position('"max_unblocks":' in guards_text) > 0 as tripped_max_unblocks,
        position('"max_creates"' in overrides_text) > 0 as overrode_max_creates,
        position('"max_block_share"' in overrides_text) > 0 as overrode_max_block_share,
        position('"max_snapshot_age"' in overrides_text) > 0 as overrode_max_snapshot_age,
        position('"max_unblocks"' in overrides_text) > 0 as overrode_max_unblocks
    from (
        select
            run_id,
            coalesce(cast(guards_tripped as text), '') as guards_text,
            coalesce(cast(overrides as text), '') as overrides_text
        from reconciliation_runs
    ) as recorded
),

classified_runs as (
    select
        recorded_runs.*,
        case
            when recorded_runs.dry_run then 'dry_run'
            when recorded_runs.finished_at is not null then 'applied'
            when recorded_runs.planned_create is null then 'not_planned'
            when (guards.tripped_max_creates and not guards.overrode_max_creates)
                or (guards.tripped_max_block_share and not guards.overrode_max_block_share)
                or (guards.tripped_max_snapshot_age and not guards.overrode_max_snapshot_age)
                or (guards.tripped_max_unblocks and not guards.overrode_max_unblocks)
                then 'stopped_by_guard'
            else 'unfinished'
        end as status,
        nullif(
            concat_ws(
                ', ',
                case when guards.tripped_max_creates then 'max_creates' end,
                case when guards.tripped_max_block_share then 'max_block_share' end,
                case when guards.tripped_max_snapshot_age then 'max_snapshot_age' end,
                case when guards.tripped_max_unblocks then 'max_unblocks' end
            ),
            ''
        ) as tripped_names,
        nullif(
            concat_ws(
                ', ',
                case when guards.overrode_max_creates then 'max_creates' end,
                case when guards.overrode_max_block_share then 'max_block_share' end,
                case when guards.overrode_max_snapshot_age then 'max_snapshot_age' end,
                case when guards.overrode_max_unblocks then 'max_unblocks' end
            ),
            ''
        ) as overridden_names,
        case when current_plan.run_id is null then 0 else 1 end as plan_is_current
    from reconciliation_runs as recorded_runs
    inner join guards
        on guards.run_id = recorded_runs.run_id
    left join current_plan
        on current_plan.run_id = recorded_runs.run_id
),

final as (
    select
        runs.run_id,
        runs.started_at,
        runs.finished_at,
        runs.status,
        runs.dry_run,
        runs.export_files,
        runs.export_key,
        runs.crm_rows,
        runs.rejected_rows,
        runs.conflicts,
        runs.missing_from_crm,
        runs.planned_create,
        runs.planned_block,
        runs.planned_unblock,
        runs.planned_update,
        runs.planned_create + runs.planned_block + runs.planned_unblock + runs.planned_update
            as planned_total,
        coalesce(ledger.done_create, 0) as done_create,
        coalesce(ledger.done_block, 0) as done_block,
        coalesce(ledger.done_unblock, 0) as done_unblock,
        coalesce(ledger.done_update, 0) as done_update,
        coalesce(ledger.rejected_create, 0) as rejected_create,
        coalesce(ledger.rejected_block, 0) as rejected_block,
        coalesce(ledger.rejected_unblock, 0) as rejected_unblock,
        coalesce(ledger.rejected_update, 0) as rejected_update,
        coalesce(ledger.retry_create, 0) as retry_create,
        coalesce(ledger.retry_block, 0) as retry_block,
        coalesce(ledger.retry_unblock, 0) as retry_unblock,
        coalesce(ledger.retry_update, 0) as retry_update,
        case
            when runs.status in ('dry_run', 'stopped_by_guard', 'not_planned') then 0
            when runs.planned_create = 0 then 0
            when runs.plan_is_current = 1 then coalesce(skips.skipped_create, 0)
        end as skipped_create,
        case
            when runs.status in ('dry_run', 'stopped_by_guard', 'not_planned') then 0
            when runs.planned_block = 0 then 0
            when runs.plan_is_current = 1 then coalesce(skips.skipped_block, 0)
        end as skipped_block,
        case
            when runs.status in ('dry_run', 'stopped_by_guard', 'not_planned') then 0
            when runs.planned_unblock = 0 then 0
            when runs.plan_is_current = 1 then coalesce(skips.skipped_unblock, 0)
        end as skipped_unblock,
        case
            when runs.status in ('dry_run', 'stopped_by_guard', 'not_planned') then 0
            when runs.planned_update = 0 then 0
            when runs.plan_is_current = 1 then coalesce(skips.skipped_update, 0)
        end as skipped_update,
        runs.applied_done,
        runs.applied_rejected,
        runs.applied_retry,
        runs.skipped,
        runs.tripped_names as guards_tripped,
        runs.overridden_names as guards_overridden,
        runs.override_reason,
        runs.guards_tripped as guard_messages
    from classified_runs as runs
    left join ledger_by_run as ledger
        on ledger.run_id = runs.run_id
    left join settled_before as skips
        on skips.run_id = runs.run_id
)

select * from final
