"""Short sorted reads (a small offset + limit of a large result, like the connector's "newest
change" request) answer exactly what the whole sorted result holds at those positions, with
ties, nulls, offsets and the total, over HTTP.

The whole sorted result is the streaming answer of the same query at the same moment: a
stream needs every row, so the sandbox sorts them all for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from conftest import make_sandbox
from test_sandbox_marketplace import Http

from sandbox.app import Sandbox
from sandbox.marketplace.routes import FIELDS
from sandbox.marketplace.rql import parse_query, sort_records

API = "/public/v1/notifications/contacts"
STREAM = {"MPT-Streaming": "true", "Accept": "application/jsonl"}


@pytest.fixture
def sandbox() -> Sandbox:
    return make_sandbox(contacts=1000, seed=5, clock_speed=0.0)


@pytest.fixture
def http(sandbox: Sandbox) -> Iterator[Http]:
    """1,000 generated contacts on a stopped clock, plus contacts written through the API: every
    write has the same timestamp, so the newest ones tie; some names are null, some equal."""
    client = Http(sandbox)
    for i in range(12):
        client.post(API, json={"email": f"nameless.{i}@ties.test"}).raise_for_status()
        client.post(API, json={"email": f"same.{i}@ties.test", "name": "Tie Name"})
    active = [c["id"] for c in sandbox.truth("contacts") if c["status"] == "Active"]
    for identifier in active[5:400:37]:  # updated at the same instant, spread over the ids
        client.post(f"{API}/{identifier}/block").raise_for_status()
    yield client
    client.close()


def stream(http: Http, query: str) -> list[dict[str, Any]]:
    response = http.get(f"{API}?{query}", headers=STREAM)
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.text.splitlines()]


def sorted_ids(sandbox: Sandbox, query: str, resource: str = "contacts") -> list[str]:
    """The ids the query selects, by a plain full sort of the sandbox's true records."""
    parsed = parse_query(query, FIELDS[resource])
    truth = [r for r in sandbox.truth(resource) if not parsed.predicate or parsed.predicate(r)]
    return [r["id"] for r in sort_records(truth, parsed.order)]


def page(http: Http, query: str, offset: int, limit: int) -> dict[str, Any]:
    response = http.get(f"{API}?{query}&limit={limit}&offset={offset}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


QUERIES = [
    # The connector's newest-change requests: many contacts tie on the newest instant.
    "ne(audit.updated.at,null())&select=audit&order=-audit.updated.at",
    "ne(audit.created.at,null())&select=audit&order=-audit.created.at",
    # Nulls first ascending, last descending; equal names; several fields and directions.
    "order=name",
    "order=-name",
    "order=name,-id",
    "order=blockedReason,-name",
    "order=-blockedReason,id",
    "order=status,-audit.updated.at&select=audit",
    "order=user.id",
    "order=-user.name,email",
    "eq(status,Active)&order=-audit.updated.at,name&select=audit",
    "ilike(name,*a*)&order=-audit.created.at&select=audit",
]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize(("offset", "limit"), [(0, 1), (0, 10), (3, 7), (20, 40), (0, 100)])
def test_a_short_sorted_page_is_that_slice_of_the_whole_sorted_result(
    sandbox: Sandbox, http: Http, query: str, offset: int, limit: int
) -> None:
    body = page(http, query, offset, limit)  # the first read of this query: a short one
    whole = stream(http, query)
    assert body["data"] == whole[offset : offset + limit]
    assert [r["id"] for r in whole] == sorted_ids(sandbox, query)
    assert body["$meta"]["pagination"] == {"offset": offset, "limit": limit, "total": len(whole)}


@pytest.mark.parametrize("query", [*QUERIES[:2], "order=name,-id", "order=-blockedReason,id"])
def test_paging_through_a_sorted_result_from_a_short_first_page(http: Http, query: str) -> None:
    count = page(http, query, 0, 0)  # a count first, then pages of growing offsets
    assert count["data"] == []
    seen: list[dict[str, Any]] = []
    for offset in range(0, count["$meta"]["pagination"]["total"], 100):
        body = page(http, query, offset, 100 if offset else 3)
        assert body["$meta"]["pagination"]["total"] == count["$meta"]["pagination"]["total"]
        seen.extend(body["data"])
        if not offset:
            seen.extend(page(http, query, 3, 97)["data"])
    assert seen == stream(http, query)


def test_the_newest_change_follows_a_write(http: Http) -> None:
    query = "ne(audit.updated.at,null())&select=audit&order=-audit.updated.at"
    before = page(http, query, 0, 1)["data"][0]
    http.post("/_sandbox/clock/advance", json={"seconds": 1}).raise_for_status()
    oldest = page(http, "ne(audit.updated.at,null())&select=audit&order=audit.updated.at", 0, 1)
    changed = oldest["data"][0]["id"]
    http.post(f"{API}/{changed}/block").raise_for_status()
    after = page(http, query, 0, 1)["data"][0]
    assert after["id"] == changed != before["id"]
    assert after["audit"]["updated"]["at"] > before["audit"]["updated"]["at"]


def test_a_filtered_read_in_id_order_is_in_id_order(http: Http) -> None:
    query = "eq(status,Active)&order=id"
    whole = stream(http, query)
    ids = [r["id"] for r in whole]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert page(http, query, 10, 5)["data"] == whole[10:15]


def test_short_pages_follow_creates_updates_deletes_and_inserts_between_ids(
    http: Http, sandbox: Sandbox
) -> None:
    # Reads first, so the sandbox keeps what it learnt about these orders; then every kind of
    # change, on the stopped clock (so changed rows tie with each other), and read again.
    queries = [QUERIES[0], QUERIES[1], "order=name,-id", "ilike(name,*a*)&order=-name"]
    for round_ in range(4):
        for query in queries:
            for offset, limit in ((0, 1), (2, 9)):
                body = page(http, query, offset, limit)
                whole = stream(http, query)
                assert body["data"] == whole[offset : offset + limit], (round_, query)
                assert body["$meta"]["pagination"]["total"] == len(whole)
                assert [r["id"] for r in whole] == sorted_ids(sandbox, query)
                sandbox.marketplace.churn_step(7)
                sandbox.marketplace.reinsert_step(3)
        http.post("/_sandbox/clock/advance", json={"seconds": 1}).raise_for_status()
    assert sandbox.marketplace.churn.reinserted and sandbox.marketplace.churn.deleted


def test_the_newest_message_follows_deliveries(http: Http, sandbox: Sandbox) -> None:
    # Delivery changes queued messages where they are, not by replacing them.
    query = "ne(audit.updated.at,null())&select=audit&order=-audit.updated.at"
    url = f"/public/v1/notifications/messages?{query}&limit=3"
    recipients = [{"id": c["id"]} for c in list(sandbox.truth("contacts"))[:40]]
    batch = {"category": {"id": "NTC-0000-0001"}, "subject": "Hi", "contacts": recipients}
    http.post("/public/v1/notifications/batches", json=batch).raise_for_status()
    for _ in range(3):
        newest = [m["id"] for m in http.get(url).json()["data"]]
        assert newest == sorted_ids(sandbox, query, "messages")[:3]
        http.post("/_sandbox/clock/advance", json={"seconds": 300}).raise_for_status()
