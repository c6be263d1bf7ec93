"""Running the connector's async code from Dagster's synchronous asset functions."""

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also when the caller already runs an event loop.

    Steps normally run in a plain thread (``asyncio.run``). An in-process executor may run
    them inside a loop (e.g. a backfill launched from async code), where ``asyncio.run`` is
    refused, so the coroutine gets a thread and loop of its own there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_loop = False
    else:
        in_loop = True
    # Run outside the ``except`` block: an error of the coroutine raised in there would carry
    # "RuntimeError: no running event loop" as its context, below the real cause.
    if not in_loop:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
