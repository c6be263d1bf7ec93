"""Killing a campaign send at each point where a kill matters, then letting one run finish.

Each round runs in a child process what the ``send_campaign`` job does — plan, judge the
guards, send — against a sandbox on loopback (with latency) and an empty PostgreSQL database.
The parent kills it with SIGKILL at the round's point: after a number of progress events (the
child reports each claim and each recorded outcome), or the moment the sandbox receives the
round's Nth create, when the creates before it were carried out but not yet recorded. Seven
fixed points cover planning, claims, lookups, resends and recorded groups; three more are
drawn at random. In the sandbox's truth every audience contact must end with exactly one
message, every batch must be one ledger chunk, some chunk must have been found by lookup
rather than sent again, and no create may ever have been sent for a chunk an earlier attempt
had created.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml
from conftest import make_sandbox, run_script
from kill_support import (
    Recorder,
    kill_points,
    kill_rounds,
    ledger_rows,
    reporting_progress,
    served,
)

from connector.marketplace.client import MarketplaceClient
from connector.pipelines.sync import sync_categories, sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

BATCHES = "/public/v1/notifications/batches"
# Where the rounds are killed, in an order that makes each of these happen (the send groups
# its chunks by 4 and, at concurrency 1, creates them one after the other; a write the kill
# cuts off is answered 499 and not carried out). Then a few more at random.
FIXED_KILLS = (
    ("events", 0),  # while planning: nothing claimed yet
    ("write", 2),  # the first create carried out, its outcome not recorded: found by lookup
    ("events", 1),  # right after claiming those chunks again: their lookups in flight
    ("write", 1),  # at the first send after the lookups: a resend in flight
    ("events", 2),  # right after a group's outcomes were recorded
    ("write", 4),  # three creates of a fresh group carried out, unrecorded
    ("events", 3),  # right after the next group's claim, the one before it recorded
)
RANDOM_KILLS = 3
RECIPIENTS = 150
PER_BATCH = 3
SUBJECT = "Kill test"

# The child: plan, guards, send — as the job does (the parent synced contacts first).
SEND = reporting_progress(
    "connector.pipelines.campaigns",
    """
import asyncio, sys
from connector.campaigns import load_campaign
from connector.campaigns import plan as campaign_plan
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import campaigns
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse

url, warehouse_url, path, run_id = sys.argv[1:5]


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
""",
)


def random_kills(rng: random.Random) -> list[tuple[str, int]]:
    return [
        ("events", rng.randint(0, 3)) if rng.random() < 0.5 else ("write", rng.randint(1, 4))
        for _ in range(RANDOM_KILLS)
    ]


def test_killing_a_send_repeatedly_sends_each_chunk_exactly_once(
    postgres_url: str, tmp_path: Path
) -> None:
    warehouse_url = postgres_url
    rng = random.Random(20261130)
    # Sandbox time runs with the wall clock: the lookup window is measured from the claims.
    sandbox: Sandbox = make_sandbox(contacts=300, seed=13, start=datetime.now(UTC), latency_ms=10)
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
    asyncio.run(sync(url, warehouse))
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

    landed, finished = kill_rounds(
        lambda run_id: run_script(SEND, url, warehouse_url, str(path), run_id),
        kill_points(recorder, [*FIXED_KILLS, *random_kills(rng)]),
    )
    assert "SENT" in finished, finished
    assert len(landed) == len(FIXED_KILLS) + RANDOM_KILLS

    # The sandbox's truth: each contact of the audience got exactly one message.
    messages = [m for m in sandbox.truth("messages") if m["subject"] == SUBJECT]
    per_contact = Counter(m["contact"]["id"] for m in messages)
    assert set(per_contact) == expected
    assert set(per_contact.values()) == {1}

    # Each platform batch is exactly one ledger chunk, and every chunk is done.
    rows = ledger_rows(warehouse, "campaign_results")
    assert {r["state"] for r in rows} == {"done"}
    # A create a kill left unrecorded was found on the platform, not sent a second time.
    assert "lookup" in {r["resolved_by"] for r in rows}
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


async def sync(url: str, warehouse: Warehouse) -> None:
    settings = MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN))
    async with MarketplaceClient(settings) as client:
        await sync_contacts(client, warehouse, full_refresh=True)
        await sync_categories(client, warehouse)
