"""Reconcile assets: CRM exports → plan (with blocking guard checks) → apply → refresh.

Group ``reconcile``. A sensor on ``CRM_EXPORT_DIR`` starts one run per new or changed export
file, keyed by its content, so the same file twice never runs twice; the same sensor starts
an apply of the stored plan when an earlier apply left actions pending (``retry``,
``ambiguous``, ``sending``), once they have rested ``PENDING_RETRY_AFTER``. An apply that
ends with actions pending says so in a warning check with the counts.
"""

import hashlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetSpec,
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    multi_asset,
    sensor,
)
from pydantic import Field

from assets.checks import guard_checks, guards_table
from assets.export_files import export_run_key
from assets.metadata import definition_metadata, markdown_table, run_metadata
from assets.resources import MarketplaceResource, WarehouseResource
from assets.runner import run_async
from connector.crm import CrmError
from connector.errors import ConfigurationError
from connector.pipelines import pushback, reconcile
from connector.pipelines.sync import refresh_contacts
from connector.warehouse.tables import table

CRM_EXPORT_DIR = "CRM_EXPORT_DIR"
DEFAULT_CRM_EXPORT_DIR = "data/crm_exports"
EXPORT_SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx")


def export_dir() -> Path:
    """Where CRM exports are dropped (``CRM_EXPORT_DIR``)."""
    return Path(os.environ.get(CRM_EXPORT_DIR) or DEFAULT_CRM_EXPORT_DIR)


