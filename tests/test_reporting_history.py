"""reconciliation_history against hand-made runs, and against the plan and ledger of real
reconcile runs.

PostgreSQL is not optional: when the server is unreachable these tests fail. Its sessions run
in Asia/Tokyo, so a model that took dates in the session time zone instead of UTC would put
late-evening rows on the wrong day and fail here.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from conftest import asgi_marketplace, make_sandbox
from reporting_support import (  # noqa: F401 (fixtures)
    SOURCES,
    at,
    load,
    read,
    warehouse,
    warehouses,
)

from assets.reporting import (
    REPORTS,
    build_report,
    evaluate_checks,
)
from connector.pipelines import pushback, reconcile, sync
from connector.warehouse.engine import Warehouse
from connector.warehouse.sql_files import read_sql
from connector.warehouse.tables import table

# --- reconciliation_history ------------------------------------------------------------------

ACTIONS = ("create", "block", "unblock", "update")
OUTCOMES_BY_ACTION = tuple(
    f"{outcome}_{action}"
    for outcome in ("planned", "done", "rejected", "retry", "skipped")
    for action in ACTIONS
)


def run_row(
    run_id: str,
    started: str,
    files: list[str],
    *,
    export_key: str | None = None,
    finished: str | None = None,
    lines: tuple[int, int] = (10, 0),
    conflicts: int | None = 0,
    missing: int | None = 0,
    planned: tuple[int, int, int, int] | None = (0, 0, 0, 0),
    tripped: dict[str, str] | None = None,
    overrides: list[str] | None = None,
    reason: str | None = None,
    dry_run: bool | None = False,
    applied: tuple[int, int, int, int] | None = None,
) -> dict[str, Any]:
    """A reconciliation_runs row as connector.pipelines.reconcile's record_* functions write it."""
    recorded = planned is not None
    return {
        "run_id": run_id,
        "export_key": export_key or f"key-{run_id}",
        "export_files": orjson.dumps(files).decode(),
        "started_at": at(started),
        "finished_at": at(finished) if finished else None,
        "crm_rows": lines[0],
        "rejected_rows": lines[1],
        "conflicts": conflicts,
        "missing_from_crm": missing,
        **dict(zip((f"planned_{a}" for a in ACTIONS), planned or (None,) * 4, strict=True)),
        "guards_tripped": orjson.dumps(tripped or {}).decode() if recorded else None,
        "overrides": orjson.dumps(overrides or []).decode() if recorded else None,
        "override_reason": reason,
        "dry_run": dry_run,
        **dict(
            zip(
                ("applied_done", "applied_rejected", "applied_retry", "skipped"),
                applied or (None,) * 4,
                strict=True,
            )
        ),
    }


def ledger_row(key: str, run_id: str | None, action: str, state: str) -> dict[str, Any]:
    return {"action_key": key, "run_id": run_id, "action": action, "state": state,
            "email": f"{key}@example.com", "attempts": 1}  # fmt: skip


