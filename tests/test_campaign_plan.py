"""The campaign plan: each exclusion rule on small hand-made audiences, on DuckDB and
PostgreSQL; audience queries that fail; the plan's batches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from campaign_support import (
    CATEGORY,
    NOW,
    contact,
    make_audience,
    make_campaign,
    open_warehouse,
    seed,
)

from connector.campaigns import plan as campaign_plan
from connector.warehouse.audience import AudienceQueryError
from connector.warehouse.engine import Warehouse


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A fresh DuckDB file or PostgreSQL database with every table."""
    yield from open_warehouse(request.param, tmp_path)


def reasons(warehouse: Warehouse, campaign: str = "spring") -> dict[str | None, set[str | None]]:
    """The plan reasons of each recipient's audience rows (contact id, else email)."""
    rows = warehouse.query(
        "select coalesce(contact_id, email), reason from campaign_plan where campaign = :c",
        c=campaign,
    )
    found: dict[str | None, set[str | None]] = {}
    for key, reason in rows:
        found.setdefault(key, set()).add(reason)
    return found


def test_each_exclusion_rule_gives_its_reason(warehouse: Warehouse) -> None:
    seed(
        warehouse,
        contacts=[
            contact("CTT-1", "ok@example.com"),
            contact("CTT-2", "blocked@example.com", status="Blocked"),
            contact("CTT-3", "gone@example.com", deleted_at=NOW - timedelta(days=1)),
            contact("CTT-4", "optout@example.com"),
            contact("CTT-5", "dne@example.com"),
            contact("CTT-6", "unsub@example.com"),
            contact("CTT-7", "bounced@example.com"),
            contact("CTT-8", "recent@example.com"),
            contact("CTT-9", "old@example.com"),
            contact("CTT-10", "other-category@example.com"),
            contact("CTT-11", "ByEmail@Example.com"),
        ],
        opt_outs=[("CTT-4", CATEGORY), ("CTT-1", "NTC-9999-9999")],
        crm=[
            {"email": "dne@example.com", "do_not_email": True},
            {"email": "unsub@example.com", "unsubscribed": True},
            {"email": "bounced@example.com", "hard_bounced": True},
            {"email": "ok@example.com", "mailable": True},
        ],
        messages=[
            {"id": "MSG-1", "contact_id": "CTT-8", "category_id": CATEGORY,
             "created_at": NOW - timedelta(days=2)},
            {"id": "MSG-2", "contact_id": "CTT-9", "category_id": CATEGORY,
             "created_at": NOW - timedelta(days=30)},
            {"id": "MSG-3", "contact_id": "CTT-10", "category_id": "NTC-0000-0002",
             "created_at": NOW - timedelta(days=1)},
        ],
    )  # fmt: skip
    make_audience(
        warehouse,
        [
            ("CTT-1", None),
            ("CTT-2", None),
            ("CTT-3", None),
            ("CTT-4", None),
            ("CTT-5", None),
            ("CTT-6", None),
            ("CTT-7", None),
            ("CTT-8", None),
            ("CTT-9", None),
            ("CTT-10", None),
            ("CTT-404", None),
            (None, " byemail@example.COM "),
            (None, "not-an-email"),
            (None, "stranger@example.com"),
            ("CTT-1", None),
            (None, None),
        ],
        "contact_id, email",
    )
    campaign = make_campaign(
        audience="select contact_id, email from audience_table",
        exclusions={"frequency_cap_days": 7},
    )
    plan = campaign_plan.make_plan(warehouse, campaign, source="test.yaml", run_id="r", now=NOW)

    got = reasons(warehouse)
    assert got["CTT-1"] == {None, "duplicate"}  # its opt-out is of another category
    assert got["CTT-2"] == {"blocked_contact"}
    assert got["CTT-3"] == {"deleted_contact"}
    assert got["CTT-4"] == {"opted_out"}
    assert got["CTT-5"] == {"crm_do_not_email"}
    assert got["CTT-6"] == {"crm_unsubscribed"}
    assert got["CTT-7"] == {"crm_hard_bounced"}
    assert got["CTT-8"] == {"frequency_cap"}
    assert got["CTT-9"] == {None}  # messaged 30 days ago: outside the cap
    assert got["CTT-10"] == {None}  # messaged in another category
    assert got["CTT-404"] == {"unknown_contact_id"}
    assert got["CTT-11"] == {None}  # matched by its normalised email
    assert got["not-an-email"] == {"invalid_email"}
    assert got["stranger@example.com"] == {"unknown_email"}
    assert plan.excluded_by_reason == {
        "blocked_contact": 1,
        "deleted_contact": 1,
        "opted_out": 1,
        "crm_do_not_email": 1,
        "crm_unsubscribed": 1,
        "crm_hard_bounced": 1,
        "frequency_cap": 1,
        "unknown_contact_id": 1,
        "invalid_email": 1,
        "unknown_email": 1,
        "duplicate": 1,
        "missing_recipient": 1,
    }
    assert got[None] == {"missing_recipient"}
    assert plan.recipients == 4
    assert plan.audience_rows == 16


