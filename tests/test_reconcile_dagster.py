"""The reconcile job and the CRM export sensor, run by Dagster in process against a sandbox on
loopback and a DuckDB file: plan preview and counts in metadata, blocking guard checks that
stop the apply (and overrides that are recorded), dry runs, one run per export content."""

from __future__ import annotations

import asyncio
import csv
import types
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import load_definitions, make_sandbox, point_the_location_at
from dagster import AssetCheckSeverity, DagsterInstance, Definitions, build_sensor_context

from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines.sync import sync_contacts
from connector.settings import MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox
from sandbox.problems import problem_body
from sandbox.server import serve_in_thread

PROJECT = Path(__file__).resolve().parent.parent
HEADER = ("Email", "Name", "Do Not Email")
CHECKS = {"max_creates", "max_block_share", "max_snapshot_age", "max_unblocks"}


class Writes:
    """ASGI app in front of the sandbox that records every API request but reads."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.writes: list[tuple[str, str]] = []
        self.unavailable = False  # answer writes 503 (the API did nothing) while set

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        http = scope["type"] == "http"
        if http and scope["method"] != "GET" and not scope["path"].startswith("/_sandbox"):
            self.writes.append((scope["method"], scope["path"]))
            if self.unavailable:
                headers = [(b"content-type", b"application/problem+json")]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                body = problem_body(503, "Service Unavailable", "Writes are paused.")
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@dataclass
class Platform:
    sandbox: Sandbox
    writes: Writes
    url: str
    token: str
    warehouse_url: str
    exports: Path

    def warehouse(self) -> Warehouse:
        return Warehouse(self.warehouse_url)

    def table(self, name: str) -> list[dict[str, Any]]:
        warehouse = self.warehouse()
        try:
            with warehouse.transaction() as tx:
                result = tx.connection.exec_driver_sql(f"select * from {name}")
                return [dict(r) for r in result.mappings()]
        finally:
            warehouse.dispose()

    def truth(self) -> list[dict[str, Any]]:
        return sorted(self.sandbox.truth("contacts"), key=lambda c: c["id"])

    def actives(self) -> list[dict[str, Any]]:
        return [c for c in self.truth() if c["status"] == "Active"]


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Platform]:
    """A sandbox (40 contacts) on loopback with its own token, the settings pointing at it, a
    DuckDB file under tmp_path with the contacts synced, and an empty exports folder."""
    token = f"tok-{uuid.uuid4().hex}"
    sandbox = make_sandbox(contacts=40, seed=3, clock_speed=0.0, token=token)
    writes = Writes(sandbox.app)
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    exports = tmp_path / "crm_exports"
    exports.mkdir()
    # serve_in_thread only needs an object with the ASGI app to serve.
    with serve_in_thread(types.SimpleNamespace(app=writes)) as url:  # type: ignore[arg-type]
        point_the_location_at(
            monkeypatch, tmp_path, sandbox, url, warehouse_url, CRM_EXPORT_DIR=str(exports)
        )
        world = Platform(sandbox, writes, url, token, warehouse_url, exports)
        sync(world)
        yield world


def sync(platform: Platform) -> None:
    async def go() -> None:
        warehouse = platform.warehouse()
        settings = MarketplaceSettings(base_url=platform.url, token=Secret(platform.token))
        try:
            warehouse.ensure_tables()
            async with MarketplaceClient(settings, limits=ClientLimits(timeout=10)) as client:
                await sync_contacts(client, warehouse, full_refresh=True)
        finally:
            warehouse.dispose()

    asyncio.run(go())


def write_export(path: Path, rows: Sequence[tuple[str, str, bool]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for email, name, flagged in rows:
            writer.writerow([email, name, "true" if flagged else "false"])
    return path


def run_config(
    path: Path, plan: dict[str, Any] | None = None, apply: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "ops": {
            "crm_exports": {"config": {"files": [str(path)], "mapping": "generic"}},
            "reconciliation_plan": {"config": plan or {}},
            "pushback_results": {"config": apply or {}},
        }
    }


def run(defs: Definitions, instance: DagsterInstance, config: dict[str, Any]) -> Any:
    return defs.resolve_job_def("reconcile").execute_in_process(
        run_config=config, instance=instance, raise_on_error=False
    )


def materializations(result: Any) -> dict[str, Any]:
    return {
        e.asset_key.to_user_string(): e.materialization
        for e in result.get_asset_materialization_events()
    }


def checks(result: Any) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def reconciliation_run(platform: Platform, run_id: str) -> dict[str, Any]:
    (row,) = [r for r in platform.table("reconciliation_runs") if r["run_id"] == run_id]
    for key in ("guards_tripped", "overrides", "export_files"):
        if isinstance(row[key], str):
            row[key] = orjson.loads(row[key])
    return row


def small_export(platform: Platform) -> tuple[Path, list[str], dict[str, Any]]:
    """Two creates and one block (1 of 34 active contacts: under the 5% guard)."""
    actives = platform.actives()
    blocked = actives[0]
    rows = [
        ("first.new@example.org", "First New", False),
        ("second.new@example.org", "Second New", False),
        (blocked["email"], blocked["name"], True),
        *((c["email"], c["name"], False) for c in actives[1:]),
        ("not an email", "Bad Line", False),
    ]
    path = write_export(platform.exports / "crm.csv", rows)
    return path, ["first.new@example.org", "second.new@example.org"], blocked


# --- the job ----------------------------------------------------------------------------------


def test_reconcile_job_previews_the_plan_passes_its_guards_and_applies_it(
    platform: Platform,
) -> None:
    path, new, blocked = small_export(platform)
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = run(defs, instance, run_config(path))

    assert result.success
    found = materializations(result)
    assert set(found) == {
        "crm_contacts",
        "crm_rejected_rows",
        "reconciliation_plan",
        "crm_conflicts",
        "platform_contacts_missing_from_crm",
        "pushback_results",
        "reconciliation_runs",
    }
    # The tables the plan and apply write along the way are real outputs, with row counts.
    assert found["reconciliation_runs"].metadata["dagster/row_count"].value == 1
    assert found["crm_conflicts"].metadata["dagster/row_count"].value == 0
    assert found["platform_contacts_missing_from_crm"].metadata["dagster/row_count"].value == 0
    read = found["crm_contacts"].metadata
    assert read["dagster/row_count"].value == 36
    assert read["files"].value[0]["file"] == "crm.csv"
    assert found["crm_rejected_rows"].metadata["rejected_by_kind"].value == {"invalid email": 1}

    plan = found["reconciliation_plan"].metadata
    assert (plan["planned_create"].value, plan["planned_block"].value) == (2, 1)
    assert (plan["planned_unblock"].value, plan["planned_update"].value) == (0, 0)
    assert plan["active_contacts"].value == 34
    assert plan["missing_from_crm"].value == 0
    preview = plan["preview"].value
    for email in [*new, blocked["email"]]:
        assert email in preview
    assert "STOP" not in plan["guards"].value

    evaluations = checks(result)
    assert set(evaluations) == {*CHECKS, "no_pending_actions"}
    assert all(e.passed for e in evaluations.values())

    applied = found["pushback_results"].metadata
    assert applied["outcome_done"].value == 3
    assert applied["contacts_refreshed"].value == 3
    truth = {c["email"]: c for c in platform.truth()}
    assert all(truth[e]["status"] == "Active" for e in new)
    assert truth[blocked["email"]]["status"] == "Blocked"
    assert sorted(platform.writes.writes) == sorted(
        [
            ("POST", "/public/v1/notifications/contacts"),
            ("POST", "/public/v1/notifications/contacts"),
            ("POST", f"/public/v1/notifications/contacts/{blocked['id']}/block"),
        ]
    )
    contacts = {c["email"]: c for c in platform.table("contacts")}
    assert all(contacts[e]["id"] == truth[e]["id"] for e in new)
    assert contacts[blocked["email"]]["status"] == "Blocked"

    record = reconciliation_run(platform, result.run_id)
    assert (record["crm_rows"], record["rejected_rows"]) == (36, 1)
    assert (record["planned_create"], record["planned_block"]) == (2, 1)
    assert record["export_files"] == ["crm.csv"]
    assert (record["guards_tripped"], record["overrides"], record["override_reason"]) == (
        {},
        [],
        None,
    )
    assert (record["dry_run"], record["applied_done"], record["skipped"]) == (False, 3, 0)
    assert record["finished_at"] is not None


def test_a_tripping_guard_stops_the_apply_and_an_override_with_a_reason_lets_it_through(
    platform: Platform,
) -> None:
    path, new, blocked = small_export(platform)
    before = platform.truth()
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        stopped = run(defs, instance, run_config(path, {"max_creates": 0}))
        # An override needs a reason; without one nothing runs past the plan.
        unexplained = run(
            defs, instance, run_config(path, {"max_creates": 0, "override_guards": ["max_creates"]})
        )
        after_stops = platform.truth()
        ledger_after_stops = platform.table("pushback_results")
        writes_after_stops = list(platform.writes.writes)
        overridden = run(
            defs,
            instance,
            run_config(
                path,
                {
                    "max_creates": 0,
                    "override_guards": ["max_creates"],
                    "override_reason": "first load of the new CRM",
                },
            ),
        )

    # The guard stopped the apply: the plan exists, the apply step never ran, nothing sent.
    assert "reconciliation_plan" in materializations(stopped)
    assert "pushback_results" not in materializations(stopped)
    evaluations = checks(stopped)
    assert not evaluations["max_creates"].passed
    assert evaluations["max_creates"].description == "2 creates planned (limit 0)"
    assert evaluations["max_block_share"].passed and evaluations["max_snapshot_age"].passed
    started = {e.step_key for e in stopped.all_events if e.event_type_value == "STEP_START"}
    assert started == {"crm_exports", "reconciliation_plan"}
    assert not stopped.success
    record = reconciliation_run(platform, stopped.run_id)
    assert set(record["guards_tripped"]) == {"max_creates"}
    assert record["overrides"] == [] and record["applied_done"] is None

    assert not unexplained.success
    assert "pushback_results" not in materializations(unexplained)

    assert after_stops == before
    assert ledger_after_stops == []
    assert writes_after_stops == []

    # With the override and its reason: applied, and the override recorded with the reason.
    assert overridden.success
    evaluations = checks(overridden)
    assert all(e.passed for e in evaluations.values())
    assert evaluations["max_creates"].metadata["overridden"].value is True
    assert (
        evaluations["max_creates"].metadata["override_reason"].value == "first load of the new CRM"
    )
    assert materializations(overridden)["pushback_results"].metadata["outcome_done"].value == 3
    record = reconciliation_run(platform, overridden.run_id)
    assert record["overrides"] == ["max_creates"]
    assert record["override_reason"] == "first load of the new CRM"
    assert set(record["guards_tripped"]) == {"max_creates"}
    assert record["applied_done"] == 3
    truth = {c["email"]: c for c in platform.truth()}
    assert all(e in truth for e in new) and truth[blocked["email"]]["status"] == "Blocked"


def test_no_write_reaches_the_platform_before_an_override(platform: Platform) -> None:
    path, _, _ = small_export(platform)
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = run(defs, instance, run_config(path, {"max_block_share": 0.01}))
    assert not checks(result)["max_block_share"].passed
    assert "pushback_results" not in materializations(result)
    assert platform.writes.writes == []
    assert platform.table("pushback_results") == []


def test_a_dry_run_plans_and_sends_nothing(platform: Platform) -> None:
    path, _, _ = small_export(platform)
    before = platform.truth()
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = run(defs, instance, run_config(path, apply={"dry_run": True}))

    assert result.success
    found = materializations(result)
    assert found["reconciliation_plan"].metadata["planned_create"].value == 2
    assert found["pushback_results"].metadata["dry_run"].value is True
    assert platform.writes.writes == []
    assert platform.truth() == before
    assert platform.table("pushback_results") == []
    assert len(platform.table("reconciliation_plan")) == 3
    record = reconciliation_run(platform, result.run_id)
    assert (record["dry_run"], record["applied_done"], record["finished_at"]) == (True, 0, None)


def test_an_unreadable_export_fails_the_run_before_anything_is_planned(platform: Platform) -> None:
    junk = platform.exports / "crm.csv"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = run(defs, instance, run_config(junk))

    assert not result.success
    assert materializations(result) == {}
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failure] == ["crm_exports"]
    assert str(junk) in failure[0].event_specific_data.error.message
    assert platform.writes.writes == []
    assert platform.table("reconciliation_plan") == []


# --- the sensor -------------------------------------------------------------------------------


def evaluate_sensor(defs: Definitions, instance: DagsterInstance) -> list[Any]:
    sensor = defs.resolve_sensor_def("crm_export_sensor")
    # The warehouse resource opens and closes its connection (setup/teardown): a context.
    with build_sensor_context(
        instance=instance, definitions=defs, resources={"warehouse": defs.resources["warehouse"]}
    ) as context:
        return list(sensor.evaluate_tick(context).run_requests or [])


def test_the_sensor_requests_one_run_per_export_keyed_by_its_content(
    platform: Platform,
) -> None:
    folder = platform.exports
    first = write_export(folder / "a.csv", [("ann@example.org", "Ann", False)])
    write_export(folder / "b.csv", [("bob@example.org", "Bob", True)])
    (folder / ".partial.csv").write_text("Email\nx@example.org\n")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.7")
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        requests = evaluate_sensor(defs, instance)
        assert defs.resolve_sensor_def("crm_export_sensor").job_name == "reconcile"
        assert [r.tags["crm_export"] for r in requests] == ["a.csv", "b.csv"]
        keys = {r.tags["crm_export"]: r.run_key for r in requests}
        assert len(set(keys.values())) == 2
        files = {
            r.tags["crm_export"]: r.run_config["ops"]["crm_exports"]["config"]["files"]
            for r in requests
        }
        assert files == {
            "a.csv": [str(first.resolve())],
            "b.csv": [str((folder / "b.csv").resolve())],
        }

        # The same content written again: the same keys. Changed content: a new key.
        write_export(folder / "a.csv", [("ann@example.org", "Ann", False)])
        assert {r.tags["crm_export"]: r.run_key for r in evaluate_sensor(defs, instance)} == keys
        write_export(folder / "a.csv", [("ann@example.org", "Ann", True)])
        changed = {r.tags["crm_export"]: r.run_key for r in evaluate_sensor(defs, instance)}
        assert changed["b.csv"] == keys["b.csv"]
        assert changed["a.csv"] != keys["a.csv"]

        # The run config a request carries is one the job accepts, and it runs.
        (request,) = [r for r in evaluate_sensor(defs, instance) if r.tags["crm_export"] == "b.csv"]
        result = defs.resolve_job_def("reconcile").execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags
        )
    assert result.success
    assert {r["email"] for r in platform.table("crm_contacts")} == {"bob@example.org"}


def test_the_apply_alone_refuses_a_stored_plan_whose_guard_tripped(platform: Platform) -> None:
    from dagster import AssetKey

    path, _, _ = small_export(platform)
    before = platform.truth()
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        stopped = run(defs, instance, run_config(path, {"max_creates": 0}))
        # Someone materialises the apply on its own later, against the stored plan.
        alone = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[AssetKey("pushback_results"), AssetKey("reconciliation_runs")],
            raise_on_error=False,
        )
    assert not stopped.success
    assert not alone.success
    failure = next(e for e in alone.all_events if e.is_step_failure)
    assert "max_creates" in str(failure.event_specific_data.error)
    assert platform.truth() == before
    assert platform.table("pushback_results") == []


# --- nothing silently pending, nothing failing for want of an export ------------------------


def test_without_an_export_the_reconcile_run_succeeds_and_plans_nothing(
    platform: Platform,
) -> None:
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("reconcile").execute_in_process(
            instance=instance, raise_on_error=False
        )
        observations = [
            e.asset_observation_data.asset_observation
            for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
    assert result.success
    assert materializations(result) == {}
    (seen,) = observations
    assert seen.metadata["status"].value == "no export to reconcile"
    assert platform.table("reconciliation_plan") == []
    assert platform.table("reconciliation_runs") == []
    assert platform.writes.writes == []


def pending_requests(defs: Definitions, instance: DagsterInstance) -> list[Any]:
    return [r for r in evaluate_sensor(defs, instance) if "pending_actions" in r.tags]


def test_pending_actions_warn_and_the_sensor_applies_them_again(platform: Platform) -> None:
    path, new, blocked = small_export(platform)
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        platform.writes.unavailable = True
        first = run(defs, instance, run_config(path))
        platform.writes.unavailable = False

        # The run did its part, and says three actions still wait.
        assert first.success
        check = checks(first)["no_pending_actions"]
        assert not check.passed and check.severity == AssetCheckSeverity.WARN
        assert check.metadata["pending"].value == 3 and check.metadata["retry"].value == 3
        assert "3 actions pending" in check.description
        assert materializations(first)["pushback_results"].metadata["pending"].value == 3

        # Freshly tried: the sensor lets them rest. Once rested, it asks for an apply.
        assert pending_requests(defs, instance) == []
        warehouse = platform.warehouse()
        try:
            with warehouse.transaction() as tx:
                tx.connection.exec_driver_sql(
                    "update pushback_results set last_attempt_at = last_attempt_at "
                    "- interval '1 hour'"
                )
        finally:
            warehouse.dispose()
        (request,) = pending_requests(defs, instance)
        assert request.tags["pending_actions"] == "3"
        retried = defs.resolve_job_def("reconcile").execute_in_process(
            instance=instance, asset_selection=request.asset_selection, tags=request.tags
        )
        # Done: nothing more to ask for.
        assert pending_requests(defs, instance) == []

    assert retried.success
    assert checks(retried)["no_pending_actions"].passed
    assert {r["state"] for r in platform.table("pushback_results")} == {"done"}
    truth = {c["email"]: c for c in platform.truth()}
    assert all(truth[e]["status"] == "Active" for e in new)
    assert truth[blocked["email"]]["status"] == "Blocked"


def test_a_refused_token_fails_the_apply_in_one_line_and_leaves_the_actions_pending(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, _ = small_export(platform)
    monkeypatch.setenv("MPT_API_TOKEN", "wrong-token")
    defs = load_definitions()
    with DagsterInstance.ephemeral() as instance:
        result = run(defs, instance, run_config(path))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.event_specific_data.error
    assert "MPT_API_TOKEN" in error.message and "wrong-token" not in error.message
    assert error.cause is None
    # Refused or cut off in flight, each action is pending (none rejected), for the next apply.
    states = {r["state"] for r in platform.table("pushback_results")}
    assert states and states <= {"retry", "sending"}