def export_files(directory: Path) -> list[Path]:
    """Export files in the folder, in name order (hidden and partial files skipped)."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in EXPORT_SUFFIXES and not p.name.startswith(".")
    )


class CrmExportsConfig(Config):
    """Which exports to read and how to read them."""

    files: list[str] = Field(
        default=[], description="Export files; empty = every export in CRM_EXPORT_DIR."
    )
    mapping: str = Field(
        default="auto",
        description="salesforce, hubspot, dynamics365, generic, auto, or a YAML mapping file.",
    )
    sheet: str | None = Field(
        default=None,
        description="For .xlsx workbooks, the one sheet to read; default: every sheet whose "
        "header has the mapped email column.",
    )


def _spec(name: str, *, skippable: bool = False, deps: Sequence[str] = ()) -> AssetSpec:
    return AssetSpec(
        name,
        group_name="reconcile",
        description=table(name).description,
        metadata=definition_metadata(name),
        kinds={"sql"},
        skippable=skippable,
        deps=list(deps),
    )


NO_EXPORT = "no export to reconcile"


@multi_asset(
    # Skippable: with no export file there is nothing to read, and the plan and apply after
    # it are skipped ("Materialize all" on a fresh instance succeeds).
    specs=[_spec("crm_contacts", skippable=True), _spec("crm_rejected_rows", skippable=True)],
    can_subset=False,
)
def crm_exports(
    context: AssetExecutionContext, config: CrmExportsConfig, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetObservation]:
    """Every line of the export(s): a CRM contact, or a rejected row with its reason."""
    paths = [Path(f) for f in config.files] or export_files(export_dir())
    if not paths:
        context.log.info("%s: no export file in %s (%s)", NO_EXPORT, export_dir(), CRM_EXPORT_DIR)
        yield AssetObservation(
            asset_key="crm_contacts",
            metadata={"status": NO_EXPORT, "export_dir": str(export_dir())},
        )
        return
    store = warehouse.warehouse()
    try:
        load = reconcile.load_exports(
            store, paths, config.mapping, run_id=context.run.run_id, sheet=config.sheet
        )
    except (CrmError, OSError) as exc:
        # Nothing is planned from an unreadable export: the run stops here.
        raise Failure(description=str(exc)) from exc
    reconcile.record_run_start(store, load)
    context.log.info("read %d CRM lines, rejected %d", load.rows, load.rejected)
    yield MaterializeResult(
        asset_key="crm_contacts",
        metadata={
            **run_metadata(store, "crm_contacts", None),
            "files": MetadataValue.json(load.summaries),
            "export_key": load.export_key,
        },
    )
    yield MaterializeResult(
        asset_key="crm_rejected_rows",
        metadata={
            **run_metadata(store, "crm_rejected_rows", None),
            "rejected_by_kind": MetadataValue.json(load.rejected_by_kind),
        },
    )


class PlanConfig(Config):
    """Planning options and the guards that stop an unusual plan."""

    include_updates: bool = Field(default=False, description="Also plan name updates.")
    max_creates: int = Field(default=1000, description="Guard: most creates one plan may make.")
    max_block_share: float = Field(
        default=0.05, description="Guard: most blocks, as a share of active contacts."
    )
    max_snapshot_age_hours: float = Field(
        default=2.0, description="Guard: oldest contacts sync a plan may be made from."
    )
    max_unblocks: int = Field(default=100, description="Guard: most unblocks one plan may make.")
    max_unblock_share: float = Field(
        default=0.5,
        description="Guard: most unblocks, as a share of the blocks this connector has in place.",
    )
    override_guards: list[str] = Field(
        default=[], description="Guards to let pass anyway (recorded with the reason)."
    )
    override_reason: str = Field(default="", description="Why the guards are overridden.")


GUARD_CHECKS = [
    AssetCheckSpec(
        name,
        asset="reconciliation_plan",
        blocking=True,
        description=description,
    )
    for name, description in (
        ("max_creates", "No more creates than the limit"),
        ("max_block_share", "Blocks stay under a share of active contacts"),
        ("max_snapshot_age", "The plan is made from a recent contacts sync"),
        ("max_unblocks", "Unblocks stay under a count and a share of the connector's blocks"),
    )
]


@multi_asset(
    name="reconciliation_plan",
    specs=[
        _spec("reconciliation_plan", deps=["crm_contacts", "contacts"]),
        # Written by the same statement batch as the plan: real outputs, with row counts.
        _spec("crm_conflicts", deps=["crm_contacts", "contacts"]),
        _spec("platform_contacts_missing_from_crm", deps=["crm_contacts", "contacts"]),
    ],
    check_specs=GUARD_CHECKS,
    can_subset=False,
)
def reconciliation_plan(
    context: AssetExecutionContext, config: PlanConfig, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """What must change on the platform, with a readable preview; guards block the apply."""
    if config.override_guards and not config.override_reason.strip():
        raise Failure("override_guards needs an override_reason, which is recorded")
    store = warehouse.warehouse()
    run = reconcile.latest_run(store, context.run.run_id)
    if run is None:
        raise Failure("no CRM exports have been read yet: materialise crm_contacts first")
    run_id, export_key = run
    plan = reconcile.make_plan(
        store, run_id=run_id, export_key=export_key, include_updates=config.include_updates
    )
    guards = reconcile.Guards(
        max_creates=config.max_creates,
        max_block_share=config.max_block_share,
        max_snapshot_age=timedelta(hours=config.max_snapshot_age_hours),
        max_unblocks=config.max_unblocks,
        max_unblock_share=config.max_unblock_share,
    )
    try:
        results = reconcile.evaluate_guards(plan, guards, config.override_guards)
    except ValueError as exc:
        raise Failure(str(exc)) from exc
    reconcile.record_plan(store, plan, results, config.override_reason)
    preview = reconcile.plan_preview(store)
    yield MaterializeResult(
        asset_key="crm_conflicts",
        metadata={**run_metadata(store, "crm_conflicts", None), "conflicts": plan.conflicts},
    )
    yield MaterializeResult(
        asset_key="platform_contacts_missing_from_crm",
        metadata={
            **run_metadata(store, "platform_contacts_missing_from_crm", None),
            "missing_from_crm": plan.missing_from_crm,
        },
    )
    yield MaterializeResult(
        asset_key="reconciliation_plan",
        metadata={
            **run_metadata(store, "reconciliation_plan", None),
            **{f"planned_{a}": n for a, n in plan.actions.items()},
            "missing_from_crm": plan.missing_from_crm,
            "conflicts": plan.conflicts,
            "active_contacts": plan.active_contacts,
            "preview": MetadataValue.md(markdown_table(preview)),
            "guards": guards_table(results),
        },
    )
    yield from guard_checks(results, config.override_reason)


class ApplyConfig(Config):
    """How the plan is applied."""

    dry_run: bool = Field(default=False, description="Plan only: send nothing.")
    batch_size: int = Field(default=200, description="Actions written to the ledger at once.")


PENDING_CHECK = AssetCheckSpec(
    "no_pending_actions",
    asset="pushback_results",
    description="Every action of the plan ended done or rejected; pending ones are retried",
)


@multi_asset(
    name="pushback_results",
    specs=[
        _spec("pushback_results", deps=["reconciliation_plan"]),
        # The run's record: what it read, planned, and what the apply did.
        _spec("reconciliation_runs", deps=["reconciliation_plan"]),
    ],
    check_specs=[PENDING_CHECK],
    can_subset=False,
)
def pushback_results(
    context: AssetExecutionContext,
    config: ApplyConfig,
    marketplace: MarketplaceResource,
    warehouse: WarehouseResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Apply the plan exactly once, record every outcome, re-read the contacts it touched."""
    store = warehouse.warehouse()
    run = reconcile.latest_run(store, context.run.run_id)
    run_id = run[0] if run else context.run.run_id
    if config.dry_run:
        reconcile.record_apply(store, run_id, dry_run=True, outcomes={}, skipped=0)
        yield MaterializeResult(
            asset_key="pushback_results", metadata={"dry_run": True, "applied": 0}
        )
        yield _runs_result(store)
        yield _pending_check(pushback.pending_work(store), dry_run=True)
        return
    # The guards are blocking checks of the plan step; this also holds when the apply is
    # launched on its own, later, against the plan stored in the warehouse.
    refusal = reconcile.unapproved_reason(store)
    if refusal:
        raise Failure(f"not applying the plan: {refusal}")

    refreshed: list[str] = []

    async def apply() -> pushback.ApplySummary:
        async with marketplace.client() as client:
            summary = await pushback.apply_plan(
                client, store, run_id=run_id, batch_size=config.batch_size
            )
            # Everything the plan settled, also by an earlier run stopped before its refresh.
            refreshed.extend(pushback.contacts_settled_by_plan(store))
            if refreshed:
                await refresh_contacts(client, store, refreshed)
            return summary

    try:
        summary = run_async(apply())
    except ConfigurationError as exc:
        # A refused token: one line naming the setting; the actions stay pending.
        raise Failure(description=str(exc)) from None
    reconcile.record_apply(
        store, run_id, dry_run=False, outcomes=dict(summary.outcomes), skipped=summary.skipped
    )
    pending = pushback.pending_work(store)
    context.log.info(
        "push-back: %s, skipped %d, pending %s",
        dict(summary.outcomes),
        summary.skipped,
        pending.by_state or "none",
    )
    yield MaterializeResult(
        asset_key="pushback_results",
        metadata={
            **run_metadata(store, "pushback_results", None),
            "dry_run": False,
            **{f"outcome_{state}": n for state, n in summary.outcomes.items()},
            "skipped_already_settled": summary.skipped,
            "claimed_by_another_apply": summary.claimed_elsewhere,
            "pending": pending.total,
            "contacts_refreshed": len(refreshed),
            "seconds": round(summary.seconds, 2),
        },
    )
    yield _runs_result(store)
    yield _pending_check(pending, dry_run=False)


