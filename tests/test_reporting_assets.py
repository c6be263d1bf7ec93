"""The reporting assets: house style of the models, wiring and metadata in Dagster, the
automation that rebuilds them after their inputs, and the reports (with their charts) after a
sync and a reconcile of the sandbox.

PostgreSQL is not optional: when the server is unreachable these tests fail. Its sessions run
in Asia/Tokyo, so a model that took dates in the session time zone instead of UTC would put
late-evening rows on the wrong day and fail here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import matplotlib.image
import pytest
from conftest import asgi_marketplace, fresh_postgres_database, make_sandbox
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultSensorStatus,
    evaluate_automation_conditions,
    materialize,
)
from reporting_support import (
    PARTS,
    SOURCES,
    TOKYO_SESSION,
    read,
)
from test_reporting_history import assert_history_matches_plan_and_ledger, reconcile_run

from assets.definitions import build_definitions
from assets.reporting import (
    CHART_DIR,
    REPORT_NAMES,
    REPORTING,
    REPORTS,
)
from assets.resources import WarehouseResource
from connector.evinotice.client import EviNoticeClient
from connector.pipelines import reconcile, sync
from connector.settings import EviNoticeSettings, Secret
from connector.warehouse.engine import Warehouse
from connector.warehouse.sql_files import read_sql
from connector.warehouse.tables import ALL_TABLE_NAMES, table
from sandbox.crm_export import write_sample_export


def test_models_follow_the_house_style_and_read_what_their_assets_depend_on() -> None:
    for report in REPORTS:
        text = read_sql(f"reporting/{report.name}")
        body = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        assert body.strip().endswith("select * from final"), report.name
        code = re.sub(r"'[^']*'", "''", body)  # string literals are data: 'Sent', 'UTC'
        assert code == code.lower(), f"{report.name}: keywords and names are lowercase"
        read_tables = set(re.findall(r"\b(?:from|join)\s+([a-z_]+)", body)) & set(ALL_TABLE_NAMES)
        assert read_tables == set(report.deps), report.name
        # Import CTEs first: each source table is selected in a CTE named after it.
        for source in report.deps:
            assert re.search(rf"\b{source} as \(\s*select\b", body), (report.name, source)


def test_assets_show_columns_with_descriptions_and_depend_on_their_sources() -> None:
    assert [a.key.to_user_string() for a in REPORTING] == list(REPORT_NAMES)
    for report, asset in zip(REPORTS, REPORTING, strict=True):
        key = asset.key
        assert asset.group_names_by_key[key] == "reporting"
        assert {d.to_user_string() for d in asset.asset_deps[key]} == set(report.deps)
        schema = asset.specs_by_key[key].metadata["dagster/column_schema"]
        columns = table(report.name).columns
        assert [c.name for c in schema.columns] == [c.name for c in columns]
        assert all(c.description for c in schema.columns), report.name
        checks = {spec.name for spec in asset.check_specs}
        assert {"unique_key", "required_columns"} <= checks


def _requested(tick: Any) -> set[str]:
    return {name for name in REPORT_NAMES if tick.get_num_requested(AssetKey(name))}


# Dagster's own test API uses a beta parameter internally.
@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
def test_each_report_is_rebuilt_once_after_any_of_its_inputs_is_materialised() -> None:
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("reports_follow_their_inputs")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def("publish_reports")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == set(REPORT_NAMES)
    for name in ("sync_platform", "sync_messages"):
        selected = defs.resolve_job_def(name).asset_layer.selected_asset_keys
        assert not {k.to_user_string() for k in selected} & set(REPORT_NAMES)

    with DagsterInstance.ephemeral() as instance:
        tick = evaluate_automation_conditions(defs=defs, instance=instance)
        assert _requested(tick) == set()  # nothing materialised yet: nothing to rebuild
        for source in SOURCES:
            # However it was materialised (a job, the UI, a backfill of one day of messages).
            partition = "2026-11-01" if source == "messages" else None
            instance.report_runless_asset_event(AssetMaterialization(source, partition=partition))
            tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
            readers = {r.name for r in REPORTS if source in r.deps}
            assert _requested(tick) == readers, source
            assert all(tick.get_num_requested(AssetKey(r)) == 1 for r in readers)
            # Requested once: the next tick does not ask again.
            tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
            assert _requested(tick) == set(), source


# --- after a sync of the sandbox -------------------------------------------------------------


def _sync_sandbox(sandbox: Any, warehouse: Warehouse) -> None:
    """What the sync jobs do, with two statistics snapshots: the anchor day and after midnight."""
    config = sandbox.config
    evinotice = EviNoticeSettings(
        base_url="http://sandbox.local",
        username=config.evinotice_username,
        password=Secret(config.evinotice_password),
        site_id=config.evinotice_site_id,
    )

    async def go() -> None:
        async with asgi_marketplace(sandbox) as client:
            now = sandbox.clock.now()
            await sync.sync_contacts(client, warehouse, now=now)
            await sync.sync_categories(client, warehouse, now=now)
            await sync.sync_batches(client, warehouse, now=now)
            await sync.sync_messages(
                client, warehouse, now - timedelta(days=60), now + timedelta(days=1), now=now
            )
            next_day = (now + timedelta(days=1)).replace(hour=0, minute=30)
            await sync.sync_categories(
                client, warehouse, now=sandbox.clock.advance((next_day - now).total_seconds())
            )
        async with EviNoticeClient(
            evinotice, transport=httpx.ASGITransport(app=sandbox.app)
        ) as client:
            await sync.sync_evinotice_batches(client, warehouse, config.evinotice_site_id)

    asyncio.run(go())


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)  # decodes the whole image: not truncated
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize("engine", ["duckdb", "postgresql"])
def test_reports_after_a_sandbox_sync_agree_with_the_sandbox(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.ExitStack() as stack:
        if engine == "duckdb":
            url = f"duckdb:///{tmp_path / 'demo.duckdb'}"
        else:
            # A database of its own, so the hand-made rows of the other tests do not mix in.
            url = stack.enter_context(fresh_postgres_database(query=TOKYO_SESSION))
        _check_sandbox_reports(url, tmp_path, monkeypatch)


def _check_sandbox_reports(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = make_sandbox(contacts=2000, seed=11, clock_speed=0.0)
    anchor_day = sandbox.clock.now().date()
    warehouse = Warehouse(url)
    try:
        warehouse.ensure_tables()
        _sync_sandbox(sandbox, warehouse)
        # The demo's sample CRM export, reconciled (creates, blocks, a conflict, bad lines):
        # reconciliation_history gets a run, contact_health learns what the CRM knows.
        export = write_sample_export(
            sandbox.truth("contacts"), tmp_path / "crm" / "sample_export.csv", seed=11
        )
        guards = reconcile.Guards(max_snapshot_age=timedelta(days=1))  # the clock moved on
        applied = reconcile_run(sandbox, warehouse, [export], "sample-run", guards=guards)
        assert applied is not None and applied.outcomes == Counter(done=applied.sent)
        charts = tmp_path / "charts"
        monkeypatch.setenv(CHART_DIR, str(charts))
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                REPORTING, instance=instance, resources={"warehouse": WarehouseResource(url=url)}
            )
        assert result.success

        counts = {name: warehouse.count(name) for name in REPORT_NAMES}
        assert all(counts.values()), counts
        for name in REPORT_NAMES:
            (materialization,) = result.asset_materializations_for_node(name)
            assert materialization.metadata["dagster/row_count"].value == counts[name]
            assert "| " in materialization.metadata["preview"].value
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert not failed, [(e.asset_key, e.check_name) for e in failed]

        # Each Marketplace batch: its messages by status, exactly as the sandbox holds them.
        truth = list(sandbox.truth("messages"))
        by_batch: dict[str, Counter[str]] = {}
        for message in truth:
            by_batch.setdefault(message["batch"]["id"], Counter())[message["status"]] += 1
        stats = read(warehouse, "batch_statistics", "provider", "batch_id")
        batches = {b["id"] for b in sandbox.truth("batches")}
        assert {k[1] for k in stats if k[0] == "marketplace"} == batches
        for batch_id, statuses in by_batch.items():
            row = stats[("marketplace", batch_id)]
            assert row["total_count"] == sum(statuses.values())
            assert (
                row["sent_count"],
                row["bounced_count"],
                row["complained_count"],
                row["discarded_count"],
                row["failed_count"],
                row["pending_count"],
            ) == tuple(
                statuses[s]
                for s in ("Sent", "Bounced", "Complained", "Discarded", "Failed", "Queued")
            )
        site = sandbox.config.evinotice_site_id
        for batch in sandbox.truth("evinotice-batches"):
            if batch["SiteId"] == site:
                row = stats[("evinotice", batch["Id"])]
                assert (row["total_count"], row["sent_count"], row["failed_count"]) == (
                    batch["TotalCount"],
                    batch["SentCount"],
                    batch["FailedCount"],
                )

        # The anchor day, completed from the snapshot after midnight: the sandbox's messages.
        days = read(warehouse, "category_deliverability_daily", "day", "category_id")
        per_category: dict[str, Counter[str]] = {}
        for message in truth:
            created = datetime.fromisoformat(message["audit"]["created"]["at"])
            if created.astimezone(UTC).date() == anchor_day:
                per_category.setdefault(message["category"]["id"], Counter())[
                    message["status"].lower()
                ] += 1
        assert per_category
        for category in sandbox.truth("categories"):
            row = days[(anchor_day, category["id"])]
            statuses = per_category.get(category["id"], Counter())
            assert row["method"] == "week_difference" and row["is_complete"]
            assert tuple(row[p] for p in PARTS) == tuple(statuses[p] for p in PARTS)
            assert row["matches_messages"] is True

        assert counts["contact_health"] == warehouse.count("contacts")
        (run,) = assert_history_matches_plan_and_ledger(warehouse).values()
        assert (run["status"], run["planned_create"], run["planned_block"]) == ("applied", 12, 7)
        assert (run["applied_done"], run["done_create"], run["done_block"]) == (19, 12, 7)
        assert (run["rejected_rows"], run["conflicts"], run["export_key"]) == (
            3,
            1,
            reconcile.export_key([export]),
        )
        # In the CRM: the 400 agreeing contacts, the 12 just created, 6 flagged and 1
        # conflicting (flagged wins); the lines themselves, matched on the normalised email.
        verdicts: dict[str, bool] = {}
        for crm_line_row in read(warehouse, "crm_contacts", "source_file", "line").values():
            email = crm_line_row["email"]
            verdicts[email] = verdicts.get(email, True) and bool(crm_line_row["mailable"])
        keys = {k[0]: v["email_key"] for k, v in read(warehouse, "contacts", "id").items()}
        health = read(warehouse, "contact_health", "contact_id")
        for (contact_id,), row in health.items():
            key = keys[contact_id]
            assert (row["in_crm"], row["crm_mailable"]) == (key in verdicts, verdicts.get(key))
        assert Counter(r["crm_mailable"] for r in health.values() if r["in_crm"]) == Counter(
            {True: 412, False: 7}
        )
        opted_out = sum(
            r["opted_out_contacts"]
            for r in read(warehouse, "opt_outs_by_category", "category_id").values()
        )
        assert opted_out == sum(len(c["optOuts"]) for c in sandbox.truth("contacts"))

        for name in ("category_deliverability_daily", "batch_statistics"):
            path = charts / f"{name}.png"
            width, height = _png_size(path)
            assert width >= 800 and height >= 300, (name, width, height)
            (materialization,) = result.asset_materializations_for_node(name)
            assert Path(materialization.metadata["chart_path"].value) == path.resolve()
            assert "data:image/png;base64," in materialization.metadata["chart"].value
    finally:
        warehouse.dispose()
