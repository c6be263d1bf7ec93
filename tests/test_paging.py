"""The paging strategies alone (``connector.marketplace.paging``), over a list in memory: every
row once and in order, the window kept full while the oldest page is held, a lagging page asked
for again, null totals read to the end, a cut stream resumed. Nothing here is timed: a held page
waits on an event the test sets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from connector.errors import Problem, ServerError, TransportError
from connector.marketplace.paging import OffsetPaging, Page, StreamPaging

ROWS = [{"id": f"R{n:05d}"} for n in range(1, 1051)]  # 10 full pages and a short one


class Source:
    """A collection answering ``(offset, limit)``; chosen offsets wait until released."""

    def __init__(self, rows: list[dict[str, Any]], *, total: bool = True) -> None:
        self.rows = rows
        self.total = total
        self.requested: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.held: dict[int, int] = {}  # offset -> how many of its next requests to hold
        self.waiting = 0
        self.release = asyncio.Event()
        self.failing: set[int] = set()
        self.changed = asyncio.Event()

    async def fetch(self, offset: int, limit: int) -> Page:
        self.requested.append(offset)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.changed.set()
        try:
            if self.held.get(offset):
                self.held[offset] -= 1
                self.waiting += 1
                try:
                    await self.release.wait()
                finally:
                    self.waiting -= 1
            await asyncio.sleep(0)  # answer on a later turn of the loop, as a server does
            if offset in self.failing:
                raise ServerError("GET", "/x", Problem(503))
            return Page(self.rows[offset : offset + limit], len(self.rows) if self.total else None)
        finally:
            self.in_flight -= 1

    async def until(self, condition: Any) -> None:
        while not condition():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 60)


async def collect(paging: OffsetPaging, source: Source) -> list[dict[str, Any]]:
    return [row async for rows in paging.pages(source.fetch) for row in rows]


@pytest.mark.parametrize("window", [1, 3, 16])
def test_every_row_once_in_order_within_the_window(window: int) -> None:
    source = Source(ROWS)
    paging = OffsetPaging(100, window=window, lookahead=window * 2, hedge_after=None)
    assert asyncio.run(collect(paging, source)) == ROWS
    assert sorted(source.requested) == list(range(0, 1100, 100))  # 11 pages, each once
    assert source.max_in_flight <= window
    assert paging.stats.total == 1050 and not paging.stats.total_changed


@pytest.mark.parametrize("size", [0, 1, 100, 1000, 1050])
def test_a_null_total_is_read_to_the_first_short_or_empty_page(size: int) -> None:
    source = Source(ROWS[:size], total=False)
    paging = OffsetPaging(100, window=4, lookahead=8, hedge_after=None)
    assert asyncio.run(collect(paging, source)) == ROWS[:size]
    assert paging.stats.total is None
    if size % 100 == 0 and size:
        assert size in source.requested  # the empty page that ends it


def test_the_window_stays_full_while_the_oldest_page_is_held() -> None:
    source = Source(ROWS)
    source.held[100] = 99  # every request for the second page waits

    async def run() -> list[dict[str, Any]]:
        paging = OffsetPaging(100, window=3, lookahead=8, hedge_after=None)
        reading = asyncio.ensure_future(collect(paging, source))
        # While the page at offset 100 is held, pages after it are still asked for: up to
        # the look-ahead (8 pages ahead of the oldest unyielded one), three at a time.
        await source.until(
            lambda: max(source.requested, default=0) == 800 and source.in_flight == 1
        )
        assert source.waiting == 1 and not reading.done()
        assert source.max_in_flight <= 3
        source.release.set()
        return await reading

    assert asyncio.run(run()) == ROWS


def test_a_page_lagging_behind_is_asked_for_again_and_the_first_answer_wins() -> None:
    source = Source(ROWS)
    source.held[100] = 1  # only the first request for the second page is held

    async def run() -> tuple[list[dict[str, Any]], OffsetPaging]:
        paging = OffsetPaging(100, window=4, lookahead=10, hedge_after=3)
        rows = await collect(paging, source)
        # The read finished while the first request was still held.
        assert source.waiting == 0  # (cancelled when its copy answered)
        return rows, paging

    rows, paging = asyncio.run(run())
    assert rows == ROWS
    assert paging.stats.hedged == 1
    assert source.requested.count(100) == 2


def test_a_failed_page_fails_the_read_and_cancels_the_rest() -> None:
    source = Source(ROWS)
    source.failing.add(300)
    paging = OffsetPaging(100, window=4, lookahead=8, hedge_after=None)
    with pytest.raises(ServerError):
        asyncio.run(collect(paging, source))
    assert source.in_flight == 0


def lines_of(rows: list[dict[str, Any]]) -> list[str]:
    return [orjson.dumps(r).decode() for r in rows]


def test_a_cut_stream_resumes_after_the_last_complete_row() -> None:
    opened: list[str | None] = []

    @contextlib.asynccontextmanager
    async def open_stream(after: str | None) -> AsyncIterator[AsyncIterator[str] | None]:
        opened.append(after)
        rest = [r for r in ROWS if after is None or r["id"] > after]

        async def lines() -> AsyncIterator[str]:
            for n, line in enumerate(lines_of(rest)):
                if len(opened) == 1 and n == 420:
                    yield line[:5]  # a truncated last line, then the connection drops
                    raise TransportError("stream interrupted (ReadError)")
                yield line

        yield lines()

    async def run() -> list[dict[str, Any]]:
        streaming = StreamPaging(batch_rows=100, max_resumes=2)
        rows = [r async for batch in streaming.pages(open_stream) for r in batch]
        assert (streaming.resumed, streaming.offered) == (1, True)
        return rows

    rows = asyncio.run(run())
    assert opened[0] is None and opened[1] is not None
    # What was yielded before the cut is not read again; the partial line is not a row.
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS]


def test_a_server_that_does_not_stream_yields_nothing_and_says_so() -> None:
    @contextlib.asynccontextmanager
    async def open_stream(after: str | None) -> AsyncIterator[AsyncIterator[str] | None]:
        yield None

    async def run() -> tuple[list[Any], StreamPaging]:
        streaming = StreamPaging()
        return [b async for b in streaming.pages(open_stream)], streaming

    batches, streaming = asyncio.run(run())
    assert batches == [] and streaming.offered is False
