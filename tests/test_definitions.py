"""The Dagster side: the code location validates and loads with the expected assets, groups,
jobs and schedules; the sync job and a messages backfill (launched as the UI launches it) run
against a sandbox on loopback; settings are required, and secrets stay out of every record."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_sandbox, point_the_location_at
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterInvalidConfigError,
    Definitions,
    build_schedule_context,
)
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.instance_for_test import instance_for_test
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._serdes import serialize_value

from assets.definitions import LocationSettings, build_definitions
from connector.errors import ConfigurationError
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

PROJECT = Path(__file__).resolve().parent.parent
TABLES = (
    "contacts",
    "contact_opt_outs",
    "categories",
    "category_statistics_snapshots",
    "batches",
    "messages",
    "evinotice_batches",
)
UNPARTITIONED = tuple(t for t in TABLES if t != "messages")


@dataclass
class Platform:
    sandbox: Sandbox
    url: str
    env: dict[str, str]
    warehouse_url: str
    token: str
    password: str

    def warehouse(self) -> Warehouse:
        return Warehouse(self.warehouse_url)


@pytest.fixture
def platform(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, loopback: Callable[[Sandbox], str]
) -> Iterator[Platform]:
    """A sandbox on loopback with its own secrets, the settings pointing at it, and a DuckDB
    file under tmp_path."""
    token, password = f"tok-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    sandbox = make_sandbox(
        contacts=2000, seed=5, clock_speed=0.0, token=token, evinotice_password=password
    )
    url = loopback(sandbox)
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    env = point_the_location_at(
        monkeypatch,
        tmp_path,
        sandbox,
        url,
        warehouse_url,
        NOTIFSYNC_MESSAGES_START_DATE="2026-09-01",
    )
    yield Platform(sandbox, url, env, warehouse_url, token, password)


def location(platform: Platform, **settings: Any) -> Definitions:
    """The code location for this platform (its resources read the settings' variables)."""
    values = {"warehouse_url": platform.warehouse_url, "messages_start_date": "2026-09-01"}
    return build_definitions(LocationSettings(**{**values, **settings}))


def materializations(result: Any) -> dict[str, Any]:
    return {
        e.asset_key.to_user_string(): e.materialization
        for e in result.get_asset_materialization_events()
    }


def all_records(instance: DagsterInstance) -> str:
    """Every event record and run of the instance, serialised as the instance stores them."""
    parts = []
    for run in instance.get_runs():
        parts.append(serialize_value(run))
        parts.extend(serialize_value(entry) for entry in instance.all_logs(run.run_id))
    return "\n".join(parts)


def truth_messages(sandbox: Sandbox, first: date, last: date) -> list[str]:
    return sorted(
        m["id"]
        for m in sandbox.truth("messages")
        if first.isoformat() <= m["audit"]["created"]["at"][:10] <= last.isoformat()
    )


def day_keys(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


# --- the code location -----------------------------------------------------------------------


def test_definitions_validate_passes(platform: Platform, tmp_path: Path) -> None:
    env = {**os.environ, **platform.env, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Validation successful for code location assets.definitions" in output
    # Loading the code location runs nothing and writes no warehouse.
    assert not Path(platform.warehouse_url.removeprefix("duckdb:///")).exists()


def test_definitions_load_with_assets_groups_jobs_and_schedules(platform: Platform) -> None:
    defs = location(platform)

    # The synced tables, grouped by source (other layers may add assets of their own).
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert set(TABLES) <= set(specs)
    assert {k: specs[k].group_name for k in TABLES} == {
        **dict.fromkeys(TABLES, "marketplace"),
        "evinotice_batches": "evinotice",
    }
    for name in TABLES:
        spec = specs[name]
        assert spec.description, name
        columns = spec.metadata["dagster/column_schema"].columns
        assert columns and all(c.description for c in columns), name
        assert spec.metadata["dagster/table_name"] == name

    graph = defs.resolve_asset_graph()
    checks: dict[str, set[str]] = {}
    for check in graph.asset_check_keys:
        checks.setdefault(check.asset_key.to_user_string(), set()).add(check.name)
    assert set(TABLES) <= set(checks)
    for name in TABLES:
        assert {"unique_key", "required_columns"} <= checks[name], name
    for name in ("contacts", "categories", "batches", "messages", "evinotice_batches"):
        assert "row_count_matches_api" in checks[name], name
    assert "total_is_sum_of_parts" in checks["category_statistics_snapshots"]

    messages = graph.get(AssetKey("messages"))
    partitions = messages.partitions_def
    assert partitions.get_first_partition_key() == "2026-09-01"
    # Today is a partition, so the hourly sync keeps today's messages current.
    now = datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert partitions.get_partition_keys(current_time=now)[-1] == "2026-11-20"
    assert messages.backfill_policy is not None
    assert messages.backfill_policy.max_partitions_per_run == 31
    for name in UNPARTITIONED:
        assert graph.get(AssetKey(name)).partitions_def is None

    platform_job = defs.resolve_job_def("sync_platform")
    assert {k.to_user_string() for k in platform_job.asset_layer.selected_asset_keys} == set(
        UNPARTITIONED
    )
    messages_job = defs.resolve_job_def("sync_messages")
    assert {k.to_user_string() for k in messages_job.asset_layer.selected_asset_keys} == {
        "messages"
    }
    assert messages_job.partitions_def == partitions

    platform_schedule = defs.resolve_schedule_def("sync_platform_schedule")
    messages_schedule = defs.resolve_schedule_def("sync_messages_schedule")
    assert platform_schedule.cron_schedule == "0 * * * *"
    assert platform_schedule.job_name == "sync_platform"
    assert messages_schedule.cron_schedule == "0 * * * *"
    # Each tick syncs yesterday (late delivery outcomes) and today.
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=now,
            repository_def=defs.get_repository_def(),
        )
        requests = messages_schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-11-19", "2026-11-20"]
    assert len({r.run_key for r in requests}) == 2

    defs = location(platform, sync_cron="*/15 * * * *")
    assert defs.resolve_schedule_def("sync_platform_schedule").cron_schedule == "*/15 * * * *"
    assert defs.resolve_schedule_def("sync_messages_schedule").cron_schedule == "*/15 * * * *"


def test_the_dagster_cli_materialises_contacts_alone(platform: Platform, tmp_path: Path) -> None:
    # The README's form; contacts and contact_opt_outs come from one read, and contacts alone
    # is a valid selection (the opt-outs are written too but not reported as materialised).
    env = {**os.environ, **platform.env, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    command = [sys.executable, "-m", "dagster", "asset", "materialize"]
    command += ["-m", "assets.definitions", "--select", "contacts"]
    done = subprocess.run(
        command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        contacts = instance.get_latest_materialization_event(AssetKey("contacts"))
        opt_outs = instance.get_latest_materialization_event(AssetKey("contact_opt_outs"))
    assert contacts is not None and opt_outs is None
    assert contacts.asset_materialization.metadata["dagster/row_count"].value == 2000


# --- running the jobs ------------------------------------------------------------------------


def test_sync_platform_job_materialises_every_table_and_passes_its_checks(
    platform: Platform,
) -> None:
    defs = location(platform)
    job = defs.resolve_job_def("sync_platform")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
        again = job.execute_in_process(instance=instance)

    assert result.success and again.success
    # Every check declared on these tables ran in the same run, and passed.
    declared = {
        (k.asset_key.to_user_string(), k.name)
        for k in defs.resolve_asset_graph().asset_check_keys
        if k.asset_key.to_user_string() in UNPARTITIONED
    }
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == declared
    assert len(evaluations) == len(declared)
    assert [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed] == []
    assert all(e.passed for e in again.get_asset_check_evaluations())

    sandbox = platform.sandbox
    site = sandbox.config.evinotice_site_id
    expected_rows = {
        "contacts": len(list(sandbox.truth("contacts"))),
        "contact_opt_outs": sum(len(c["optOuts"]) for c in sandbox.truth("contacts")),
        "categories": len(list(sandbox.truth("categories"))),
        "category_statistics_snapshots": 3 * len(list(sandbox.truth("categories"))),
        "batches": len(list(sandbox.truth("batches"))),
        "evinotice_batches": len(
            [b for b in sandbox.truth("evinotice-batches") if b["SiteId"] == site]
        ),
    }
    first = materializations(result)
    assert set(first) == set(UNPARTITIONED)
    for name, materialization in first.items():
        metadata = materialization.metadata
        assert metadata["dagster/row_count"].value == expected_rows[name], name
        assert "rows_inserted" in metadata, name
        preview = metadata["preview"].value
        assert preview.startswith("| ") and "raw" not in preview.splitlines()[0], name
        assert len(preview.splitlines()) == 2 + min(5, expected_rows[name]), name
    assert first["contacts"].metadata["rows_inserted"].value == expected_rows["contacts"]
    assert first["batches"].metadata["rows_inserted"].value == expected_rows["batches"]
    assert first["contacts"].metadata["sync_mode"].value == "full"

    # Nothing changed upstream: the merged tables report no writes the second time.
    second = materializations(again)
    assert second["contacts"].metadata["sync_mode"].value == "incremental"
    for name in ("contacts", "batches", "evinotice_batches"):
        metadata = second[name].metadata
        assert (metadata["rows_inserted"].value, metadata["rows_updated"].value) == (0, 0), name
    assert second["category_statistics_snapshots"].metadata["dagster/row_count"].value == (
        2 * expected_rows["category_statistics_snapshots"]
    )

    warehouse = platform.warehouse()
    try:
        for name, count in expected_rows.items():
            if name == "category_statistics_snapshots":
                count *= 2
            assert warehouse.count(name) == count, name
    finally:
        warehouse.dispose()


def test_messages_range_in_one_run_reports_one_materialization_per_day(
    platform: Platform,
) -> None:
    defs = location(platform)
    first, last = date(2026, 10, 14), date(2026, 10, 31)
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("sync_messages").execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
        )
        materialized = instance.get_materialized_partitions(AssetKey("messages"))

    assert result.success
    keys = day_keys(first, last)
    events = result.get_asset_materialization_events()
    assert sorted(e.partition for e in events) == keys
    assert materialized == set(keys)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    expected = truth_messages(platform.sandbox, first, last)
    warehouse = platform.warehouse()
    try:
        stored = sorted(r[0] for r in warehouse.query("select id from messages"))
    finally:
        warehouse.dispose()
    assert stored == expected
    assert len(expected) > 100


def test_backfill_of_a_date_range_as_the_ui_launches_it(platform: Platform) -> None:
    # 35 days: with at most 31 partitions per run, two runs.
    first, last = date(2026, 10, 10), date(2026, 11, 13)
    keys = day_keys(first, last)
    with (
        instance_for_test(
            synchronous_run_coordinator=True, synchronous_run_launcher=True
        ) as instance,
        create_test_daemon_workspace_context(
            InProcessWorkspaceLoadTarget(
                InProcessCodeLocationOrigin(
                    LoadableTargetOrigin(
                        executable_path=sys.executable,
                        module_name="assets.definitions",
                        working_directory=str(PROJECT),
                    )
                )
            ),
            instance,
        ) as workspace,
    ):
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="messages-range",
            asset_graph=workspace.create_request_context().asset_graph,
            partition_names=keys,
            asset_selection=[AssetKey("messages")],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        logger = logging.getLogger("test_backfill")
        for _ in range(10):
            list(execute_backfill_iteration(workspace, logger))
            status = instance.get_backfill("messages-range").status
            if status != BulkActionStatus.REQUESTED:
                break
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": "messages-range"}))
        materialized = instance.get_materialized_partitions(AssetKey("messages"))
        records = instance.fetch_materializations(AssetKey("messages"), limit=1000).records

    assert status == BulkActionStatus.COMPLETED_SUCCESS
    assert len(runs) == 2
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    ranges = sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in runs
    )
    assert ranges == [(keys[0], keys[30]), (keys[31], keys[-1])]
    assert materialized == set(keys)
    assert sorted(r.partition_key for r in records) == keys

    expected = truth_messages(platform.sandbox, first, last)
    warehouse = platform.warehouse()
    try:
        stored = sorted(r[0] for r in warehouse.query("select id from messages"))
    finally:
        warehouse.dispose()
    assert stored == expected
    # The range leaves out days that have messages on both sides.
    everything = truth_messages(platform.sandbox, date(2026, 9, 1), date(2026, 12, 31))
    assert len(everything) > len(expected) > 0


# --- settings and secrets --------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["MPT_API_TOKEN", "MPT_API_BASE_URL"])
def test_a_run_without_a_setting_fails_naming_it(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.delenv(missing)
    defs = location(platform)
    with (
        DagsterInstance.ephemeral() as instance,
        pytest.raises(DagsterInvalidConfigError, match=missing),
    ):
        defs.resolve_job_def("sync_platform").execute_in_process(instance=instance)
    # No fallback to any sandbox: nothing reached the API and nothing was written.
    assert platform.sandbox.stats.counts["requests"] == 0
    assert not Path(platform.warehouse_url.removeprefix("duckdb:///")).exists()


def test_an_empty_token_is_a_configuration_error_naming_it(platform: Platform) -> None:
    from assets.resources import MarketplaceResource

    with pytest.raises(ConfigurationError, match="MPT_API_TOKEN"):
        MarketplaceResource(base_url=platform.url, token="").client()


def test_secrets_never_appear_in_logs_metadata_or_events(
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    defs = location(platform)
    with DagsterInstance.ephemeral() as instance:
        ok = defs.resolve_job_def("sync_platform").execute_in_process(instance=instance)
        # A refused token fails the run; its error must not echo what was sent either.
        wrong = f"wrong-{uuid.uuid4().hex}"
        monkeypatch.setenv("MPT_API_TOKEN", wrong)
        refused = (
            location(platform)
            .resolve_job_def("sync_platform")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
        records = all_records(instance)

    assert ok.success
    assert not refused.success
    failures = [e for e in refused.all_events if e.is_step_failure]
    assert failures and all("401" in str(e.event_specific_data.error) for e in failures)
    captured = capfd.readouterr()
    logs = "\n".join([records, captured.out, captured.err, caplog.text])
    assert "contacts" in records and "rows_inserted" in records  # the scan sees real content
    for secret in (platform.token, platform.password, wrong):
        assert secret not in logs
    warehouse = platform.warehouse()
    try:
        for name in TABLES:
            text = str(warehouse.query(f"select * from {name}"))
            assert platform.token not in text and platform.password not in text, name
    finally:
        warehouse.dispose()


def test_sync_platform_on_postgresql_keeps_the_warehouse_password_out(
    platform: Platform,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The server trusts local connections, so any password works; it must still never show.
    password = f"pg-{uuid.uuid4().hex}"
    monkeypatch.setenv("WAREHOUSE_URL", postgres_url.replace("postgres@", f"postgres:{password}@"))
    defs = location(platform)
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("sync_platform").execute_in_process(instance=instance)
        records = all_records(instance)

    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    contacts = materializations(result)["contacts"].metadata
    assert contacts["dagster/row_count"].value == 2000
    assert contacts["warehouse"].value.startswith("postgresql+psycopg://postgres:***@")
    captured = capfd.readouterr()
    assert password not in "\n".join([records, captured.out, captured.err])
    warehouse = Warehouse(postgres_url)
    try:
        assert warehouse.count("contacts") == 2000
        assert warehouse.dialect == "postgresql"
    finally:
        warehouse.dispose()
