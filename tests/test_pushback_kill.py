"""Killing the push-back at random points and running it again, repeatedly.

The apply runs in a child process against a sandbox on loopback (with some latency, so it
takes a while) and a fresh PostgreSQL database; the test kills it with SIGKILL after a random
delay (seeded), several times, then lets one run finish. The sandbox must end with every
intended contact created exactly once and every intended block applied, and the ledger all
done — and no create may ever have been sent for a contact an earlier attempt created.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import random
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fresh_postgres_database, make_sandbox

from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import reconcile
from connector.pipelines.sync import sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox
from sandbox.server import serve_in_thread

PROJECT = Path(__file__).resolve().parent.parent
CONTACTS = "/public/v1/notifications/contacts"
CREATES = 45
BLOCKS = 25
KILLS = 7

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
        summary = await pushback.apply_plan(client, warehouse, run_id=run_id, batch_size=5)
        await refresh_contacts(client, warehouse, summary.touched_contacts)
    print("APPLIED", dict(summary.outcomes), summary.skipped, flush=True)

asyncio.run(main())
"""


class Recorder:
    """ASGI app in front of the sandbox that records each API request and its status."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            self.requests.append((scope["method"], scope["path"], status[0] if status else 0))


@contextlib.contextmanager
def served(recorder: Recorder) -> Iterator[str]:
    # serve_in_thread only needs an object with the ASGI app to serve.
    with serve_in_thread(types.SimpleNamespace(app=recorder)) as url:  # type: ignore[arg-type]
        yield url


def ledger(warehouse: Warehouse) -> list[dict[str, Any]]:
    with warehouse.transaction() as tx:
        result = tx.connection.exec_driver_sql("select * from pushback_results")
        return [dict(r) for r in result.mappings()]


def run_apply(url: str, warehouse_url: str, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPLY, url, warehouse_url, run_id],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_start(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    first = child.stdout.readline()
    if first.strip() != "START":
        child.kill()
        raise AssertionError(f"the apply did not start: {first!r} {child.stderr.read()}")  # type: ignore[union-attr]


@pytest.fixture
def warehouse_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


def test_killing_the_apply_repeatedly_creates_and_blocks_each_contact_exactly_once(
    warehouse_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261118)
    sandbox: Sandbox = make_sandbox(contacts=120, seed=11, clock_speed=0.0, latency_ms=60)
    recorder = Recorder(sandbox.app)
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    try:
        with served(recorder) as url:
            run_kill_rounds(rng, sandbox, recorder, warehouse, warehouse_url, url, tmp_path)
    finally:
        warehouse.dispose()


def run_kill_rounds(
    rng: random.Random,
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

    kills = 0
    left_sending = 0
    finished = None
    for round_ in range(KILLS + 1):
        child = run_apply(url, warehouse_url, f"kill-{round_}")
        wait_for_start(child)
        if round_ < KILLS:
            time.sleep(rng.uniform(0.1, 0.8))
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                kills += 1
                states = Counter(r["state"] for r in ledger(warehouse))
                left_sending += states["sending"]
                continue
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        finished = out
        break
    assert finished is not None and "APPLIED" in finished
    # The kills really interrupted the apply, some of them with actions in flight.
    assert kills >= 3
    assert left_sending > 0

    # Every intended contact exists exactly once and every intended block is in place.
    truth = list(sandbox.truth("contacts"))
    per_email = Counter(c["email"].casefold() for c in truth)
    assert {e: per_email[e] for e in to_create} == dict.fromkeys(to_create, 1)
    assert len(truth) == 120 + CREATES
    by_id = {c["id"]: c for c in truth}
    assert {by_id[c["id"]]["status"] for c in to_block} == {"Blocked"}

    # The ledger: every action done, each create pointing at the contact it made.
    rows = ledger(warehouse)
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
