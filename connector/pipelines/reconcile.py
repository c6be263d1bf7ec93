"""Reconciliation: CRM exports into ``crm_contacts``, then a plan of what must change on the
platform, and the guards that decide whether that plan may be applied.

The plan itself is SQL (``sql/reconcile``): it runs where the data is, so a million CRM
lines against a million contacts is a join, not a Python loop.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from connector.crm import CrmMapping, read_export
from connector.pipelines.sync import CONTACTS_SYNCED_AT
from connector.read_ahead import read_ahead
from connector.warehouse.engine import Warehouse

ACTIONS = ("create", "block", "unblock", "update")


@dataclass
class ExportLoad:
    """What reading the export files gave."""

    run_id: str
    export_key: str
    files: list[str]
    rows: int = 0
    rejected: int = 0
    rejected_by_kind: dict[str, int] = field(default_factory=dict)
    summaries: list[dict[str, Any]] = field(default_factory=list)


def export_key(paths: Sequence[Path]) -> str:
    """A hash of the files' names and contents: the same exports give the same key."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        content = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
        digest.update(path.name.encode() + b"\0" + content.digest())
    return digest.hexdigest()[:32]


def load_exports(
    warehouse: Warehouse,
    paths: Sequence[Path],
    mapping: str | CrmMapping = "auto",
    *,
    run_id: str,
    sheet: str | None = None,
    now: datetime | None = None,
) -> ExportLoad:
    """Read every export into ``crm_contacts`` / ``crm_rejected_rows``, replacing the last.

    ``sheet`` names the one sheet to read in .xlsx workbooks (default: every sheet whose header
    has the mapped email column; text exports ignore it).

    All or nothing: an unreadable file raises ``CrmFileError`` (naming the file) and the
    tables keep what they had.
    """
    if not paths:
        raise ValueError("no CRM export files to read")
    now = now or datetime.now(UTC)
    read_at = now.isoformat()
    load = ExportLoad(run_id=run_id, export_key=export_key(paths), files=[p.name for p in paths])
    # Written straight into the tables (emptied first): a million rows staged first would be
    # copied twice. The transaction keeps it all or nothing.
    with (
        warehouse.transaction() as tx,
        tx.replacing("crm_contacts") as contacts,
        tx.replacing("crm_rejected_rows") as rejected,
    ):
        for path in paths:
            with read_export(path, mapping, sheet=sheet) as export:
                constants = {"run_id": run_id, "read_at": read_at}
                # Batches of Arrow columns: plain lines are read and normalised in bulk, the
                # next batch while the warehouse stores this one. Closed before the export
                # is, also when a write fails: the reader thread is done with the file then.
                with contextlib.closing(read_ahead(export.batches(), "crm-read")) as batches:
                    for batch in batches:
                        contacts.write_arrow(batch.contacts, constants)
                        rejected.write(batch.rejected, constants)
                summary = export.summary
            load.rows += summary.contacts
            load.rejected += summary.rejected
            for kind, count in summary.rejected_by_kind.items():
                load.rejected_by_kind[kind] = load.rejected_by_kind.get(kind, 0) + count
            load.summaries.append(
                {
                    "file": path.name,
                    "format": summary.format,
                    "encoding": summary.encoding,
                    "delimiter": summary.delimiter,
                    "mapping": summary.mapping,
                    "sheets": summary.sheets,
                    "contacts": summary.contacts,
                    "rejected": summary.rejected,
                    "warnings": summary.warnings,
                }
            )
    return load


@dataclass
class PlanSummary:
    """The plan's size and the figures the guards judge."""

    run_id: str
    export_key: str
    actions: dict[str, int]
    active_contacts: int
    missing_from_crm: int
    conflicts: int
    contacts_synced_at: datetime | None
    planned_at: datetime
    connector_blocks: int = 0  # blocks this connector put in place that are still there

    @property
    def block_share(self) -> float:
        """Blocks as a share of the platform's active (not deleted) contacts."""
        return self.actions.get("block", 0) / max(1, self.active_contacts)

    @property
    def unblock_share(self) -> float:
        """Unblocks as a share of the blocks this connector has in place."""
        return self.actions.get("unblock", 0) / max(1, self.connector_blocks)

    @property
    def snapshot_age(self) -> timedelta | None:
        if self.contacts_synced_at is None:
            return None
        return self.planned_at - self.contacts_synced_at


