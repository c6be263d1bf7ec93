"""EviNotice batches through the bulk path (JSON lines flattened, typed and hashed by DuckDB,
staged as Arrow or COPY) give the same ``evinotice_batches`` table as the row builder, column
by column, on DuckDB and PostgreSQL, odd shapes of the service included; and the client's
JSON-lines read keeps the list's guarantees (each batch once, usual spellings)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from conftest import fresh_postgres_database, make_sandbox
from evinotice_api import FAST, new_batch, settings_for
from sync_support import evinotice_client, rows

from connector.evinotice.client import BATCHES_PATH, EviNoticeClient, json_lines
from connector.evinotice.records import evinotice_batch_rows, utc_timestamp, with_utc_timestamps
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from connector.warehouse.json_lines import flatten
from sandbox.app import Sandbox
from sandbox.clock import SandboxClock
from sandbox.evinotice.payloads import DEFAULT_SITE_ID
from sandbox.evinotice.store import EviNoticeStore

Record = dict[str, Any]
# Written at the sync's own time, or (row_hash) a digest whose form differs by path: the row
# builder hashes with BLAKE2b, the bulk path with DuckDB's md5, both over the same text.
NOT_COMPARED = ("synced_at", "row_hash")
STAMPS = ("CreationDate", "ScheduledFor", "StartedOn", "ProcessedOn")


def _set(**fields: Any) -> Callable[[Record], Record]:
    return lambda record: {**record, **fields}


def _drop(*names: str) -> Callable[[Record], Record]:
    return lambda record: {k: v for k, v in record.items() if k not in names}


# Shapes a real service may send, each a change to a record of the sandbox's list.
ODD_SHAPES: list[Callable[[Record], Record]] = [
    lambda record: record,  # the service's own form
    _set(State="Archived"),  # a state no list names: stored as it comes
    _set(ProgessPercentage=12.5),  # the vendor's spelling
    _set(ProgessPercentage=1.0, ProgressPercentage=2.0),  # both: the usual one wins
    _set(BrandNewField={"kept": [1, "two", None]}),  # a field with no column: kept in raw
    _drop("TotalCount", "TotalSent", "SiteName", "StartedOn"),
    _set(TotalFailed=None, Description=None, CreationDate=None, Submitter=None),
    _set(
        CreationDate="2024-11-19T18:11:17.123456789+02:00",
        StartedOn="2024-11-19T16:11:17.9999999Z",
        ScheduledFor="2024-11-19T16:11:17",
        ProcessedOn="2024-11-19T16:11:17.5-05:30",
    ),
    _set(  # forms only Python's ISO 8601 reader takes
        CreationDate="20241119T161117+0100",
        StartedOn="2024-W47-2",
        ScheduledFor="2024-11-19 16:11:17,25",
        ProcessedOn="2024-11-19",
    ),
    _set(
        CreationDate="not a date",
        StartedOn="",
        ScheduledFor=20241119,
        ProcessedOn="2024-02-30T00:00:00Z",
    ),
    _set(State="Processing", TotalCount=0, TotalSent=0, TotalFailed=0),
    _set(State="Processing", TotalCount=-3),
    _set(State="Processing", TotalCount=7, TotalSent=9, TotalFailed=1),
    _set(State="Processing", TotalCount=3, TotalSent=1, TotalFailed=None),
    lambda record: dict(reversed(record.items())),  # another key order: the same raw
]

# Timestamps the flattening reads itself or hands to Python: each must become what
# ``utc_timestamp`` makes of it.
EDGE_TIMESTAMPS: list[Any] = [
    "2024-11-19T16:11:17.9870820+00:00",
    "2024-11-19T18:11:17.1234567+02:00",
    "2024-11-19T16:11:17.9999999Z",
    "2024-11-19T16:11:17.123456789-05:30",
    "2024-11-19T16:11:17.1234567890123Z",
    "2024-11-19T16:11:17",
    "2024-11-19T16:11:17.5",
    "2024-11-19T23:59:59-23:59",
    "2024-11-19T00:00:00+23:59",
    "2024-11-19T00:00:00-00:00",
    "2024-02-29T12:00:00Z",
    "2023-02-29T12:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-11-31T00:00:00Z",
    "2024-11-19T24:00:00Z",
    "2024-11-19T16:11:60Z",
    "2024-11-19T16:11:17+24:00",
    "2024-11-19",
    "2024-11-19T16:11",
    "20241119T161117",
    "2024-11-19 16:11:17",
    "2024-11-19T16:11:17+0200",
    "2024-11-19T16:11:17,5Z",
    "2024-11-19T16:11:17z",
    "2024-W47-2",
    "2024-11-19T16:11:17+02:00:30",
    "0999-12-31T23:00:00Z",
    "9999-12-31T23:59:59Z",
    " 2024-11-19T16:11:17Z",
    "2024-11-19T16:11:17Z ",
    "2024-11-19T16:11:17.Z",
    "",
    "   ",
    "junk",
    20241119,
    True,
    {"at": "2024-11-19T16:11:17Z"},
    ["2024-11-19T16:11:17Z"],
    None,
]


def _sandbox_records(count: int = 40) -> list[Record]:
    sandbox = make_sandbox(contacts=10, evinotice_batches=count, clock_speed=0.0)
    keys = ("Id", "State", "Description", "TotalCount", "TotalSent", "TotalFailed", "SiteId")
    keys += ("SiteName", "Submitter", *STAMPS)
    return [{k: b[k] for k in keys if k in b} for b in sandbox.truth("evinotice-batches")]


def _bulk_rows(
    records: list[Record], duck: duckdb.DuckDBPyConnection | None = None
) -> list[Record]:
    flat = flatten(json_lines(records), "evinotice_batches", duck)
    return with_utc_timestamps(flat).to_pylist()


def _assert_same_row(got: Record, want: Record) -> None:
    for column, value in want.items():
        if column in NOT_COMPARED:
            continue
        if column in ("created_at", "scheduled_for", "started_on", "processed_on"):
            assert got[column] == (value and datetime.fromisoformat(value)), (column, want["id"])
        else:
            assert got[column] == value, (column, want["id"])


def test_flattened_batches_equal_the_row_builder_rows() -> None:
    # Without any warehouse: the flatten statement against the row builder, value by value.
    base = _sandbox_records()
    records = [ODD_SHAPES[i % len(ODD_SHAPES)](r) for i, r in enumerate(base)]
    for finished in ("Processed", "Sent", "Completed"):
        records.append({"Id": f"done-{finished}", "State": finished, "TotalCount": 5})
    expected = evinotice_batch_rows(records, "2026-11-18T15:30:00.000Z")
    got = _bulk_rows(records)
    assert len(got) == len(expected) == len(records)
    for row, want in zip(got, expected, strict=True):
        _assert_same_row(row, want)
        assert row["raw"] == want["raw"]  # the same text, keys sorted
    assert {r["state"] for r in got} >= {"Archived", "Processing", "Completed"}
    assert any(r["progress_percentage"] == 0.0 for r in got if r["state"] == "Processing")


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_every_timestamp_form_becomes_what_the_row_builder_makes_of_it(zone: str) -> None:
    # Whatever the DuckDB session's time zone (a DuckDB warehouse flattens on its own
    # connection), a time without an offset is UTC, as the service's clock is.
    records = [
        {"Id": f"b-{i}", **dict.fromkeys(STAMPS, value)} for i, value in enumerate(EDGE_TIMESTAMPS)
    ]
    with duckdb.connect() as duck:
        duck.execute(f"set TimeZone = '{zone}'")
        got = _bulk_rows(records, duck)
    for row, value in zip(got, EDGE_TIMESTAMPS, strict=True):
        want = utc_timestamp(value)
        for column in ("created_at", "scheduled_for", "started_on", "processed_on"):
            assert row[column] == (want and datetime.fromisoformat(want)), (column, value)
    # The service's own form is read by the SQL; Python reads only the rows it marks.
    assert not got[0]["odd_timestamps"] and got[0]["created_at"] is not None
    week = EDGE_TIMESTAMPS.index("2024-W47-2")
    assert got[week]["odd_timestamps"] and got[week]["created_at"] is not None


# --- the sync, both paths, on the same sandbox data ------------------------------------------


class OddPages:
    """An ASGI proxy in front of the sandbox that gives the batch list's records the odd
    shapes (each batch always the same one) and repeats the previous page's last record at
    the top of the next page, as the service's position cursors do."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.shapes: dict[str, int] = {}

    def rewrite(self, body: bytes, continued: bool) -> bytes:
        page = orjson.loads(body)
        results = []
        for record in page["Results"]:
            shape = self.shapes.setdefault(record["Id"], len(self.shapes) % len(ODD_SHAPES))
            results.append(ODD_SHAPES[shape](record))
        if continued and results:
            results.insert(0, self.last)
        if results:
            self.last = results[-1]
        return orjson.dumps({**page, "Results": results})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "QUERY" or scope["path"] != BATCHES_PATH:
            await self.app(scope, receive, send)
            return
        request = b""
        while True:
            message = await receive()
            request += message.get("body", b"")
            if not message.get("more_body"):
                break
        continued = bool(orjson.loads(request).get("Cursor"))
        sent_request = False

        async def replay() -> Any:
            nonlocal sent_request
            if sent_request:
                return await receive()
            sent_request = True
            return {"type": "http.request", "body": request, "more_body": False}

        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(parts)
            if start["status"] == 200:
                body = self.rewrite(body, continued)
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, replay, capture)


