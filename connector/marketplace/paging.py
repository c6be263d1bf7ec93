"""Paging strategies for Marketplace collections, one small object each (as dlt's paginators).

- ``OffsetPaging``: ``limit``/``offset`` pages. The first page's ``total`` says how many there
  are; a window of requests is kept in flight and rows are yielded in page order. The window
  stays full while the oldest page is slow (a request that finished does not hold a slot while
  it waits its turn), within a bounded look-ahead so memory stays flat; a page that lags behind
  ``hedge_after`` later pages already answered is asked for once more, and whichever answer
  comes first is used (a GET is safe to repeat). The API may answer ``total: null``: then pages
  are asked for ahead and the read ends at the first short or empty page.
- ``StreamPaging``: one line-delimited JSON answer for the whole result; a cut stream resumes
  after the last complete row (the caller opens the stream from a given id).

Both take the fetching as a function, so each can be tested alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson

from connector.errors import ConnectionFailedError, TransportError

log = logging.getLogger(__name__)

Row = dict[str, Any]


@dataclass(frozen=True)
class Page:
    """One page of a list answer: its rows and the ``total`` it gave (None when null)."""

    rows: list[Row]
    total: int | None


FetchPage = Callable[[int, int], Awaitable[Page]]  # (offset, limit) -> Page


@dataclass
class PagingStats:
    """What one paged read did."""

    total: int | None = None  # the first page's total (None: the server gave none)
    total_changed: bool = False  # a later page gave another total: the data moved
    requests: int = 0
    hedged: int = 0  # pages asked for a second time because they lagged
    max_in_flight: int = 0
    pages: int = 0


@dataclass
class OffsetPaging:
    """Offset paging with a window of concurrent requests (``window=1``: one at a time)."""

    page_size: int = 100
    window: int = 16  # requests in flight at once
    lookahead: int = 64  # pages fetched ahead of the oldest one not yet yielded
    hedge_after: int | None = 16  # later pages answered before the oldest is asked again
    stats: PagingStats = field(default_factory=PagingStats)

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.window < 1:
            raise ValueError("page_size and window must be at least 1")
        self.lookahead = max(self.lookahead, self.window)

    async def pages(self, fetch: FetchPage) -> AsyncIterator[list[Row]]:
        """Every page's rows, in order."""
        stats = self.stats
        stats.requests += 1
        first = await fetch(0, self.page_size)
        stats.total = first.total
        stats.pages += 1
        yield first.rows
        if first.total is None:
            if len(first.rows) < self.page_size:
                return
            end = None  # unknown: read until a short or empty page
        else:
            end = -(-first.total // self.page_size)  # pages in all (ceiling division)
        async for rows in self._rest(fetch, end):
            yield rows

    async def _rest(self, fetch: FetchPage, end: int | None) -> AsyncIterator[list[Row]]:
        stats = self.stats
        tasks: dict[asyncio.Task[Page], int] = {}
        attempts: Counter[int] = Counter()
        done: dict[int, Page] = {}
        next_index = oldest = 1

        def launch(index: int) -> None:
            task = asyncio.ensure_future(fetch(index * self.page_size, self.page_size))
            tasks[task] = index
            attempts[index] += 1
            stats.requests += 1
            stats.max_in_flight = max(stats.max_in_flight, len(tasks))

        try:
            while end is None or oldest < end:
                while (
                    len(tasks) < self.window
                    and (end is None or next_index < end)
                    and next_index - oldest < self.lookahead
                ):
                    launch(next_index)
                    next_index += 1
                if oldest in done:
                    page = done.pop(oldest)
                    stats.pages += 1
                    if page.total != stats.total:
                        stats.total_changed = True
                    if end is None and len(page.rows) < self.page_size:
                        end = oldest + 1  # the last page: drop what was asked beyond it
                        for task, index in tasks.items():
                            if index >= end:
                                task.cancel()
                    oldest += 1
                    yield page.rows
                    continue
                if (
                    self.hedge_after is not None
                    and attempts[oldest] == 1
                    and len(done) >= self.hedge_after
                ):
                    # Many later pages came back while this one did not: ask again.
                    stats.hedged += 1
                    launch(oldest)
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    index = tasks.pop(task)
                    if task.cancelled() or index < oldest or index in done:
                        continue
                    error = task.exception()
                    if error is not None:
                        if index in tasks.values():
                            continue  # the other request for this page may still answer
                        raise error
                    done[index] = task.result()
                    for other, other_index in tasks.items():
                        if other_index == index:
                            other.cancel()  # the slower copy of a hedged page
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task


OpenStream = Callable[[str | None], AbstractAsyncContextManager[AsyncIterator[str] | None]]


@dataclass
class StreamPaging:
    """A streamed read; ``open_stream(after_id)`` gives the lines, or None when not streamed."""

    batch_rows: int = 1000
    max_resumes: int = 6
    resumed: int = 0
    offered: bool | None = None  # whether the server streamed (None: not asked yet)

    async def pages(self, open_stream: OpenStream) -> AsyncIterator[list[Row]]:
        """The rows in batches of ``batch_rows``; nothing when the server did not stream."""
        last_id: str | None = None
        while True:
            batch: list[Row] = []
            try:
                async with open_stream(last_id) as lines:
                    if lines is None:
                        self.offered = False
                        return
                    self.offered = True
                    async for line in lines:
                        if not line:
                            continue
                        batch.append(loads_line(line))
                        if len(batch) >= self.batch_rows:
                            last_id = batch[-1]["id"]
                            yield batch
                            batch = []
                if batch:
                    yield batch
                return
            except TransportError as exc:
                # No connection at all was already retried by the HTTP client: give up.
                if isinstance(exc, ConnectionFailedError):
                    raise
                # A cut stream resumes after the last complete row; a partial last line is
                # dropped (it may be a truncated object).
                self.resumed += 1
                if self.resumed > self.max_resumes:
                    raise
                log.warning("stream interrupted (%s); resuming", exc)
                if batch:
                    last_id = batch[-1]["id"]
                    yield batch


def loads_line(line: str) -> Row:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise TransportError("stream delivered a line that is not valid JSON") from exc