def _runs_result(store: Any) -> MaterializeResult:
    return MaterializeResult(
        asset_key="reconciliation_runs", metadata=run_metadata(store, "reconciliation_runs", None)
    )


def _pending_check(pending: pushback.PendingWork, *, dry_run: bool) -> AssetCheckResult:
    counts = {state: pending.by_state.get(state, 0) for state in pushback.PENDING_STATES}
    return AssetCheckResult(
        check_name=PENDING_CHECK.name,
        passed=pending.total == 0,
        severity=AssetCheckSeverity.WARN,
        description=(
            "every action done or rejected"
            if pending.total == 0
            else f"{pending.total} actions pending ("
            + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
            + "): the crm_export_sensor applies them again"
        ),
        metadata={"pending": pending.total, **counts, "dry_run": dry_run},
    )


# The tables the reconcile steps write are their real outputs now (with row counts); kept so
# the Definitions' asset list need not change.
BY_PRODUCTS: list[AssetSpec] = []

RECONCILE_ASSETS = [crm_exports, reconciliation_plan, pushback_results]


def file_run_key(path: Path) -> str:
    """The run key of an export: its name and a hash of its content."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    return f"{path.name}:{digest}"


# How long pending actions rest before the sensor applies them again: long enough for a
# throttling or unavailable API to recover, and never a loop of back-to-back runs.
PENDING_RETRY_AFTER = timedelta(minutes=10)
_UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


@sensor(
    name="crm_export_sensor",
    job_name="reconcile",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "One reconcile run per new or changed file in CRM_EXPORT_DIR; and an apply of the "
        "stored plan when actions an earlier apply left pending have rested for a while."
    ),
)
def crm_export_sensor(
    context: SensorEvaluationContext, warehouse: WarehouseResource
) -> Iterator[RunRequest]:
    """Dagster skips a run key it has seen, so the same content never reconciles twice."""
    paths = export_files(export_dir())
    for path in paths:
        yield RunRequest(
            run_key=export_run_key(path),  # stat first, hash only changed files
            run_config={"ops": {"crm_exports": {"config": {"files": [str(path.resolve())]}}}},
            tags={"crm_export": path.name},
        )
    yield from _retry_pending(context, warehouse, datetime.now(UTC))


def _retry_pending(
    context: SensorEvaluationContext, warehouse: WarehouseResource, now: datetime
) -> Iterator[RunRequest]:
    # A reconcile run in progress holds the ledger (and a DuckDB file): look again next tick.
    active = context.instance.get_run_ids(
        RunsFilter(job_name="reconcile", statuses=_UNFINISHED), limit=1
    )
    if active:
        return
    store = None
    try:
        store = warehouse.warehouse()
        pending = pushback.pending_work(store)
    except Exception as exc:  # any: the export runs requested above must still go out
        context.log.warning("ledger not readable now, looked at again next tick: %s", exc)
        return
    finally:
        if store is not None:
            store.dispose()
    if not pending.total:
        return
    last = pending.last_attempt_at
    if last is not None and now - last < PENDING_RETRY_AFTER:
        context.log.info("%d actions pending; last tried %s", pending.total, last.isoformat())
        return
    # Keyed by the last attempt: once this run has tried them, a new key can follow.
    yield RunRequest(
        run_key=f"pending:{last.isoformat() if last else 'never'}",
        asset_selection=[AssetKey("pushback_results"), AssetKey("reconciliation_runs")],
        tags={"pending_actions": str(pending.total)},
    )
