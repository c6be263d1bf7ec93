"""Killing a campaign send at random points, 20 times, then letting one run finish.

Each round runs in a child process what the ``send_campaign`` job does — plan, judge the
guards, send — against a sandbox on loopback (with latency) and a fresh PostgreSQL database.
The parent reads the child's progress (it reports each claim and each recorded outcome) and
sends SIGKILL after a random number of events: sometimes right after a claim was committed,
with creates in flight. In the sandbox's truth every audience contact must end with exactly
one message, every batch must be one ledger chunk, and no create may ever have been sent for
a chunk an earlier attempt had created.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import fresh_postgres_database, make_sandbox, run_script
from test_pushback_kill import Recorder, served

from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

PROJECT = Path(__file__).resolve().parent.parent
BATCHES = "/public/v1/notifications/batches"
KILLS = 20
RECIPIENTS = 150
PER_BATCH = 3
SUBJECT = "Kill test"

# The child: sync contacts and categories, plan, guards, send — as the job does.
SEND = """
import asyncio, logging, sys
from connector.campaigns import load_campaign
from connector.campaigns import plan as campaign_plan
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import campaigns
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse

url, warehouse_url, path, run_id = sys.argv[1:5]


class Progress(logging.Handler):
    def emit(self, record):
        print("EVENT", record.getMessage(), flush=True)


logger = logging.getLogger("connector.pipelines.campaigns")
logger.setLevel(logging.DEBUG)
logger.addHandler(Progress())


async def main():
    warehouse = Warehouse(warehouse_url)
    campaign = load_campaign(path)
    settings = MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN))
    limits = ClientLimits(timeout=10, max_concurrency=4, backoff_base=0.01, backoff_max=0.1)
    async with MarketplaceClient(settings, limits=limits) as client:
        print("START", flush=True)
        plan = campaign_plan.make_plan(warehouse, campaign, source=path, run_id=run_id)
        guards = campaign_plan.evaluate_guards(plan, campaign)
        campaign_plan.record_plan(
            warehouse, campaign, plan, guards, source=path, run_id=run_id, override_reason=None
        )
        summary = await campaigns.send_campaign(
            client, warehouse, campaign, run_id=run_id, concurrency=1
        )
    print("SENT", dict(summary.outcomes), summary.found_by_lookup, flush=True)

asyncio.run(main())
"""


@pytest.fixture
def warehouse_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def run_send(url: str, warehouse_url: str, path: Path, run_id: str) -> subprocess.Popen[str]:
    return run_script(SEND, url, warehouse_url, str(path), run_id)


def ledger(warehouse: Warehouse) -> list[dict[str, Any]]:
    with warehouse.transaction() as tx:
        result = tx.connection.exec_driver_sql("select * from campaign_results")
        return [dict(r) for r in result.mappings()]


def test_killing_a_send_repeatedly_sends_each_chunk_exactly_once(
    warehouse_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261130)
    # Sandbox time runs with the wall clock: the lookup window is measured from the claims.
    sandbox: Sandbox = make_sandbox(contacts=300, seed=13, start=datetime.now(UTC), latency_ms=40)
    recorder = Recorder(sandbox.app)
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    try:
        with served(recorder) as url:
            run_rounds(rng, sandbox, recorder, warehouse, warehouse_url, url, tmp_path)
    finally:
        warehouse.dispose()


def run_rounds(
    rng: random.Random,
    sandbox: Sandbox,
    recorder: Recorder,
    warehouse: Warehouse,
    warehouse_url: str,
    url: str,
    tmp_path: Path,
) -> None:
    sync = run_sync(url, warehouse_url)
    assert sync.returncode == 0, sync.stderr
    audience = [c["id"] for c in sandbox.truth("contacts") if c["status"] == "Active"][:RECIPIENTS]
    path = tmp_path / "kill.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "kill-test",
                "audience": "select id as contact_id from contacts where id in ("
                + ", ".join(f"'{i}'" for i in audience)
                + ")",
                "category": "NTC-0000-0005",
                "subject": SUBJECT,
                "body": "Sent once, whatever happens.",
                "max_contacts_per_batch": PER_BATCH,
                "exclusions": {"frequency_cap_days": 0},
            }
        )
    )
    opted_out = {
        c["id"]
        for c in sandbox.truth("contacts")
        if any(o["id"] == "NTC-0000-0005" for o in c.get("optOuts") or [])
    }
    expected = set(audience) - opted_out

    kills = 0
    killed_with_claims = 0
    finished = None
    for round_ in range(KILLS + 1):
        child = run_send(url, warehouse_url, path, f"kill-{round_}")
        assert child.stdout is not None
        first = child.stdout.readline()
        if first.strip() != "START":
            child.kill()
            raise AssertionError(f"the send did not start: {first!r} {child.stderr.read()}")  # type: ignore[union-attr]
        line = ""
        if round_ < KILLS:
            # Kill after a random number of progress events (0: while planning).
            events = rng.randint(0, 3)
            line = "EVENT"
            for _ in range(events):
                line = child.stdout.readline()
                if not line.startswith("EVENT"):
                    break
            if child.poll() is None and line.startswith("EVENT"):
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                kills += 1
                killed_with_claims += "claimed" in line
                continue
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        finished = line + out  # a round that finished before its kill read SENT already
        break
    assert finished is not None and "SENT" in finished, finished
    assert kills == KILLS
    assert killed_with_claims > 0  # some kills came right after a claim, creates in flight

    # The sandbox's truth: each contact of the audience got exactly one message.
    messages = [m for m in sandbox.truth("messages") if m["subject"] == SUBJECT]
    per_contact = Counter(m["contact"]["id"] for m in messages)
    assert set(per_contact) == expected
    assert set(per_contact.values()) == {1}

    # Each platform batch is exactly one ledger chunk, and every chunk is done.
    rows = ledger(warehouse)
    assert {r["state"] for r in rows} == {"done"}
    by_batch: dict[str, set[str]] = {}
    for message in messages:
        by_batch.setdefault(message["batch"]["id"], set()).add(message["contact"]["id"])
    assert {r["batch_id"] for r in rows} == set(by_batch)
    recipients = warehouse.query(
        "select r.batch_id, b.contact_id from campaign_results as r "
        "join campaign_batch_recipients as b on b.batch_key = r.batch_key"
    )
    chunks: dict[str, set[str]] = {}
    for batch_id, contact_id in recipients:
        chunks.setdefault(batch_id, set()).add(contact_id)
    assert chunks == by_batch
    assert len(rows) == -(-len(expected) // PER_BATCH)

    # No blind resend: every create the sandbox accepted is one of those batches.
    created = Counter(
        status
        for method, path_, status in recorder.requests
        if (method, path_) == ("POST", BATCHES)
    )
    assert created[201] == len(by_batch)


SYNC = """
import asyncio, sys
from connector.marketplace.client import MarketplaceClient
from connector.pipelines.sync import sync_categories, sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse

url, warehouse_url = sys.argv[1:3]

async def main():
    warehouse = Warehouse(warehouse_url)
    settings = MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN))
    async with MarketplaceClient(settings) as client:
        await sync_contacts(client, warehouse, full_refresh=True)
        await sync_categories(client, warehouse)

asyncio.run(main())
"""


def run_sync(url: str, warehouse_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SYNC, url, warehouse_url],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
