"""Building certified campaigns on the EviNotice sandbox: each chunk becomes one batch with
its body, recipients (≤500 per request, LookupKey per row) and schedule, exactly once — also
when answers are lost — and revert / reschedule before start, refused after. DuckDB and
PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from campaign_support import make_audience, open_warehouse
from certified_support import make_certified
from evinotice_api import START, Recording

from connector.campaigns import plan as campaign_plan
from connector.campaigns.model import CertifiedCampaign
from connector.evinotice.client import EviNoticeClient
from connector.pipelines.certified_campaigns import (
    build_certified_campaign,
    lookup_key,
    reschedule_certified_campaign,
    revert_certified_campaign,
)
from connector.warehouse.engine import Warehouse
from sandbox.clock import SandboxClock
from sandbox.evinotice.store import EviNoticeStore

pytestmark = pytest.mark.anyio
COLUMNS = "email, name, policy"
SEND_AT = START + timedelta(hours=2)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    yield from open_warehouse(request.param, tmp_path)


def plan(warehouse: Warehouse, campaign: CertifiedCampaign) -> None:
    made = campaign_plan.make_plan(warehouse, campaign, source="notice.yaml", run_id="r", now=START)
    guards = campaign_plan.evaluate_guards(made, campaign)
    campaign_plan.record_plan(
        warehouse, campaign, made, guards, source="notice.yaml", run_id="r", override_reason=None
    )


def audience(warehouse: Warehouse, count: int) -> None:
    make_audience(
        warehouse,
        [(f"user{n}@example.com", f"User {n}", f"P-{n}") for n in range(count)],
        COLUMNS,
    )


def ours(store: EviNoticeStore) -> list[dict[str, object]]:
    return [b for b in store.snapshot() if str(b["Description"]).startswith("Renewal notice [")]


def writes(transport: Recording) -> Counter[tuple[str, str]]:
    """Writes sent, by method and last path segment."""
    return Counter(
        (r.method, r.url.path.rsplit("/", 1)[-1] if r.url.path.count("/") > 3 else "batches")
        for r in transport.requests
        if r.method in ("POST", "PUT", "PATCH")
    )


async def test_each_chunk_is_built_and_scheduled_once(
    warehouse: Warehouse, client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    audience(warehouse, 1203)
    campaign = make_certified(max_contacts_per_batch=1000, send_at=SEND_AT.isoformat())
    plan(warehouse, campaign)
    summary = await build_certified_campaign(
        client, warehouse, campaign, run_id="run-1", clock=lambda: START
    )
    assert (summary.batches, summary.done, summary.stopped) == (2, 2, {})
    batches = ours(store)
    assert sorted(b["TotalCount"] for b in batches) == [203, 1000]
    assert {b["State"] for b in batches} == {"Scheduled"}
    assert {str(b["ScheduledFor"])[:19] for b in batches} == {"2026-03-02T14:00:00"}
    # Recipients in requests of at most 500: 1000 -> 2, 203 -> 1.
    assert summary.requests["recipients"] == 3
    # Every audience row once among the recipients, with its LookupKey and variables.
    seen = Counter()
    keys = dict(warehouse.query("select recipient_key, batch_key from campaign_batch_recipients"))
    for batch in batches:
        for row in store.recipients(str(batch["Id"])):
            seen[row["Address"]] += 1
            assert row["LookupKey"] == lookup_key(keys[row["Address"]], row["Address"])
    assert set(seen.values()) == {1} and len(seen) == 1203
    body = store.bodies(str(batches[0]["Id"]))[0]
    assert body.startswith("Dear User ") and "your policy P-" in body
    # A second run sends nothing.
    before = len(transport.requests)
    again = await build_certified_campaign(
        client, warehouse, campaign, run_id="run-2", clock=lambda: START
    )
    assert again.done == 2 and not again.requests
    assert all(r.method == "GET" or r.method == "QUERY" for r in transport.requests[before:])
    assert len(ours(store)) == 2


async def test_lost_answers_are_settled_without_a_second_batch_or_recipient(
    warehouse: Warehouse, client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    audience(warehouse, 700)
    campaign = make_certified()
    plan(warehouse, campaign)
    lost: Counter[str] = Counter()

    def lose(request: httpx.Request) -> bool:
        # The create's answer and the first recipients answer never arrive.
        kind = "create" if request.url.path.endswith("Batches") else "recipients"
        if request.method == "POST" and not lost[kind]:
            lost[kind] += 1
            return True
        return False

    transport.lose = lose
    summary = await build_certified_campaign(
        client, warehouse, campaign, run_id="run-1", clock=lambda: START
    )
    assert summary.found_by_lookup == 1 and summary.done == 1
    assert lost == {"create": 1, "recipients": 1}
    (batch,) = ours(store)
    assert batch["TotalCount"] == 700
    assert len({r["Address"] for r in store.recipients(str(batch["Id"]))}) == 700
    assert writes(transport)[("POST", "batches")] == 1
    assert writes(transport)[("POST", "Recipients")] == 2  # 500 (answer lost) + 200


async def test_a_run_stopped_after_the_create_resumes_on_the_same_batch(
    warehouse: Warehouse, client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    audience(warehouse, 20)
    campaign = make_certified()
    plan(warehouse, campaign)
    # The body request fails for good: the run stops with the batch created and recorded.
    transport.lose = lambda request: request.method == "PUT"
    first = await build_certified_campaign(
        client, warehouse, campaign, run_id="run-1", clock=lambda: START
    )
    assert first.done == 0 and len(first.stopped) == 1
    assert warehouse.query("select state from campaign_results") == [("body",)]
    transport.lose = lambda request: False
    second = await build_certified_campaign(
        client, warehouse, campaign, run_id="run-2", clock=lambda: START
    )
    assert second.done == 1 and second.requests["creating"] == 0
    (batch,) = ours(store)
    assert batch["TotalCount"] == 20 and batch["State"] == "Submitted"


async def test_revert_before_start_and_refusal_after(
    warehouse: Warehouse, client: EviNoticeClient, store: EviNoticeStore, clock: SandboxClock
) -> None:
    audience(warehouse, 30)
    campaign = make_certified(send_at=SEND_AT.isoformat())
    plan(warehouse, campaign)
    await build_certified_campaign(client, warehouse, campaign, run_id="r1", clock=lambda: START)
    reverted = await revert_certified_campaign(client, warehouse, campaign.name)
    assert len(reverted.changed) == 1 and not reverted.refused
    clock.advance(4 * 3600)  # past the old date: a reverted batch never starts
    (batch,) = ours(store)
    assert batch["State"] == "Draft" and batch["TotalSent"] == 0
    assert campaign_plan.campaign_row(warehouse, campaign.name)["status"] == "reverted"  # type: ignore[index]
    # Rescheduled, it starts at its new date; then a revert is refused and recorded.
    at = clock.now() + timedelta(minutes=30)
    moved = await reschedule_certified_campaign(client, warehouse, campaign.name, at)
    assert len(moved.changed) == 1
    clock.advance(3600)
    (batch,) = ours(store)
    assert batch["State"] in ("Processing", "Processed")
    refused = await revert_certified_campaign(client, warehouse, campaign.name)
    assert not refused.changed and "can no longer go back to Draft" in next(
        iter(refused.refused.values())
    )
    assert warehouse.query("select state, problem_title, http_status from campaign_results") == [
        ("done", "Revert refused", 400)
    ]
