"""An iterator's next item made in a worker thread while the caller works on the current one.

For pipelines whose two halves release the GIL (Arrow reading and normalising a CRM export's
next block while DuckDB or PostgreSQL stores the last one): on two cores the slower half sets
the pace instead of the sum of both. One item ahead at most, so memory holds two.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

_END = object()


def read_ahead(items: Iterator[T], name: str = "read-ahead") -> Iterator[T]:
    """``items``, each one made while the caller works on the one before.

    ``items`` is advanced by one thread at a time, never two at once. An error making an item
    is raised where the caller takes it. A caller that may stop early closes this generator
    (``contextlib.closing``): the item being made is then waited for and ``items`` closed
    (its ``finally`` blocks run) before the close returns."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as worker:
        pending = worker.submit(next, items, _END)
        try:
            while (item := pending.result()) is not _END:
                pending = worker.submit(next, items, _END)
                yield item  # type: ignore[misc]
        finally:
            # Waited for before ``items`` is closed: a generator cannot be closed while it runs.
            if not pending.cancel():
                wait([pending])
            close = getattr(items, "close", None)
            if close is not None:
                close()