@contextlib.contextmanager
def _two_warehouses(kind: str, tmp_path: Path) -> Iterator[tuple[Warehouse, Warehouse]]:
    with contextlib.ExitStack() as stack:
        if kind == "duckdb":
            urls = [f"duckdb:///{tmp_path / name}.duckdb" for name in ("reference", "bulk")]
        else:
            urls = [stack.enter_context(fresh_postgres_database()) for _ in range(2)]
        opened = [Warehouse(url) for url in urls]
        for warehouse in opened:
            stack.callback(warehouse.dispose)
            warehouse.ensure_tables()
        yield opened[0], opened[1]


def _sync(sandbox: Sandbox, app: Any, warehouse: Warehouse, *, bulk: bool) -> sync.SyncResult:
    async def go() -> sync.SyncResult:
        async with evinotice_client(sandbox, app=app) as client:
            site = sandbox.config.evinotice_site_id
            return await sync.sync_evinotice_batches(client, warehouse, site, bulk=bulk)

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_bulk_and_row_builder_paths_give_the_same_batches_table(kind: str, tmp_path: Path) -> None:
    # The vendor's page flag (HashMoreResults) too; 250 batches are three pages.
    sandbox = make_sandbox(
        contacts=10, evinotice_batches=250, evinotice_vendor_spellings=True, clock_speed=0.0
    )
    proxy = OddPages(sandbox.app)
    with _two_warehouses(kind, tmp_path) as (reference, bulk):
        want = _sync(sandbox, proxy, reference, bulk=False)
        got = _sync(sandbox, proxy, bulk, bulk=True)

        mine = [b for b in sandbox.truth("evinotice-batches") if b["SiteId"] == DEFAULT_SITE_ID]
        assert len(mine) > 200
        assert got.api_count == want.api_count == got.table_count == len(mine)
        assert got.counts["evinotice_batches"].inserted == len(mine)
        expected = rows(reference, "evinotice_batches", without=NOT_COMPARED)
        table = rows(bulk, "evinotice_batches", without=NOT_COMPARED)
        assert len(table) == len(expected)
        for row, want_row in zip(table, expected, strict=True):
            assert row == want_row, want_row["id"]

        # The odd shapes did reach the table.
        assert {r["state"] for r in table} >= {"Archived", "Processing"}
        raws = [r["raw"] for r in table]
        assert sum("BrandNewField" in raw for raw in raws) >= 10
        assert sum(raw.get("ProgressPercentage") == 2.0 for raw in raws) >= 10
        assert not any("ProgessPercentage" in raw for raw in raws)
        # A second bulk run finds nothing changed: the hashes are stable.
        again = _sync(sandbox, proxy, bulk, bulk=True).counts["evinotice_batches"]
        assert (again.inserted, again.updated) == (0, 0)


