"""One EviNotice batch sync in a process of its own, printing rows, seconds and CPU seconds.

python -m benchmarks.evinotice_sync_once BASE_URL WAREHOUSE_URL KIND

KIND: ``fetch-lines``, ``fetch-records``, ``bulk`` or ``row-builders``.

- ``fetch-lines``: read the list as the sync does (JSON lines), write nothing;
- ``fetch-records``: read it as parsed records (``iter_batches``), write nothing;
- ``bulk``: a full sync into ``WAREHOUSE_URL`` through the bulk path;
- ``row-builders``: the same through the row builders (the path before the bulk one).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from connector.evinotice.client import EviNoticeClient
from connector.pipelines.sync import sync_evinotice_batches
from connector.settings import (
    SANDBOX_EVINOTICE_PASSWORD,
    SANDBOX_EVINOTICE_SITE_ID,
    SANDBOX_EVINOTICE_USERNAME,
    EviNoticeSettings,
    Secret,
)
from connector.warehouse.engine import Warehouse


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(url: str, warehouse_url: str, kind: str) -> dict[str, float]:
    settings = EviNoticeSettings(
        base_url=url,
        username=SANDBOX_EVINOTICE_USERNAME,
        password=Secret(SANDBOX_EVINOTICE_PASSWORD),
        site_id=SANDBOX_EVINOTICE_SITE_ID,
    )
    warehouse = None
    if kind in ("bulk", "row-builders"):
        warehouse = Warehouse(warehouse_url)
        warehouse.ensure_tables()
    started, cpu = time.perf_counter(), cpu_seconds()
    rows = 0
    async with EviNoticeClient(settings) as client:
        if kind == "fetch-lines":
            async for chunk in client.read_batch_lines():
                rows += chunk.count(b"\n")
        elif kind == "fetch-records":
            async for page in client.iter_batches():
                rows += len(page)
        else:
            assert warehouse is not None
            site = settings.site_id
            result = await sync_evinotice_batches(client, warehouse, site, bulk=kind == "bulk")
            rows = result.counts["evinotice_batches"].inserted
    figures = {"rows": rows, "seconds": time.perf_counter() - started, "cpu": cpu_seconds() - cpu}
    if warehouse is not None:
        warehouse.dispose()
    return figures


def main() -> None:
    url, warehouse_url, kind = sys.argv[1:4]
    print(json.dumps(asyncio.run(run(url, warehouse_url, kind))))


if __name__ == "__main__":
    main()
