"""category_deliverability_daily on DuckDB and PostgreSQL against figures worked out by hand
from small fixed data, including the resets of the statistics windows.

PostgreSQL is not optional: when the server is unreachable these tests fail. Its sessions run
in Asia/Tokyo, so a model that took dates in the session time zone instead of UTC would put
late-evening rows on the wrong day and fail here.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest
from reporting_support import (  # noqa: F401 (fixtures)
    PARTS,
    approx,
    at,
    load,
    read,
    warehouse,
    warehouses,
)

from assets.reporting import (
    build_report,
)
from connector.warehouse.engine import Warehouse

# --- category_deliverability_daily -----------------------------------------------------------


def snapshot(category: str, when: str, **windows: tuple[int, ...]) -> list[dict[str, Any]]:
    """Snapshot rows: ``today=(sent, bounced, complained, discarded, failed)`` etc."""
    rows = []
    for window, parts in windows.items():
        figures = dict(zip(PARTS, parts, strict=True))
        rows.append(
            {
                "snapshot_at": at(when),
                "category_id": category,
                "statistics_window": window,
                **figures,
                "total": sum(parts),
            }
        )
    return rows


def messages_of(category: str, when: str, status: str, count: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "id": f"MSG-{uuid.uuid4().hex[:12]}",
            "category_id": category,
            "batch_id": "MST-X",
            "contact_id": "CTT-X",
            "status": status,
            "created_at": at(when),
        }
        for _ in range(count)
    ]


DELIVERABILITY_SNAPSHOTS = [
    # NTC-1, a Wednesday: two snapshots on the 18th, two on the 19th.
    *snapshot(
        "NTC-1",
        "2026-11-18T09:00",
        today=(4, 0, 0, 0, 0),
        week=(16, 1, 1, 0, 1),
        month=(46, 4, 2, 1, 1),
    ),
    *snapshot(
        "NTC-1",
        "2026-11-18T22:00",
        today=(8, 1, 0, 1, 0),
        week=(20, 2, 1, 1, 1),
        month=(50, 5, 2, 2, 1),
    ),
    *snapshot(
        "NTC-1",
        "2026-11-19T01:00",
        today=(3, 0, 0, 0, 0),
        week=(27, 3, 1, 1, 1),
        month=(57, 6, 2, 2, 1),
    ),
    *snapshot(
        "NTC-1",
        "2026-11-19T12:00",
        today=(6, 1, 0, 0, 0),
        week=(30, 4, 1, 1, 1),
        month=(60, 7, 2, 2, 1),
    ),
    # Sunday 22nd to Monday 23rd: the week restarts, the month does not.
    *snapshot(
        "NTC-1",
        "2026-11-22T20:00",
        today=(5, 0, 0, 0, 0),
        week=(40, 4, 1, 1, 1),
        month=(80, 8, 3, 2, 1),
    ),
    *snapshot(
        "NTC-1",
        "2026-11-23T02:00",
        today=(2, 1, 0, 0, 0),
        week=(2, 1, 0, 0, 0),
        month=(86, 9, 3, 2, 2),
    ),
    # NTC-2: Sunday 31 January to Monday 1 February, both windows restart; then no snapshot on
    # Monday 8 February, but one on Tuesday the 9th.
    *snapshot(
        "NTC-2",
        "2027-01-31T18:00",
        today=(6, 1, 0, 0, 0),
        week=(30, 2, 0, 0, 0),
        month=(100, 5, 1, 0, 0),
    ),
    *snapshot(
        "NTC-2",
        "2027-02-01T00:30",
        today=(1, 0, 0, 0, 0),
        week=(1, 0, 0, 0, 0),
        month=(1, 0, 0, 0, 0),
    ),
    *snapshot(
        "NTC-2",
        "2027-02-09T05:00",
        today=(2, 0, 0, 0, 0),
        week=(9, 1, 0, 0, 1),
        month=(40, 3, 0, 0, 1),
    ),
    # NTC-3 (no longer in categories): between the two snapshots, 15 earlier messages of the
    # week went from Sent to Bounced, more than the 18th's own 10 messages.
    *snapshot(
        "NTC-3",
        "2026-11-18T23:00",
        today=(10, 0, 0, 0, 0),
        week=(30, 0, 0, 0, 0),
        month=(60, 0, 0, 0, 0),
    ),
    *snapshot(
        "NTC-3",
        "2026-11-19T00:10",
        today=(1, 0, 0, 0, 0),
        week=(15, 15, 0, 0, 0),
        month=(45, 15, 0, 0, 0),
    ),
]

DELIVERABILITY_MESSAGES = [
    # The 18th: 12 sent, 2 bounced, 1 discarded (some after the last snapshot), 1 queued.
    *messages_of("NTC-1", "2026-11-18T10:00", "Sent", 9),
    *messages_of("NTC-1", "2026-11-18T12:00", "Bounced", 2),
    *messages_of("NTC-1", "2026-11-18T23:30", "Sent", 3),
    *messages_of("NTC-1", "2026-11-18T23:45", "Discarded"),
    *messages_of("NTC-1", "2026-11-18T23:50", "Queued"),
    # The 19th up to the last snapshot (12:00 included), and two after it.
    *messages_of("NTC-1", "2026-11-19T11:00", "Sent", 6),
    *messages_of("NTC-1", "2026-11-19T12:00", "Bounced"),
    *messages_of("NTC-1", "2026-11-19T15:00", "Sent", 2),
    # The 20th has no snapshot at all.
    *messages_of("NTC-1", "2026-11-20T09:00", "Sent"),
    *messages_of("NTC-1", "2026-11-20T10:00", "Bounced"),
    # The 22nd: one message fewer than the statistics say.
    *messages_of("NTC-1", "2026-11-22T08:00", "Sent", 8),
    *messages_of("NTC-1", "2026-11-22T21:00", "Failed"),
]

# (day, category) -> name, sent, bounced, complained, discarded, failed, total, method,
# covered_until, is_complete, messages sent, bounced, complained, discarded, failed, queued,
# total, total_difference, matches_messages; rates are checked apart.
EXPECTED_DAYS = {
    (date(2026, 11, 18), "NTC-1"): (
        "Billing",
        12,
        2,
        0,
        1,
        0,
        15,
        "week_difference",
        at("2026-11-19T00:00"),
        True,
        12,
        2,
        0,
        1,
        0,
        1,
        15,
        0,
        True,
    ),
    (date(2026, 11, 19), "NTC-1"): (
        "Billing",
        6,
        1,
        0,
        0,
        0,
        7,
        "today_window",
        at("2026-11-19T12:00"),
        False,
        6,
        1,
        0,
        0,
        0,
        0,
        7,
        0,
        True,
    ),
    (date(2026, 11, 20), "NTC-1"): (
        "Billing",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        1,
        1,
        0,
        0,
        0,
        0,
        2,
        None,
        None,
    ),
    (date(2026, 11, 22), "NTC-1"): (
        "Billing",
        9,
        0,
        0,
        0,
        1,
        10,
        "month_difference",
        at("2026-11-23T00:00"),
        True,
        8,
        0,
        0,
        0,
        1,
        0,
        9,
        1,
        False,
    ),
    (date(2026, 11, 23), "NTC-1"): (
        "Billing",
        2,
        1,
        0,
        0,
        0,
        3,
        "today_window",
        at("2026-11-23T02:00"),
        False,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ),
    (date(2027, 1, 31), "NTC-2"): (
        "Security",
        6,
        1,
        0,
        0,
        0,
        7,
        "today_window",
        at("2027-01-31T18:00"),
        False,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ),
    (date(2027, 2, 1), "NTC-2"): (
        "Security",
        1,
        0,
        0,
        0,
        0,
        1,
        "today_window",
        at("2027-02-01T00:30"),
        False,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ),
    (date(2027, 2, 8), "NTC-2"): (
        "Security",
        7,
        1,
        0,
        0,
        1,
        9,
        "week_difference",
        at("2027-02-09T00:00"),
        True,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ),
    (date(2027, 2, 9), "NTC-2"): (
        "Security",
        2,
        0,
        0,
        0,
        0,
        2,
        "today_window",
        at("2027-02-09T05:00"),
        False,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ),
    (date(2026, 11, 18), "NTC-3"): (
        None,
        10,
        0,
        0,
        0,
        0,
        10,
        "today_window",
        at("2026-11-18T23:00"),
        False,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        10,
        False,
    ),
    (date(2026, 11, 19), "NTC-3"): (
        None,
        1,
        0,
        0,
        0,
        0,
        1,
        "today_window",
        at("2026-11-19T00:10"),
        False,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        False,
    ),
}
EXPECTED_RATES = {  # (bounce_rate, complaint_rate)
    (date(2026, 11, 18), "NTC-1"): (2 / 15, 0.0),
    (date(2026, 11, 19), "NTC-1"): (1 / 7, 0.0),
    (date(2026, 11, 20), "NTC-1"): (None, None),
    (date(2026, 11, 22), "NTC-1"): (0.0, 0.0),
    (date(2026, 11, 23), "NTC-1"): (1 / 3, 0.0),
    (date(2027, 1, 31), "NTC-2"): (1 / 7, 0.0),
    (date(2027, 2, 1), "NTC-2"): (0.0, 0.0),
    (date(2027, 2, 8), "NTC-2"): (1 / 9, 0.0),
    (date(2027, 2, 9), "NTC-2"): (0.0, 0.0),
    (date(2026, 11, 18), "NTC-3"): (0.0, 0.0),
    (date(2026, 11, 19), "NTC-3"): (0.0, 0.0),
}
DAY_COLUMNS = (
    "category_name", *PARTS, "total", "method", "covered_until", "is_complete",
    *(f"messages_{p}" for p in (*PARTS, "queued", "total")), "total_difference",
    "matches_messages",
)  # fmt: skip

CATEGORIES = [
    {"id": "NTC-1", "name": "Billing", "status": "Published", "opt_out_allowed": True},
    {"id": "NTC-2", "name": "Security", "status": "Published", "opt_out_allowed": True},
    {"id": "NTC-4", "name": "News", "status": "Unpublished", "opt_out_allowed": False},
]


def test_deliverability_turns_rolling_windows_into_days(warehouse: Warehouse) -> None:
    load(
        warehouse,
        categories=CATEGORIES,
        category_statistics_snapshots=DELIVERABILITY_SNAPSHOTS,
        messages=DELIVERABILITY_MESSAGES,
    )
    assert build_report(warehouse, "category_deliverability_daily") == len(EXPECTED_DAYS)
    rows = read(warehouse, "category_deliverability_daily", "day", "category_id")
    assert sorted(rows) == sorted(EXPECTED_DAYS)
    for key, expected in EXPECTED_DAYS.items():
        assert tuple(rows[key][c] for c in DAY_COLUMNS) == expected, key
        bounce, complaint = EXPECTED_RATES[key]
        assert (rows[key]["bounce_rate"], rows[key]["complaint_rate"]) == (
            approx(bounce),
            approx(complaint),
        ), key


def test_deliverability_without_messages_leaves_the_cross_check_empty(
    warehouse: Warehouse,
) -> None:
    load(
        warehouse,
        categories=CATEGORIES,
        category_statistics_snapshots=snapshot(
            "NTC-1", "2026-11-18T22:00", today=(3, 1, 1, 0, 0), week=(3, 1, 1, 0, 0),
            month=(3, 1, 1, 0, 0),
        ),
    )  # fmt: skip
    build_report(warehouse, "category_deliverability_daily")
    ((key, row),) = read(warehouse, "category_deliverability_daily", "day", "category_id").items()
    assert key == (date(2026, 11, 18), "NTC-1")
    assert (row["total"], row["method"], row["messages_total"], row["matches_messages"]) == (
        5,
        "today_window",
        None,
        None,
    )
    assert row["complaint_rate"] == pytest.approx(0.2)