TOO_MANY_CREATES = "3 creates planned (limit 2)"
BLOCK_SHARE = "9 blocks = 30.00% of 30 active contacts (limit 5.00%)"
SNAPSHOT_AGE = "contacts snapshot is 5:00:00 old (limit 2:00:00)"
HISTORY_RUNS = [
    # Killed while sending: no apply recorded; one create done, one still "sending".
    run_row("run-0", "2026-11-09T09:00", ["old.csv"], lines=(5, 0), missing=1,
            planned=(2, 0, 0, 0), dry_run=None),
    # A normal run.
    run_row("run-1", "2026-11-10T09:00", ["crm_a.csv"], finished="2026-11-10T09:05",
            lines=(10, 1), conflicts=1, missing=3, planned=(2, 1, 0, 0), applied=(3, 0, 0, 0)),
    # A dry run: planned, nothing sent.
    run_row("run-2", "2026-11-11T09:00", ["crm_b.csv"], lines=(5, 2), planned=(4, 0, 0, 0),
            dry_run=True, applied=(0, 0, 0, 0)),
    # max_creates tripped, overridden with a reason, then applied.
    run_row("run-3", "2026-11-12T09:00", ["crm_c.csv", "crm_d.xlsx"],
            finished="2026-11-12T09:10", lines=(20, 0), conflicts=2, missing=4,
            planned=(3, 2, 0, 0), tripped={"max_creates": TOO_MANY_CREATES},
            overrides=["max_creates"], reason="EMEA list migration, approved by J. Doe",
            applied=(4, 1, 0, 0)),
    # Two guards tripped, none overridden: the blocking checks stopped the apply.
    run_row("run-4", "2026-11-13T09:00", ["crm_e.csv"], lines=(30, 0), missing=2,
            planned=(0, 9, 0, 0),
            tripped={"max_block_share": BLOCK_SHARE, "max_snapshot_age": SNAPSHOT_AGE},
            dry_run=None),
    # Rejected and retried actions; run-6 reads the same export again (same key, same
    # action keys) and retries what run-5 left pending.
    run_row("run-5", "2026-11-14T09:00", ["crm_f.csv"], export_key="key-f",
            finished="2026-11-14T09:03", lines=(12, 1), planned=(4, 2, 1, 0),
            applied=(3, 1, 3, 0)),
    run_row("run-6", "2026-11-15T09:00", ["crm_f.csv"], export_key="key-f",
            finished="2026-11-15T09:01", lines=(12, 1), planned=(2, 1, 0, 1),
            applied=(2, 1, 0, 1)),
    # Exports read, planning failed: nothing recorded after the read.
    run_row("run-7", "2026-11-16T09:00", ["crm_g.csv"], lines=(3, 0), conflicts=None,
            missing=None, planned=None, dry_run=None),
]  # fmt: skip
HISTORY_LEDGER = [
    ledger_row("x1", "run-0", "create", "done"),
    ledger_row("x2", "run-0", "create", "sending"),
    ledger_row("a1", "run-1", "create", "done"),
    ledger_row("a2", "run-1", "create", "done"),
    ledger_row("a3", "run-1", "block", "done"),
    ledger_row("c1", "run-3", "create", "done"),
    ledger_row("c2", "run-3", "create", "done"),
    ledger_row("c3", "run-3", "create", "done"),
    ledger_row("c4", "run-3", "block", "done"),
    ledger_row("c5", "run-3", "block", "rejected"),
    ledger_row("d1", "run-5", "create", "done"),
    ledger_row("d2", "run-5", "create", "rejected"),  # planned again by run-6: skipped
    ledger_row("d3", "run-5", "create", "ambiguous"),  # it had landed: not planned again
    ledger_row("d4", "run-6", "create", "done"),  # retry in run-5, done in run-6
    ledger_row("d5", "run-5", "block", "done"),
    ledger_row("d6", "run-6", "block", "done"),  # retry in run-5, done in run-6
    ledger_row("d7", "run-5", "unblock", "done"),
    ledger_row("p1", "run-6", "update", "rejected"),
    # Applies outside any recorded run: in no row.
    ledger_row("z1", "apply", "create", "done"),
    ledger_row("z2", None, "block", "retry"),
]
HISTORY_PLAN = [  # the latest plan, run-6's
    {"action_key": key, "run_id": "run-6", "action": action, "email": f"{key}@example.com"}
    for key, action in (("d2", "create"), ("d4", "create"), ("d6", "block"), ("p1", "update"))
]

