"""A paged read under a fault mix against the same read without faults (issue 14 item 7).

One sandbox process with 200k contacts and 30 ms added latency; contacts are read with
concurrent paging fault-free, then again under a 20% mix of every fault kind (5xx answers,
dropped connections, truncated bodies and answers held back ``slow_seconds``), and the two
times are printed side by side. One slow page must not stall the read: the ratio should be a
small multiple, not the 50x of a window that waits for its oldest page.

    python -m benchmarks.faults [--contacts 200000] [--faults 0.2] [--slow-seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import httpx

from benchmarks.sandbox_process import sandbox_process
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient, ReadReport
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret


async def paged_read(url: str, concurrency: int) -> tuple[int, float, ReadReport]:
    """Rows read and seconds taken for one concurrent paged read of contacts."""
    report = ReadReport("contacts")
    client = MarketplaceClient(
        MarketplaceSettings(url, Secret(SANDBOX_TOKEN)),
        # A fault mix may fail one request several times in a row: room for more attempts.
        limits=ClientLimits(max_concurrency=concurrency, timeout=30, max_attempts=12),
    )
    rows = 0
    started = time.perf_counter()
    async with client:
        async for chunk in client.read("contacts", mode="concurrent", report=report):
            rows += len(chunk)
    return rows, time.perf_counter() - started, report


def fault_benchmark(
    contacts: int, faults: str, slow_seconds: float, concurrency: int = 8, latency_ms: float = 30
) -> dict[str, float]:
    """Seconds for a fault-free and a faulty read of the same contacts, printed side by side."""
    print(
        f"\n== paged read under faults: {contacts:,} contacts, faults={faults} "
        f"(slow answers held {slow_seconds:g} s), {latency_ms:g} ms latency =="
    )
    seconds: dict[str, float] = {}
    # Every retried fault logs a warning; the figures are what this benchmark is for.
    logging.getLogger("connector").setLevel(logging.ERROR)
    options = ("--contacts", str(contacts), "--latency-ms", str(latency_ms))
    with sandbox_process(*options, "--slow-seconds", str(slow_seconds)) as url:
        for label, mix in (("fault-free", ""), ("faults", faults)):
            httpx.patch(f"{url}/_sandbox/behaviour", json={"faults": mix}).raise_for_status()
            rows, took, report = asyncio.run(paged_read(url, concurrency))
            assert rows == contacts, f"{label}: read {rows} rows, expected {contacts}"
            seconds[label] = took
            print(
                f"{label:>10}: {rows:,} rows in {took:7.2f} s = {rows / took:>9,.0f} rows/s"
                f"  (pages asked again: {report.hedged_pages})"
            )
        stats = httpx.get(f"{url}/_sandbox/stats").json()
    faulted = {k: v for k, v in stats.items() if k.startswith("fault:")}
    print(f"faults served: {faulted}")
    print(
        f"fault-free {seconds['fault-free']:.2f} s | {faults} faults {seconds['faults']:.2f} s"
        f" | ratio {seconds['faults'] / seconds['fault-free']:.1f}x"
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--faults", default="0.2")
    parser.add_argument("--slow-seconds", type=float, default=12.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    fault_benchmark(args.contacts, args.faults, args.slow_seconds, args.concurrency)


if __name__ == "__main__":
    main()
