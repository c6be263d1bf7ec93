"""One contacts sync in a process of its own, printing rows, seconds, requests and peak memory.

python -m benchmarks.sync_once BASE_URL WAREHOUSE_URL MODE [KIND]

KIND: ``fetch-only``, ``fetch-records``, ``incremental``, ``resync``, ``row-builders`` or none.

- ``fetch-only``: read the collection as the sync does (JSON lines), write nothing;
- ``fetch-records``: read it as parsed records (the client's ``read``), write nothing;
- ``incremental``: an ordinary scheduled run against a warehouse a full sync filled;
- ``resync``: a second full refresh right after a first one (nothing changed: the daily case);
- ``row-builders``: a full refresh through the row builders (the path before the bulk one);
- otherwise a full refresh into ``WAREHOUSE_URL``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import httpx

from connector.marketplace.client import MarketplaceClient
from connector.pipelines.sync import sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux keeps that across ``exec``, so a child started
    by a large parent (the benchmark runner after a 1M-line plan) would report the parent's
    size as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(url: str, warehouse_url: str, mode: str, kind: str) -> dict[str, float]:
    client = MarketplaceClient(
        MarketplaceSettings(url, Secret(SANDBOX_TOKEN)),
        read_mode=mode,  # type: ignore[arg-type]
    )
    warehouse = None
    if kind not in ("fetch-only", "fetch-records"):
        # Set-up, not the sync: a run finds its tables in place (the resource creates them).
        warehouse = Warehouse(warehouse_url)
        warehouse.ensure_tables()
    rows = 0
    async with client:
        if kind == "resync":
            # The warehouse a first full sync filled (not measured).
            await sync_contacts(client, warehouse, full_refresh=True)  # type: ignore[arg-type]
        httpx.post(f"{url}/_sandbox/stats/reset").raise_for_status()
        started = time.perf_counter()
        if kind == "fetch-only":
            async for chunk in client.read_lines("contacts"):
                rows += chunk.count(b"\n")
        elif kind == "fetch-records":
            async for records in client.read("contacts"):
                rows += len(records)
        else:
            assert warehouse is not None
            full = kind != "incremental"
            bulk = kind != "row-builders"
            result = await sync_contacts(client, warehouse, full_refresh=full, bulk=bulk)
            counts = result.counts["contacts"]
            if kind == "resync":
                rows = counts.staged
            else:
                rows = counts.inserted + counts.updated if full else result.read.rows  # type: ignore[union-attr]
        seconds = time.perf_counter() - started
    if warehouse is not None:
        warehouse.dispose()
    requests = httpx.get(f"{url}/_sandbox/stats").json().get("requests", 0)
    return {"rows": rows, "seconds": seconds, "requests": requests}


def main() -> None:
    url, warehouse_url, mode = sys.argv[1:4]
    kind = sys.argv[4] if len(sys.argv) > 4 else "sync"
    baseline = peak_rss_mb()
    figures = asyncio.run(run(url, warehouse_url, mode, kind))
    figures.update(baseline_rss_mb=baseline, peak_rss_mb=peak_rss_mb())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
