"""Sending campaigns against the sandbox: one batch per chunk, ambiguous creates settled by
looking on the platform (never a blind resend), refusals recorded, cancel before send_at."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from campaign_support import make_campaign, open_warehouse
from conftest import make_sandbox

from connector.campaigns import CampaignError
from connector.campaigns import plan as campaign_plan
from connector.campaigns.model import CampaignBase
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import campaigns as sending
from connector.pipelines.sync import sync_categories, sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

BATCHES = "/public/v1/notifications/batches"


class Faulty:
    """ASGI app in front of the sandbox: counts POST /batches and can lose their answers
    (after the sandbox acted, or before it saw the request) or fail batch lookups."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts = 0
        self.lose_answer_after_create = 0  # the next N creates land, their answers are lost
        self.lose_request = 0  # the next N creates never reach the sandbox
        self.fail_lookups = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if (method, path) == ("POST", BATCHES):
            self.posts += 1
            if self.lose_request:
                self.lose_request -= 1
                await _answer(send, 502)
                return
            if self.lose_answer_after_create:
                self.lose_answer_after_create -= 1

                async def swallow(message: Any) -> None:
                    return None

                await self.app(scope, receive, swallow)
                await _answer(send, 502)
                return
        if self.fail_lookups and method == "GET" and path == BATCHES:
            await _answer(send, 500)
            return
        await self.app(scope, receive, send)


async def _answer(send: Any, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    yield from open_warehouse(request.param, tmp_path)


def client_for(app: Any) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(max_attempts=2, backoff_base=0.001, backoff_max=0.01),
        transport=httpx.ASGITransport(app=app),
    )


def synced(sandbox: Sandbox, warehouse: Warehouse) -> None:
    async def sync() -> None:
        async with client_for(sandbox.app) as client:
            await sync_contacts(client, warehouse, full_refresh=True, now=sandbox.clock.now())
            await sync_categories(client, warehouse, now=sandbox.clock.now())

    asyncio.run(sync())


def planned(warehouse: Warehouse, sandbox: Sandbox, campaign: CampaignBase, **kw: Any) -> None:
    plan = campaign_plan.make_plan(
        warehouse, campaign, source="t", run_id="plan", now=sandbox.clock.now()
    )
    guards = campaign_plan.evaluate_guards(plan, campaign, kw.get("overrides", ()))
    campaign_plan.record_plan(
        warehouse, campaign, plan, guards, source="t", run_id="plan", override_reason="test"
    )


def send(
    app: Any, warehouse: Warehouse, campaign: CampaignBase, clock: Callable[[], Any]
) -> sending.SendSummary:
    async def run() -> sending.SendSummary:
        async with client_for(app) as client:
            return await sending.send_campaign(
                client, warehouse, campaign, run_id="send", clock=clock
            )

    return asyncio.run(run())


def campaign_messages(sandbox: Sandbox, subject: str) -> list[dict[str, Any]]:
    return [m for m in sandbox.truth("messages") if m["subject"] == subject]


def active_audience(limit: int) -> str:
    return (
        "select c.id as contact_id from contacts as c "
        "where c.status = 'Active' and not exists (select 1 from contact_opt_outs as o "
        "where o.contact_id = c.id and o.category_id = 'NTC-0000-0001') "
        f"order by c.id limit {limit}"
    )


@pytest.fixture
def sandbox() -> Sandbox:
    return make_sandbox(contacts=200, seed=5, clock_speed=0.0)


