"""What happens after a send: the sandbox delivers the batch's messages over sandbox time
(deterministic per seed and address, category statistics moving with them), the refresh
syncs them, and ``campaign_performance`` counts them — on DuckDB and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from campaign_support import make_campaign, open_warehouse
from conftest import asgi_marketplace, make_sandbox

from assets.reporting import build_report
from connector.campaigns import plan as campaign_plan
from connector.pipelines import campaigns as sending
from connector.pipelines.sync import sync_categories, sync_contacts
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox
from sandbox.marketplace.sending import MAX_DELAY_SECONDS, outcome_for

CATEGORY = "NTC-0000-0003"
AUDIENCE = "select id as contact_id from contacts where status = 'Active' order by id limit 80"


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    yield from open_warehouse(request.param, tmp_path)


def send_one(sandbox: Sandbox, warehouse: Warehouse) -> sending.SendSummary:
    campaign = make_campaign(
        audience=AUDIENCE,
        category=CATEGORY,
        max_contacts_per_batch=30,
        guards={"max_excluded_share": 1.0},
    )

    async def run() -> sending.SendSummary:
        async with asgi_marketplace(sandbox) as client:
            now = sandbox.clock.now()
            await sync_contacts(client, warehouse, full_refresh=True, now=now)
            await sync_categories(client, warehouse, now=now)
            plan = campaign_plan.make_plan(warehouse, campaign, source="t", run_id="r", now=now)
            guards = campaign_plan.evaluate_guards(plan, campaign)
            campaign_plan.record_plan(
                warehouse, campaign, plan, guards, source="t", run_id="r", override_reason=None
            )
            return await sending.send_campaign(
                client, warehouse, campaign, run_id="s", clock=sandbox.clock.now
            )

    return asyncio.run(run())


def refresh(sandbox: Sandbox, warehouse: Warehouse, since: Any) -> None:
    async def run() -> None:
        async with asgi_marketplace(sandbox) as client:
            await sending.refresh_after_send(client, warehouse, since, now=sandbox.clock.now())

    asyncio.run(run())


def statuses(sandbox: Sandbox) -> Counter[str]:
    return Counter(m["status"] for m in sandbox.truth("messages") if m["subject"] == "Spring news")


def test_messages_settle_over_sandbox_time_and_the_report_follows(
    warehouse: Warehouse,
) -> None:
    sandbox = make_sandbox(contacts=150, seed=21, clock_speed=0.0)
    before = sandbox.marketplace.statistics(CATEGORY)["today"]
    summary = send_one(sandbox, warehouse)
    sent = summary.recipients_sent
    assert sent > 0 and statuses(sandbox) == {"Queued": sent}
    assert sandbox.marketplace.statistics(CATEGORY)["today"] == before  # nothing delivered yet

    refresh(sandbox, warehouse, summary.started_at)
    build_report(warehouse, "campaign_performance", as_of=sandbox.clock.now())
    (row,) = [r._mapping for r in warehouse.query("select * from campaign_performance")]
    assert (row["recipients_sent"], row["messages"], row["pending"]) == (sent, sent, sent)
    assert row["sent_rate"] == 0.0

    sandbox.clock.advance(MAX_DELAY_SECONDS + 200)  # past the last delivery and spread
    final = statuses(sandbox)
    assert "Queued" not in final and sum(final.values()) == sent
    # Each address's outcome is the seed's and the address's, whatever the order of sending.
    expected = Counter(
        "Discarded"
        if any(o["id"] == CATEGORY for o in (c.get("optOuts") or []))
        else outcome_for(21, c["email"])[0]
        for c in sandbox.truth("contacts")
        if c["id"] in {m["contact"]["id"] for m in sandbox.truth("messages")
                       if m["subject"] == "Spring news"}
    )  # fmt: skip
    assert final == expected
    after = sandbox.marketplace.statistics(CATEGORY)["today"]
    assert after["total"] - before["total"] == sent
    assert after["sent"] - before["sent"] == final["Sent"]
    assert after["bounced"] - before["bounced"] == final.get("Bounced", 0)

    refresh(sandbox, warehouse, summary.started_at)
    build_report(warehouse, "campaign_performance", as_of=sandbox.clock.now())
    (row,) = [r._mapping for r in warehouse.query("select * from campaign_performance")]
    assert row["pending"] == 0
    assert row["sent"] == final["Sent"] and row["bounced"] == final.get("Bounced", 0)
    assert row["sent_rate"] == pytest.approx(final["Sent"] / sent)
    assert row["batches_done"] == 3 and row["status"] == "sent"


def test_the_same_seed_and_address_give_the_same_outcome() -> None:
    assert outcome_for(4, "a@example.com") == outcome_for(4, " A@Example.com ")
    outcomes = Counter(outcome_for(4, f"p{n}@example.com")[0] for n in range(2000))
    assert outcomes["Sent"] > 1600 and set(outcomes) == {
        "Sent",
        "Bounced",
        "Complained",
        "Failed",
        "Discarded",
    }
    assert {outcome_for(s, "a@example.com") for s in range(50)} != {outcome_for(4, "a@example.com")}
