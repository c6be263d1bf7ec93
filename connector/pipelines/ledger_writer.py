"""Ledger writes off the event loop, for applies that send at the rate limit.

A warehouse commit blocks the thread that makes it (milliseconds on DuckDB, more on a busy
server): made on the event loop, it holds back every request waiting for its turn, and the
rate limiter's turns go unused. ``LedgerWriter`` runs the writes on one thread of its own, one
at a time and in the order they were asked for, so a claim and the outcomes are never written
at once. Outcomes that come in while a write runs are committed together by the next one (a
group commit); ``record`` returns once its outcome is committed, so a caller that waits for
it before sending more keeps "sent but not recorded" as small as it was with a commit per
answer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from connector.warehouse.engine import Transaction, Warehouse

T = TypeVar("T")
WriteRows = Callable[..., None]  # (tx, rows=...)


class LedgerWriter:
    """One writer thread for a warehouse ledger: claims in order, outcomes group-committed."""

    def __init__(self, warehouse: Warehouse, write_outcomes: WriteRows) -> None:
        self._warehouse = warehouse
        self._write_outcomes = write_outcomes
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._pending: list[Any] = []
        self._group: asyncio.Future[None] | None = None  # done when ``_pending`` is committed
        self._flushing: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def run(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one transaction on the writer thread; returns what it returns."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._in_transaction, work)

    async def record(self, row: Any) -> None:
        """Queue an outcome row and return once it is committed (with the others queued
        meanwhile). Raises a failed write's error."""
        self._raise_if_failed()
        if self._group is None:
            self._group = asyncio.get_running_loop().create_future()
        group = self._group
        self._pending.append(row)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
        # Shielded: a caller cancelled while it waits does not stop the commit of the others.
        await asyncio.shield(group)
        self._raise_if_failed()

    async def drain(self) -> None:
        """Wait until every queued outcome is committed; raises a write's error."""
        if self._flushing is not None:
            await self._flushing  # it writes until nothing is pending
        self._raise_if_failed()

    async def close(self) -> None:
        """Write what is still queued, then stop the writer thread."""
        if self._flushing is not None:
            # Shielded and waited for whatever happens: shutting the thread down under a
            # flush would drop the rows it has not written yet.
            await asyncio.wait([asyncio.shield(self._flushing)])
        self._thread.shutdown(wait=True)

    async def _flush(self) -> None:
        while self._pending:
            rows, group = self._pending, self._group
            self._pending, self._group = [], None
            try:
                if self._error is not None:
                    raise self._error  # after a failed write nothing more is trusted to commit
                await self.run(functools.partial(self._write_outcomes, rows=rows))
            except BaseException as exc:
                # Raised to every waiter of this group, and by the next record or drain; a
                # cancelled write counts as failed (it may or may not have committed).
                self._error = self._error or _as_failure(exc)
                if group is not None and not group.done():
                    group.set_exception(self._error)
                if not isinstance(exc, Exception):
                    raise
            else:
                if group is not None and not group.done():
                    group.set_result(None)

    def _in_transaction(self, work: Callable[[Transaction], T]) -> T:
        with self._warehouse.transaction() as tx:
            return work(tx)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


def _as_failure(exc: BaseException) -> Exception:
    if isinstance(exc, Exception):
        return exc
    return RuntimeError(f"an outcome write was interrupted ({type(exc).__name__})")
