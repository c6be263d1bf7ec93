"""The push-back's ledger writer: every outcome handed to it is committed, whatever stops the
apply meanwhile (a cancelled sender, a stop while a write is in progress)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.pipelines.ledger_writer import LedgerWriter
from connector.warehouse.engine import Transaction, Warehouse

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def test_outcomes_queued_behind_a_write_are_committed_when_their_senders_are_cancelled(
    tmp_path: Path,
) -> None:
    """One write is in progress and four outcomes queue behind it; then every sender is
    cancelled (the run was stopped). Closing the writer still commits all five."""
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse.ensure_tables(["sync_state"])
    entered, release = threading.Event(), threading.Event()

    def write(tx: Transaction, *, rows: list[Any]) -> None:
        if not entered.is_set():
            entered.set()
            release.wait()  # the first write is held until the senders are cancelled
        for name in rows:
            tx.set_state(name, "done", NOW)

    async def stopped_apply() -> None:
        writer = LedgerWriter(warehouse, write)
        first = asyncio.ensure_future(writer.record("outcome-1"))
        await asyncio.to_thread(entered.wait)
        queued = [asyncio.ensure_future(writer.record(f"outcome-{n}")) for n in range(2, 6)]
        await asyncio.sleep(0)  # they are queued behind the write in progress
        for sender in (first, *queued):
            sender.cancel()
        await asyncio.gather(first, *queued, return_exceptions=True)
        release.set()
        await writer.close()

    try:
        asyncio.run(stopped_apply())
        with warehouse.transaction() as tx:
            states = {f"outcome-{n}": tx.get_state(f"outcome-{n}") for n in range(1, 6)}
    finally:
        warehouse.dispose()

    assert states == {f"outcome-{n}": "done" for n in range(1, 6)}


def test_a_failed_write_is_raised_to_its_senders_and_nothing_after_it_is_written(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse.ensure_tables(["sync_state"])

    def write(tx: Transaction, *, rows: list[Any]) -> None:
        if "bad" in rows:
            raise RuntimeError("disk full")
        for name in rows:
            tx.set_state(name, "done", NOW)

    async def apply() -> list[Any]:
        writer = LedgerWriter(warehouse, write)
        try:
            results = await asyncio.gather(writer.record("bad"), return_exceptions=True)
            results += await asyncio.gather(writer.record("after"), return_exceptions=True)
            return results
        finally:
            await writer.close()

    try:
        results = asyncio.run(apply())
        with warehouse.transaction() as tx:
            after = tx.get_state("after")
    finally:
        warehouse.dispose()

    assert [str(r) for r in results] == ["disk full", "disk full"]
    assert after is None
