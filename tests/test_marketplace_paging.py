"""The client's paged reads against the sandbox: one held (slow) page does not stall the read,
a lagging page is asked for again, null totals are read to the end and reported, and rows that
move while a client pages are yielded exactly once in every paging mode."""

from __future__ import annotations

import asyncio

import pytest
from conftest import asgi_marketplace, make_sandbox

from connector.marketplace.client import ReadReport
from sandbox.app import Sandbox

PAGE = 100


async def read(sandbox: Sandbox, mode: str, **limits: object) -> tuple[list[dict], ReadReport]:
    report = ReadReport("contacts")
    async with asgi_marketplace(sandbox, **limits) as client:  # type: ignore[arg-type]
        rows = [
            r
            async for chunk in client.read("contacts", mode=mode, report=report)  # type: ignore[arg-type]
            for r in chunk
        ]
    return rows, report


def test_a_held_page_does_not_stall_the_pages_after_it() -> None:
    sandbox = make_sandbox(contacts=6000, seed=11)
    gate = sandbox.gate
    gate.hold(offset=PAGE)  # every request for the second page waits until released

    async def run() -> tuple[list[dict], ReadReport]:
        reading = asyncio.ensure_future(read(sandbox, "concurrent", max_concurrency=4))
        # While the page at offset 100 is held, later pages are still requested: far more
        # than the eight tasks the old window allowed before it waited on the oldest.
        await gate.wait_until(
            lambda g: len({a.offset for a in g.arrivals if a.offset and a.offset > PAGE}) >= 20
        )
        assert gate.held >= 1 and not reading.done()
        offsets = {a.offset for a in gate.arrivals if a.offset}
        assert max(offsets) >= 20 * PAGE
        # ...within the client's concurrency limit, the held request included.
        assert gate.max_in_flight <= 4
        gate.release()
        return await reading

    rows, report = asyncio.run(run())
    truth = [c["id"] for c in sandbox.truth("contacts")]
    assert [r["id"] for r in rows] == truth  # still in order, every row once
    assert report.complete


def test_a_page_held_once_is_asked_again_and_the_read_finishes_while_it_is_held() -> None:
    sandbox = make_sandbox(contacts=4000, seed=12)
    sandbox.gate.hold(offset=PAGE, times=1)  # only the first request for it waits

    rows, report = asyncio.run(read(sandbox, "concurrent", max_concurrency=4))
    sandbox.gate.release()
    assert [r["id"] for r in rows] == [c["id"] for c in sandbox.truth("contacts")]
    assert report.hedged_pages == 1
    assert sum(1 for a in sandbox.gate.arrivals if a.offset == PAGE) == 2


@pytest.mark.parametrize("mode", ["concurrent", "sequential", "auto"])
def test_null_totals_are_read_to_the_end_and_reported_unverified(mode: str) -> None:
    sandbox = make_sandbox(contacts=1234, seed=13, null_totals=True)
    rows, report = asyncio.run(read(sandbox, mode))
    assert [r["id"] for r in rows] == [c["id"] for c in sandbox.truth("contacts")]
    assert report.final_count is None
    assert not report.complete  # completeness cannot be shown without a count
    assert "no total" in report.completeness
    if mode != "auto":
        assert not report.total_given and report.reported_total is None


@pytest.mark.parametrize("mode", ["concurrent", "sequential"])
def test_rows_repeated_across_page_boundaries_are_yielded_once(mode: str) -> None:
    # Before every request the sandbox inserts contacts at earlier positions, so the row at
    # the end of one page is at the start of the next when that page is asked for.
    sandbox = make_sandbox(contacts=3000, seed=14, reinserts_per_request=3)
    before = {c["id"] for c in sandbox.truth("contacts")}

    rows, report = asyncio.run(read(sandbox, mode, max_concurrency=4))
    sandbox.behaviour.reinserts_per_request = 0
    ids = [r["id"] for r in rows]
    assert sandbox.marketplace.churn.reinserted > 0
    assert report.duplicates_dropped > 0, "the sandbox must really have repeated rows"
    assert len(ids) == len(set(ids)), "every id exactly once"
    assert before <= set(ids)  # nothing that was there throughout was skipped
    assert set(ids) <= {c["id"] for c in sandbox.truth("contacts")}
