"""The bulk path (JSON lines flattened, typed and hashed by DuckDB, staged as Arrow or COPY)
gives the same tables as the row builders' path on the same sandbox data: every table, column
by column, on DuckDB and PostgreSQL, streamed and paged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from conftest import asgi_marketplace, make_sandbox
from sync_support import Paging, frozen_sandbox, rows, sync_everything

from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient, ReadReport
from connector.marketplace.records import contact_rows, email_key, with_email_keys
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from connector.warehouse.json_lines import flatten, lines_table
from connector.warehouse.tables import TABLE_NAMES
from sandbox.app import Sandbox

# Written by the sync at its own time, or (row_hash) a digest whose form differs by path:
# the row builders hash the record with sorted keys, the bulk path the line as received.
NOT_COMPARED = {"synced_at", "snapshot_at", "row_hash"}


def _tables(warehouse: Warehouse) -> dict[str, list[dict[str, Any]]]:
    tables = {}
    for name in TABLE_NAMES:
        if name == "sync_state":
            continue
        tables[name] = [
            {k: v for k, v in row.items() if k not in NOT_COMPARED} for row in rows(warehouse, name)
        ]
    return tables


def _awkward(sandbox: Sandbox) -> None:
    """Records the flattening must treat as the row builders do: an IDN address, one with
    spaces around it, junk, no email, an opt-out listed twice and one without an id."""
    store = sandbox.marketplace
    first, second, third, fourth, fifth = list(store.contacts.all())[:5]
    emails = ("Ann@Bücher.de", "  Spaced.Out@Example.COM ", "not an email", None)
    for contact, email in zip((first, second, third, fourth), emails, strict=True):
        store.contacts.put({**contact, "email": email})
    doubled = [*fifth["optOuts"], *fifth["optOuts"], {"name": "no id"}]
    store.contacts.put({**fifth, "optOuts": doubled, "brandNewField": {"kept": True}})


@dataclass
class Reference:
    """A sandbox with awkward records, read in one mode, and the tables the row builders'
    path made of it."""

    read: str
    sandbox: Sandbox
    tables: dict[str, list[dict[str, Any]]]

    def proxy(self) -> Paging | None:
        return Paging(self.sandbox.app) if self.read == "paging" else None


@pytest.fixture(scope="module", params=["streaming", "paging"])
def row_builder_reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    """Made once per read mode for both warehouses the bulk path is compared on: the row
    builders' path is the reference, not what is under test, and the sandbox is only read."""
    sandbox = frozen_sandbox(contacts=1200)
    _awkward(sandbox)
    reference = Reference(request.param, sandbox, {})
    path = tmp_path_factory.mktemp("reference") / "reference.duckdb"
    warehouse = Warehouse(f"duckdb:///{path}")
    try:
        warehouse.ensure_tables()
        sync_everything(sandbox, warehouse, app=reference.proxy(), bulk=False)
        reference.tables = _tables(warehouse)
    finally:
        warehouse.dispose()
    yield reference


def test_bulk_and_row_builder_paths_give_the_same_tables(
    row_builder_reference: Reference, warehouse_url: str, open_warehouse: Any
) -> None:
    read, sandbox = row_builder_reference.read, row_builder_reference.sandbox
    bulk = open_warehouse(warehouse_url)
    proxy = row_builder_reference.proxy()

    results = sync_everything(sandbox, bulk, app=proxy, bulk=True)

    expected_mode = "streaming" if read == "streaming" else "concurrent"
    assert results["contacts"].read is not None
    assert results["contacts"].read.mode == expected_mode
    want, got = row_builder_reference.tables, _tables(bulk)
    for name, expected in want.items():
        assert expected, name
        assert got[name] == expected, name
    # A second bulk run finds nothing changed: the hashes are stable.
    again = sync_everything(sandbox, bulk, app=proxy, bulk=True)
    for name in ("contacts", "batches"):
        counts = again[name].counts[name]
        assert (counts.inserted, counts.updated) == (0, 0), name