def test_unknown_emails_are_sent_by_email_only_when_allowed(warehouse: Warehouse) -> None:
    seed(warehouse, contacts=[contact("CTT-1", "known@example.com")])
    make_audience(warehouse, [("stranger@example.com",), ("known@example.com",)], "email")
    campaign = make_campaign(audience="audience_table", exclusions={"allow_unknown_emails": True})
    plan = campaign_plan.make_plan(warehouse, campaign, source="t", run_id="r", now=NOW)
    assert plan.recipients == 2
    rows = warehouse.query("select contact_id, email, included from campaign_plan order by email")
    assert [tuple(r) for r in rows] == [
        ("CTT-1", "known@example.com", True),
        (None, "stranger@example.com", True),
    ]


def test_a_frequency_cap_of_zero_is_off(warehouse: Warehouse) -> None:
    seed(
        warehouse,
        contacts=[contact("CTT-1", "a@example.com")],
        messages=[{"id": "M", "contact_id": "CTT-1", "category_id": CATEGORY, "created_at": NOW}],
    )
    make_audience(warehouse, [("CTT-1",)], "contact_id")
    capped = campaign_plan.make_plan(warehouse, make_campaign(), source="t", run_id="r", now=NOW)
    assert capped.excluded_by_reason == {"frequency_cap": 1}
    uncapped = campaign_plan.make_plan(
        warehouse,
        make_campaign(exclusions={"frequency_cap_days": 0}),
        source="t",
        run_id="r",
        now=NOW,
    )
    assert uncapped.recipients == 1


def test_recipients_are_split_into_stable_batches(warehouse: Warehouse) -> None:
    contacts = [contact(f"CTT-{n:03d}", f"p{n}@example.com") for n in range(23)]
    seed(warehouse, contacts=contacts)
    make_audience(warehouse, [(c["id"],) for c in reversed(contacts)], "contact_id")
    campaign = make_campaign(max_contacts_per_batch=10)
    plan = campaign_plan.make_plan(warehouse, campaign, source="t", run_id="r", now=NOW)
    assert (plan.recipients, plan.batches) == (23, 3)
    sizes = warehouse.query(
        "select batch_number, count(*), count(distinct batch_key) from campaign_plan "
        "group by batch_number order by batch_number"
    )
    assert [tuple(r) for r in sizes] == [(0, 10, 1), (1, 10, 1), (2, 3, 1)]
    first = {tuple(r) for r in warehouse.query("select contact_id, batch_key from campaign_plan")}
    campaign_plan.make_plan(warehouse, campaign, source="t", run_id="r2", now=NOW)
    again = {tuple(r) for r in warehouse.query("select contact_id, batch_key from campaign_plan")}
    assert first == again  # the same audience gives the same batch keys
    changed = make_campaign(max_contacts_per_batch=10, subject="Other subject")
    campaign_plan.make_plan(warehouse, changed, source="t", run_id="r3", now=NOW)
    other = {r[0] for r in warehouse.query("select distinct batch_key from campaign_plan")}
    assert other.isdisjoint({key for _, key in first})  # a new version has new keys


def test_a_failing_audience_query_names_the_line_and_keeps_the_previous_plan(
    warehouse: Warehouse,
) -> None:
    seed(warehouse, contacts=[contact("CTT-1", "a@example.com")])
    make_audience(warehouse, [("CTT-1",)], "contact_id")
    campaign_plan.make_plan(warehouse, make_campaign(), source="t", run_id="r", now=NOW)
    broken = make_campaign(
        audience="select contact_id\nfrom audience_table\nwhere no_such_column = 1"
    )
    with pytest.raises(AudienceQueryError) as caught:
        campaign_plan.make_plan(warehouse, broken, source="spring.yaml", run_id="r", now=NOW)
    message = str(caught.value)
    assert message.startswith("spring.yaml: the audience query failed:")
    assert "no_such_column" in message
    assert "line 3 of the audience: where no_such_column = 1" in message
    assert warehouse.count("campaign_plan") == 1  # the previous plan stays


def test_an_audience_without_a_recipient_column_is_refused(warehouse: Warehouse) -> None:
    seed(warehouse)
    with pytest.raises(AudienceQueryError, match="no contact_id or email column"):
        campaign_plan.make_plan(
            warehouse,
            make_campaign(audience="select 'x' as name"),
            source="t",
            run_id="r",
            now=NOW,
        )