def test_each_chunk_becomes_exactly_one_batch(sandbox: Sandbox, warehouse: Warehouse) -> None:
    synced(sandbox, warehouse)
    campaign = make_campaign(audience=active_audience(45), max_contacts_per_batch=10)
    planned(warehouse, sandbox, campaign)
    faulty = Faulty(sandbox.app)

    summary = send(faulty, warehouse, campaign, sandbox.clock.now)
    assert summary.outcomes == {"done": 5} and summary.recipients_sent == 45
    messages = campaign_messages(sandbox, "Spring news")
    assert len(messages) == 45
    assert len({m["contact"]["id"] for m in messages}) == 45
    assert Counter(Counter(m["batch"]["id"] for m in messages).values()) == {10: 4, 5: 1}
    assert faulty.posts == 5

    # Again, and after planning again: nothing more goes out; the plan says why.
    assert send(faulty, warehouse, campaign, sandbox.clock.now).batches == 0
    planned(warehouse, sandbox, campaign)
    assert campaign_plan.campaign_row(warehouse, "spring")["excluded_by_reason"] == {
        "already_reached": 45
    }
    assert send(faulty, warehouse, campaign, sandbox.clock.now).batches == 0
    assert faulty.posts == 5
    status = campaign_plan.campaign_status(warehouse, "spring")
    assert status["batches_by_state"] == {"done": 5}
    ids = {r[0] for r in warehouse.query("select batch_id from campaign_results")}
    assert ids == {m["batch"]["id"] for m in messages}


def test_a_create_whose_answer_is_lost_is_found_not_resent(
    sandbox: Sandbox, warehouse: Warehouse
) -> None:
    synced(sandbox, warehouse)
    campaign = make_campaign(audience=active_audience(30), max_contacts_per_batch=10)
    planned(warehouse, sandbox, campaign)
    faulty = Faulty(sandbox.app)
    faulty.lose_answer_after_create = 1
    faulty.fail_lookups = True  # and the immediate lookup fails too: settled next time

    first = send(faulty, warehouse, campaign, sandbox.clock.now)
    assert first.outcomes == {"done": 2, "ambiguous": 1}
    assert faulty.posts == 3

    faulty.fail_lookups = False
    second = send(faulty, warehouse, campaign, sandbox.clock.now)
    assert (second.found_by_lookup, second.resent_after_lookup) == (1, 0)
    assert faulty.posts == 3  # never sent twice
    assert len(campaign_messages(sandbox, "Spring news")) == 30
    rows = warehouse.query("select state, resolved_by, attempts from campaign_results")
    assert Counter(tuple(r) for r in rows) == {("done", "answer", 1): 2, ("done", "lookup", 1): 1}


def test_a_lost_answer_with_a_working_lookup_settles_at_once(
    sandbox: Sandbox, warehouse: Warehouse
) -> None:
    synced(sandbox, warehouse)
    campaign = make_campaign(audience=active_audience(20), max_contacts_per_batch=10)
    planned(warehouse, sandbox, campaign)
    faulty = Faulty(sandbox.app)
    faulty.lose_answer_after_create = 2
    summary = send(faulty, warehouse, campaign, sandbox.clock.now)
    assert summary.outcomes == {"done": 2}
    assert faulty.posts == 2
    assert len(campaign_messages(sandbox, "Spring news")) == 20


def test_a_create_that_never_arrived_is_sent_again_after_the_lookup(
    sandbox: Sandbox, warehouse: Warehouse
) -> None:
    synced(sandbox, warehouse)
    campaign = make_campaign(audience=active_audience(20), max_contacts_per_batch=10)
    planned(warehouse, sandbox, campaign)
    faulty = Faulty(sandbox.app)
    faulty.lose_request = 1
    first = send(faulty, warehouse, campaign, sandbox.clock.now)
    assert first.outcomes == {"done": 1, "ambiguous": 1}
    second = send(faulty, warehouse, campaign, sandbox.clock.now)
    assert (second.found_by_lookup, second.resent_after_lookup) == (0, 1)
    messages = campaign_messages(sandbox, "Spring news")
    assert len(messages) == 20 and len({m["batch"]["id"] for m in messages}) == 2
    attempts = sorted(r[0] for r in warehouse.query("select attempts from campaign_results"))
    assert attempts == [1, 2]