HISTORY_COLUMNS = (
    "status", "dry_run", "finished_at", "export_files", "export_key", "crm_rows",
    "rejected_rows", "conflicts", "missing_from_crm", "planned_total", *OUTCOMES_BY_ACTION,
    "applied_done", "applied_rejected", "applied_retry", "skipped", "guards_tripped",
    "guards_overridden", "override_reason", "guard_messages",
)  # fmt: skip
N = None
# Per run, worked out from the rows above: planned, done, rejected, retry, skipped, each as
# (create, block, unblock, update).
EXPECTED_HISTORY = {
    "run-0": ("unfinished", None, None, ["old.csv"], "key-run-0", 5, 0, 0, 1, 2,
              2, 0, 0, 0,  1, 0, 0, 0,  0, 0, 0, 0,  1, 0, 0, 0,  N, 0, 0, 0,
              None, None, None, None, None, None, None, {}),
    "run-1": ("applied", False, at("2026-11-10T09:05"), ["crm_a.csv"], "key-run-1",
              10, 1, 1, 3, 3,
              2, 1, 0, 0,  2, 1, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  N, N, 0, 0,
              3, 0, 0, 0, None, None, None, {}),
    "run-2": ("dry_run", True, None, ["crm_b.csv"], "key-run-2", 5, 2, 0, 0, 4,
              4, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
              0, 0, 0, 0, None, None, None, {}),
    "run-3": ("applied", False, at("2026-11-12T09:10"), ["crm_c.csv", "crm_d.xlsx"],
              "key-run-3", 20, 0, 2, 4, 5,
              3, 2, 0, 0,  3, 1, 0, 0,  0, 1, 0, 0,  0, 0, 0, 0,  N, N, 0, 0,
              4, 1, 0, 0, "max_creates", "max_creates",
              "EMEA list migration, approved by J. Doe", {"max_creates": TOO_MANY_CREATES}),
    "run-4": ("stopped_by_guard", None, None, ["crm_e.csv"], "key-run-4", 30, 0, 0, 2, 9,
              0, 9, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
              None, None, None, None, "max_block_share, max_snapshot_age", None, None,
              {"max_block_share": BLOCK_SHARE, "max_snapshot_age": SNAPSHOT_AGE}),
    # d4 and d6 were left to retry by run-5 but run-6 retried them: they count for run-6
    # now; run-5's own figure (3 left to retry) stays in applied_retry.
    "run-5": ("applied", False, at("2026-11-14T09:03"), ["crm_f.csv"], "key-f", 12, 1, 0, 0, 7,
              4, 2, 1, 0,  1, 1, 1, 0,  1, 0, 0, 0,  1, 0, 0, 0,  N, N, N, 0,
              3, 1, 3, 0, None, None, None, {}),
    "run-6": ("applied", False, at("2026-11-15T09:01"), ["crm_f.csv"], "key-f", 12, 1, 0, 0, 4,
              2, 1, 0, 1,  1, 1, 0, 0,  0, 0, 0, 1,  0, 0, 0, 0,  1, 0, 0, 0,
              2, 1, 0, 1, None, None, None, {}),
    "run-7": ("not_planned", None, None, ["crm_g.csv"], "key-run-7", 3, 0, None, None, None,
              N, N, N, N,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
              None, None, None, None, None, None, None, None),
}  # fmt: skip


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    # JSON columns come back as text from DuckDB and decoded from PostgreSQL.
    for column in ("export_files", "guard_messages"):
        if isinstance(row.get(column), str):
            row[column] = orjson.loads(row[column])
    return row


def test_reconciliation_history_per_run(warehouse: Warehouse) -> None:
    load(
        warehouse,
        reconciliation_runs=HISTORY_RUNS,
        pushback_results=HISTORY_LEDGER,
        reconciliation_plan=HISTORY_PLAN,
    )
    assert build_report(warehouse, "reconciliation_history") == len(EXPECTED_HISTORY)
    rows = {
        k[0]: _decoded(v) for k, v in read(warehouse, "reconciliation_history", "run_id").items()
    }
    assert sorted(rows) == sorted(EXPECTED_HISTORY)
    for run_id, expected in EXPECTED_HISTORY.items():
        got = tuple(rows[run_id][c] for c in HISTORY_COLUMNS)
        mismatches = {
            c: (g, e) for c, g, e in zip(HISTORY_COLUMNS, got, expected, strict=True) if g != e
        }
        assert not mismatches, (run_id, mismatches)
    assert rows["run-3"]["started_at"] == at("2026-11-12T09:00")

    # Its checks pass on these rows, and catch a negative count.
    report = next(r for r in REPORTS if r.name == "reconciliation_history")
    assert all(result.passed for result in evaluate_checks(warehouse, report))
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql(
            "update reconciliation_history set retry_block = -1 where run_id = 'run-1'"
        )
    failed = {r.check_name for r in evaluate_checks(warehouse, report) if not r.passed}
    assert failed == {"counts_not_negative"}


def test_reconciliation_history_reads_every_guard_the_connector_has() -> None:
    # The model names the guards to read them from the recorded JSON: a new guard must be
    # added there too.
    text = read_sql("reporting/reconciliation_history")
    for name in reconcile.GUARD_NAMES:
        assert f"'\"{name}\":'" in text and f"'\"{name}\"'" in text and f"'{name}'" in text
    assert set(table("reconciliation_history").column_names) >= set(OUTCOMES_BY_ACTION)


def test_reconciliation_history_of_no_run_is_empty(warehouse: Warehouse) -> None:
    load(warehouse, pushback_results=[ledger_row("z1", "apply", "create", "done")])
    assert build_report(warehouse, "reconciliation_history") == 0