def test_flattened_contacts_equal_the_row_builder_rows() -> None:
    # Without any warehouse: the flatten statement against the row builder, value by value.
    sandbox = frozen_sandbox(contacts=300)
    _awkward(sandbox)
    records = sorted(sandbox.truth("contacts"), key=lambda r: r["id"])
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
    expected, expected_opt_outs = contact_rows(records, "2026-11-18T15:30:00.000Z")

    flat_table = with_email_keys(flatten(lines_table(lines), "contacts"))
    flat = flat_table.to_pylist()
    assert len(flat) == len(expected)
    for got, want in zip(flat, expected, strict=True):
        for column in ("id", "email", "email_key", "name", "status", "blocked_reason"):
            assert got[column] == want[column], (column, want["id"])
        assert (got["user_id"], got["user_name"], got["opt_out_count"]) == (
            want["user_id"],
            want["user_name"],
            want["opt_out_count"],
        )
        assert orjson.loads(got["raw"]) == orjson.loads(want["raw"])
        for column in ("created_at", "updated_at"):
            text = want[column]
            assert got[column] == (text and datetime.fromisoformat(text)), column
    opt_outs = flatten(flat_table, "contact_opt_outs").to_pylist()
    assert sorted((r["contact_id"], r["category_id"], r["category_name"]) for r in opt_outs) == (
        sorted((r["contact_id"], r["category_id"], r["category_name"]) for r in expected_opt_outs)
    )


# --- the client's JSON-lines read keeps the read's guarantees ---------------------------------


async def _read_lines(client: MarketplaceClient, mode: str) -> tuple[list[dict], ReadReport]:
    report = ReadReport("contacts")
    records: list[dict] = []
    async for chunk in client.read_lines("contacts", mode=mode, report=report):  # type: ignore[arg-type]
        assert chunk.endswith(b"\n")
        records.extend(orjson.loads(line) for line in chunk.splitlines())
    return records, report


@pytest.mark.parametrize("mode", ["auto", "concurrent"])
def test_json_lines_under_faults_are_exact(loopback: Any, mode: str) -> None:
    sandbox = make_sandbox(contacts=3000, seed=21, faults="drop=0.15,truncate=0.15,error=0.1")
    url = loopback(sandbox)
    client = MarketplaceClient(
        MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(max_attempts=12, backoff_base=0.001, backoff_max=0.01),
    )

    async def run() -> tuple[list[dict], ReadReport]:
        async with client:
            return await _read_lines(client, mode)

    records, report = asyncio.run(run())
    assert report.complete
    assert records == sorted(sandbox.truth("contacts"), key=lambda r: r["id"])
    stats = httpx.get(f"{url}/_sandbox/stats").json()
    assert sum(v for k, v in stats.items() if k.startswith("fault:")) > 0
    if mode == "auto":
        assert report.mode == "streaming" and report.resumed_streams > 0


@pytest.mark.parametrize("mode", ["concurrent", "auto"])
def test_json_lines_while_rows_move_are_neither_skipped_nor_repeated(mode: str) -> None:
    sandbox = make_sandbox(contacts=2500, seed=9, churn_per_request=4)
    before = {c["id"] for c in sandbox.truth("contacts")}

    async def run() -> tuple[list[dict], ReadReport]:
        async with asgi_marketplace(sandbox, max_concurrency=4) as client:
            return await _read_lines(client, mode)

    records, report = asyncio.run(run())
    sandbox.behaviour.churn_per_request = 0
    ids = [r["id"] for r in records]
    after = {c["id"] for c in sandbox.truth("contacts")}
    assert len(ids) == len(set(ids)), "no row may be read twice"
    assert (before & after) - set(ids) == set()
    assert report.rows == len(ids)


EDGE_EMAILS = [
    "Plain@Example.COM",
    "first.last+tag@sub.example.co",
    "a-@b.com",
    "a@b-.com",
    "a@-b.com",
    "a@b.c",
    "a@b.co1",
    "a..b@x.com",
    ".a@x.com",
    "a@x..com",
    "o'neil{|}~@x.io",
    "x" * 55 + "@example.com",
    "x" * 60 + "@example.com",
    "y" * 52 + "@example.com",  # 64 characters: the longest the flatten statement folds
    "y" * 53 + "@example.com",
    "\u00e9" + "y" * 51 + "@example.com",  # 64 characters, 65 bytes
    " Lead.Space@x.com",
    "Tab\t@x.com",
    "Ann@Bücher.de",
    "mailto:someone@x.org",
    "Name <n@x.org>",
    "two@@x.org",
    "",
    "   ",
]


def test_email_keys_of_the_bulk_path_equal_the_row_builders() -> None:
    records = [{"id": f"CTT-{i:04d}", "email": e} for i, e in enumerate(EDGE_EMAILS)]
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
    flat = with_email_keys(flatten(lines_table(lines), "contacts"))
    assert flat.column("email_key").to_pylist() == [email_key(e) for e in EDGE_EMAILS]