def test_a_refused_batch_records_the_problem_and_is_not_retried(
    sandbox: Sandbox, warehouse: Warehouse
) -> None:
    synced(sandbox, warehouse)
    # Legacy (NTC-0000-0008) is Unpublished: the guard trips, a person overrides it anyway,
    # and the platform refuses the batch.
    campaign = make_campaign(audience=active_audience(5), category="NTC-0000-0008")
    planned(warehouse, sandbox, campaign, overrides=("category_published",))
    faulty = Faulty(sandbox.app)
    assert send(faulty, warehouse, campaign, sandbox.clock.now).outcomes == {"rejected": 1}
    row = warehouse.query(
        "select state, http_status, problem_title, field_errors from campaign_results"
    )[0]
    assert (row[0], row[1], row[2]) == ("rejected", 400, "Bad Request")
    assert "category.id" in str(row[3])
    assert send(faulty, warehouse, campaign, sandbox.clock.now).batches == 0
    assert faulty.posts == 1


def test_a_guard_that_tripped_stops_the_send(sandbox: Sandbox, warehouse: Warehouse) -> None:
    synced(sandbox, warehouse)
    campaign = make_campaign(audience=active_audience(5), guards={"max_recipients": 3})
    planned(warehouse, sandbox, campaign)
    faulty = Faulty(sandbox.app)
    with pytest.raises(CampaignError, match="max_recipients"):
        send(faulty, warehouse, campaign, sandbox.clock.now)
    assert faulty.posts == 0


def test_cancel_before_send_at_sends_nothing(sandbox: Sandbox, warehouse: Warehouse) -> None:
    synced(sandbox, warehouse)
    send_at = sandbox.clock.now() + timedelta(hours=1)
    campaign = make_campaign(audience=active_audience(12), send_at=send_at.isoformat())
    planned(warehouse, sandbox, campaign)
    assert campaign_plan.campaign_row(warehouse, "spring")["status"] == "waiting"
    faulty = Faulty(sandbox.app)
    with pytest.raises(sending.CampaignNotDueError):
        send(faulty, warehouse, campaign, sandbox.clock.now)

    campaign_plan.cancel_campaign(warehouse, "spring", reason="wrong audience")
    sandbox.clock.advance(2 * 3600)
    summary = send(faulty, warehouse, campaign, sandbox.clock.now)
    assert summary.cancelled and summary.batches == 0
    assert faulty.posts == 0 and campaign_messages(sandbox, "Spring news") == []
    # Planning the same version again keeps it cancelled; a changed file is a new version.
    planned(warehouse, sandbox, campaign)
    assert campaign_plan.campaign_status(warehouse, "spring")["status"] == "cancelled"
    assert send(faulty, warehouse, campaign, sandbox.clock.now).cancelled
    assert faulty.posts == 0


def test_send_at_due_sends(sandbox: Sandbox, warehouse: Warehouse) -> None:
    synced(sandbox, warehouse)
    send_at = sandbox.clock.now() + timedelta(minutes=30)
    campaign = make_campaign(audience=active_audience(3), send_at=send_at.isoformat())
    planned(warehouse, sandbox, campaign)
    sandbox.clock.advance(31 * 60)
    assert send(sandbox.app, warehouse, campaign, sandbox.clock.now).outcomes == {"done": 1}
    assert campaign_plan.campaign_status(warehouse, "spring")["status"] == "sent"


def test_attachments_go_with_every_batch(
    sandbox: Sandbox, warehouse: Warehouse, tmp_path: Path
) -> None:
    synced(sandbox, warehouse)
    attachment = tmp_path / "terms.pdf"
    attachment.write_bytes(b"%PDF-1.4 terms")
    campaign = make_campaign(
        audience=active_audience(3),
        max_contacts_per_batch=2,
        attachments=[{"path": str(attachment), "name": "Terms.pdf"}],
    )
    planned(warehouse, sandbox, campaign)

    assert send(sandbox.app, warehouse, campaign, sandbox.clock.now).outcomes == {"done": 2}
    batch_ids = {m["batch"]["id"] for m in campaign_messages(sandbox, "Spring news")}
    batches = [b for b in sandbox.truth("batches") if b["id"] in batch_ids]
    assert len(batches) == 2
    for batch in batches:
        assert [(a["filename"], a["contentType"]) for a in batch["attachments"]] == [
            ("Terms.pdf", "application/pdf")
        ]
