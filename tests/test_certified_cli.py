"""``notifsync campaign send | revert | reschedule`` for a certified campaign, as a user runs
them, against the sandbox on loopback and a DuckDB file: built once, reverted to Draft before
start, rescheduled, and a revert after start refused in one line and recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import make_sandbox

from assets.cli import main
from connector.settings import (
    SANDBOX_EVINOTICE_PASSWORD,
    SANDBOX_EVINOTICE_SITE_ID,
    SANDBOX_EVINOTICE_USERNAME,
)
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox
from sandbox.server import serve_in_thread

DESCRIPTION = "CLI notice"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, str], Path]]:
    sandbox = make_sandbox(contacts=20, seed=5, clock_speed=0.0, start=datetime.now(UTC))
    warehouse_url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql("create table people (email text, name text, ref text)")
        tx.connection.exec_driver_sql(
            "insert into people values ('a@example.com', 'Ann', 'R1'), "
            "('b@example.com', 'Bo', 'R2'), ('+44 20 7946 0000', 'Cy', 'R3'), "
            "('nobody', 'Di', 'R4')"
        )
    warehouse.dispose()
    with serve_in_thread(sandbox) as url:
        env = {
            "EVINOTICE_BASE_URL": url,
            "EVINOTICE_USERNAME": SANDBOX_EVINOTICE_USERNAME,
            "EVINOTICE_PASSWORD": SANDBOX_EVINOTICE_PASSWORD,
            "EVINOTICE_SITE_ID": SANDBOX_EVINOTICE_SITE_ID,
            "WAREHOUSE_URL": warehouse_url,
        }
        yield sandbox, env, tmp_path


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["campaign", *args], env=env)


def ours(sandbox: Sandbox) -> list[dict[str, object]]:
    return [
        b
        for b in sandbox.truth("evinotice-batches")
        if str(b["Description"]).startswith(DESCRIPTION)
    ]


def test_send_revert_reschedule_and_a_refused_revert(
    world: tuple[Sandbox, dict[str, str], Path],
) -> None:
    sandbox, env, folder = world
    send_at = sandbox.clock.now() + timedelta(hours=1)
    path = folder / "notice.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "cli-notice",
                "provider": "evinotice",
                "audience": "people",
                "description": DESCRIPTION,
                "subject": "Notice",
                "issuer_name": "Legal",
                "body": "Dear {{DisplayName}} ({{ref}})",
                "max_contacts_per_batch": 2,
                "send_at": send_at.isoformat(),
                "guards": {"max_excluded_share": 0.5},
            }
        )
    )
    result = cli(env, "send", str(path))
    assert result.exit_code == 0, result.output
    assert "excluded unusable_address" in result.output
    assert "Certified: 2 of 2 batches scheduled" in result.output
    assert {b["State"] for b in ours(sandbox)} == {"Scheduled"}
    again = cli(env, "send", str(path))
    assert again.exit_code == 0 and "3 recipients" not in again.output
    assert len(ours(sandbox)) == 2

    reverted = cli(env, "revert", "cli-notice")
    assert reverted.exit_code == 0, reverted.output
    assert {b["State"] for b in ours(sandbox)} == {"Draft"}
    refused_send = cli(env, "send", str(path))
    assert refused_send.exit_code == 1 and "was reverted to Draft" in refused_send.output

    naive = cli(env, "reschedule", "cli-notice", "--at", "2030-01-01T09:00")
    assert naive.exit_code == 1 and "has no time zone" in naive.output
    at = sandbox.clock.now() + timedelta(minutes=10)
    moved = cli(env, "reschedule", "cli-notice", "--at", at.isoformat())
    assert moved.exit_code == 0, moved.output
    assert {b["State"] for b in ours(sandbox)} == {"Scheduled"}

    sandbox.clock.advance(3600)  # past the new date: both batches started
    refused = cli(env, "revert", "cli-notice")
    assert refused.exit_code == 1
    assert "revert of cli-notice refused" in refused.output
    assert "can no longer go back to Draft" in refused.output
    assert "Traceback" not in refused.output and len(refused.output.splitlines()) == 1
    status = cli(env, "status", "cli-notice")
    assert status.exit_code == 0, status.output
    assert "evidence" in status.output and "'pending': 3" in status.output
    warehouse = Warehouse(env["WAREHOUSE_URL"])
    assert warehouse.query(
        "select distinct state, problem_title, http_status from campaign_results"
    ) == [("done", "Revert refused", 400)]
    warehouse.dispose()
