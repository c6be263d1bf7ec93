"""One full contacts sync in a process of its own, printing rows, seconds and peak memory.

python -m benchmarks.sync_once BASE_URL WAREHOUSE_URL [fetch-only]
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from connector.marketplace.client import MarketplaceClient
from connector.pipelines.sync import sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(url: str, warehouse_url: str, mode: str, fetch_only: bool) -> dict[str, float]:
    client = MarketplaceClient(
        MarketplaceSettings(url, Secret(SANDBOX_TOKEN)),
        read_mode=mode,  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    rows = 0
    async with client:
        if fetch_only:
            async for chunk in client.read("contacts"):
                rows += len(chunk)
        else:
            warehouse = Warehouse(warehouse_url)
            warehouse.ensure_tables()
            result = await sync_contacts(client, warehouse, full_refresh=True)
            rows = result.counts["contacts"].inserted
    return {"rows": rows, "seconds": time.perf_counter() - started}


def main() -> None:
    url, warehouse_url, mode = sys.argv[1:4]
    fetch_only = sys.argv[4:] == ["fetch-only"]
    baseline = peak_rss_mb()
    figures = asyncio.run(run(url, warehouse_url, mode, fetch_only))
    figures.update(baseline_rss_mb=baseline, peak_rss_mb=peak_rss_mb())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
