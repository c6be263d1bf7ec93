"""Sync throughput, memory and incremental cost: full contacts syncs into DuckDB and
PostgreSQL against fetching alone, peak memory at two sizes, and an incremental run's requests.

Each figure comes from a separate process (the sandbox in another), so peak memory is the
sync's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from benchmarks.sandbox_process import sandbox_process
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _once(url: str, warehouse_url: str, *extra: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.sync_once", url, warehouse_url, *extra],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _rate(figures: dict[str, float]) -> str:
    rows, seconds = figures["rows"], figures["seconds"]
    return f"{rows:>9,.0f} rows in {seconds:6.2f} s = {rows / seconds:>9,.0f} rows/s"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A scratch PostgreSQL database on the local server, dropped afterwards."""
    name = f"notifsync_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f"create database {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"drop database if exists {name} with (force)")
        admin.dispose()


def sync_benchmark(contacts: int, latency_ms: float) -> dict[str, float]:
    """Full sync of ``contacts`` into a fresh DuckDB file and PostgreSQL database vs. fetching
    them, per read mode; then the same full sync again with nothing changed (the daily case:
    every row read, none written)."""
    print(f"\n== sync: {contacts:,} contacts, {latency_ms:g} ms latency ==")
    print("(timed from the first request to the commit; the tables exist beforehand)")
    figures: dict[str, float] = {}
    with (
        sandbox_process("--contacts", str(contacts), "--latency-ms", str(latency_ms)) as url,
        tempfile.TemporaryDirectory() as scratch,
    ):
        for mode in ("auto", "concurrent"):
            label = "streaming" if mode == "auto" else "concurrent paging"
            fetch = _once(url, "duckdb:///:memory:", mode, "fetch-only")
            records = _once(url, "duckdb:///:memory:", mode, "fetch-records")
            duck = _once(url, f"duckdb:///{Path(scratch) / (mode + '.duckdb')}", mode)
            duck_again = _once(
                url, f"duckdb:///{Path(scratch) / (mode + '-2.duckdb')}", mode, "resync"
            )
            rows_path = Path(scratch) / (mode + "-rows.duckdb")
            reference = _once(url, f"duckdb:///{rows_path}", mode, "row-builders")
            with postgres_database() as pg_url:
                pg = _once(url, pg_url, mode)
            with postgres_database() as pg_url:
                pg_again = _once(url, pg_url, mode, "resync")
            fetch_rate = fetch["rows"] / fetch["seconds"]
            print(f"{label}:")
            print(f"  fetch only (JSON lines)   : {_rate(fetch)}")
            print(f"  fetch only (records)      : {_rate(records)}")
            print(f"  full sync, DuckDB         : {_rate(duck)}")
            print(f"  full sync, PostgreSQL     : {_rate(pg)}")
            print(f"  again, unchanged, DuckDB  : {_rate(duck_again)}")
            print(f"  again, unchanged, Postgres: {_rate(pg_again)}")
            print(
                f"  row builders, DuckDB      : {_rate(reference)}  (the path before the bulk one)"
            )
            runs = (
                ("duckdb", duck),
                ("postgresql", pg),
                ("duckdb_again", duck_again),
                ("postgresql_again", pg_again),
                ("rows", reference),
            )
            for name, synced in runs:
                ratio = (synced["rows"] / synced["seconds"]) / fetch_rate
                print(f"  sync / fetch throughput, {name:<16}: {ratio:4.2f}")
                figures[f"{mode}_{name}_ratio"] = ratio
    return figures


# DuckDB's cap while a sync loads (``sync_memory_limit``; the default is
# ``DEFAULT_DUCKDB_SYNC_MEMORY_LIMIT``, ``memory_limit`` staying 256 MB).
MEMORY_CAPS = ("256MB", "64MB", "32MB")


