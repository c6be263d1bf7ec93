"""``notifsync campaign plan | send | status | cancel`` as a user runs them, against a sandbox
on loopback and a DuckDB file: counts by reason, one-line errors, sends once, cancels."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import make_sandbox

from assets.cli import main
from connector.marketplace.client import MarketplaceClient
from connector.pipelines.sync import sync_categories, sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox
from sandbox.server import serve_in_thread


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str], Path]]:
    sandbox = make_sandbox(contacts=60, seed=9, clock_speed=0.0, start=datetime.now(UTC))
    warehouse_url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    with serve_in_thread(sandbox) as url:

        async def sync() -> None:
            warehouse = Warehouse(warehouse_url)
            warehouse.ensure_tables()
            async with MarketplaceClient(MarketplaceSettings(url, Secret(SANDBOX_TOKEN))) as c:
                await sync_contacts(c, warehouse, full_refresh=True)
                await sync_categories(c, warehouse)
            warehouse.dispose()

        asyncio.run(sync())
        env = {
            "MPT_API_BASE_URL": url,
            "MPT_API_TOKEN": SANDBOX_TOKEN,
            "WAREHOUSE_URL": warehouse_url,
        }
        yield sandbox, env, tmp_path


def campaign_file(folder: Path, **fields: object) -> Path:
    data = {
        "name": "cli-test",
        "audience": "select id as contact_id from contacts order by id limit 30",
        "category": "NTC-0000-0004",
        "subject": "From the command line",
        "body": "Hello",
        "max_contacts_per_batch": 10,
        "guards": {"max_excluded_share": 0.9},
        **fields,
    }
    path = folder / "cli.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["campaign", *args], env=env)


def sent(sandbox: Sandbox) -> int:
    return sum(m["subject"] == "From the command line" for m in sandbox.truth("messages"))


def test_plan_send_status(world: tuple[Sandbox, dict[str, str], Path]) -> None:
    sandbox, env, folder = world
    path = campaign_file(folder)
    planned = cli(env, "plan", str(path))
    assert planned.exit_code == 0, planned.output
    assert "Campaign cli-test: 30 audience rows" in planned.output
    assert "excluded blocked_contact" in planned.output
    assert "guard max_recipients" in planned.output and "Status: dry_run" in planned.output
    assert sent(sandbox) == 0

    result = cli(env, "send", str(path))
    assert result.exit_code == 0, result.output
    recipients = sent(sandbox)
    assert recipients > 0 and f"{recipients} recipients" in result.output

    again = cli(env, "send", str(path))
    assert again.exit_code == 0 and "nothing new" in again.output
    assert sent(sandbox) == recipients

    status = cli(env, "status", "cli-test")
    assert status.exit_code == 0
    assert "status              sent" in status.output
    assert f"'done': {-(-recipients // 10)}" in status.output


def test_errors_are_one_line_and_nothing_is_sent(
    world: tuple[Sandbox, dict[str, str], Path],
) -> None:
    sandbox, env, folder = world
    bad = cli(env, "send", str(campaign_file(folder, category="Security")))
    assert bad.exit_code == 1
    assert f"Error: {folder / 'cli.yaml'}: category: String should match pattern" in bad.output
    assert "Traceback" not in bad.output
    broken = cli(
        env, "plan", str(campaign_file(folder, audience="select id as contact_id\nfrom nowhere"))
    )
    assert broken.exit_code == 1 and "(line 2 of the audience: from nowhere)" in broken.output
    stopped = cli(env, "send", str(campaign_file(folder, guards={"max_recipients": 2})))
    assert stopped.exit_code == 1 and "a guard stopped the plan" in stopped.output
    assert sent(sandbox) == 0


def test_cancel_before_send_at(world: tuple[Sandbox, dict[str, str], Path]) -> None:
    sandbox, env, folder = world
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    path = campaign_file(folder, send_at=later)
    assert cli(env, "plan", str(path)).exit_code == 0
    early = cli(env, "send", str(path))
    assert early.exit_code == 1 and "is not due until" in early.output
    cancelled = cli(env, "cancel", "cli-test", "--reason", "postponed")
    assert cancelled.exit_code == 0 and "Cancelled cli-test" in cancelled.output
    status = cli(env, "status", "cli-test")
    assert "cancelled" in status.output and "postponed" in status.output
    assert sent(sandbox) == 0
