"""The send_campaign and cancel_campaign jobs and the campaign sensor, run by Dagster in
process against a sandbox on loopback and a DuckDB file: preview metadata, blocking guard
checks, malformed files, the report, cancel, one run per file content."""

from __future__ import annotations

import asyncio
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import load_definitions, make_sandbox, point_the_location_at
from dagster import DagsterInstance, build_sensor_context

from connector.marketplace.client import MarketplaceClient
from connector.pipelines.sync import sync_categories, sync_contacts
from connector.settings import MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox
from sandbox.server import serve_in_thread

GUARDS = {
    "max_recipients",
    "max_excluded_share",
    "category_published",
    "max_snapshot_age",
    "send_at_not_past",
}


class Posts:
    """ASGI app in front of the sandbox that counts POST /batches."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].endswith("/batches")
        ):
            self.count += 1
        await self.app(scope, receive, send)


@dataclass
class Platform:
    sandbox: Sandbox
    posts: Posts
    warehouse_url: str
    folder: Path

    def rows(self, sql: str) -> list[dict[str, Any]]:
        warehouse = Warehouse(self.warehouse_url)
        try:
            with warehouse.transaction() as tx:
                return [dict(r) for r in tx.connection.exec_driver_sql(sql).mappings()]
        finally:
            warehouse.dispose()

    def campaign_file(self, file_name: str = "spring.yaml", **fields: Any) -> Path:
        data = {
            "name": "spring",
            "audience": "select id as contact_id, name from contacts where status = 'Active'",
            "category": "NTC-0000-0002",
            "subject": "Spring news",
            "body": "Hello from the sandbox!",
            "max_contacts_per_batch": 10,
            "guards": {"max_excluded_share": 0.9},
            **fields,
        }
        path = self.folder / file_name
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Platform]:
    token = f"tok-{uuid.uuid4().hex}"
    sandbox = make_sandbox(
        contacts=40, seed=3, clock_speed=0.0, token=token, start=datetime.now(UTC)
    )
    posts = Posts(sandbox.app)
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    folder = tmp_path / "campaigns"
    folder.mkdir()
    with serve_in_thread(types.SimpleNamespace(app=posts)) as url:  # type: ignore[arg-type]
        point_the_location_at(
            monkeypatch, tmp_path, sandbox, url, warehouse_url, CAMPAIGN_DIR=str(folder)
        )

        async def sync() -> None:
            warehouse = Warehouse(warehouse_url)
            warehouse.ensure_tables()
            settings = MarketplaceSettings(base_url=url, token=Secret(token))
            async with MarketplaceClient(settings) as client:
                await sync_contacts(client, warehouse, full_refresh=True)
                await sync_categories(client, warehouse)
            warehouse.dispose()

        asyncio.run(sync())
        yield Platform(sandbox, posts, warehouse_url, folder)


def send_job(path: Path, plan: dict[str, Any] | None = None) -> Any:
    defs = load_definitions()
    config = {"ops": {"campaign_plan": {"config": {"file": str(path), **(plan or {})}}}}
    return defs.resolve_job_def("send_campaign").execute_in_process(
        run_config=config, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )


def materialized(result: Any) -> dict[str, Any]:
    return {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def test_the_job_plans_previews_sends_and_reports(platform: Platform) -> None:
    result = send_job(platform.campaign_file())
    assert result.success, [e.description for e in result.get_asset_check_evaluations()]
    meta = materialized(result)
    plan = meta["campaign_plan"]
    recipients = plan["recipients"].value
    assert recipients > 0 and plan["subject"].value == "Spring news"
    assert "Hello from the sandbox!" in plan["body"].value
    assert "| reason |" in plan["sample"].value and "included" in plan["sample"].value
    assert {e.check_name for e in result.get_asset_check_evaluations() if e.passed} >= GUARDS
    assert meta["campaign_results"]["recipients_sent"].value == recipients

    messages = [m for m in platform.sandbox.truth("messages") if m["subject"] == "Spring news"]
    assert len(messages) == recipients == platform.posts.count * 10 - (-recipients % 10)
    synced = platform.rows("select count(*) as n from messages where subject = 'Spring news'")
    assert synced[0]["n"] == recipients  # the refresh synced them
    (report,) = platform.rows("select * from campaign_performance")
    assert report["campaign"] == "spring" and report["status"] == "sent"
    assert report["recipients_sent"] == report["messages"] == recipients
    assert report["pending"] == recipients  # the sandbox clock has not moved yet

    # The same file again: everything is already reached, nothing is sent.
    posts = platform.posts.count
    again = send_job(platform.campaign_file())
    assert again.success and platform.posts.count == posts
    assert (
        materialized(again)["campaign_plan"]["excluded_by_reason"].value["already_reached"]
        == recipients
    )


def test_a_tripped_guard_blocks_the_send_until_overridden(platform: Platform) -> None:
    path = platform.campaign_file(guards={"max_recipients": 3, "max_excluded_share": 0.9})
    stopped = send_job(path)
    assert "campaign_results" not in materialized(stopped)
    failed = {e.check_name for e in stopped.get_asset_check_evaluations() if not e.passed}
    assert failed == {"max_recipients"}
    assert platform.posts.count == 0

    allowed = send_job(
        path, {"override_guards": ["max_recipients"], "override_reason": "ticket 42"}
    )
    assert allowed.success and platform.posts.count > 0
    (row,) = platform.rows("select override_reason, status from campaigns")
    assert row == {"override_reason": "ticket 42", "status": "sent"}


def test_a_malformed_file_fails_the_run_naming_file_and_field(platform: Platform) -> None:
    path = platform.campaign_file(category="Orders")
    result = send_job(path)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert str(path) in message and "category: String should match pattern" in message
    assert platform.posts.count == 0


def test_a_cancelled_campaign_sends_nothing(platform: Platform) -> None:
    path = platform.campaign_file()
    defs = load_definitions()
    cancel = defs.resolve_job_def("cancel_campaign").execute_in_process(
        run_config={
            "ops": {"cancel_campaign_op": {"config": {"campaign": str(path), "reason": "oops"}}}
        },
        instance=DagsterInstance.ephemeral(),
    )
    assert cancel.success
    result = send_job(path)
    assert result.success
    assert materialized(result)["campaign_results"]["cancelled"].value is True
    assert platform.posts.count == 0
    (row,) = platform.rows("select status, cancel_reason from campaign_performance")
    assert row == {"status": "cancelled", "cancel_reason": "oops"}


def test_the_sensor_previews_early_and_sends_each_content_once(platform: Platform) -> None:
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    platform.campaign_file("later.yaml", name="later", send_at=later)
    now_file = platform.campaign_file("now.yaml", name="now")
    defs = load_definitions()
    sensor = defs.get_sensor_def("campaign_sensor")
    instance = DagsterInstance.ephemeral()

    def requests() -> list[Any]:
        context = build_sensor_context(instance=instance, definitions=defs)
        return list(sensor.evaluate_tick(context).run_requests or [])

    first = {r.tags["campaign_file"]: r for r in requests()}
    assert first["later.yaml"].run_key.startswith("preview:later.yaml:")
    preview_ops = first["later.yaml"].run_config["ops"]
    assert preview_ops["campaign_results"]["config"]["dry_run"] is True
    assert first["now.yaml"].run_key.startswith("send:now.yaml:")
    assert {r.run_key for r in requests()} == {r.run_key for r in first.values()}
    now_file.write_text(now_file.read_text() + "description: changed\n")
    changed = {r.tags["campaign_file"]: r.run_key for r in requests()}
    assert changed["now.yaml"] != first["now.yaml"].run_key
