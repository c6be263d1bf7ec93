"""Killing a certified campaign's build at each point where a kill matters, then letting one
run finish.

Each round runs in a child process what the ``send_campaign`` job does for a certified
campaign — plan, judge the guards, build and schedule — against the sandbox on loopback and
an empty PostgreSQL database. The parent kills it with SIGKILL at the round's point: after a
number of progress events (each claim and each step recorded), or once the service has
carried out the round's Nth write but before the child hears the answer. Nine fixed points
cover planning, the claim, and each kind of write whose answer is lost (create, body,
recipients, schedule); three more are drawn at random. In the sandbox's truth there must be
exactly one batch per ledger chunk, each audience row exactly once among its recipients, and
one schedule request per batch.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from conftest import make_sandbox, run_script
from kill_support import (
    Recorder,
    kill_points,
    kill_rounds,
    reporting_progress,
    served,
)

from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

BATCHES = "/v2/EviNotice/Batches"
# Where the rounds are killed, in an order that makes each of these happen. Batches are built
# one after the other; each makes four writes (create, body, recipients, schedule) and reports
# each step it records. A "write" kill lands once the service has carried the round's Nth write
# out, before the child hears the answer.
FIXED_KILLS = (
    ("events", 0),  # while planning: nothing claimed yet
    ("events", 1),  # right after every chunk was claimed, before any create
    ("write", 1),  # a create carried out, unrecorded: found by its Description next time
    ("write", 2),  # (after the lookup and the body) recipients added, unrecorded: counted next time
    ("write", 2),  # (after the schedule) the next batch's create carried out, unrecorded
    ("write", 3),  # (after the lookup, body, recipients) a schedule carried out, unrecorded
    ("events", 2),  # right after a create was recorded, before its body
    ("write", 1),  # a body carried out, unrecorded: set again next time
    ("events", 4),  # between later steps
)
RANDOM_KILLS = 3
RECIPIENTS = 2400
PER_BATCH = 300
DESCRIPTION = "Kill notice"

BUILD = reporting_progress(
    "connector.pipelines.certified_campaigns",
    """
import asyncio, sys
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
""",
)


def test_killing_a_build_repeatedly_makes_each_batch_once(
    postgres_url: str, tmp_path: Path
) -> None:
    warehouse_url = postgres_url
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
            landed, finished = kill_rounds(
                lambda run_id: run_script(BUILD, url, warehouse_url, str(path), run_id),
                kill_points(
                    recorder,
                    [*FIXED_KILLS, *(("events", rng.randint(0, 4)) for _ in range(RANDOM_KILLS))],
                    answered=True,
                ),
            )
    finally:
        warehouse.dispose()
    assert len(landed) == len(FIXED_KILLS) + RANDOM_KILLS
    batches = -(-RECIPIENTS // PER_BATCH)
    assert f"BUILT {batches} {batches} {{}}" in finished, finished

    ours = [
        b for b in sandbox.evinotice.snapshot() if str(b["Description"]).startswith(DESCRIPTION)
    ]
    rows = Warehouse(warehouse_url).query("select batch_key, batch_id, state from campaign_results")
    assert {state for _, _, state in rows} == {"done"}
    # A create a kill left unrecorded was found by its Description, not sent a second time.
    resolved = Warehouse(warehouse_url).query("select resolved_by from campaign_results")
    assert ("lookup",) in resolved
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
