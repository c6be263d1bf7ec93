"""Killing a certified campaign's build at random points, 20 times, then letting one run
finish.

Each round runs in a child process what the ``send_campaign`` job does for a certified
campaign — plan, judge the guards, build and schedule — against the sandbox on loopback and
a fresh PostgreSQL database. The parent reads the child's progress (each claim and each step
recorded) and sends SIGKILL after a random number of events. In the sandbox's truth there
must be exactly one batch per ledger chunk, each audience row exactly once among its
recipients, and one schedule request per batch.
"""

from __future__ import annotations

import random
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import fresh_postgres_database, make_sandbox, run_script
from test_pushback_kill import Recorder, served

from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

PROJECT = Path(__file__).resolve().parent.parent
BATCHES = "/v2/EviNotice/Batches"
KILLS = 20
RECIPIENTS = 2400
PER_BATCH = 300
DESCRIPTION = "Kill notice"

BUILD = """
import asyncio, logging, sys
from connector.campaigns import load_campaign
from connector.campaigns import plan as campaign_plan
from connector.evinotice.client import EviNoticeClient
from connector.http import ClientLimits
from connector.pipelines import certified_campaigns
from connector.settings import (
    SANDBOX_EVINOTICE_PASSWORD, SANDBOX_EVINOTICE_SITE_ID, SANDBOX_EVINOTICE_USERNAME,
    EviNoticeSettings, Secret,
)
from connector.warehouse.engine import Warehouse

url, warehouse_url, path, run_id = sys.argv[1:5]


class Progress(logging.Handler):
    def emit(self, record):
        print("EVENT", record.getMessage(), flush=True)


logger = logging.getLogger("connector.pipelines.certified_campaigns")
logger.setLevel(logging.DEBUG)
logger.addHandler(Progress())


async def main():
    warehouse = Warehouse(warehouse_url)
    campaign = load_campaign(path)
    settings = EviNoticeSettings(
        base_url=url, username=SANDBOX_EVINOTICE_USERNAME,
        password=Secret(SANDBOX_EVINOTICE_PASSWORD), site_id=SANDBOX_EVINOTICE_SITE_ID,
    )
    limits = ClientLimits(timeout=10, max_concurrency=4, backoff_base=0.01, backoff_max=0.1)
    async with EviNoticeClient(settings, limits=limits) as client:
        print("START", flush=True)
        plan = campaign_plan.make_plan(warehouse, campaign, source=path, run_id=run_id)
        guards = campaign_plan.evaluate_guards(plan, campaign)
        campaign_plan.record_plan(
            warehouse, campaign, plan, guards, source=path, run_id=run_id, override_reason=None
        )
        summary = await certified_campaigns.build_certified_campaign(
            client, warehouse, campaign, run_id=run_id
        )
    print("BUILT", summary.done, summary.batches, summary.stopped, flush=True)

asyncio.run(main())
"""


@pytest.fixture
def warehouse_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def run_build(url: str, warehouse_url: str, path: Path, run_id: str) -> subprocess.Popen[str]:
    return run_script(BUILD, url, warehouse_url, str(path), run_id)


def test_killing_a_build_repeatedly_makes_each_batch_once(
    warehouse_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261130)
    start = datetime.now(UTC)
    sandbox: Sandbox = make_sandbox(contacts=50, seed=17, start=start, latency_ms=5)
    recorder = Recorder(sandbox.app)
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    addresses = [f"person{n}@example.com" for n in range(RECIPIENTS)]
    with warehouse.transaction() as tx:
        # The user's own audience table (user SQL, so plain text here).
        tx.connection.exec_driver_sql("create table people (email text, name text, ref text)")
        tx.connection.exec_driver_sql(
            "insert into people select 'person' || n || '@example.com', 'Person ' || n, "
            f"'R-' || n from generate_series(0, {RECIPIENTS - 1}) as n"
        )
    send_at = (start + timedelta(days=1)).replace(microsecond=0)
    path = tmp_path / "kill.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "certified-kill",
                "provider": "evinotice",
                "audience": "people",
                "description": DESCRIPTION,
                "subject": "Certified, once",
                "issuer_name": "Legal",
                "body": "Dear {{DisplayName}}, reference {{ref}}.",
                "max_contacts_per_batch": PER_BATCH,
                "send_at": send_at.isoformat(),
            }
        )
    )
    try:
        with served(recorder) as url:
            kills = run_rounds(rng, url, warehouse_url, path)
    finally:
        warehouse.dispose()
    assert kills == KILLS

    ours = [
        b for b in sandbox.evinotice.snapshot() if str(b["Description"]).startswith(DESCRIPTION)
    ]
    rows = Warehouse(warehouse_url).query("select batch_key, batch_id, state from campaign_results")
    assert {state for _, _, state in rows} == {"done"}
    assert len(rows) == -(-RECIPIENTS // PER_BATCH)
    # Exactly one batch per ledger chunk, found by its key.
    assert sorted(str(b["Description"]) for b in ours) == sorted(
        f"{DESCRIPTION} [{key}]" for key, _, _ in rows
    )
    assert {str(b["Id"]) for b in ours} == {batch_id for _, batch_id, _ in rows}
    # Each audience row exactly once among the recipients.
    seen = Counter(r["Address"] for b in ours for r in sandbox.evinotice.recipients(str(b["Id"])))
    assert set(seen) == set(addresses) and set(seen.values()) == {1}
    # Scheduled once, at send_at.
    assert {b["State"] for b in ours} == {"Scheduled"}
    assert {str(b["ScheduledFor"])[:19] for b in ours} == {send_at.strftime("%Y-%m-%dT%H:%M:%S")}
    patches = Counter(p for method, p, status in recorder.requests if method == "PATCH")
    assert patches == Counter({f"{BATCHES}/{b['Id']}": 1 for b in ours})
    creates = Counter(s for m, p, s in recorder.requests if (m, p) == ("POST", BATCHES))
    assert creates[200] == len(ours)


def run_rounds(rng: random.Random, url: str, warehouse_url: str, path: Path) -> int:
    kills = 0
    for round_ in range(KILLS + 1):
        child = run_build(url, warehouse_url, path, f"kill-{round_}")
        assert child.stdout is not None
        first = child.stdout.readline()
        if first.strip() != "START":
            child.kill()
            raise AssertionError(f"the build did not start: {first!r} {child.stderr.read()}")  # type: ignore[union-attr]
        line = "EVENT"
        if round_ < KILLS:
            for _ in range(rng.randint(0, 4)):
                line = child.stdout.readline()
                if not line.startswith("EVENT"):
                    break
            if child.poll() is None and line.startswith("EVENT"):
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                kills += 1
                continue
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        finished = line + out
        batches = -(-RECIPIENTS // PER_BATCH)
        assert f"BUILT {batches} {batches} {{}}" in finished, finished
        return kills
    raise AssertionError("no round finished")
