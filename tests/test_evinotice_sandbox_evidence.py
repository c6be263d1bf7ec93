"""The EviNotice sandbox's per-recipient evidence: produced over sandbox time as a batch
processes, deterministic per seed and address, and served by the evidence query."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from evinotice_api import (
    START,
    TEXT,
    USER,
    assert_problem,
    create,
    evinotice_app,
    get,
)

from sandbox.clock import SandboxClock
from sandbox.evinotice.evidence import EVIDENCE_PATH, OUTCOMES, STATES
from sandbox.evinotice.payloads import BASE_PATH
from sandbox.evinotice.store import EviNoticeStore

pytestmark = pytest.mark.anyio


def keyed_recipients(count: int, prefix: str = "K") -> str:
    lines = ["Address|DisplayName|LookupKey"]
    for i in range(count):
        local = "failing" if i % 10 == 9 else f"user{i}"  # every tenth one fails on purpose
        lines.append(f"{local}.{prefix}{i}@example.com|User {i}|{prefix}-{i}")
    return "\n".join(lines)


async def keyed_batch(api: httpx.AsyncClient, count: int = 20, prefix: str = "K") -> str:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}"
    assert (await api.put(f"{path}/Body", content="Hi {{DisplayName}}", headers=TEXT)).is_success
    assert (
        await api.post(f"{path}/Recipients", content=keyed_recipients(count, prefix))
    ).is_success
    return batch_id


async def evidence(api: httpx.AsyncClient, **query: Any) -> list[dict[str, Any]]:
    """Every record the query gives, following the cursor to an empty page."""
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = {**query, **({"Cursor": cursor} if cursor else {})}
        response = await api.post(EVIDENCE_PATH, json=body)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"Cursor", "Results"}
        if not page["Results"]:
            return records
        records += page["Results"]
        cursor = page["Cursor"]


async def test_evidence_appears_as_the_batch_processes_and_moves_on(
    api: httpx.AsyncClient, clock: SandboxClock
) -> None:
    batch_id = await keyed_batch(api, 40)
    assert await evidence(api, LookupKeys=["K-0"]) == []  # a Draft sends nothing
    assert (await api.patch(f"{BASE_PATH}/{batch_id}", json={"State": "Submitted"})).is_success
    assert await evidence(api, LookupKeys=["K-0"]) == []  # still in the queue
    clock.advance(10)  # the queue delay: processing starts now
    clock.advance(0.5)
    partial = await evidence(api)
    assert 0 < len(partial) < 40
    counted = await get(api, batch_id)
    assert len(partial) == counted["SentCount"] + counted["FailedCount"]
    clock.advance(600)
    done = await evidence(api)
    assert len(done) == 40
    batch = await get(api, batch_id)
    assert batch["State"] == "Processed"
    by_key = {r["LookupKey"]: r for r in done}
    assert set(by_key) == {f"K-{i}" for i in range(40)}
    for i in range(40):
        record = by_key[f"K-{i}"]
        assert record["LinkedId"] == batch_id
        assert record["RecipientAddress"].endswith(f"K{i}@example.com")
        assert record["State"] in STATES and record["Outcome"] in OUTCOMES
        assert record["CreationDate"] <= record["LastUpdateDate"]
        assert isinstance(record["TimeToLive"], int)
    failed = [r for r in done if r["RecipientAddress"].startswith("failing")]
    assert len(failed) == 4 and all(
        (r["State"], r["Outcome"]) == ("Failed", "Failed") for r in failed
    )
    # The evidence agrees with the batch's own counters.
    assert batch["FailedCount"] == sum(r["State"] == "Failed" for r in done)
    assert batch["SentCount"] == sum(r["State"] != "Failed" for r in done)
    # A day later people have read, accepted, rejected or refused; the ids stay the same.
    clock.advance(2 * 86_400)
    later = {r["Id"]: r for r in await evidence(api)}
    assert later.keys() == {r["Id"] for r in done}
    outcomes = Counter(r["Outcome"] for r in later.values())
    assert {"Read", "Accepted", "Rejected", "Refused", "Failed"} <= outcomes.keys(), outcomes
    assert all(r["State"] == "Closed" for r in later.values() if r["Outcome"] == "Accepted")


async def test_evidence_is_deterministic_per_seed_and_address(clock: SandboxClock) -> None:
    async def run(seed: int) -> list[tuple[str, str, str]]:
        store = EviNoticeStore(clock, seed=seed, batches=0)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=evinotice_app(store)),
            base_url="http://evinotice.test",
            auth=(USER, "s3cret-pa55"),
        ) as api:
            batch_id = await keyed_batch(api, 60)
            assert (
                await api.patch(f"{BASE_PATH}/{batch_id}", json={"State": "Submitted"})
            ).is_success
            clock.advance(3 * 86_400)
            records = await evidence(api)
            return sorted((r["RecipientAddress"], r["State"], r["Outcome"]) for r in records)

    first, again, other = await run(3), await run(3), await run(4)
    assert len(first) == 60
    # The clock moved on between runs, but each run's timeline is relative to its own start.
    assert first == again
    assert first != other


async def test_a_scheduled_batch_starts_at_its_scheduled_date(
    api: httpx.AsyncClient, clock: SandboxClock
) -> None:
    batch_id = await keyed_batch(api, 10)
    at = START + timedelta(hours=3)
    patch = {"State": "Submitted", "ScheduledDate": at.isoformat()}
    assert (await api.patch(f"{BASE_PATH}/{batch_id}", json=patch)).is_success
    clock.advance(3 * 3600 - 1)
    assert (await get(api, batch_id))["State"] == "Scheduled"
    assert await evidence(api) == []
    clock.advance(60)
    assert (await get(api, batch_id))["State"] in ("Processing", "Processed")
    records = await evidence(api)
    assert records and min(r["CreationDate"] for r in records) >= "2026-03-02T15:00:00"


async def test_revert_before_start_processes_nothing_and_after_start_is_refused(
    api: httpx.AsyncClient, clock: SandboxClock
) -> None:
    early = await keyed_batch(api, 10, prefix="E")
    path = f"{BASE_PATH}/{early}"
    when = (START + timedelta(hours=1)).isoformat()
    assert (await api.patch(path, json={"State": "Submitted", "ScheduledDate": when})).is_success
    assert (await api.patch(path, json={"State": "Draft"})).is_success
    clock.advance(2 * 3600)
    batch = await get(api, early, IncludeRecipientsCount="true")
    assert batch["State"] == "Draft" and batch["SentCount"] == batch["FailedCount"] == 0
    assert await evidence(api, LookupKeys=["E-0", "E-1"]) == []

    late = await keyed_batch(api, 300, prefix="L")
    path = f"{BASE_PATH}/{late}"
    assert (await api.patch(path, json={"State": "Submitted"})).is_success
    clock.advance(11)
    before = await evidence(api, LookupKeys=[f"L-{i}" for i in range(300)])
    assert before
    body = assert_problem(await api.patch(path, json={"State": "Draft"}), 400, "State")
    assert "Processing" in body["detail"]
    assert (await get(api, late))["State"] == "Processing"
    clock.advance(600)
    assert len(await evidence(api, LookupKeys=[f"L-{i}" for i in range(300)])) == 300


async def test_the_query_filters_and_pages(
    api: httpx.AsyncClient, clock: SandboxClock, store: EviNoticeStore
) -> None:
    first = await keyed_batch(api, 150, prefix="A")
    second = await keyed_batch(api, 30, prefix="B")
    for batch_id in (first, second):
        assert (await api.patch(f"{BASE_PATH}/{batch_id}", json={"State": "Submitted"})).is_success
    clock.advance(86_400)
    everything = await evidence(api, Limit=7)
    assert len(everything) == 180 and len({r["Id"] for r in everything}) == 180
    assert everything == store.evidence_snapshot()
    page = (await api.post(EVIDENCE_PATH, json={})).json()
    assert len(page["Results"]) == 100  # the default and the most a page holds
    only_b = await evidence(api, LookupKeys=["B-1", "B-2", "A-3", "nobody"])
    assert sorted(r["LookupKey"] for r in only_b) == ["A-3", "B-1", "B-2"]
    failed = await evidence(api, State="Failed")
    assert failed and all(r["State"] == "Failed" for r in failed)
    accepted = await evidence(api, Outcome="Accepted")
    assert accepted and all(r["Outcome"] == "Accepted" for r in accepted)
    assert len(await evidence(api, Owner=USER)) == 180
    assert await evidence(api, Owner="someone.else@example.com") == []
    for body, field in (
        ({"Limit": 101}, "Limit"),
        ({"Limit": 0}, "Limit"),
        ({"State": "Lost"}, "State"),
        ({"Outcome": "Maybe"}, "Outcome"),
        ({"LookupKeys": "A-1"}, "LookupKeys"),
        ({"Cursor": "nonsense"}, "Cursor"),
    ):
        assert_problem(await api.post(EVIDENCE_PATH, json=body), 400, field)
    unauthorised = await api.post(EVIDENCE_PATH, json={}, auth=None)
    assert_problem(unauthorised, 401)


def test_seeded_batches_have_no_evidence_without_addresses(store: EviNoticeStore) -> None:
    # Seeded batches count their recipients but hold no addresses, so no evidence either.
    assert store.evidence_snapshot() == []