def memory_benchmark(
    sizes: tuple[int, ...], caps: tuple[str, ...] = MEMORY_CAPS
) -> dict[tuple[int, str], float]:
    """Peak memory of a full sync into DuckDB at each size and DuckDB memory cap during the
    load (the ``sync_memory_limit`` setting; the default is
    ``DEFAULT_DUCKDB_SYNC_MEMORY_LIMIT``), beside fetching alone (flat is the goal)."""
    print(f"\n== memory: full sync into DuckDB at {', '.join(f'{n:,}' for n in sizes)} contacts ==")
    peaks: dict[tuple[int, str], float] = {}
    for contacts in sizes:
        with sandbox_process("--contacts", str(contacts), timeout=1200) as url:
            fetch = _once(url, "duckdb:///:memory:", "auto", "fetch-only")
            print(
                f"{contacts:>9,} contacts: fetch-only peak {fetch['peak_rss_mb']:,.0f} MB "
                f"(interpreter + imports {fetch['baseline_rss_mb']:,.0f} MB)"
            )
            for cap in caps:
                with tempfile.TemporaryDirectory() as scratch:
                    database = Path(scratch) / "bench.duckdb"
                    synced = _once(url, f"duckdb:///{database}?sync_memory_limit={cap}", "auto")
                peaks[contacts, cap] = synced["peak_rss_mb"]
                print(
                    f"{'':>11}DuckDB capped at {cap:>5} during the load: "
                    f"peak RSS {synced['peak_rss_mb']:,.0f} MB"
                    f" (synced {synced['rows']:,.0f} in {synced['seconds']:.1f} s)"
                )
    if len(sizes) > 1:
        for cap in caps:
            growth = peaks[max(sizes), cap] - peaks[min(sizes), cap]
            print(f"growth {min(sizes):,} -> {max(sizes):,} contacts at {cap}: {growth:+,.0f} MB")
    return peaks


async def _change(url: str, count: int) -> None:
    """Rename ``count`` contacts through the API (set-up, not measured)."""
    client = MarketplaceClient(
        MarketplaceSettings(url, Secret(SANDBOX_TOKEN)), limits=ClientLimits(max_concurrency=16)
    )
    async with client:
        contacts = []
        async for chunk in client.read("contacts", mode="streaming"):
            contacts.extend(chunk[: count - len(contacts)])
            if len(contacts) >= count:
                break
        semaphore = asyncio.Semaphore(16)

        async def rename(contact: dict) -> None:
            async with semaphore:
                await client.update_contact(
                    contact["id"], contact["email"], f"{contact.get('name') or ''} (renamed)"
                )

        await asyncio.gather(*(rename(c) for c in contacts))


def incremental_benchmark(
    contacts: int, latency_ms: float, share: float = 0.01
) -> dict[str, float]:
    """Requests and seconds of a scheduled (incremental) run after ``share`` of the contacts
    changed, per read mode; returns the requests per mode and the budget."""
    changed = int(contacts * share)
    print(f"\n== incremental: {changed:,} of {contacts:,} contacts changed, {latency_ms:g} ms ==")
    budget = changed / 100 + 3
    figures: dict[str, float] = {"budget": budget}
    for mode in ("auto", "concurrent"):
        label = "streaming" if mode == "auto" else "concurrent paging"
        with (
            sandbox_process("--contacts", str(contacts), "--latency-ms", str(latency_ms)) as url,
            tempfile.TemporaryDirectory() as scratch,
        ):
            warehouse_url = f"duckdb:///{Path(scratch) / 'incremental.duckdb'}"
            _once(url, warehouse_url, mode)
            asyncio.run(_change(url, changed))
            httpx.post(f"{url}/_sandbox/stats/reset").raise_for_status()
            run = _once(url, warehouse_url, mode, "incremental")
        figures[mode] = run["requests"]
        print(
            f"{label:>17}: {run['requests']:,.0f} requests (budget {budget:,.0f}), "
            f"{run['rows']:,.0f} rows read, {run['seconds']:.2f} s"
        )
    return figures