# --- the client's JSON-lines read ------------------------------------------------------------


@pytest.mark.anyio
async def test_batch_lines_are_the_list_each_batch_once(
    client: EviNoticeClient, store: EviNoticeStore, clock: SandboxClock
) -> None:
    existing = {b["Id"] for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID}
    lines: list[bytes] = []
    created: list[str] = []
    # A chunk per page; batches created between pages push rows onto the next one.
    async for chunk in client.read_batch_lines(page_size=5, descending=True, chunk_bytes=1):
        assert chunk.endswith(b"\n")
        lines += chunk.splitlines()
        created.append(await new_batch(client))
        clock.advance(0.5)
    seen = [orjson.loads(line)["Id"] for line in lines]
    assert len(seen) == len(set(seen)) and existing <= set(seen)
    assert set(seen) - existing <= set(created)
    # Each line is the record re-encoded with sorted keys (the row builder's raw text).
    for line in lines:
        assert line == orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)


@pytest.mark.anyio
async def test_batch_lines_take_the_usual_spellings_and_fill_chunks() -> None:
    pages = [
        {"Cursor": "1", "HashMoreResults": True, "Results": [{"Id": "a", "ProgessPercentage": 5}]},
        {"Cursor": "2", "HashMoreResults": True, "Results": [{"Id": "a"}, {"Id": "b"}]},
        {"Cursor": "2", "HashMoreResults": False, "Results": []},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = orjson.loads(request.content).get("Cursor")
        return httpx.Response(200, json=pages[int(cursor or 0)])

    transport = httpx.MockTransport(handler)
    async with EviNoticeClient(settings_for(), limits=FAST, transport=transport) as evi:
        chunks = [chunk async for chunk in evi.read_batch_lines()]
    assert chunks == [b'{"Id":"a","ProgressPercentage":5}\n{"Id":"b"}\n']
