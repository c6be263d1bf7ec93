"""batch_statistics, contact_health and opt_outs_by_category against figures worked out by
hand; atomic and concurrent rebuilds.

PostgreSQL is not optional: when the server is unreachable these tests fail. Its sessions run
in Asia/Tokyo, so a model that took dates in the session time zone instead of UTC would put
late-evening rows on the wrong day and fail here.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from reporting_support import (  # noqa: F401 (fixtures)
    approx,
    at,
    load,
    read,
    warehouse,
    warehouses,
)
from test_reporting_deliverability import CATEGORIES

from assets.reporting import (
    build_report,
    rebuild,
)
from connector.warehouse.engine import Warehouse

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
