"""Absent audit events: the platform leaves out an event that has not happened (a contact never
updated has no ``audit.updated``), and the incremental contacts sync still sees new contacts
without a full read. Against the sandbox, on DuckDB and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import fresh_postgres_database, make_sandbox

from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import sync
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Warehouse]:
    """An empty warehouse with its tables: a DuckDB file or a fresh PostgreSQL database."""
    duckdb = contextlib.nullcontext(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    with fresh_postgres_database() if request.param == "postgresql" else duckdb as url:
        opened = Warehouse(url)
        opened.ensure_tables()
        try:
            yield opened
        finally:
            opened.dispose()


def client(sandbox: Sandbox) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(backoff_base=0.001, backoff_max=0.01),
        transport=httpx.ASGITransport(app=sandbox.app),
    )


def sync_contacts(sandbox: Sandbox, warehouse: Warehouse) -> sync.SyncResult:
    async def go() -> sync.SyncResult:
        async with client(sandbox) as marketplace:
            return await sync.sync_contacts(marketplace, warehouse)

    return asyncio.run(go())


def test_never_updated_records_have_no_updated_event_at_all() -> None:
    sandbox = make_sandbox(contacts=300, seed=3, clock_speed=0.0)
    contacts = list(sandbox.truth("contacts"))
    never = [c for c in contacts if "updated" not in c["audit"]]
    assert never and len(never) < len(contacts)
    assert all(set(c["audit"]) == {"created"} for c in never)
    for resource in ("categories", "batches", "messages"):
        records = list(sandbox.truth(resource))
        assert all("updated" not in r["audit"] for r in records), resource
    created = sandbox.marketplace.create_contact({"email": "fresh@example.test"})
    assert set(created["audit"]) == {"created"}
    blocked = sandbox.marketplace.set_blocked(created["id"], True)
    assert set(blocked["audit"]) == {"created", "updated"}


def test_new_never_updated_contacts_are_read_incrementally(warehouse: Warehouse) -> None:
    sandbox = make_sandbox(contacts=2000, seed=5, clock_speed=0.0)
    first = sync_contacts(sandbox, warehouse)
    assert first.mode == "full" and first.read is not None and first.read.rows == 2000

    sandbox.clock.advance(3600)
    for n in range(100):
        sandbox.marketplace.create_contact({"email": f"new.{n}@example.test", "name": f"N {n}"})

    second = sync_contacts(sandbox, warehouse)

    # The measure: about the 100 new contacts were read (the look-back window may add a few
    # changed just before the cursor), not all 2,100, and no full refresh was needed.
    assert second.mode == "incremental", second.notes
    assert second.read is not None
    assert 100 <= second.read.rows <= 110, second.read
    assert second.counts["contacts"].inserted == 100
    assert second.api_count == second.table_count == 2100
