"""The reporting models on DuckDB and PostgreSQL against figures worked out by hand from small
fixed data, including the resets of the statistics windows; atomic rebuilds; the Dagster
assets' wiring and metadata; the reports after a sync and a reconcile of the sandbox, with
their charts; and reconciliation_history against the plan and ledger of real reconcile runs.

PostgreSQL is not optional: when the server is unreachable these tests fail. Its sessions run
in Asia/Tokyo, so a model that took dates in the session time zone instead of UTC would put
late-evening rows on the wrong day and fail here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import matplotlib.image
import orjson
import pytest
import sqlalchemy as sa
from conftest import asgi_marketplace, make_sandbox
from dagster import DagsterInstance, DefaultSensorStatus, materialize
from sqlalchemy.pool import NullPool

from assets.reporting import (
    CHART_DIR,
    REPORT_NAMES,
    REPORTING,
    REPORTS,
    build_report,
    evaluate_checks,
    rebuild,
)
from assets.resources import WarehouseResource
from connector.evinotice.client import EviNoticeClient
from connector.pipelines import pushback, reconcile, sync
from connector.settings import EviNoticeSettings, Secret
from connector.warehouse.engine import Warehouse
from connector.warehouse.sql_files import read_sql
from connector.warehouse.tables import ALL_TABLE_NAMES, table
from sandbox.crm_export import write_sample_export

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_SESSION = "options=-c%20timezone%3DAsia/Tokyo"
SOURCES = (
    "contacts",
    "contact_opt_outs",
    "categories",
    "category_statistics_snapshots",
    "batches",
    "messages",
    "evinotice_batches",
    "crm_contacts",
    "reconciliation_runs",
    "reconciliation_plan",
    "pushback_results",
)
PARTS = ("sent", "bounced", "complained", "discarded", "failed")


def at(text: str) -> datetime:
    """A UTC timestamp from a short ISO form, e.g. ``2026-11-18T22:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- warehouses ------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its sessions in Tokyo time); dropped afterwards."""
    name = f"notifsync_test_{uuid.uuid4().hex}"
    admin = sa.create_engine(
        f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f"create database {name}")
    try:
        yield f"{PG_SERVER}/{name}?{PG_SESSION}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"drop database if exists {name} with (force)")
        admin.dispose()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """One database for the hand-made tests of this module."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def warehouses(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Warehouse]]:
    duck = tmp_path_factory.mktemp("reporting") / "warehouse.duckdb"
    opened = {"duckdb": Warehouse(f"duckdb:///{duck}"), "postgresql": Warehouse(postgres_url)}
    for warehouse in opened.values():
        warehouse.ensure_tables()
    yield opened
    for warehouse in opened.values():
        warehouse.dispose()


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request: pytest.FixtureRequest, warehouses: dict[str, Warehouse]) -> Warehouse:
    return warehouses[request.param]


def load(warehouse: Warehouse, **tables: list[dict[str, Any]]) -> None:
    """Empty every source table, then insert the given rows (missing columns are null)."""
    with warehouse.transaction() as tx:
        for name in SOURCES:
            tx.run("load/delete_all_rows", target=name)
        for name, rows in tables.items():
            columns = sorted({key for row in rows for key in row})
            statement = sa.text(
                f"insert into {name} ({', '.join(columns)}) "
                f"values ({', '.join(':' + c for c in columns)})"
            )
            tx.connection.execute(statement, [{c: row.get(c) for c in columns} for row in rows])


def read(warehouse: Warehouse, name: str, *key: str) -> dict[tuple, dict[str, Any]]:
    """A table's rows keyed by the given columns."""
    result = {}
    for row in warehouse.query(f"select * from {name}"):
        values = dict(row._mapping)
        result[tuple(values[k] for k in key)] = values
    return result


def approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value)


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


# --- batch_statistics ------------------------------------------------------------------------