def make_plan(
    warehouse: Warehouse,
    *,
    run_id: str,
    export_key: str,
    include_updates: bool = False,
    now: datetime | None = None,
) -> PlanSummary:
    """Replace ``reconciliation_plan`` (and the missing / conflicts reports) in one go.

    On PostgreSQL the tables it reads get fresh statistics first, and the planning
    transaction is bounded (see ``sql/reconcile/set_plan_session_limits.sql``).
    """
    now = now or datetime.now(UTC)
    params = {
        "run_id": run_id,
        "export_key": export_key,
        "include_updates": include_updates,
        "planned_at": now,
    }
    postgres = warehouse.dialect == "postgresql"
    if postgres:
        with warehouse.transaction() as tx:
            tx.run("reconcile/analyze_planning_tables")
    with warehouse.transaction() as tx:
        if postgres:
            tx.run("reconcile/set_plan_session_limits")
        tx.run("reconcile/delete_previous_plan")
        tx.run("reconcile/insert_reconciliation_plan", params)
        tx.run("reconcile/insert_platform_contacts_missing_from_crm", params)
        tx.run("reconcile/insert_crm_conflicts", params)
        actions = {a: n for a, n in tx.run("reconcile/count_plan_actions").all()}
        active = tx.run("reconcile/count_active_contacts").scalar()
        own_blocks = tx.run("reconcile/count_connector_blocks_in_place").scalar()
        missing = tx.run("reconcile/count_platform_contacts_missing_from_crm").scalar()
        conflicts = tx.run("reconcile/count_crm_conflicts").scalar()
        synced = tx.get_state(CONTACTS_SYNCED_AT)
    return PlanSummary(
        run_id=run_id,
        export_key=export_key,
        actions={a: int(actions.get(a, 0)) for a in ACTIONS},
        active_contacts=int(active),
        missing_from_crm=int(missing),
        conflicts=int(conflicts),
        contacts_synced_at=datetime.fromisoformat(synced) if synced else None,
        planned_at=now,
        connector_blocks=int(own_blocks or 0),
    )


@dataclass(frozen=True)
class Guards:
    """Limits on what a plan may do before a person must say so (run config overrides)."""

    max_creates: int = 1000
    max_block_share: float = 0.05
    max_snapshot_age: timedelta = timedelta(hours=2)
    max_unblocks: int = 100
    max_unblock_share: float = 0.5


# Below this many blocks of its own in place, lifting most of them is not unusual (one block
# lifted of one is 100%): only the count limit applies.
UNBLOCK_SHARE_FROM_BLOCKS = 10


@dataclass(frozen=True)
class GuardResult:
    name: str
    passed: bool
    overridden: bool
    figure: str
    limit: str
    message: str

    @property
    def allows_apply(self) -> bool:
        return self.passed or self.overridden


GUARD_NAMES = ("max_creates", "max_block_share", "max_snapshot_age", "max_unblocks")


def evaluate_guards(
    plan: PlanSummary, guards: Guards, overrides: Sequence[str] = ()
) -> list[GuardResult]:
    """Judge the plan against each guard; an overridden guard still reports its figure."""
    unknown = set(overrides) - set(GUARD_NAMES)
    if unknown:
        raise ValueError(f"unknown guard(s) to override: {', '.join(sorted(unknown))}")
    creates = plan.actions.get("create", 0)
    unblocks = plan.actions.get("unblock", 0)
    share_applies = plan.connector_blocks >= UNBLOCK_SHARE_FROM_BLOCKS
    age = plan.snapshot_age
    results = [
        (
            "max_creates",
            creates <= guards.max_creates,
            str(creates),
            str(guards.max_creates),
            f"{creates} creates planned (limit {guards.max_creates})",
        ),
        (
            "max_block_share",
            plan.block_share <= guards.max_block_share,
            f"{plan.block_share:.2%}",
            f"{guards.max_block_share:.2%}",
            f"{plan.actions.get('block', 0)} blocks = {plan.block_share:.2%} of "
            f"{plan.active_contacts} active contacts (limit {guards.max_block_share:.2%})",
        ),
        (
            "max_snapshot_age",
            age is not None and age <= guards.max_snapshot_age,
            "never synced" if age is None else str(age).split(".")[0],
            str(guards.max_snapshot_age),
            "contacts were never synced"
            if age is None
            else f"contacts snapshot is {str(age).split('.')[0]} old "
            f"(limit {guards.max_snapshot_age})",
        ),
        (
            # An export that lost its flag columns reads as "everyone is mailable" and would
            # lift every block the connector ever made.
            "max_unblocks",
            unblocks <= guards.max_unblocks
            and (not share_applies or plan.unblock_share <= guards.max_unblock_share),
            f"{unblocks} ({plan.unblock_share:.2%})",
            f"{guards.max_unblocks} and {guards.max_unblock_share:.2%}",
            f"{unblocks} unblocks planned = {plan.unblock_share:.2%} of the "
            f"{plan.connector_blocks} blocks this connector has in place (limits "
            f"{guards.max_unblocks} and {guards.max_unblock_share:.2%}"
            + (
                ""
                if share_applies
                else f"; the share counts from {UNBLOCK_SHARE_FROM_BLOCKS} blocks in place"
            )
            + ")",
        ),
    ]
    return [
        GuardResult(name, passed, name in overrides and not passed, figure, limit, message)
        for name, passed, figure, limit, message in results
    ]


