"""``make bench``: the connector's speed and memory against the sandbox over loopback.

Prints, in one run: rows per second for sequential paging, concurrent paging and streaming of
the same collection (same added latency) and their ratios; a full contacts sync into DuckDB
against fetching alone; peak memory of a 1M-contact sync; planning 1M CRM lines against 1M
contacts; push-back throughput as a share of the sandbox's rate limit.

    python -m benchmarks.run [--contacts 100000] [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.reconcile import apply_benchmark, plan_benchmark, plan_postgres_benchmark
from benchmarks.sandbox_process import sandbox_process
from benchmarks.sync import memory_benchmark, sync_benchmark
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient, ReadReport
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--memory-contacts", type=int, default=1_000_000)
    parser.add_argument("--crm-rows", type=int, default=1_000_000)
    parser.add_argument("--apply-rate", type=float, default=50)
    parser.add_argument("--apply-actions", type=int, default=600)
    args = parser.parse_args()
    fetch_benchmark(args.contacts, args.latency_ms, args.concurrency)
    sync_benchmark(args.contacts, args.latency_ms)
    memory_benchmark(args.memory_contacts)
    plan_benchmark(args.crm_rows)
    plan_postgres_benchmark(100_000)
    apply_benchmark(args.apply_rate, args.apply_actions, args.latency_ms)


if __name__ == "__main__":
    main()
