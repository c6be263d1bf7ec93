"""Messages partitions: a window is replaced exactly, re-runs are idempotent, neighbours are
left alone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from conftest import ANCHOR
from sync_support import (
    at,
    content,
    frozen_sandbox,
    rows,
    sync_messages,
)

from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

# --- messages windows ------------------------------------------------------------------------


def _days_with_messages(sandbox: Sandbox) -> dict[date, list[dict]]:
    days: dict[date, list[dict]] = {}
    for message in sandbox.truth("messages"):
        moment = datetime.fromisoformat(at(message, "created").replace("Z", "+00:00"))
        days.setdefault(moment.date(), []).append(message)
    return days


def _day(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def test_rerunning_a_messages_window_is_idempotent(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=2000)
    days = _days_with_messages(sandbox)
    day = max(days, key=lambda d: len(days[d]))
    start, end = _day(day)

    first = sync_messages(sandbox, warehouse, start, end)
    once = content(warehouse, "messages")
    second = sync_messages(sandbox, warehouse, start, end)

    assert content(warehouse, "messages") == once
    assert sorted(r["id"] for r in once) == sorted(m["id"] for m in days[day])
    assert first.api_count == first.table_count == len(days[day])
    assert second.counts["messages"].deleted == len(days[day])
    assert second.counts["messages"].inserted == len(days[day])


def test_adjacent_windows_do_not_touch_each_other(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=2000)
    store = sandbox.marketplace
    # Move the clock to 150 ms before midnight: a new batch's first message is created at
    # exactly 00:00:00.000, the first instant of the next day's partition.
    midnight = datetime(2026, 11, 19, tzinfo=UTC)
    sandbox.clock.advance((midnight - timedelta(milliseconds=150) - ANCHOR).total_seconds())
    recipients = [{"id": c["id"]} for c in list(store.contacts.all())[:20]]
    batch = store.create_batch(
        {"category": {"id": "NTC-0000-0001"}, "subject": "Midnight", "contacts": recipients}
    )
    messages = [m for m in sandbox.truth("messages") if m["batch"]["id"] == batch["id"]]
    assert at(messages[0], "created") == "2026-11-19T00:00:00.000Z"

    today, tomorrow = _day(date(2026, 11, 18)), _day(date(2026, 11, 19))
    sync_messages(sandbox, warehouse, *today)
    sync_messages(sandbox, warehouse, *tomorrow)
    days = _days_with_messages(sandbox)
    stored = rows(warehouse, "messages")
    assert sorted(r["id"] for r in stored) == sorted(
        m["id"] for m in (*days[date(2026, 11, 18)], *days[date(2026, 11, 19)])
    )
    assert sorted(r["id"] for r in stored if r["created_at"] >= midnight.isoformat()) == sorted(
        m["id"] for m in messages
    )
    tomorrow_rows = [r for r in stored if r["created_at"] >= midnight.isoformat()]

    # More messages arrive tomorrow; re-running today neither drops nor adds tomorrow's rows.
    sandbox.clock.advance(3600)
    store.create_batch(
        {"category": {"id": "NTC-0000-0001"}, "subject": "Later", "contacts": recipients}
    )
    sync_messages(sandbox, warehouse, *today)
    after = rows(warehouse, "messages")
    assert [r for r in after if r["created_at"] >= midnight.isoformat()] == tomorrow_rows
    assert content(warehouse, "messages") == [
        {k: v for k, v in r.items() if k != "synced_at"} for r in stored
    ]

    # Re-running tomorrow picks up the new batch and leaves today's rows as they were.
    today_rows = [r for r in after if r["created_at"] < midnight.isoformat()]
    result = sync_messages(sandbox, warehouse, *tomorrow)
    final = rows(warehouse, "messages")
    assert [r for r in final if r["created_at"] < midnight.isoformat()] == today_rows
    assert result.table_count == result.api_count == 40


def test_a_range_of_days_is_loaded_as_one_window(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=2000)
    days = _days_with_messages(sandbox)
    first, last = min(days), max(days)
    start, end = _day(first)[0], _day(last)[1]
    middle = sorted(days)[len(days) // 2]
    # Only the middle day first, then the whole range over it.
    sync_messages(sandbox, warehouse, *_day(middle))
    result = sync_messages(sandbox, warehouse, start, end)
    assert result.counts["messages"].deleted == len(days[middle])
    assert sorted(r["id"] for r in rows(warehouse, "messages")) == sorted(
        m["id"] for m in sandbox.truth("messages")
    )