# -- the run record (reconciliation_runs) -----------------------------------------------------


def record_run_start(warehouse: Warehouse, load: ExportLoad, now: datetime | None = None) -> None:
    """The run's row: which exports it read and how many lines were good or rejected."""
    with warehouse.transaction() as tx:
        tx.run(
            "reconcile/insert_reconciliation_run",
            {
                "run_id": load.run_id,
                "export_key": load.export_key,
                "export_files": orjson.dumps(load.files).decode(),
                "started_at": now or datetime.now(UTC),
                "crm_rows": load.rows,
                "rejected_rows": load.rejected,
            },
        )


def latest_run(warehouse: Warehouse, run_id: str) -> tuple[str, str] | None:
    """``(run_id, export_key)`` of this run, or else of the latest run that read exports."""
    with warehouse.transaction() as tx:
        row = tx.run("reconcile/select_latest_reconciliation_run", {"run_id": run_id}).first()
    return (row[0], row[1]) if row else None


def record_plan(
    warehouse: Warehouse,
    plan: PlanSummary,
    guards: Sequence[GuardResult],
    override_reason: str | None,
) -> None:
    """Planned counts, guards that tripped and the overrides with their reason."""
    tripped = {g.name: g.message for g in guards if not g.passed}
    overridden = [g.name for g in guards if g.overridden]
    with warehouse.transaction() as tx:
        tx.run(
            "reconcile/update_reconciliation_run_plan",
            {
                "run_id": plan.run_id,
                "conflicts": plan.conflicts,
                **{f"planned_{a}": plan.actions.get(a, 0) for a in ACTIONS},
                "missing_from_crm": plan.missing_from_crm,
                "guards_tripped": orjson.dumps(tripped).decode(),
                "overrides": orjson.dumps(overridden).decode(),
                "override_reason": override_reason if overridden else None,
            },
        )


def record_apply(
    warehouse: Warehouse,
    run_id: str,
    *,
    dry_run: bool,
    outcomes: dict[str, int],
    skipped: int,
    now: datetime | None = None,
) -> None:
    """What the apply did (nothing, for a dry run)."""
    with warehouse.transaction() as tx:
        tx.run(
            "reconcile/update_reconciliation_run_apply",
            {
                "run_id": run_id,
                "dry_run": dry_run,
                "applied_done": outcomes.get("done", 0),
                "applied_rejected": outcomes.get("rejected", 0),
                "applied_retry": outcomes.get("retry", 0) + outcomes.get("ambiguous", 0),
                "skipped": skipped,
                "finished_at": None if dry_run else (now or datetime.now(UTC)),
            },
        )


def plan_preview(warehouse: Warehouse, per_action: int = 10) -> list[dict[str, Any]]:
    """The first few actions of each kind, for people to read before anything is applied."""
    with warehouse.transaction() as tx:
        rows = tx.run("reconcile/select_plan_preview", {"per_action": per_action}).mappings()
        return [dict(r) for r in rows]


def unapproved_reason(warehouse: Warehouse) -> str | None:
    """Why the current plan must not be applied (a guard tripped and was not overridden, or
    the guards never judged it), or None when it may be."""
    with warehouse.transaction() as tx:
        rows = tx.run("reconcile/select_plan_guards").all()
        planned = tx.run("reconcile/count_reconciliation_plan").scalar()
    if not planned:
        return None
    if len(rows) != 1 or rows[0][1] is None:
        return "the plan has no guard verdict: make it again with the reconciliation_plan asset"
    tripped = _json_value(rows[0][1]) or {}
    overridden = set(_json_value(rows[0][2]) or [])
    blocking = sorted(set(tripped) - overridden)
    if blocking:
        return "guards tripped and not overridden: " + "; ".join(
            f"{g} ({tripped[g]})" for g in blocking
        )
    return None


def _json_value(value: Any) -> Any:
    # DuckDB hands JSON back as text, PostgreSQL as Python values.
    return orjson.loads(value) if isinstance(value, str | bytes) else value
