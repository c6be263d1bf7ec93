"""``make bench``: the connector's speed and memory against the sandbox over loopback.

Prints, in one run: rows per second for sequential paging, concurrent paging and streaming of
the same collection (same added latency) and their ratios; a full contacts sync into DuckDB and
PostgreSQL against fetching alone; EviNotice batch syncs (bulk and row builders) against
fetching alone; an incremental run's requests after 1% changed; peak memory
of full syncs at 100k and 1M contacts (flat is the goal); planning 1M CRM lines against 1M
contacts; push-back throughput as a share of the sandbox's rate limit; a 200k-contact paged
read under a 20% fault mix against the same read fault-free; planning a 1M-row campaign
audience against 1M contacts; campaign send throughput as a share of the rate limit; how long
``notifsync --help`` takes in a new process.

    python -m benchmarks.run [--contacts 100000] [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks.campaigns import plan_benchmark as campaign_plan_benchmark
from benchmarks.campaigns import send_benchmark as campaign_send_benchmark
from benchmarks.cli_startup import cli_startup_benchmark
from benchmarks.evinotice_sync import evinotice_sync_benchmark
from benchmarks.faults import fault_benchmark
from benchmarks.reconcile import apply_benchmark, plan_benchmark, plan_postgres_benchmark
from benchmarks.sandbox_process import sandbox_process
from benchmarks.sync import MEMORY_CAPS, incremental_benchmark, memory_benchmark, sync_benchmark
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient, ReadReport
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import DEFAULT_DUCKDB_SYNC_MEMORY_LIMIT as DEFAULT_SYNC_CAP


async def read_rows(url: str, mode: str, concurrency: int) -> tuple[int, float, ReadReport]:
    """Rows read and seconds taken for one full read of contacts."""
    report = ReadReport("contacts")
    client = MarketplaceClient(
        MarketplaceSettings(url, Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(max_concurrency=concurrency, timeout=60),
    )
    rows = 0
    started = time.perf_counter()
    async with client:
        async for chunk in client.read("contacts", mode=mode, report=report):  # type: ignore[arg-type]
            rows += len(chunk)
    return rows, time.perf_counter() - started, report


def fetch_benchmark(contacts: int, latency_ms: float, concurrency: int) -> dict[str, float]:
    """Rows/s per read mode against one sandbox process."""
    print(f"\n== fetch: {contacts:,} contacts, {latency_ms:g} ms added latency per request ==")
    results: dict[str, float] = {}
    with sandbox_process("--contacts", str(contacts), "--latency-ms", str(latency_ms)) as url:
        for mode in ("sequential", "concurrent", "auto"):
            rows, seconds, report = asyncio.run(read_rows(url, mode, concurrency))
            assert rows == contacts, f"{mode} read {rows} rows, expected {contacts}"
            label = "streaming" if report.mode == "streaming" else report.mode
            results[label] = rows / seconds
            print(
                f"{label:>11}: {rows:,} rows in {seconds:6.2f} s = {rows / seconds:>10,.0f} rows/s"
            )
    base = results["sequential"]
    print(f"concurrent / sequential: {results['concurrent'] / base:5.1f}x")
    print(f"streaming  / sequential: {results['streaming'] / base:5.1f}x")
    print(f"streaming  / concurrent: {results['streaming'] / results['concurrent']:5.1f}x")
    return results


def settle() -> None:
    """Write out what earlier sections left to write (DuckDB files of a million contacts), so
    the disk's catching up does not land in the next section's time."""
    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--memory-contacts", type=int, default=1_000_000)
    parser.add_argument("--crm-rows", type=int, default=1_000_000)
    parser.add_argument("--apply-rate", type=float, default=50)
    parser.add_argument("--apply-actions", type=int, default=600)
    parser.add_argument("--fault-contacts", type=int, default=200_000)
    parser.add_argument("--audience-rows", type=int, default=1_000_000)
    parser.add_argument("--send-batches", type=int, default=300)
    parser.add_argument("--evinotice-batches", type=int, default=5000)
    args = parser.parse_args()
    sections: dict[str, Callable[[], Any]] = {
        "cli": cli_startup_benchmark,
        "fetch": lambda: fetch_benchmark(args.contacts, args.latency_ms, args.concurrency),
        "sync": lambda: sync_benchmark(args.contacts, args.latency_ms),
        "evinotice": lambda: evinotice_sync_benchmark(args.evinotice_batches, args.latency_ms),
        "incremental": lambda: incremental_benchmark(args.contacts, args.latency_ms),
        "memory": lambda: memory_benchmark((args.contacts, args.memory_contacts)),
        "plan": lambda: plan_benchmark(args.crm_rows),
        "plan_postgres": lambda: plan_postgres_benchmark(100_000),
        "apply": lambda: apply_benchmark(args.apply_rate, args.apply_actions, args.latency_ms),
        "faults": lambda: fault_benchmark(args.fault_contacts, "0.2", slow_seconds=12.0),
        "campaign_plan": lambda: campaign_plan_benchmark(args.audience_rows),
        "campaign_send": lambda: campaign_send_benchmark(
            args.apply_rate, args.send_batches, args.latency_ms
        ),
    }
    results = {}
    for name, section in sections.items():
        settle()
        results[name] = section()
    sync, incremental, memory = results["sync"], results["incremental"], results["memory"]
    plan, apply = results["plan"], results["apply"]
    small, large = args.contacts, args.memory_contacts
    summary = [
        ("streaming: full sync / fetch-only, DuckDB", f"{sync['auto_duckdb_ratio']:.2f}", ">= 0.8"),
        ("  the same, PostgreSQL", f"{sync['auto_postgresql_ratio']:.2f}", ">= 0.8"),
        (
            "  again with nothing changed, DuckDB / PostgreSQL",
            f"{sync['auto_duckdb_again_ratio']:.2f} / {sync['auto_postgresql_again_ratio']:.2f}",
            ">= 0.8",
        ),
        (
            "concurrent paging: full sync / fetch-only, DuckDB",
            f"{sync['concurrent_duckdb_ratio']:.2f}",
            ">= 0.95",
        ),
        ("  the same, PostgreSQL", f"{sync['concurrent_postgresql_ratio']:.2f}", ">= 0.95"),
        (
            "  again with nothing changed, DuckDB / PostgreSQL",
            f"{sync['concurrent_duckdb_again_ratio']:.2f}"
            f" / {sync['concurrent_postgresql_again_ratio']:.2f}",
            ">= 0.95",
        ),
        *(
            (
                f"peak RSS, full sync of {small:,} / {large:,} contacts, "
                f"sync_memory_limit {cap}{' (default)' if cap == DEFAULT_SYNC_CAP else ''} (MB)",
                f"{memory[small, cap]:,.0f} / {memory[large, cap]:,.0f}",
                "<= 300, flat",
            )
            for cap in MEMORY_CAPS
        ),
        (
            f"plan {args.crm_rows:,} CRM lines, DuckDB / PostgreSQL (s)",
            f"{plan['duckdb_total']:.1f} / {plan['postgresql_total']:.1f}",
            "<= 3 (DuckDB)",
        ),
        (
            f"push-back throughput / sandbox rate limit ({args.apply_rate:g}/s)",
            f"{apply['share_of_limit']:.0%}",
            ">= 95%",
        ),
        (
            "incremental run after 1% changed: requests, streaming / paging",
            f"{incremental['auto']:.0f} / {incremental['concurrent']:.0f}",
            f"<= {incremental['budget']:.0f}",
        ),
    ]
    print("\n== summary: each figure against its baseline from this run ==")
    width = max(len(name) for name, _, _ in summary)
    for name, figure, goal in summary:
        print(f"{name:<{width}}  {figure:>15}  (goal {goal})")


if __name__ == "__main__":
    main()