# --- reconciliation_history against the connector's own plan and ledger -----------------------

EXPORT_HEADER = ("Email", "Name", "Do Not Email", "Unsubscribed", "Hard Bounced")


def reconcile_run(
    sandbox: Any,
    warehouse: Warehouse,
    paths: list[Path],
    run_id: str,
    *,
    dry_run: bool = False,
    faults: str | None = None,
    guards: reconcile.Guards | None = None,
    overrides: tuple[str, ...] = (),
    reason: str | None = None,
) -> pushback.ApplySummary | None:
    """What the reconcile job does, through the connector: read, plan, guards, apply, refresh,
    each step recorded in reconciliation_runs. A guard that trips and is not overridden stops
    the run before the apply, as the blocking checks do."""
    now = sandbox.clock.now()
    load = reconcile.load_exports(warehouse, paths, run_id=run_id, now=now)
    reconcile.record_run_start(warehouse, load, now=now)
    plan = reconcile.make_plan(warehouse, run_id=run_id, export_key=load.export_key, now=now)
    results = reconcile.evaluate_guards(plan, guards or reconcile.Guards(), overrides)
    reconcile.record_plan(warehouse, plan, results, reason)
    if not all(g.allows_apply for g in results):
        return None
    if dry_run:
        reconcile.record_apply(warehouse, run_id, dry_run=True, outcomes={}, skipped=0)
        return None

    async def apply() -> pushback.ApplySummary:
        # One attempt per request, one at a time: with faults switched on, some actions are
        # left to retry, in the same order on every run.
        limits = {"max_attempts": 1, "max_concurrency": 1} if faults else {}
        async with asgi_marketplace(sandbox, **limits) as client:
            sandbox.behaviour.update({"faults": faults})
            try:
                summary = await pushback.apply_plan(client, warehouse, run_id=run_id)
            finally:
                sandbox.behaviour.update({"faults": None})
            if summary.touched_contacts:
                await sync.refresh_contacts(client, warehouse, summary.touched_contacts)
            return summary

    summary = asyncio.run(apply())
    reconcile.record_apply(
        warehouse,
        run_id,
        dry_run=False,
        outcomes=dict(summary.outcomes),
        skipped=summary.skipped,
        now=sandbox.clock.now(),
    )
    return summary