def test_batch_statistics_puts_both_providers_in_one_shape(warehouse: Warehouse) -> None:
    batch = {"category_id": "NTC-1", "category_name": "Billing", "account_id": "ACC-1",
             "account_name": "Acme"}  # fmt: skip
    batches = [
        {"id": "MST-1", "subject": "Invoice run", "created_at": at("2026-11-18T10:00"), **batch},
        {"id": "MST-2", "subject": "Security notice", "created_at": at("2026-11-19T09:00"),
         **batch, "category_id": "NTC-2", "category_name": "Security"},
        {"id": "MST-3", "subject": "Nothing synced", "created_at": at("2026-11-20T09:00"),
         **batch},
    ]  # fmt: skip
    messages = [
        {"id": f"MSG-{n}", "batch_id": batch_id, "contact_id": "CTT-1", "status": status,
         "created_at": at(when)}
        for n, (batch_id, status, when) in enumerate(
            [
                ("MST-1", "Sent", "2026-11-18T10:00:01"),
                ("MST-1", "Sent", "2026-11-18T10:00:02"),
                ("MST-1", "Bounced", "2026-11-18T10:00:03"),
                ("MST-1", "Complained", "2026-11-18T10:00:05"),
                ("MST-1", "Queued", "2026-11-18T10:00:09"),
                ("MST-2", "Sent", "2026-11-19T09:00:01"),
                ("MST-2", "Discarded", "2026-11-19T09:00:02"),
                ("MST-2", "Failed", "2026-11-19T09:00:03"),
            ]
        )
    ]  # fmt: skip
    site = {"site_id": "SITE-1", "site_name": "Main site"}
    evinotice = [
        {"id": "E1", "state": "Processed", "description": "Reminders", "total_count": 10,
         "sent_count": 8, "failed_count": 2, "progress_percentage": 100.0,
         "created_at": at("2026-11-10T08:00"), "started_on": at("2026-11-10T08:05"),
         "processed_on": at("2026-11-10T09:00"), **site},
        {"id": "E2", "state": "Processing", "description": "Notices", "total_count": 4,
         "sent_count": 1, "failed_count": 0, "progress_percentage": 25.0,
         "created_at": at("2026-11-11T08:00"), "started_on": at("2026-11-11T08:01"), **site},
        {"id": "E3", "state": "Draft", "description": "Later", "total_count": 0,
         "sent_count": 0, "failed_count": 0, "progress_percentage": 0.0,
         "created_at": at("2026-11-12T08:00"), "scheduled_for": at("2026-11-30T09:00"),
         **site},
    ]  # fmt: skip
    load(warehouse, batches=batches, messages=messages, evinotice_batches=evinotice)
    assert build_report(warehouse, "batch_statistics") == 6
    rows = read(warehouse, "batch_statistics", "provider", "batch_id")

    columns = ("name", "category_id", "owner_id", "owner_name", "state", "total_count",
               "sent_count", "failed_count", "bounced_count", "complained_count",
               "discarded_count", "pending_count", "created_at", "scheduled_for",
               "started_at", "finished_at")  # fmt: skip
    expected = {
        ("marketplace", "MST-1"): ("Invoice run", "NTC-1", "ACC-1", "Acme", "Processing",
                                   5, 2, 0, 1, 1, 0, 1, at("2026-11-18T10:00"), None,
                                   at("2026-11-18T10:00:01"), at("2026-11-18T10:00:09")),
        ("marketplace", "MST-2"): ("Security notice", "NTC-2", "ACC-1", "Acme", "Processed",
                                   3, 1, 1, 0, 0, 1, 0, at("2026-11-19T09:00"), None,
                                   at("2026-11-19T09:00:01"), at("2026-11-19T09:00:03")),
        ("marketplace", "MST-3"): ("Nothing synced", "NTC-1", "ACC-1", "Acme", None,
                                   0, 0, 0, 0, 0, 0, 0, at("2026-11-20T09:00"), None,
                                   None, None),
        ("evinotice", "E1"): ("Reminders", None, "SITE-1", "Main site", "Processed",
                              10, 8, 2, None, None, None, 0, at("2026-11-10T08:00"), None,
                              at("2026-11-10T08:05"), at("2026-11-10T09:00")),
        ("evinotice", "E2"): ("Notices", None, "SITE-1", "Main site", "Processing",
                              4, 1, 0, None, None, None, 3, at("2026-11-11T08:00"), None,
                              at("2026-11-11T08:01"), None),
        ("evinotice", "E3"): ("Later", None, "SITE-1", "Main site", "Draft",
                              0, 0, 0, None, None, None, 0, at("2026-11-12T08:00"),
                              at("2026-11-30T09:00"), None, None),
    }  # fmt: skip
    assert sorted(rows) == sorted(expected)
    for key, values in expected.items():
        assert tuple(rows[key][c] for c in columns) == values, key
    rates = ("progress_percentage", "sent_rate", "failure_rate", "bounce_rate", "complaint_rate")
    expected_rates = {
        ("marketplace", "MST-1"): (80.0, 0.4, 0.0, 0.2, 0.2),
        ("marketplace", "MST-2"): (100.0, 1 / 3, 1 / 3, 0.0, 0.0),
        ("marketplace", "MST-3"): (None, None, None, None, None),
        ("evinotice", "E1"): (100.0, 0.8, 0.2, None, None),
        ("evinotice", "E2"): (25.0, 0.25, 0.0, None, None),
        ("evinotice", "E3"): (0.0, None, None, None, None),
    }
    for key, values in expected_rates.items():
        assert tuple(rows[key][c] for c in rates) == tuple(approx(v) for v in values), key


# --- contact_health and opt_outs_by_category -------------------------------------------------

CONTACTS = [
    {"id": "K1", "email": "k1@example.com", "status": "Active", "opt_out_count": 2,
     "created_at": at("2026-01-01T00:00")},
    {"id": "K2", "email": "k2@example.com", "status": "Blocked", "blocked_reason": "Bounce",
     "opt_out_count": 1, "created_at": at("2026-01-02T00:00")},
    {"id": "K3", "email": "k3@example.com", "status": "Active", "opt_out_count": 0},
    {"id": "K4", "email": "k4@example.com", "status": "Active", "opt_out_count": 2,
     "deleted_at": at("2026-11-01T00:00")},
    {"id": "K5", "email": "k5@example.com", "status": "Active", "opt_out_count": 1},
]  # fmt: skip


def test_contact_health(warehouse: Warehouse) -> None:
    as_of = at("2026-11-23T12:00")  # the 30 days start at 2026-10-24T12:00
    rows = [
        ("K1", "Sent", "2026-11-20T10:00", None),
        ("K1", "Bounced", "2026-11-10T10:00", "2026-11-10T10:05"),
        ("K1", "Sent", "2026-10-01T10:00", None),
        ("K1", "Complained", "2026-09-15T11:00", "2026-09-15T12:00"),
        ("K1", "Queued", "2026-11-23T11:00", None),
        ("K2", "Bounced", "2026-10-20T08:00", None),
        ("K4", "Complained", "2026-11-20T08:00", "2026-11-20T08:30"),
        ("K5", "Discarded", "2026-10-24T12:00", None),
        ("K5", "Failed", "2026-10-24T11:59:59", None),
    ]
    messages = [
        {"id": f"MSG-{n}", "batch_id": "MST-1", "contact_id": contact, "status": status,
         "created_at": at(created), "updated_at": at(updated) if updated else None}
        for n, (contact, status, created, updated) in enumerate(rows)
    ]  # fmt: skip
    load(warehouse, contacts=CONTACTS, messages=messages)
    assert build_report(warehouse, "contact_health", as_of=as_of) == 5
    health = read(warehouse, "contact_health", "contact_id")

    columns = ("status", "blocked_reason", "opt_out_count", "deleted_at", "health",
               "messages_30d_total", "messages_30d_sent", "messages_30d_bounced",
               "messages_30d_complained", "messages_30d_discarded", "messages_30d_failed",
               "messages_30d_queued", "last_message_at", "last_bounce_at",
               "last_complaint_at", "last_bounce_or_complaint_at", "as_of")  # fmt: skip
    expected = {
        "K1": ("Active", None, 2, None, "at_risk", 3, 1, 1, 0, 0, 0, 1,
               at("2026-11-23T11:00"), at("2026-11-10T10:05"), at("2026-09-15T12:00"),
               at("2026-11-10T10:05"), as_of),
        "K2": ("Blocked", "Bounce", 1, None, "blocked", 0, 0, 0, 0, 0, 0, 0,
               at("2026-10-20T08:00"), at("2026-10-20T08:00"), None,
               at("2026-10-20T08:00"), as_of),
        "K3": ("Active", None, 0, None, "healthy", 0, 0, 0, 0, 0, 0, 0,
               None, None, None, None, as_of),
        "K4": ("Active", None, 2, at("2026-11-01T00:00"), "deleted", 1, 0, 0, 1, 0, 0, 0,
               at("2026-11-20T08:00"), None, at("2026-11-20T08:30"),
               at("2026-11-20T08:30"), as_of),
        "K5": ("Active", None, 1, None, "healthy", 1, 0, 0, 0, 1, 0, 0,
               at("2026-10-24T12:00"), None, None, None, as_of),
    }  # fmt: skip
    assert sorted(health) == [(k,) for k in sorted(expected)]
    for contact, values in expected.items():
        assert tuple(health[(contact,)][c] for c in columns) == values, contact
    assert health[("K1",)]["email"] == "k1@example.com"


