"""Campaign guards: each one trips on a small hand-made audience (DuckDB and PostgreSQL),
stops the send until overridden with a recorded reason, and a dry run plans only."""

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

from connector.campaigns import CampaignError
from connector.campaigns import plan as campaign_plan
from connector.campaigns.model import CampaignBase
from connector.warehouse.engine import Warehouse


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A fresh DuckDB file or PostgreSQL database with every table."""
    yield from open_warehouse(request.param, tmp_path)


def judged(
    warehouse: Warehouse, campaign: CampaignBase, overrides: tuple[str, ...] = (), reason: str = ""
) -> dict[str, bool]:
    plan = campaign_plan.make_plan(warehouse, campaign, source="t", run_id="r", now=NOW)
    guards = campaign_plan.evaluate_guards(plan, campaign, overrides)
    campaign_plan.record_plan(
        warehouse, campaign, plan, guards, source="t", run_id="r", override_reason=reason
    )
    return {g.name: g.allows_apply for g in guards}


def five_contacts(warehouse: Warehouse, **seeded: object) -> None:
    contacts = [contact(f"CTT-{n}", f"p{n}@example.com") for n in range(5)]
    seed(warehouse, contacts=contacts, **seeded)  # type: ignore[arg-type]
    make_audience(warehouse, [(c["id"],) for c in contacts], "contact_id")


def test_a_plain_plan_passes_every_guard(warehouse: Warehouse) -> None:
    five_contacts(warehouse)
    campaign = make_campaign()
    assert all(judged(warehouse, campaign).values())
    assert campaign_plan.unapproved_reason(warehouse, campaign) is None
    assert campaign_plan.campaign_row(warehouse, "spring")["status"] == "planned"


def test_too_many_recipients_stops_the_send_until_overridden(warehouse: Warehouse) -> None:
    five_contacts(warehouse)
    campaign = make_campaign(guards={"max_recipients": 4})
    assert judged(warehouse, campaign)["max_recipients"] is False
    refusal = campaign_plan.unapproved_reason(warehouse, campaign)
    assert refusal is not None and "max_recipients (5 recipients planned (limit 4))" in refusal
    assert campaign_plan.campaign_row(warehouse, "spring")["status"] == "stopped_by_guard"

    assert judged(warehouse, campaign, ("max_recipients",), "board approved")["max_recipients"]
    assert campaign_plan.unapproved_reason(warehouse, campaign) is None
    row = campaign_plan.campaign_row(warehouse, "spring")
    assert row["overrides"] == ["max_recipients"]
    assert row["override_reason"] == "board approved"
    assert "max_recipients" in row["guards_tripped"]  # the figure stays on record


def test_too_many_exclusions_trip_their_guard(warehouse: Warehouse) -> None:
    five_contacts(warehouse, opt_outs=[("CTT-0", CATEGORY), ("CTT-1", CATEGORY)])
    verdict = judged(warehouse, make_campaign(guards={"max_excluded_share": 0.3}))
    assert verdict["max_excluded_share"] is False  # 2 of 5 = 40%
    assert judged(warehouse, make_campaign(guards={"max_excluded_share": 0.4}))[
        "max_excluded_share"
    ]


@pytest.mark.parametrize("status", ["Unpublished", None])
def test_a_category_that_is_not_published_trips_its_guard(
    warehouse: Warehouse, status: str | None
) -> None:
    categories = [(CATEGORY, status)] if status else []
    five_contacts(warehouse, categories=categories)
    assert judged(warehouse, make_campaign())["category_published"] is False


def test_an_old_or_missing_contacts_snapshot_trips_its_guard(
    warehouse: Warehouse,
) -> None:
    five_contacts(warehouse, synced_at=NOW - timedelta(hours=3))
    assert judged(warehouse, make_campaign())["max_snapshot_age"] is False
    assert judged(warehouse, make_campaign(guards={"max_snapshot_age_hours": 4}))[
        "max_snapshot_age"
    ]


def test_a_send_at_in_the_past_trips_its_guard(warehouse: Warehouse) -> None:
    five_contacts(warehouse)
    late = make_campaign(send_at=(NOW - timedelta(hours=2)).isoformat())
    assert judged(warehouse, late)["send_at_not_past"] is False
    on_time = make_campaign(send_at=(NOW - timedelta(minutes=5)).isoformat())
    assert judged(warehouse, on_time)["send_at_not_past"]
    ahead = make_campaign(send_at=(NOW + timedelta(days=1)).isoformat())
    assert judged(warehouse, ahead)["send_at_not_past"]
    assert campaign_plan.campaign_row(warehouse, "spring")["status"] == "waiting"


def test_overrides_must_name_known_guards(warehouse: Warehouse) -> None:
    five_contacts(warehouse)
    with pytest.raises(CampaignError, match="unknown guard"):
        judged(warehouse, make_campaign(), ("max_everything",))


def test_a_changed_campaign_needs_a_new_plan(warehouse: Warehouse) -> None:
    five_contacts(warehouse)
    judged(warehouse, make_campaign())
    changed = make_campaign(body="A different body")
    refusal = campaign_plan.unapproved_reason(warehouse, changed)
    assert refusal is not None and "no plan for this version" in refusal
