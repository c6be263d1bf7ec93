"""The Marketplace contract as the real platform behaves (issue 9): unknown ids on block /
unblock / update answer 400 "not found" and the client calls the contact gone; contact ids in
both shapes; ``POST /batches`` as JSON and as the SDK's multipart."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from conftest import asgi_marketplace, make_sandbox

from connector.errors import ContactGoneError, NotFoundError, ValidationError
from connector.marketplace.client import BatchAttachment, MarketplaceClient
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from sandbox.app import Sandbox

API = "http://sandbox.local/public/v1/notifications"
AUTH = {"Authorization": "Bearer sandbox-token"}
UNKNOWN = "CTT-9999-9999-9999"


def raw(sandbox: Sandbox, method: str, path: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox.app), headers=AUTH
        ) as http:
            return await http.request(method, API + path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"/contacts/{UNKNOWN}/block", None),
        ("POST", f"/contacts/{UNKNOWN}/unblock", None),
        ("PUT", f"/contacts/{UNKNOWN}", {"email": "x@example.com", "name": "X", "optOuts": []}),
    ],
)
def test_unknown_ids_on_block_unblock_update_answer_400_not_found(
    method: str, path: str, body: object
) -> None:
    sandbox = make_sandbox(contacts=10, seed=2)
    answer = raw(sandbox, method, path, json=body)
    assert answer.status_code == 400
    problem = answer.json()
    assert problem["status"] == 400 and "not found" in problem["detail"]
    # Reading an unknown id is still a 404.
    assert raw(sandbox, "GET", f"/contacts/{UNKNOWN}").status_code == 404


def test_the_client_calls_a_missing_contact_gone_not_an_invalid_request() -> None:
    sandbox = make_sandbox(contacts=10, seed=2)

    async def run() -> None:
        async with asgi_marketplace(sandbox) as client:
            for write in (
                client.block_contact(UNKNOWN),
                client.unblock_contact(UNKNOWN),
                client.update_contact(UNKNOWN, "x@example.com", "X"),
            ):
                with pytest.raises(ContactGoneError) as gone:
                    await write
                assert isinstance(gone.value, NotFoundError)
                assert not gone.value.retryable
                assert gone.value.status == 400
            # A 400 that is not "not found" stays a validation error.
            contact = next(iter(sandbox.truth("contacts")))
            with pytest.raises(ValidationError) as invalid:
                await client.update_contact(contact["id"], "not-an-email", "X")
            assert not isinstance(invalid.value, NotFoundError)

    asyncio.run(run())


def test_contact_ids_come_in_both_shapes_and_read_back_in_order() -> None:
    sandbox = make_sandbox(contacts=60, seed=2)
    truth = [c["id"] for c in sandbox.truth("contacts")]
    shapes = {len(i.split("-")) for i in truth}
    assert shapes == {3, 4}  # CTT-####-#### and CTT-####-####-####

    async def run() -> list[str]:
        async with asgi_marketplace(sandbox) as client:
            ids: list[str] = []
            for mode in ("concurrent", "sequential", "streaming"):
                rows = [r async for chunk in client.read("contacts", mode=mode) for r in chunk]  # type: ignore[arg-type]
                assert [r["id"] for r in rows] == sorted(truth), mode
                ids = [r["id"] for r in rows]
            assert (await client.block_contact(ids[0]))["status"] == "Blocked"
            return ids

    assert asyncio.run(run()) == sorted(truth)


def test_batches_are_accepted_as_json_and_as_multipart() -> None:
    sandbox = make_sandbox(contacts=30, seed=2)
    contacts = [{"id": c["id"]} for c in list(sandbox.truth("contacts"))[:3]]
    body = {
        "category": {"id": "NTC-0000-0001"},
        "subject": "Hello",
        "body": "<p>Hi</p>",
        "contacts": contacts,
    }
    as_json = raw(sandbox, "POST", "/batches", json=body)
    assert as_json.status_code == 201, as_json.text
    assert as_json.json()["attachments"] == []
    files = [
        ("batch", (None, orjson.dumps(body), "application/json")),
        ("attachment", ("terms.pdf", b"%PDF-1.7 terms", "application/pdf")),
    ]
    as_form = raw(sandbox, "POST", "/batches", files=files)
    assert as_form.status_code == 201, as_form.text
    (attachment,) = as_form.json()["attachments"]
    assert (attachment["filename"], attachment["contentType"], attachment["size"]) == (
        "terms.pdf",
        "application/pdf",
        len(b"%PDF-1.7 terms"),
    )
    no_batch = raw(sandbox, "POST", "/batches", files=[("attachment", ("a.txt", b"a"))])
    assert no_batch.status_code == 400 and "'batch' part" in no_batch.json()["detail"]


def test_the_client_sends_json_and_multipart_when_there_are_attachments() -> None:
    sandbox = make_sandbox(contacts=30, seed=2)
    contacts = [{"id": c["id"]} for c in list(sandbox.truth("contacts"))[:2]]
    seen: list[str] = []

    async def recorder(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            seen.append(dict(scope["headers"])[b"content-type"].decode())
        await sandbox.app(scope, receive, send)

    client = MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(SANDBOX_TOKEN)),
        transport=httpx.ASGITransport(app=recorder),
    )

    async def run() -> tuple[dict, dict]:
        async with client:
            plain = await client.create_batch("NTC-0000-0001", "Plain", "<p>x</p>", contacts)
            attached = await client.create_batch(
                "NTC-0000-0001",
                "With a file",
                "<p>x</p>",
                contacts,
                attachments=[BatchAttachment("notes.txt", b"hello", "text/plain")],
            )
            return plain, attached

    plain, attached = asyncio.run(run())
    assert seen[0] == "application/json"
    assert seen[1].startswith("multipart/form-data; boundary=")
    assert plain["attachments"] == []
    assert [a["filename"] for a in attached["attachments"]] == ["notes.txt"]
    messages = [m for m in sandbox.truth("messages") if m["batch"]["id"] == attached["id"]]
    assert sorted(m["contact"]["id"] for m in messages) == sorted(c["id"] for c in contacts)