def assert_history_matches_plan_and_ledger(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    """reconciliation_history against the tables it summarises, counted here in Python."""
    assert build_report(warehouse, "reconciliation_history") == warehouse.count(
        "reconciliation_runs"
    )
    history = {k[0]: v for k, v in read(warehouse, "reconciliation_history", "run_id").items()}
    runs = {k[0]: v for k, v in read(warehouse, "reconciliation_runs", "run_id").items()}
    ledger = list(read(warehouse, "pushback_results", "action_key").values())
    by_key = {r["action_key"]: r for r in ledger}
    plan = list(read(warehouse, "reconciliation_plan", "action_key").values())
    current = {r["run_id"] for r in plan}
    pending = ("retry", "ambiguous", "sending")
    for run_id, row in history.items():
        run = runs[run_id]
        mine = Counter(
            (r["action"], "retry" if r["state"] in pending else r["state"])
            for r in ledger
            if r["run_id"] == run_id
        )
        for action in ACTIONS:
            assert row[f"planned_{action}"] == run[f"planned_{action}"], (run_id, action)
            for outcome in ("done", "rejected", "retry"):
                assert row[f"{outcome}_{action}"] == mine[(action, outcome)], (run_id, action)
        if run_id in current:
            skipped = Counter(
                p["action"]
                for p in plan
                if p["action_key"] in by_key
                and by_key[p["action_key"]]["state"] in ("done", "rejected")
                and by_key[p["action_key"]]["run_id"] != run_id
            )
            for action in ACTIONS:
                expected = 0 if row["status"] == "dry_run" else skipped[action]
                assert row[f"skipped_{action}"] == expected, (run_id, action)
            assert Counter(p["action"] for p in plan) == Counter(
                {a: row[f"planned_{a}"] for a in ACTIONS if row[f"planned_{a}"]}
            )
    return history


def test_reconciliation_history_after_reconcile_runs_agrees_with_plan_and_ledger(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    sandbox = make_sandbox(contacts=60, seed=5, clock_speed=0.0)

    async def sync_contacts() -> None:
        async with asgi_marketplace(sandbox) as client:
            await sync.sync_contacts(client, warehouse, full_refresh=True, now=sandbox.clock.now())

    with warehouse.transaction() as tx:
        for name in ("contacts", *SOURCES):
            tx.run("load/delete_all_rows", target=name)
    asyncio.run(sync_contacts())
    active = [c for c in sandbox.truth("contacts") if c["status"] == "Active"]
    gone, *others = active[:4]
    path = tmp_path / "crm.csv"
    lines = [
        *([f"new{n}@crm.example", f"New {n}", "", "", ""] for n in range(8)),
        *([c["email"], c["name"], "true", "", ""] for c in (gone, *others)),
        ["not an email", "Bad", "", "", ""],
    ]
    path.write_text(
        "\n".join(",".join(line) for line in [EXPORT_HEADER, *lines]) + "\n", encoding="utf-8"
    )
    lenient = reconcile.Guards(max_block_share=1.0)

    # 1. A dry run; 2. blocks over the default share, overridden, applied with server
    # errors (some actions left to retry) and one block of a contact deleted meanwhile
    # (rejected); 3. the same export again: the pending actions are retried, the settled ones
    # skipped.
    assert reconcile_run(sandbox, warehouse, [path], "r-dry", dry_run=True, guards=lenient) is None
    sandbox.marketplace.delete_contact(gone["id"])
    first = reconcile_run(
        sandbox, warehouse, [path], "r-first", faults="error=0.4",
        overrides=("max_block_share",), reason="test: four blocks of a small list",
    )  # fmt: skip
    assert first is not None
    assert first.outcomes["rejected"] >= 1
    assert first.outcomes["retry"] + first.outcomes["ambiguous"] >= 1
    after_first = assert_history_matches_plan_and_ledger(warehouse)
    row = after_first["r-first"]
    assert (row["status"], row["planned_create"], row["planned_block"]) == ("applied", 8, 4)
    assert (row["guards_tripped"], row["guards_overridden"], row["override_reason"]) == (
        "max_block_share",
        "max_block_share",
        "test: four blocks of a small list",
    )
    assert (row["crm_rows"], row["rejected_rows"]) == (12, 1)
    # The first apply's ledger rows are all its own: its figures equal what it recorded.
    assert sum(row[f"done_{a}"] for a in ACTIONS) == row["applied_done"] == first.outcomes["done"]
    assert sum(row[f"rejected_{a}"] for a in ACTIONS) == row["applied_rejected"]
    assert sum(row[f"retry_{a}"] for a in ACTIONS) == row["applied_retry"]
    assert row["rejected_block"] >= 1  # the deleted contact
    dry = after_first["r-dry"]
    assert (dry["status"], dry["dry_run"], dry["planned_create"], dry["planned_block"]) == (
        "dry_run", True, 8, 4,
    )  # fmt: skip
    assert all(
        dry[f"{o}_{a}"] == 0 for o in ("done", "rejected", "retry", "skipped") for a in ACTIONS
    )

    second = reconcile_run(sandbox, warehouse, [path], "r-second", guards=lenient)
    assert second is not None and second.outcomes["retry"] == 0
    after_second = assert_history_matches_plan_and_ledger(warehouse)
    row = after_second["r-second"]
    assert sum(row[f"done_{a}"] for a in ACTIONS) == row["applied_done"] == second.outcomes["done"]
    assert sum(row[f"skipped_{a}"] for a in ACTIONS) == row["skipped"] == second.skipped > 0
    # The first run keeps what it settled; the actions the second retried moved to it.
    earlier = after_second["r-first"]
    for action in ACTIONS:
        assert earlier[f"done_{action}"] == after_first["r-first"][f"done_{action}"]
        assert earlier[f"rejected_{action}"] == after_first["r-first"][f"rejected_{action}"]
    # What the first run left to retry = what it still holds + what the second run took over
    # (tried a second time: only the first run had sent anything before).
    taken_over = sum(
        1
        for r in read(warehouse, "pushback_results", "action_key").values()
        if r["run_id"] == "r-second" and r["attempts"] >= 2
    )
    assert taken_over > 0
    assert earlier["applied_retry"] == after_first["r-first"]["applied_retry"]
    assert earlier["applied_retry"] == sum(earlier[f"retry_{a}"] for a in ACTIONS) + taken_over
    assert earlier["skipped_create"] is None  # its plan was replaced by the second run's
