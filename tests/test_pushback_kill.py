"""Killing the push-back mid-flight and running it again, repeatedly (DuckDB and PostgreSQL).

The apply runs in a child process against a sandbox on loopback. Each round is killed with
SIGKILL the moment the sandbox receives the round's Nth write (so the kill lands with writes
in flight, at a point set by progress, not by a timer), several times, then one run finishes.
After every round the ledger must hold more settled actions than before; in the end every
intended contact is created exactly once, every intended block applied, the ledger all done,
and no write was ever sent twice for an action an earlier attempt had carried out.
"""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from pathlib import Path

from conftest import make_sandbox, run_script
from kill_support import AtWrite, Recorder, kill_rounds, ledger_rows, served

from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import reconcile
from connector.pipelines.sync import sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

CONTACTS = "/public/v1/notifications/contacts"
CREATES = 45
BLOCKS = 25
KILLS = 7
WRITES_PER_ROUND = 8

# The child: one apply (then the refresh of what it touched), as the pushback asset does it.
APPLY = """
import asyncio, sys
from connector.pipelines import pushback
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.pipelines.sync import refresh_contacts
from connector.warehouse.engine import Warehouse

url, warehouse_url, run_id = sys.argv[1:4]

async def main():
    warehouse = Warehouse(warehouse_url)
    settings = MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN))
    limits = ClientLimits(timeout=10, max_concurrency=4, backoff_base=0.01, backoff_max=0.1)
    async with MarketplaceClient(settings, limits=limits) as client:
        print("START", flush=True)
        summary = await pushback.apply_plan(client, warehouse, run_id=run_id)
        await refresh_contacts(client, warehouse, summary.touched_contacts)
    print("APPLIED", dict(summary.outcomes), summary.skipped, flush=True)

asyncio.run(main())
"""


def test_killing_the_apply_repeatedly_creates_and_blocks_each_contact_exactly_once(
    warehouse_url: str, tmp_path: Path
) -> None:
    sandbox: Sandbox = make_sandbox(contacts=120, seed=11, clock_speed=0.0, latency_ms=10)
    recorder = Recorder(sandbox.app)
    # The child opens the warehouse itself: a DuckDB file admits one process at a time, so
    # this process connects only between rounds (NullPool: nothing held open).
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    try:
        with served(recorder) as url:
            run_kill_rounds(sandbox, recorder, warehouse, warehouse_url, url, tmp_path)
    finally:
        warehouse.dispose()


def run_kill_rounds(
    sandbox: Sandbox,
    recorder: Recorder,
    warehouse: Warehouse,
    warehouse_url: str,
    url: str,
    tmp_path: Path,
) -> None:
    async def sync() -> None:
        settings = MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN))
        async with MarketplaceClient(settings, limits=ClientLimits(timeout=10)) as client:
            await sync_contacts(client, warehouse, full_refresh=True)

    asyncio.run(sync())
    actives = [c for c in sandbox.truth("contacts") if c["status"] == "Active"]
    to_block = actives[:BLOCKS]
    to_create = [f"new.{n}@kill.example.org" for n in range(CREATES)]
    export = tmp_path / "crm.csv"
    with export.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email", "Name", "Do Not Email"])
        for n, email in enumerate(to_create):
            writer.writerow([email, f"New {n}", "false"])
        for contact in to_block:
            writer.writerow([contact["email"], contact["name"], "true"])
        for contact in actives[BLOCKS:]:
            writer.writerow([contact["email"], contact["name"], "false"])
    load = reconcile.load_exports(warehouse, [export], "generic", run_id="kill")
    plan = reconcile.make_plan(warehouse, run_id="kill", export_key=load.export_key)
    assert plan.actions == {"create": CREATES, "block": BLOCKS, "unblock": 0, "update": 0}
    recorder.requests.clear()

    left_sending = 0
    settled_after_round = [0]

    def check_progress(round_: int) -> None:
        nonlocal left_sending
        states = Counter(r["state"] for r in ledger_rows(warehouse, "pushback_results"))
        left_sending += states["sending"]
        settled = states["done"] + states["rejected"]
        # Progress is recorded as it happens: each round settles more actions.
        assert settled > settled_after_round[-1], (round_, states)
        settled_after_round.append(settled)

    # Each round is killed as its Nth write reaches the sandbox: writes are in flight.
    landed, finished = kill_rounds(
        lambda run_id: run_script(APPLY, url, warehouse_url, run_id),
        [AtWrite(recorder, WRITES_PER_ROUND)] * KILLS,
        after_kill=check_progress,
    )
    assert "APPLIED" in finished
    assert len(landed) == KILLS
    assert left_sending > 0

    # Every intended contact exists exactly once and every intended block is in place.
    truth = list(sandbox.truth("contacts"))
    per_email = Counter(c["email"].casefold() for c in truth)
    assert {e: per_email[e] for e in to_create} == dict.fromkeys(to_create, 1)
    assert len(truth) == 120 + CREATES
    by_id = {c["id"]: c for c in truth}
    assert {by_id[c["id"]]["status"] for c in to_block} == {"Blocked"}

    # The ledger: every action done, each create pointing at the contact it made.
    rows = ledger_rows(warehouse, "pushback_results")
    assert len(rows) == CREATES + BLOCKS
    assert Counter(r["state"] for r in rows) == {"done": CREATES + BLOCKS}
    ids_by_email = {c["email"]: c["id"] for c in truth}
    for row in rows:
        if row["action"] == "create":
            assert row["contact_id"] == ids_by_email[row["email"]], row["email"]
    assert {r["contact_id"] for r in rows if r["action"] == "block"} == {c["id"] for c in to_block}
    # No create was ever sent for an email an earlier attempt had created: the sandbox
    # answered every POST /contacts with 201 (a 409 would mean a blind resend).
    creates = Counter(
        status for method, path, status in recorder.requests if (method, path) == ("POST", CONTACTS)
    )
    assert creates[409] == 0
    assert creates[201] == CREATES
    # Nothing was carried out twice: one create per email, one block per contact, however
    # often the apply was killed with writes in flight. (A write the kill cut off before the
    # sandbox had read it, answered 499 or not at all, was never carried out.)
    posts = Counter(
        p for m, p, status in recorder.requests if m == "POST" and status not in (0, 499)
    )
    assert posts[CONTACTS] == CREATES
    blocks = {p: n for p, n in posts.items() if p.endswith("/block")}
    assert blocks == {f"{CONTACTS}/{c['id']}/block": 1 for c in to_block}