def test_opt_outs_by_category(warehouse: Warehouse) -> None:
    opt_outs = [
        ("K1", "NTC-1", "Billing"),
        ("K1", "NTC-2", "Security"),
        ("K2", "NTC-1", "Billing"),
        ("K4", "NTC-1", "Billing"),  # K4 is deleted: not counted
        ("K5", "NTC-9", "Old promo"),  # a category the API no longer returns
        ("K4", "NTC-8", "Only deleted"),  # only a deleted contact: no row
    ]
    load(
        warehouse,
        categories=CATEGORIES,
        contacts=CONTACTS,
        contact_opt_outs=[
            {"contact_id": c, "category_id": k, "category_name": n} for c, k, n in opt_outs
        ],
    )
    assert build_report(warehouse, "opt_outs_by_category") == 4
    rows = read(warehouse, "opt_outs_by_category", "category_id")
    columns = ("category_name", "category_status", "opt_out_allowed", "opted_out_contacts",
               "contacts")  # fmt: skip
    expected = {
        "NTC-1": (("Billing", "Published", True, 2, 4), 0.5),
        "NTC-2": (("Security", "Published", True, 1, 4), 0.25),
        "NTC-4": (("News", "Unpublished", False, 0, 4), 0.0),
        "NTC-9": (("Old promo", None, None, 1, 4), 0.25),
    }
    assert sorted(rows) == [(k,) for k in sorted(expected)]
    for category, (values, share) in expected.items():
        row = rows[(category,)]
        assert tuple(row[c] for c in columns) == values, category
        assert row["opt_out_share"] == pytest.approx(share)


# --- building --------------------------------------------------------------------------------


def test_a_failed_build_leaves_the_previous_table(warehouse: Warehouse) -> None:
    load(
        warehouse,
        evinotice_batches=[{"id": "E1", "state": "Processed", "total_count": 2,
                            "sent_count": 2, "failed_count": 0}],
    )  # fmt: skip
    assert build_report(warehouse, "batch_statistics") == 1
    before = read(warehouse, "batch_statistics", "provider", "batch_id")
    assert build_report(warehouse, "batch_statistics") == 1  # a rebuild changes nothing
    assert read(warehouse, "batch_statistics", "provider", "batch_id") == before

    # The model fails after the old rows were deleted (its source is gone): all rolled back.
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql("alter table evinotice_batches rename to evinotice_away")
    try:
        with pytest.raises(sa.exc.DBAPIError):
            build_report(warehouse, "batch_statistics")
    finally:
        with warehouse.transaction() as tx:
            tx.connection.exec_driver_sql("alter table evinotice_away rename to evinotice_batches")
    assert read(warehouse, "batch_statistics", "provider", "batch_id") == before


def test_concurrent_builds_on_postgres_end_with_the_later_one(
    warehouses: dict[str, Warehouse], caplog: pytest.LogCaptureFixture
) -> None:
    # DuckDB lets one process write a file at a time; PostgreSQL runs two builds side by side.
    warehouse = warehouses["postgresql"]
    load(warehouse, evinotice_batches=[{"id": "E1", "state": "Processed", "total_count": 1}])
    build_report(warehouse, "batch_statistics")
    outcome: list[Any] = []
    caplog.set_level(logging.INFO, logger="assets.reporting")

    def second_build() -> None:
        try:
            outcome.append(build_report(warehouse, "batch_statistics"))
        except Exception as exc:  # reported below
            outcome.append(exc)

    with warehouse.transaction() as tx:
        rebuild(tx, "batch_statistics", datetime.now(UTC))
        thread = threading.Thread(target=second_build)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waiting for the first build to commit
    thread.join(10)
    assert outcome == [1]
    assert warehouse.count("batch_statistics") == 1
    assert "another build committed first" in caplog.text  # the collision did happen


def test_models_follow_the_house_style_and_read_what_their_assets_depend_on() -> None:
    for report in REPORTS:
        text = read_sql(f"reporting/{report.name}")
        body = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        assert body.strip().endswith("select * from final"), report.name
        code = re.sub(r"'[^']*'", "''", body)  # string literals are data: 'Sent', 'UTC'
        assert code == code.lower(), f"{report.name}: keywords and names are lowercase"
        read_tables = set(re.findall(r"\b(?:from|join)\s+([a-z_]+)", body)) & set(ALL_TABLE_NAMES)
        assert read_tables == set(report.deps), report.name
        # Import CTEs first: each source table is selected in a CTE named after it.
        for source in report.deps:
            assert re.search(rf"\b{source} as \(\s*select\b", body), (report.name, source)


def test_assets_show_columns_with_descriptions_and_depend_on_their_sources() -> None:
    assert [a.key.to_user_string() for a in REPORTING] == list(REPORT_NAMES)
    for report, asset in zip(REPORTS, REPORTING, strict=True):
        key = asset.key
        assert asset.group_names_by_key[key] == "reporting"
        assert {d.to_user_string() for d in asset.asset_deps[key]} == set(report.deps)
        schema = asset.specs_by_key[key].metadata["dagster/column_schema"]
        columns = table(report.name).columns
        assert [c.name for c in schema.columns] == [c.name for c in columns]
        assert all(c.description for c in schema.columns), report.name
        checks = {spec.name for spec in asset.check_specs}
        assert {"unique_key", "required_columns"} <= checks


def test_reports_are_published_after_each_sync() -> None:
    from assets.definitions import defs

    job = defs.resolve_job_def("publish_reports")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == set(REPORT_NAMES)
    for name in ("sync_platform", "sync_messages"):
        selected = defs.resolve_job_def(name).asset_layer.selected_asset_keys
        assert not {k.to_user_string() for k in selected} & set(REPORT_NAMES)
    sensor = defs.resolve_sensor_def("publish_reports_after_sync")
    assert sensor.job_name == "publish_reports"
    assert sensor.default_status == DefaultSensorStatus.RUNNING


# --- after a sync of the sandbox -------------------------------------------------------------


