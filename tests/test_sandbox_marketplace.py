"""The sandbox's Marketplace API, driven over HTTP (in-process): shapes, paging, RQL, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from conftest import make_sandbox
from openapi import errors

from sandbox.app import Sandbox

API = "/public/v1/notifications"
LISTS = {
    "contacts": "ContactListResponse",
    "categories": "CategoryListResponse",
    "batches": "BatchListResponse",
    "messages": "MessageListResponse",
}


class Http:
    """A tiny synchronous facade over an in-process async client, for readable tests."""

    def __init__(self, sandbox: Sandbox, token: str | None = "sandbox-token") -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox.app),
            base_url="http://sandbox.local",
            headers=headers,
        )
        self._loop = asyncio.new_event_loop()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@pytest.fixture
def http(small_sandbox: Sandbox) -> Iterator[Http]:
    client = Http(small_sandbox)
    yield client
    client.close()


@pytest.fixture
def fresh() -> Iterator[tuple[Sandbox, Http]]:
    """A sandbox of its own, for tests that change data."""
    sandbox = make_sandbox(contacts=200, seed=3)
    client = Http(sandbox)
    yield sandbox, client
    client.close()


@pytest.mark.parametrize("resource", LISTS)
def test_every_list_page_and_item_validates_against_the_openapi_document(
    http: Http, small_sandbox: Sandbox, resource: str
) -> None:
    offset, seen = 0, 0
    while True:
        body = http.get(f"{API}/{resource}?select=audit&limit=100&offset={offset}").json()
        assert errors(LISTS[resource], body) == []
        seen += len(body["data"])
        offset += 100
        if offset >= body["$meta"]["pagination"]["total"]:
            break
    assert seen == len(list(small_sandbox.truth(resource)))
    for record in list(small_sandbox.truth(resource))[:25]:
        item = http.get(f"{API}/{resource}/{record['id']}")
        assert item.status_code == 200
        assert errors(LISTS[resource].removesuffix("ListResponse"), item.json()) == []


def test_limit_is_capped_at_100_and_zero_counts(http: Http) -> None:
    body = http.get(f"{API}/contacts?limit=500").json()
    assert body["$meta"]["pagination"]["limit"] == 100
    assert len(body["data"]) == 100
    count = http.get(f"{API}/contacts?limit=0").json()
    assert count["data"] == []
    assert count["$meta"]["pagination"]["total"] == 1000


def test_offset_pages_are_disjoint_and_in_id_order(http: Http) -> None:
    ids: list[str] = []
    for offset in range(0, 300, 100):
        ids += [
            r["id"] for r in http.get(f"{API}/contacts?limit=100&offset={offset}").json()["data"]
        ]
    assert ids == sorted(ids)
    assert len(set(ids)) == 300


def test_audit_is_omitted_unless_selected(http: Http) -> None:
    plain = http.get(f"{API}/contacts?limit=1").json()
    assert "audit" not in plain["data"][0]
    assert plain["$meta"]["omitted"] == ["audit"]
    selected = http.get(f"{API}/contacts?limit=1&select=audit").json()
    assert "updated" in selected["data"][0]["audit"]


def test_rql_filters_match_the_truth(http: Http, small_sandbox: Sandbox) -> None:
    truth = list(small_sandbox.truth("contacts"))
    blocked = [c for c in truth if c["status"] == "Blocked"]
    body = http.get(f"{API}/contacts?eq(status,Blocked)&limit=0").json()
    assert body["$meta"]["pagination"]["total"] == len(blocked)
    shortcut = http.get(f"{API}/contacts?status=Blocked&limit=0").json()
    assert shortcut["$meta"]["pagination"]["total"] == len(blocked)
    with_opt_outs = [c for c in truth if c["optOuts"]]
    any_query = http.get(f'{API}/contacts?any(optOuts,eq(id,"{truth[0]["id"][:0]}NTC-0000-0001"))')
    assert any_query.status_code == 200
    opted_out_of_first = [
        c for c in with_opt_outs if any(o["id"] == "NTC-0000-0001" for o in c["optOuts"])
    ]
    assert any_query.json()["$meta"]["pagination"]["total"] == len(opted_out_of_first)
    updated = [c for c in truth if "updated" in c["audit"]]  # never-updated ones have none
    cutoff = sorted(c["audit"]["updated"]["at"] for c in updated)[300]
    newer = http.get(
        f'{API}/contacts?gt(audit.updated.at,"{cutoff}")&select=audit&order=audit.updated.at&limit=100'
    ).json()
    expected = sorted(
        c["audit"]["updated"]["at"] for c in updated if c["audit"]["updated"]["at"] > cutoff
    )
    assert newer["$meta"]["pagination"]["total"] == len(expected)
    assert [r["audit"]["updated"]["at"] for r in newer["data"]] == expected[:100]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("eq(bogus,1)", "bogus"),
        ("eq(status,Active", "parenthes"),
        ("gt(audit.updated.at,%222026-01-01T00:00:00.000Z%22)", "select"),
        ("limit=-1", "limit"),
        ("frobnicate(status,Active)", "frobnicate"),
    ],
)
def test_bad_queries_are_400_problem_details(http: Http, query: str, fragment: str) -> None:
    response = http.get(f"{API}/contacts?{query}")
    assert response.status_code == 400
    problem = response.json()
    assert problem["status"] == 400
    assert problem["title"] == "Bad Request"
    assert fragment in problem["detail"].lower()
    assert problem["traceId"].startswith("00-")
    assert errors("ProblemDetails", problem) == []


def test_missing_or_wrong_token_is_401(small_sandbox: Sandbox) -> None:
    for token in (None, "wrong-token"):
        client = Http(small_sandbox, token=token)
        try:
            response = client.get(f"{API}/contacts")
        finally:
            client.close()
        assert response.status_code == 401
        assert response.json()["status"] == 401


def test_unknown_id_is_404(http: Http) -> None:
    response = http.get(f"{API}/contacts/CTT-9999-9999-9999")
    assert response.status_code == 404
    assert "CTT-9999-9999-9999" in response.json()["detail"]


def test_contact_lifecycle_and_duplicate_email(fresh: tuple[Sandbox, Http]) -> None:
    sandbox, http = fresh
    created = http.post(f"{API}/contacts", json={"email": "New.Person@Example.com", "name": "New"})
    assert created.status_code == 201
    contact = created.json()
    assert contact["status"] == "Active"
    assert errors("Contact", contact) == []
    duplicate = http.post(f"{API}/contacts", json={"email": "new.person@example.com"})
    assert duplicate.status_code == 409
    assert "email" in duplicate.json()["errors"]
    blocked = http.post(f"{API}/contacts/{contact['id']}/block")
    assert blocked.json()["status"] == "Blocked"
    assert http.post(f"{API}/contacts/{contact['id']}/block").status_code == 409
    assert http.post(f"{API}/contacts/{contact['id']}/unblock").json()["status"] == "Active"
    renamed = http.request(
        "PUT",
        f"{API}/contacts/{contact['id']}",
        json={"email": contact["email"], "name": "Renamed"},
    )
    assert renamed.json()["name"] == "Renamed"
    assert http.request("DELETE", f"{API}/contacts/{contact['id']}").status_code == 204
    assert http.get(f"{API}/contacts/{contact['id']}").status_code == 404
    assert contact["id"] not in {c["id"] for c in sandbox.truth("contacts")}


def test_invalid_contact_body_names_the_fields(fresh: tuple[Sandbox, Http]) -> None:
    _, http = fresh
    response = http.post(
        f"{API}/contacts", json={"email": "not-an-email", "optOuts": [{"id": "NTC-0000-0004"}]}
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"email", "optOuts"}


def test_batch_create_adds_one_message_per_contact(fresh: tuple[Sandbox, Http]) -> None:
    sandbox, http = fresh
    contacts = list(sandbox.truth("contacts"))[:3]
    before = len(list(sandbox.truth("messages")))
    response = http.post(
        f"{API}/batches",
        json={
            "category": {"id": "NTC-0000-0001"},
            "subject": "Hello",
            "body": "<p>Hi</p>",
            "contacts": [{"id": contacts[0]["id"]}, {"email": contacts[1]["email"]}],
        },
    )
    assert response.status_code == 201
    assert errors("Batch", response.json()) == []
    messages = [m for m in sandbox.truth("messages") if m["batch"]["id"] == response.json()["id"]]
    assert len(list(sandbox.truth("messages"))) == before + 2
    assert {m["contact"]["id"] for m in messages} == {contacts[0]["id"], contacts[1]["id"]}


def test_category_statistics_agree_with_messages(small_sandbox: Sandbox) -> None:
    messages = list(small_sandbox.truth("messages"))
    for category in small_sandbox.truth("categories"):
        month = category["statistics"]["month"]
        parts = ("sent", "bounced", "complained", "discarded", "failed")
        assert month["total"] == sum(month[p] for p in parts)
        now = small_sandbox.clock.now()
        start = now.strftime("%Y-%m-01T00:00:00.000Z")
        in_month = [
            m
            for m in messages
            if m["category"]["id"] == category["id"] and m["audit"]["created"]["at"] >= start
        ]
        assert month["sent"] == sum(m["status"] == "Sent" for m in in_month)
        assert month["bounced"] == sum(m["status"] == "Bounced" for m in in_month)
        assert category["statistics"]["today"]["total"] <= category["statistics"]["week"]["total"]


def test_streaming_answers_the_whole_filtered_result_as_json_lines(
    http: Http, small_sandbox: Sandbox
) -> None:
    response = http.get(
        f"{API}/contacts?eq(status,Active)",
        headers={"MPT-Streaming": "true", "Accept": "application/jsonl"},
    )
    assert response.headers["MPT-Streaming"] == "true"
    rows = [orjson.loads(line) for line in response.text.splitlines()]
    active = [c["id"] for c in small_sandbox.truth("contacts") if c["status"] == "Active"]
    assert [r["id"] for r in rows] == active
    plain = http.get(f"{API}/contacts", headers={"Accept": "application/jsonl"})
    assert "MPT-Streaming" not in plain.headers
    assert "data" in plain.json()


def test_generator_is_deterministic_and_consistent() -> None:
    first, second = make_sandbox(contacts=300, seed=11), make_sandbox(contacts=300, seed=11)
    for resource in ("contacts", "batches", "messages"):
        assert list(first.truth(resource)) == list(second.truth(resource))
    contacts = {c["id"]: c for c in first.truth("contacts")}
    batches = {b["id"] for b in first.truth("batches")}
    for message in first.truth("messages"):
        assert message["contact"]["id"] in contacts
        assert message["batch"]["id"] in batches
    statuses = {c["status"] for c in contacts.values()}
    assert statuses == {"Active", "Blocked"}
    assert all(c["blockedReason"] for c in contacts.values() if c["status"] == "Blocked")
    assert any(c["optOuts"] for c in contacts.values())
    assert any("user" in c for c in contacts.values())
    assert len({c["email"] for c in contacts.values()}) == len(contacts)
