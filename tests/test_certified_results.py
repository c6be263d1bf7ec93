"""The EviNotice side of ``campaign_performance``: a certified campaign built on the sandbox,
processed over sandbox time, its batches and evidence synced — every recipient's evidence
joins back by LookupKey, and the report's counts are the sandbox's. DuckDB and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from campaign_support import make_audience, open_warehouse
from certified_support import make_certified
from evinotice_api import START

from assets.reporting import build_report
from connector.campaigns import plan as campaign_plan
from connector.evinotice.client import EviNoticeClient
from connector.pipelines.certified_campaigns import build_certified_campaign, campaign_lookup_keys
from connector.pipelines.evidence_sync import sync_evidence
from connector.pipelines.sync import sync_evinotice_batches
from connector.warehouse.engine import Warehouse
from sandbox.clock import SandboxClock
from sandbox.evinotice.payloads import DEFAULT_SITE_ID
from sandbox.evinotice.store import EviNoticeStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    yield from open_warehouse(request.param, tmp_path)


async def test_evidence_joins_back_to_every_recipient_in_the_report(
    warehouse: Warehouse, client: EviNoticeClient, store: EviNoticeStore, clock: SandboxClock
) -> None:
    make_audience(
        warehouse,
        [(f"user{n}@example.com", f"User {n}", f"P-{n}") for n in range(40)],
        "email, name, policy",
    )
    campaign = make_certified(max_contacts_per_batch=25)
    made = campaign_plan.make_plan(warehouse, campaign, source="notice.yaml", run_id="r", now=START)
    guards = campaign_plan.evaluate_guards(made, campaign)
    campaign_plan.record_plan(
        warehouse, campaign, made, guards, source="notice.yaml", run_id="r", override_reason=None
    )
    summary = await build_certified_campaign(
        client, warehouse, campaign, run_id="r", clock=lambda: START
    )
    assert summary.done == 2
    clock.advance(timedelta(days=20).total_seconds())  # processed, evidence settled
    keys = campaign_lookup_keys(warehouse, campaign.name)
    assert len(keys) == 40
    await sync_evinotice_batches(client, warehouse, DEFAULT_SITE_ID, now=clock.now())
    await sync_evidence(client, warehouse, lookup_keys=keys, now=clock.now())
    build_report(warehouse, "campaign_performance", as_of=clock.now())
    row = campaign_plan.campaign_performance(warehouse, campaign.name)
    assert row is not None and row["provider"] == "evinotice" and row["status"] == "scheduled"

    truth = [e for e in store.evidence_snapshot() if e.get("LookupKey") in set(keys)]
    assert {e["LookupKey"] for e in truth} == set(keys)  # every recipient's evidence joins
    outcomes = Counter(e["Outcome"] for e in truth)
    assert row["certified_recipients"] == 40 and row["evidence_records"] == 40
    assert row["evinotice_recipients"] == 40
    assert row["evidence_read"] == outcomes["Read"]
    assert row["evidence_accepted"] == outcomes["Accepted"]
    assert row["evidence_rejected"] == outcomes["Rejected"]
    assert row["evidence_refused"] == outcomes["Refused"]
    assert row["evidence_delivered"] == outcomes["Delivered"]
    failed = sum(
        1 for e in truth if e["Outcome"] in ("Failed", "Cancelled") or e["State"] == "Failed"
    )
    assert row["evidence_failed"] == failed
    assert (
        row["evidence_pending"]
        == 40
        - sum(
            row[k]
            for k in (
                "evidence_delivered",
                "evidence_read",
                "evidence_accepted",
                "evidence_rejected",
            )
        )
        - row["evidence_refused"]
        - failed
    )
    assert sum(outcomes.values()) == 40