def _sync_sandbox(sandbox: Any, warehouse: Warehouse) -> None:
    """What the sync jobs do, with two statistics snapshots: the anchor day and after midnight."""
    config = sandbox.config
    evinotice = EviNoticeSettings(
        base_url="http://sandbox.local",
        username=config.evinotice_username,
        password=Secret(config.evinotice_password),
        site_id=config.evinotice_site_id,
    )

    async def go() -> None:
        async with asgi_marketplace(sandbox) as client:
            now = sandbox.clock.now()
            await sync.sync_contacts(client, warehouse, now=now)
            await sync.sync_categories(client, warehouse, now=now)
            await sync.sync_batches(client, warehouse, now=now)
            await sync.sync_messages(
                client, warehouse, now - timedelta(days=60), now + timedelta(days=1), now=now
            )
            next_day = (now + timedelta(days=1)).replace(hour=0, minute=30)
            await sync.sync_categories(
                client, warehouse, now=sandbox.clock.advance((next_day - now).total_seconds())
            )
        async with EviNoticeClient(
            evinotice, transport=httpx.ASGITransport(app=sandbox.app)
        ) as client:
            await sync.sync_evinotice_batches(client, warehouse, config.evinotice_site_id)

    asyncio.run(go())


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)  # decodes the whole image: not truncated
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize("engine", ["duckdb", "postgresql"])
def test_reports_after_a_sandbox_sync_agree_with_the_sandbox(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.ExitStack() as stack:
        if engine == "duckdb":
            url = f"duckdb:///{tmp_path / 'demo.duckdb'}"
        else:
            # A database of its own, so the hand-made rows of the other tests do not mix in.
            url = stack.enter_context(fresh_postgres_database())
        _check_sandbox_reports(url, tmp_path, monkeypatch)


def _check_sandbox_reports(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = make_sandbox(contacts=2000, seed=11, clock_speed=0.0)
    anchor_day = sandbox.clock.now().date()
    warehouse = Warehouse(url)
    try:
        warehouse.ensure_tables()
        _sync_sandbox(sandbox, warehouse)
        # The demo's sample CRM export, reconciled (creates, blocks, a conflict, bad lines):
        # reconciliation_history gets a run, contact_health learns what the CRM knows.
        export = write_sample_export(
            sandbox.truth("contacts"), tmp_path / "crm" / "sample_export.csv", seed=11
        )
        guards = reconcile.Guards(max_snapshot_age=timedelta(days=1))  # the clock moved on
        applied = reconcile_run(sandbox, warehouse, [export], "sample-run", guards=guards)
        assert applied is not None and applied.outcomes == Counter(done=applied.sent)
        charts = tmp_path / "charts"
        monkeypatch.setenv(CHART_DIR, str(charts))
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                REPORTING, instance=instance, resources={"warehouse": WarehouseResource(url=url)}
            )
        assert result.success

        counts = {name: warehouse.count(name) for name in REPORT_NAMES}
        assert all(counts.values()), counts
        for name in REPORT_NAMES:
            (materialization,) = result.asset_materializations_for_node(name)
            assert materialization.metadata["dagster/row_count"].value == counts[name]
            assert "| " in materialization.metadata["preview"].value
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert not failed, [(e.asset_key, e.check_name) for e in failed]

        # Each Marketplace batch: its messages by status, exactly as the sandbox holds them.
        truth = list(sandbox.truth("messages"))
        by_batch: dict[str, Counter[str]] = {}
        for message in truth:
            by_batch.setdefault(message["batch"]["id"], Counter())[message["status"]] += 1
        stats = read(warehouse, "batch_statistics", "provider", "batch_id")
        batches = {b["id"] for b in sandbox.truth("batches")}
        assert {k[1] for k in stats if k[0] == "marketplace"} == batches
        for batch_id, statuses in by_batch.items():
            row = stats[("marketplace", batch_id)]
            assert row["total_count"] == sum(statuses.values())
            assert (
                row["sent_count"],
                row["bounced_count"],
                row["complained_count"],
                row["discarded_count"],
                row["failed_count"],
                row["pending_count"],
            ) == tuple(
                statuses[s]
                for s in ("Sent", "Bounced", "Complained", "Discarded", "Failed", "Queued")
            )
        site = sandbox.config.evinotice_site_id
        for batch in sandbox.truth("evinotice-batches"):
            if batch["SiteId"] == site:
                row = stats[("evinotice", batch["Id"])]
                assert (row["total_count"], row["sent_count"], row["failed_count"]) == (
                    batch["TotalCount"],
                    batch["SentCount"],
                    batch["FailedCount"],
                )

        # The anchor day, completed from the snapshot after midnight: the sandbox's messages.
        days = read(warehouse, "category_deliverability_daily", "day", "category_id")
        per_category: dict[str, Counter[str]] = {}
        for message in truth:
            created = datetime.fromisoformat(message["audit"]["created"]["at"])
            if created.astimezone(UTC).date() == anchor_day:
                per_category.setdefault(message["category"]["id"], Counter())[
                    message["status"].lower()
                ] += 1
        assert per_category
        for category in sandbox.truth("categories"):
            row = days[(anchor_day, category["id"])]
            statuses = per_category.get(category["id"], Counter())
            assert row["method"] == "week_difference" and row["is_complete"]
            assert tuple(row[p] for p in PARTS) == tuple(statuses[p] for p in PARTS)
            assert row["matches_messages"] is True

        assert counts["contact_health"] == warehouse.count("contacts")
        (run,) = assert_history_matches_plan_and_ledger(warehouse).values()
        assert (run["status"], run["planned_create"], run["planned_block"]) == ("applied", 12, 7)
        assert (run["applied_done"], run["done_create"], run["done_block"]) == (19, 12, 7)
        assert (run["rejected_rows"], run["conflicts"], run["export_key"]) == (
            3,
            1,
            reconcile.export_key([export]),
        )
        # In the CRM: the 400 agreeing contacts, the 12 just created, 6 flagged and 1
        # conflicting (flagged wins); the lines themselves, matched on the normalised email.
        verdicts: dict[str, bool] = {}
        for crm_line_row in read(warehouse, "crm_contacts", "source_file", "line").values():
            email = crm_line_row["email"]
            verdicts[email] = verdicts.get(email, True) and bool(crm_line_row["mailable"])
        keys = {k[0]: v["email_key"] for k, v in read(warehouse, "contacts", "id").items()}
        health = read(warehouse, "contact_health", "contact_id")
        for (contact_id,), row in health.items():
            key = keys[contact_id]
            assert (row["in_crm"], row["crm_mailable"]) == (key in verdicts, verdicts.get(key))
        assert Counter(r["crm_mailable"] for r in health.values() if r["in_crm"]) == Counter(
            {True: 412, False: 7}
        )
        opted_out = sum(
            r["opted_out_contacts"]
            for r in read(warehouse, "opt_outs_by_category", "category_id").values()
        )
        assert opted_out == sum(len(c["optOuts"]) for c in sandbox.truth("contacts"))

        for name in ("category_deliverability_daily", "batch_statistics"):
            path = charts / f"{name}.png"
            width, height = _png_size(path)
            assert width >= 800 and height >= 300, (name, width, height)
            (materialization,) = result.asset_materializations_for_node(name)
            assert Path(materialization.metadata["chart_path"].value) == path.resolve()
            assert "data:image/png;base64," in materialization.metadata["chart"].value
    finally:
        warehouse.dispose()


# --- reconciliation_history ------------------------------------------------------------------

ACTIONS = ("create", "block", "unblock", "update")
OUTCOMES_BY_ACTION = tuple(
    f"{outcome}_{action}"
    for outcome in ("planned", "done", "rejected", "retry", "skipped")
    for action in ACTIONS
)


def run_row(
    run_id: str,
    started: str,
    files: list[str],
    *,
    export_key: str | None = None,
    finished: str | None = None,
    lines: tuple[int, int] = (10, 0),
    conflicts: int | None = 0,
    missing: int | None = 0,
    planned: tuple[int, int, int, int] | None = (0, 0, 0, 0),
    tripped: dict[str, str] | None = None,
    overrides: list[str] | None = None,
    reason: str | None = None,
    dry_run: bool | None = False,
    applied: tuple[int, int, int, int] | None = None,
) -> dict[str, Any]:
    """A reconciliation_runs row as connector.pipelines.reconcile's record_* functions write it."""
    recorded = planned is not None
    return {
        "run_id": run_id,
        "export_key": export_key or f"key-{run_id}",
        "export_files": orjson.dumps(files).decode(),
        "started_at": at(started),
        "finished_at": at(finished) if finished else None,
        "crm_rows": lines[0],
        "rejected_rows": lines[1],
        "conflicts": conflicts,
        "missing_from_crm": missing,
        **dict(zip((f"planned_{a}" for a in ACTIONS), planned or (None,) * 4, strict=True)),
        "guards_tripped": orjson.dumps(tripped or {}).decode() if recorded else None,
        "overrides": orjson.dumps(overrides or []).decode() if recorded else None,
        "override_reason": reason,
        "dry_run": dry_run,
        **dict(
            zip(
                ("applied_done", "applied_rejected", "applied_retry", "skipped"),
                applied or (None,) * 4,
                strict=True,
            )
        ),
    }


def ledger_row(key: str, run_id: str | None, action: str, state: str) -> dict[str, Any]:
    return {"action_key": key, "run_id": run_id, "action": action, "state": state,
            "email": f"{key}@example.com", "attempts": 1}  # fmt: skip


TOO_MANY_CREATES = "3 creates planned (limit 2)"
BLOCK_SHARE = "9 blocks = 30.00% of 30 active contacts (limit 5.00%)"
SNAPSHOT_AGE = "contacts snapshot is 5:00:00 old (limit 2:00:00)"
HISTORY_RUNS = [
    # Killed while sending: no apply recorded; one create done, one still "sending".
    run_row("run-0", "2026-11-09T09:00", ["old.csv"], lines=(5, 0), missing=1,
            planned=(2, 0, 0, 0), dry_run=None),
    # A normal run.
    run_row("run-1", "2026-11-10T09:00", ["crm_a.csv"], finished="2026-11-10T09:05",
            lines=(10, 1), conflicts=1, missing=3, planned=(2, 1, 0, 0), applied=(3, 0, 0, 0)),
    # A dry run: planned, nothing sent.
    run_row("run-2", "2026-11-11T09:00", ["crm_b.csv"], lines=(5, 2), planned=(4, 0, 0, 0),
            dry_run=True, applied=(0, 0, 0, 0)),
    # max_creates tripped, overridden with a reason, then applied.
    run_row("run-3", "2026-11-12T09:00", ["crm_c.csv", "crm_d.xlsx"],
            finished="2026-11-12T09:10", lines=(20, 0), conflicts=2, missing=4,
            planned=(3, 2, 0, 0), tripped={"max_creates": TOO_MANY_CREATES},
            overrides=["max_creates"], reason="EMEA list migration, approved by J. Doe",
            applied=(4, 1, 0, 0)),
    # Two guards tripped, none overridden: the blocking checks stopped the apply.
    run_row("run-4", "2026-11-13T09:00", ["crm_e.csv"], lines=(30, 0), missing=2,
            planned=(0, 9, 0, 0),
            tripped={"max_block_share": BLOCK_SHARE, "max_snapshot_age": SNAPSHOT_AGE},
            dry_run=None),
    # Rejected and retried actions; run-6 reads the same export again (same key, same
    # action keys) and retries what run-5 left pending.
    run_row("run-5", "2026-11-14T09:00", ["crm_f.csv"], export_key="key-f",
            finished="2026-11-14T09:03", lines=(12, 1), planned=(4, 2, 1, 0),
            applied=(3, 1, 3, 0)),
    run_row("run-6", "2026-11-15T09:00", ["crm_f.csv"], export_key="key-f",
            finished="2026-11-15T09:01", lines=(12, 1), planned=(2, 1, 0, 1),
            applied=(2, 1, 0, 1)),
    # Exports read, planning failed: nothing recorded after the read.
    run_row("run-7", "2026-11-16T09:00", ["crm_g.csv"], lines=(3, 0), conflicts=None,
            missing=None, planned=None, dry_run=None),
]  # fmt: skip
HISTORY_LEDGER = [
    ledger_row("x1", "run-0", "create", "done"),
    ledger_row("x2", "run-0", "create", "sending"),
    ledger_row("a1", "run-1", "create", "done"),
    ledger_row("a2", "run-1", "create", "done"),
    ledger_row("a3", "run-1", "block", "done"),
    ledger_row("c1", "run-3", "create", "done"),
    ledger_row("c2", "run-3", "create", "done"),
    ledger_row("c3", "run-3", "create", "done"),
    ledger_row("c4", "run-3", "block", "done"),
    ledger_row("c5", "run-3", "block", "rejected"),
    ledger_row("d1", "run-5", "create", "done"),
    ledger_row("d2", "run-5", "create", "rejected"),  # planned again by run-6: skipped
    ledger_row("d3", "run-5", "create", "ambiguous"),  # it had landed: not planned again
    ledger_row("d4", "run-6", "create", "done"),  # retry in run-5, done in run-6
    ledger_row("d5", "run-5", "block", "done"),
    ledger_row("d6", "run-6", "block", "done"),  # retry in run-5, done in run-6
    ledger_row("d7", "run-5", "unblock", "done"),
    ledger_row("p1", "run-6", "update", "rejected"),
    # Applies outside any recorded run: in no row.
    ledger_row("z1", "apply", "create", "done"),
    ledger_row("z2", None, "block", "retry"),
]
HISTORY_PLAN = [  # the latest plan, run-6's
    {"action_key": key, "run_id": "run-6", "action": action, "email": f"{key}@example.com"}
    for key, action in (("d2", "create"), ("d4", "create"), ("d6", "block"), ("p1", "update"))
]

HISTORY_COLUMNS = (
    "status", "dry_run", "finished_at", "export_files", "export_key", "crm_rows",
    "rejected_rows", "conflicts", "missing_from_crm", "planned_total", *OUTCOMES_BY_ACTION,
    "applied_done", "applied_rejected", "applied_retry", "skipped", "guards_tripped",
    "guards_overridden", "override_reason", "guard_messages",
)  # fmt: skip
N = None
# Per run, worked out from the rows above: planned, done, rejected, retry, skipped, each as
# (create, block, unblock, update).
EXPECTED_HISTORY = {
    "run-0": ("unfinished", None, None, ["old.csv"], "key-run-0", 5, 0, 0, 1, 2,
              2, 0, 0, 0,  1, 0, 0, 0,  0, 0, 0, 0,  1, 0, 0, 0,  N, 0, 0, 0,
              None, None, None, None, None, None, None, {}),
    "run-1": ("applied", False, at("2026-11-10T09:05"), ["crm_a.csv"], "key-run-1",
              10, 1, 1, 3, 3,
              2, 1, 0, 0,  2, 1, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  N, N, 0, 0,
              3, 0, 0, 0, None, None, None, {}),
    "run-2": ("dry_run", True, None, ["crm_b.csv"], "key-run-2", 5, 2, 0, 0, 4,
              4, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
              0, 0, 0, 0, None, None, None, {}),
    "run-3": ("applied", False, at("2026-11-12T09:10"), ["crm_c.csv", "crm_d.xlsx"],
              "key-run-3", 20, 0, 2, 4, 5,
              3, 2, 0, 0,  3, 1, 0, 0,  0, 1, 0, 0,  0, 0, 0, 0,  N, N, 0, 0,
              4, 1, 0, 0, "max_creates", "max_creates",
              "EMEA list migration, approved by J. Doe", {"max_creates": TOO_MANY_CREATES}),
    "run-4": ("stopped_by_guard", None, None, ["crm_e.csv"], "key-run-4", 30, 0, 0, 2, 9,
              0, 9, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
              None, None, None, None, "max_block_share, max_snapshot_age", None, None,
              {"max_block_share": BLOCK_SHARE, "max_snapshot_age": SNAPSHOT_AGE}),
    # d4 and d6 were left to retry by run-5 but run-6 retried them: they count for run-6
    # now; run-5's own figure (3 left to retry) stays in applied_retry.
    "run-5": ("applied", False, at("2026-11-14T09:03"), ["crm_f.csv"], "key-f", 12, 1, 0, 0, 7,
              4, 2, 1, 0,  1, 1, 1, 0,  1, 0, 0, 0,  1, 0, 0, 0,  N, N, N, 0,
              3, 1, 3, 0, None, None, None, {}),
    "run-6": ("applied", False, at("2026-11-15T09:01"), ["crm_f.csv"], "key-f", 12, 1, 0, 0, 4,
              2, 1, 0, 1,  1, 1, 0, 0,  0, 0, 0, 1,  0, 0, 0, 0,  1, 0, 0, 0,
              2, 1, 0, 1, None, None, None, {}),
    "run-7": ("not_planned", None, None, ["crm_g.csv"], "key-run-7", 3, 0, None, None, None,
              N, N, N, N,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
              None, None, None, None, None, None, None, None),
}  # fmt: skip


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    # JSON columns come back as text from DuckDB and decoded from PostgreSQL.
    for column in ("export_files", "guard_messages"):
        if isinstance(row.get(column), str):
            row[column] = orjson.loads(row[column])
    return row


def test_reconciliation_history_per_run(warehouse: Warehouse) -> None:
    load(
        warehouse,
        reconciliation_runs=HISTORY_RUNS,
        pushback_results=HISTORY_LEDGER,
        reconciliation_plan=HISTORY_PLAN,
    )
    assert build_report(warehouse, "reconciliation_history") == len(EXPECTED_HISTORY)
    rows = {
        k[0]: _decoded(v) for k, v in read(warehouse, "reconciliation_history", "run_id").items()
    }
    assert sorted(rows) == sorted(EXPECTED_HISTORY)
    for run_id, expected in EXPECTED_HISTORY.items():
        got = tuple(rows[run_id][c] for c in HISTORY_COLUMNS)
        mismatches = {
            c: (g, e) for c, g, e in zip(HISTORY_COLUMNS, got, expected, strict=True) if g != e
        }
        assert not mismatches, (run_id, mismatches)
    assert rows["run-3"]["started_at"] == at("2026-11-12T09:00")

    # Its checks pass on these rows, and catch a negative count.
    report = next(r for r in REPORTS if r.name == "reconciliation_history")
    assert all(result.passed for result in evaluate_checks(warehouse, report))
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql(
            "update reconciliation_history set retry_block = -1 where run_id = 'run-1'"
        )
    failed = {r.check_name for r in evaluate_checks(warehouse, report) if not r.passed}
    assert failed == {"counts_not_negative"}


def test_reconciliation_history_reads_every_guard_the_connector_has() -> None:
    # The model names the guards to read them from the recorded JSON: a new guard must be
    # added there too.
    text = read_sql("reporting/reconciliation_history")
    for name in reconcile.GUARD_NAMES:
        assert f"'\"{name}\":'" in text and f"'\"{name}\"'" in text and f"'{name}'" in text
    assert set(table("reconciliation_history").column_names) >= set(OUTCOMES_BY_ACTION)


def test_reconciliation_history_of_no_run_is_empty(warehouse: Warehouse) -> None:
    load(warehouse, pushback_results=[ledger_row("z1", "apply", "create", "done")])
    assert build_report(warehouse, "reconciliation_history") == 0


# --- contact_health: whether the CRM still knows the contact ---------------------------------

CRM_CONTACTS = [
    # email_key, email as the platform holds it, status
    {"id": "M1", "email": "Ann@Example.com", "email_key": "ann@example.com", "status": "Active"},
    {"id": "M2", "email": "bob@example.com", "email_key": "bob@example.com", "status": "Active"},
    {"id": "M3", "email": "cy@example.com", "email_key": "cy@example.com", "status": "Blocked"},
    {"id": "M4", "email": "dee@example.com", "email_key": "dee@example.com", "status": "Active"},
    {"id": "M5", "email": "x@Bücher.example", "email_key": "x@xn--bcher-kva.example",
     "status": "Active"},
    {"id": "M6", "email": "nokey@example.com", "email_key": None, "status": "Active"},
]  # fmt: skip


def crm_line(line: int, email: str, *flags: str, source: str = "crm.csv") -> dict[str, Any]:
    """A crm_contacts row; flags among do_not_email, unsubscribed, hard_bounced."""
    return {
        "run_id": "run-1",
        "source_file": source,
        "line": line,
        "email": email,
        "do_not_email": "do_not_email" in flags,
        "unsubscribed": "unsubscribed" in flags,
        "hard_bounced": "hard_bounced" in flags,
        "mailable": not flags,
        "read_at": at("2026-11-20T08:00"),
    }


def test_contact_health_says_whether_the_crm_still_knows_the_contact(
    warehouse: Warehouse,
) -> None:
    as_of = at("2026-11-23T12:00")
    crm = [
        crm_line(2, "ann@example.com"),
        crm_line(7, "ann@example.com", source="crm_2.csv"),  # twice, both mailable
        crm_line(3, "bob@example.com"),
        crm_line(4, "bob@example.com", "unsubscribed"),  # a flagged line wins
        crm_line(5, "cy@example.com", "do_not_email", "hard_bounced"),
        crm_line(6, "x@xn--bcher-kva.example"),  # matched on the normalised email
        crm_line(8, "only.in.crm@example.com"),  # no platform contact: no row
        crm_line(9, "nokey@example.com"),  # the contact has no email_key: never matched
    ]
    load(warehouse, contacts=CRM_CONTACTS, crm_contacts=crm)
    assert build_report(warehouse, "contact_health", as_of=as_of) == 6
    health = read(warehouse, "contact_health", "contact_id")
    columns = ("in_crm", "crm_mailable", "crm_read_at")
    read_at = at("2026-11-20T08:00")
    expected = {
        "M1": (True, True, read_at),  # in the CRM, mailable
        "M2": (True, False, read_at),  # in the CRM, flagged on one of its lines
        "M3": (True, False, read_at),  # in the CRM, flagged
        "M4": (False, None, read_at),  # not in the CRM
        "M5": (True, True, read_at),
        "M6": (False, None, read_at),
    }
    assert {k[0]: tuple(v[c] for c in columns) for k, v in health.items()} == expected

    # No CRM export ever read: unknown, not "gone from the CRM".
    load(warehouse, contacts=CRM_CONTACTS)
    build_report(warehouse, "contact_health", as_of=as_of)
    health = read(warehouse, "contact_health", "contact_id")
    assert {tuple(v[c] for c in columns) for v in health.values()} == {(None, None, None)}


def test_contact_health_gains_the_crm_columns_on_a_table_built_before_them(
    warehouse: Warehouse,
) -> None:
    # A warehouse whose contact_health predates the CRM columns: the build adds them.
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql("drop table if exists contact_health")
        tx.run("schema/create_contact_health_table")
        for column in ("in_crm", "crm_mailable", "crm_read_at"):
            tx.connection.exec_driver_sql(f"alter table contact_health drop column {column}")
    load(warehouse, contacts=CRM_CONTACTS[:1], crm_contacts=[crm_line(2, "ann@example.com")])
    assert build_report(warehouse, "contact_health") == 1
    ((row),) = read(warehouse, "contact_health", "contact_id").values()
    assert (row["in_crm"], row["crm_mailable"]) == (True, True)


# --- reconciliation_history against the connector's own plan and ledger -----------------------

EXPORT_HEADER = ("Email", "Name", "Do Not Email", "Unsubscribed", "Hard Bounced")


def reconcile_run(
    sandbox: Any,
    warehouse: Warehouse,
    paths: list[Path],
    run_id: str,
    *,
    dry_run: bool = False,
    faults: str | None = None,
    guards: reconcile.Guards | None = None,
    overrides: tuple[str, ...] = (),
    reason: str | None = None,
) -> pushback.ApplySummary | None:
    """What the reconcile job does, through the connector: read, plan, guards, apply, refresh,
    each step recorded in reconciliation_runs. A guard that trips and is not overridden stops
    the run before the apply, as the blocking checks do."""
    now = sandbox.clock.now()
    load = reconcile.load_exports(warehouse, paths, run_id=run_id, now=now)
    reconcile.record_run_start(warehouse, load, now=now)
    plan = reconcile.make_plan(warehouse, run_id=run_id, export_key=load.export_key, now=now)
    results = reconcile.evaluate_guards(plan, guards or reconcile.Guards(), overrides)
    reconcile.record_plan(warehouse, plan, results, reason)
    if not all(g.allows_apply for g in results):
        return None
    if dry_run:
        reconcile.record_apply(warehouse, run_id, dry_run=True, outcomes={}, skipped=0)
        return None

    async def apply() -> pushback.ApplySummary:
        # One attempt per request, one at a time: with faults switched on, some actions are
        # left to retry, in the same order on every run.
        limits = {"max_attempts": 1, "max_concurrency": 1} if faults else {}
        async with asgi_marketplace(sandbox, **limits) as client:
            sandbox.behaviour.update({"faults": faults})
            try:
                summary = await pushback.apply_plan(client, warehouse, run_id=run_id)
            finally:
                sandbox.behaviour.update({"faults": None})
            if summary.touched_contacts:
                await sync.refresh_contacts(client, warehouse, summary.touched_contacts)
            return summary

    summary = asyncio.run(apply())
    reconcile.record_apply(
        warehouse,
        run_id,
        dry_run=False,
        outcomes=dict(summary.outcomes),
        skipped=summary.skipped,
        now=sandbox.clock.now(),
    )
    return summary


def assert_history_matches_plan_and_ledger(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    """reconciliation_history against the tables it summarises, counted here in Python."""
    assert build_report(warehouse, "reconciliation_history") == warehouse.count(
        "reconciliation_runs"
    )
    history = {k[0]: v for k, v in read(warehouse, "reconciliation_history", "run_id").items()}
    runs = {k[0]: v for k, v in read(warehouse, "reconciliation_runs", "run_id").items()}
    ledger = list(read(warehouse, "pushback_results", "action_key").values())
    by_key = {r["action_key"]: r for r in ledger}
    plan = list(read(warehouse, "reconciliation_plan", "action_key").values())
    current = {r["run_id"] for r in plan}
    pending = ("retry", "ambiguous", "sending")
    for run_id, row in history.items():
        run = runs[run_id]
        mine = Counter(
            (r["action"], "retry" if r["state"] in pending else r["state"])
            for r in ledger
            if r["run_id"] == run_id
        )
        for action in ACTIONS:
            assert row[f"planned_{action}"] == run[f"planned_{action}"], (run_id, action)
            for outcome in ("done", "rejected", "retry"):
                assert row[f"{outcome}_{action}"] == mine[(action, outcome)], (run_id, action)
        if run_id in current:
            skipped = Counter(
                p["action"]
                for p in plan
                if p["action_key"] in by_key
                and by_key[p["action_key"]]["state"] in ("done", "rejected")
                and by_key[p["action_key"]]["run_id"] != run_id
            )
            for action in ACTIONS:
                expected = 0 if row["status"] == "dry_run" else skipped[action]
                assert row[f"skipped_{action}"] == expected, (run_id, action)
            assert Counter(p["action"] for p in plan) == Counter(
                {a: row[f"planned_{a}"] for a in ACTIONS if row[f"planned_{a}"]}
            )
    return history


def test_reconciliation_history_after_reconcile_runs_agrees_with_plan_and_ledger(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    sandbox = make_sandbox(contacts=60, seed=5, clock_speed=0.0)

    async def sync_contacts() -> None:
        async with asgi_marketplace(sandbox) as client:
            await sync.sync_contacts(client, warehouse, full_refresh=True, now=sandbox.clock.now())

    with warehouse.transaction() as tx:
        for name in ("contacts", *SOURCES):
            tx.run("load/delete_all_rows", target=name)
    asyncio.run(sync_contacts())
    active = [c for c in sandbox.truth("contacts") if c["status"] == "Active"]
    gone, *others = active[:4]
    path = tmp_path / "crm.csv"
    lines = [
        *([f"new{n}@crm.example", f"New {n}", "", "", ""] for n in range(8)),
        *([c["email"], c["name"], "true", "", ""] for c in (gone, *others)),
        ["not an email", "Bad", "", "", ""],
    ]
    path.write_text(
        "\n".join(",".join(line) for line in [EXPORT_HEADER, *lines]) + "\n", encoding="utf-8"
    )
    lenient = reconcile.Guards(max_block_share=1.0)

    # 1. A dry run; 2. blocks over the default share, overridden, applied with server
    # errors (some actions left to retry) and one block of a contact deleted meanwhile
    # (rejected); 3. the same export again: the pending actions are retried, the settled ones
    # skipped.
    assert reconcile_run(sandbox, warehouse, [path], "r-dry", dry_run=True, guards=lenient) is None
    sandbox.marketplace.delete_contact(gone["id"])
    first = reconcile_run(
        sandbox, warehouse, [path], "r-first", faults="error=0.4",
        overrides=("max_block_share",), reason="test: four blocks of a small list",
    )  # fmt: skip
    assert first is not None
    assert first.outcomes["rejected"] >= 1
    assert first.outcomes["retry"] + first.outcomes["ambiguous"] >= 1
    after_first = assert_history_matches_plan_and_ledger(warehouse)
    row = after_first["r-first"]
    assert (row["status"], row["planned_create"], row["planned_block"]) == ("applied", 8, 4)
    assert (row["guards_tripped"], row["guards_overridden"], row["override_reason"]) == (
        "max_block_share",
        "max_block_share",
        "test: four blocks of a small list",
    )
    assert (row["crm_rows"], row["rejected_rows"]) == (12, 1)
    # The first apply's ledger rows are all its own: its figures equal what it recorded.
    assert sum(row[f"done_{a}"] for a in ACTIONS) == row["applied_done"] == first.outcomes["done"]
    assert sum(row[f"rejected_{a}"] for a in ACTIONS) == row["applied_rejected"]
    assert sum(row[f"retry_{a}"] for a in ACTIONS) == row["applied_retry"]
    assert row["rejected_block"] >= 1  # the deleted contact
    dry = after_first["r-dry"]
    assert (dry["status"], dry["dry_run"], dry["planned_create"], dry["planned_block"]) == (
        "dry_run", True, 8, 4,
    )  # fmt: skip
    assert all(
        dry[f"{o}_{a}"] == 0 for o in ("done", "rejected", "retry", "skipped") for a in ACTIONS
    )

    second = reconcile_run(sandbox, warehouse, [path], "r-second", guards=lenient)
    assert second is not None and second.outcomes["retry"] == 0
    after_second = assert_history_matches_plan_and_ledger(warehouse)
    row = after_second["r-second"]
    assert sum(row[f"done_{a}"] for a in ACTIONS) == row["applied_done"] == second.outcomes["done"]
    assert sum(row[f"skipped_{a}"] for a in ACTIONS) == row["skipped"] == second.skipped > 0
    # The first run keeps what it settled; the actions the second retried moved to it.
    earlier = after_second["r-first"]
    for action in ACTIONS:
        assert earlier[f"done_{action}"] == after_first["r-first"][f"done_{action}"]
        assert earlier[f"rejected_{action}"] == after_first["r-first"][f"rejected_{action}"]
    # What the first run left to retry = what it still holds + what the second run took over
    # (tried a second time: only the first run had sent anything before).
    taken_over = sum(
        1
        for r in read(warehouse, "pushback_results", "action_key").values()
        if r["run_id"] == "r-second" and r["attempts"] >= 2
    )
    assert taken_over > 0
    assert earlier["applied_retry"] == after_first["r-first"]["applied_retry"]
    assert earlier["applied_retry"] == sum(earlier[f"retry_{a}"] for a in ACTIONS) + taken_over
    assert earlier["skipped_create"] is None  # its plan was replaced by the second run's
