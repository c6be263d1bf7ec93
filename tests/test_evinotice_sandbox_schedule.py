"""The EviNotice sandbox over HTTP: PATCH (options, schedule, revert), progress over time, GET
flags, the QUERY list and a real server."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from datetime import datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
import uvicorn
from evinotice_api import (
    NEW_BATCH,
    PASSWORD,
    SOME_ID,
    START,
    USER,
    assert_problem,
    create,
    get,
    ready_batch,
    recipients_text,
)
from starlette.applications import Starlette

from sandbox.clock import SandboxClock
from sandbox.evinotice.payloads import BASE_PATH, DEFAULT_SITE_ID, encode_cursor
from sandbox.evinotice.routes import evinotice_routes
from sandbox.evinotice.store import EviNoticeStore

pytestmark = pytest.mark.anyio


# --- PATCH -----------------------------------------------------------------------------------


async def test_patch_options_then_read_them_back(api: httpx.AsyncClient) -> None:
    batch_id = await create(api)
    options = {
        "Description": "Bulk invitation mailing",
        "AffidavitKinds": ["Delivery"],
        "OnlineRetentionPeriod": 1,
        "LtaStorage": False,
        "PushNotificationUrl": "https://client.callback.url/notifications",
        "CommitmentOptions": "AcceptOrReject",
        "RejectReasons": ["Content not relevant"],
        "AllowRefusal": True,
    }
    response = await api.patch(f"{BASE_PATH}/{batch_id}", json=options)
    assert response.status_code == 200 and response.content == b""
    batch = await get(api, batch_id)
    assert batch["Description"] == "Bulk invitation mailing"
    for name, value in options.items():
        if name != "Description":
            assert batch["EviNotice"][name] == value
    # null clears an optional setting
    assert (
        await api.patch(f"{BASE_PATH}/{batch_id}", json={"AllowRefusal": None})
    ).status_code == 200
    assert "AllowRefusal" not in (await get(api, batch_id))["EviNotice"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"ScheduledDate": "2026-03-03T10:00:00Z"}, "ScheduledDate"),
        ({"State": "Draft", "ScheduledDate": "2026-03-03T10:00:00Z"}, "ScheduledDate"),
        ({"State": "Processing"}, "State"),
        ({"State": "Submitted", "ScheduledDate": "tomorrow"}, "ScheduledDate"),
        ({"State": "Submitted", "ScheduledDate": 1767225600}, "ScheduledDate"),
        ({"Language": 5}, "Language"),
        ({"Colour": "blue"}, "Colour"),
        ({"Description": ""}, "Description"),
    ],
)
async def test_patch_rejects_invalid_input(
    api: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    batch_id = await ready_batch(api)
    before = await get(api, batch_id)
    assert_problem(await api.patch(f"{BASE_PATH}/{batch_id}", json=payload), 400, field)
    assert await get(api, batch_id) == before


async def test_patch_unknown_batch_and_bad_bodies(api: httpx.AsyncClient) -> None:
    assert_problem(await api.patch(f"{BASE_PATH}/{SOME_ID}", json={"State": "Draft"}), 404)
    batch_id = await create(api)
    assert_problem(await api.patch(f"{BASE_PATH}/{batch_id}", json=["State"]), 400, "body")
    assert_problem(await api.patch(f"{BASE_PATH}/{batch_id}", content=b""), 400, "body")


async def test_submit_needs_body_and_recipients(api: httpx.AsyncClient) -> None:
    batch_id = await create(api)
    body = assert_problem(
        await api.patch(f"{BASE_PATH}/{batch_id}", json={"State": "Submitted"}), 400
    )
    assert {"Body", "Recipients"} <= body["errors"].keys()
    assert (await get(api, batch_id))["State"] == "Draft"


async def test_schedule_revert_and_reschedule(api: httpx.AsyncClient, clock: SandboxClock) -> None:
    batch_id = await ready_batch(api)
    path = f"{BASE_PATH}/{batch_id}"
    when = "2026-03-05T10:00:00+02:00"
    assert (
        await api.patch(path, json={"State": "Submitted", "ScheduledDate": when})
    ).status_code == 200
    batch = await get(api, batch_id)
    assert batch["State"] == "Scheduled"
    assert (
        batch["EviNotice"]["ScheduledDate"] == "2026-03-05T08:00:00.0000000+00:00"
    )  # read with its offset
    # Content cannot change while scheduled...
    assert_problem(await api.put(f"{path}/Body", json="changed"), 409)
    assert_problem(await api.post(f"{path}/Recipients", json=recipients_text(1)), 409)
    assert_problem(await api.patch(path, json={"Language": "fr"}), 400, "Language")
    # ...but the same PATCH again is a no-op, and a revert (with options) works.
    assert (
        await api.patch(path, json={"State": "Submitted", "ScheduledDate": when})
    ).status_code == 200
    assert (await api.patch(path, json={"State": "Draft", "Language": "fr"})).status_code == 200
    batch = await get(api, batch_id)
    assert batch["State"] == "Draft" and batch["EviNotice"]["ScheduledDate"] is None
    assert batch["EviNotice"]["Language"] == "fr"
    assert (await api.patch(path, json={"State": "Draft"})).status_code == 200  # already Draft
    # Submitted without a date waits in the queue, then processes.
    assert (await api.patch(path, json={"State": "Submitted"})).status_code == 200
    assert (await get(api, batch_id))["State"] == "Submitted"
    clock.advance(11)
    assert (await get(api, batch_id))["State"] in ("Processing", "Processed")


async def test_a_revert_after_start_is_a_400_and_changes_nothing(
    api: httpx.AsyncClient, clock: SandboxClock
) -> None:
    batch_id = await ready_batch(api, recipients=400)
    path = f"{BASE_PATH}/{batch_id}"
    assert (await api.patch(path, json={"State": "Submitted"})).status_code == 200
    clock.advance(12)
    assert (await get(api, batch_id))["State"] == "Processing"
    body = assert_problem(await api.patch(path, json={"State": "Draft"}), 400, "State")
    assert "Draft" in body["detail"]
    assert_problem(
        await api.patch(path, json={"State": "Submitted", "ScheduledDate": "2027-01-01T00:00:00Z"}),
        400,
        "ScheduledDate",
    )
    # Repeating the submit that got it here is harmless.
    assert (await api.patch(path, json={"State": "Submitted"})).status_code == 200
    after = await get(api, batch_id)
    assert after["State"] == "Processing" and after["SentCount"] + after["FailedCount"] > 0


async def test_schedule_in_the_past_starts_right_away(
    api: httpx.AsyncClient, clock: SandboxClock
) -> None:
    batch_id = await ready_batch(api)
    response = await api.patch(
        f"{BASE_PATH}/{batch_id}",
        json={"State": "Submitted", "ScheduledDate": "2026-03-01T00:00:00Z"},
    )
    assert response.status_code == 200
    assert (await get(api, batch_id))["State"] == "Submitted"
    clock.advance(60)
    assert (await get(api, batch_id))["State"] == "Processed"


# --- progress over time ----------------------------------------------------------------------


async def test_counts_move_with_time_until_processed(
    api: httpx.AsyncClient, store: EviNoticeStore, clock: SandboxClock
) -> None:
    batch_id = await create(api)
    await api.put(f"{BASE_PATH}/{batch_id}/Body", json="<p>Hi {{DisplayName}}</p>")
    lines = ["Address|DisplayName"] + [f"user{i}@example.com|U{i}" for i in range(480)]
    lines += ["failing.one@example.com|F1", "bounce@example.com|F2"]
    await api.post(f"{BASE_PATH}/{batch_id}/Recipients", json="\n".join(lines))
    await api.patch(f"{BASE_PATH}/{batch_id}", json={"State": "Submitted"})
    seen = []
    for _ in range(400):
        batch = await get(api, batch_id, IncludeRecipientsCount="true")
        seen.append(batch)
        if batch["State"] == "Processed":
            break
        clock.advance(1)
    states = [b["State"] for b in seen]
    assert states[0] == "Submitted" and states[-1] == "Processed"
    assert "Processing" in states
    # counters only grow
    for earlier, later in pairwise(seen):
        assert later["SentCount"] >= earlier["SentCount"]
        assert later["FailedCount"] >= earlier["FailedCount"]
        assert later["ProgressPercentage"] >= earlier["ProgressPercentage"]
    processing = [b for b in seen if b["State"] == "Processing"]
    assert all(b["ProgressPercentage"] < 100 for b in processing)
    assert any(0 < b["SentCount"] < 482 for b in processing)
    final = seen[-1]
    assert final["TotalCount"] == 482
    assert final["SentCount"] + final["FailedCount"] == 482
    assert final["FailedCount"] >= 2  # the two addresses that fail on purpose
    assert final["FailedCount"] < 482 * 0.1
    assert final["ProgressPercentage"] == 100.0
    assert final["Outcome"] == "CompletedWithErrors"
    summary = next(b for b in store.snapshot() if b["Id"] == batch_id)
    assert summary["StartedOn"] == "2026-03-02T12:00:10.0000000+00:00"  # queue delay
    assert summary["ProcessedOn"] is not None and summary["ProcessedOn"] <= final["LastUpdate"]
    # Same seed, same clock: a second store answers the same.
    twin_clock = SandboxClock(start=START, speed=0.0)
    twin = EviNoticeStore(twin_clock, seed=7, batches=40)
    twin_id = twin.create_batch(NEW_BATCH, submitter=USER)
    assert twin_id == batch_id


async def test_sped_up_clock_processes_without_manual_advance() -> None:
    clock = SandboxClock(start=START, speed=5_000.0)
    fast = EviNoticeStore(clock, seed=1, batches=0)
    batch_id = fast.create_batch(NEW_BATCH, submitter=USER)
    fast.set_body(batch_id, "hi")
    fast.add_recipients(batch_id, recipients_text(20))
    fast.configure(batch_id, {"State": "Submitted"})
    await asyncio.sleep(0.05)  # 250 sandbox seconds
    assert fast.get_batch(batch_id)["State"] == "Processed"


# --- GET flags -------------------------------------------------------------------------------


async def test_get_flags(api: httpx.AsyncClient) -> None:
    batch_id = await ready_batch(api, recipients=3)
    assert (await get(api, batch_id))["TotalCount"] is None
    assert (await get(api, batch_id, IncludeRecipientsCount="True"))["TotalCount"] == 3
    assert_problem(
        await api.get(f"{BASE_PATH}/{batch_id}", params={"IncludeRecipientsCount": "yes"}),
        400,
        "IncludeRecipientsCount",
    )
    assert_problem(await api.get(f"{BASE_PATH}/{SOME_ID}"), 404)


async def test_get_one_batch_carries_its_submitter_and_site(api: httpx.AsyncClient) -> None:
    batch = await get(api, await create(api))
    assert (batch["Submitter"], batch["SiteId"], batch["SiteName"]) == (
        USER,
        DEFAULT_SITE_ID,
        "Sandbox Site",
    )


async def test_vendor_spellings_of_two_fields(clock: SandboxClock) -> None:
    store = EviNoticeStore(clock, seed=7, batches=5, vendor_spellings=True)
    page = store.query(owner_site_id=DEFAULT_SITE_ID, limit=1)
    assert "HashMoreResults" in page and "HasMoreResults" not in page
    one = store.get_batch(page["Results"][0]["Id"])
    assert "ProgessPercentage" in one and "ProgressPercentage" not in one


@pytest.mark.parametrize("state", ["Sent", "Completed"])
async def test_every_documented_state_filters(api: httpx.AsyncClient, state: str) -> None:
    response = await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "State": state})
    assert response.status_code == 200 and response.json()["Results"] == []


# --- QUERY -----------------------------------------------------------------------------------


async def query(api: httpx.AsyncClient, *, params: Any = None, body: Any = None) -> httpx.Response:
    return await api.request("QUERY", BASE_PATH, params=params, json=body)


async def test_query_accepts_query_string_or_json_body(
    api: httpx.AsyncClient, store: EviNoticeStore
) -> None:
    mine = [b for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID]
    by_string = await query(api, params={"OwnerSiteId": DEFAULT_SITE_ID, "Limit": "5"})
    by_body = await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 5})
    mixed = await query(
        api, params={"ownersiteid": DEFAULT_SITE_ID, "Limit": "2"}, body={"limit": 5}
    )
    assert by_string.status_code == by_body.status_code == mixed.status_code == 200
    assert by_string.json() == by_body.json() == mixed.json()
    page = by_body.json()
    assert page["HasMoreResults"] is True and isinstance(page["Cursor"], str)
    assert [r["Id"] for r in page["Results"]] == [b["Id"] for b in mine[:5]]
    first = page["Results"][0]
    assert set(first) == {
        "Id", "State", "Description", "TotalCount", "ScheduledFor", "StartedOn", "ProcessedOn",
        "CreationDate", "TotalSent", "TotalFailed", "SiteId", "SiteName", "Submitter",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "OwnerSiteId"),
        ({"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 0}, "Limit"),
        ({"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 101}, "Limit"),
        ({"OwnerSiteId": DEFAULT_SITE_ID, "Limit": "ten"}, "Limit"),
        ({"OwnerSiteId": DEFAULT_SITE_ID, "Order": 2}, "Order"),
        ({"OwnerSiteId": DEFAULT_SITE_ID, "State": "Done"}, "State"),
        ({"OwnerSiteId": DEFAULT_SITE_ID, "Cursor": "garbage"}, "Cursor"),
        ({"OwnerSiteId": DEFAULT_SITE_ID, "Cursor": 5}, "Cursor"),
        ([DEFAULT_SITE_ID], "body"),
    ],
)
async def test_query_rejects_invalid_parameters(
    api: httpx.AsyncClient, body: Any, field: str
) -> None:
    assert_problem(await query(api, body=body), 400, field)


async def test_the_cursor_is_a_position(api: httpx.AsyncClient) -> None:
    first = (await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 3})).json()
    assert base64.b64decode(first["Cursor"]) == b'{"position":3}'
    skip = {"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 2, "Cursor": encode_cursor(1)}
    second = (await query(api, body=skip)).json()
    assert [r["Id"] for r in second["Results"]] == [r["Id"] for r in first["Results"][1:3]]
    for bad_cursor in ("not a cursor", encode_cursor(0)[:-2], "eyJwb3NpdGlvbiI6LTF9"):
        body = {"OwnerSiteId": DEFAULT_SITE_ID, "Cursor": bad_cursor}
        assert_problem(await query(api, body=body), 400, "Cursor")


async def test_query_filters_by_site_and_state_and_sorts_both_ways(
    api: httpx.AsyncClient, store: EviNoticeStore
) -> None:
    snapshot = store.snapshot()
    for site in {b["SiteId"] for b in snapshot}:
        page = (await query(api, body={"OwnerSiteId": site, "Limit": 100})).json()
        assert [r["Id"] for r in page["Results"]] == [
            b["Id"] for b in snapshot if b["SiteId"] == site
        ]
        assert page["HasMoreResults"] is False
        desc = (await query(api, body={"OwnerSiteId": site, "Limit": 100, "Order": 1})).json()
        assert desc["Results"] == page["Results"][::-1]
    processed = (
        await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "State": "Processed", "Limit": 100})
    ).json()["Results"]
    expected = [
        b["Id"] for b in snapshot if b["SiteId"] == DEFAULT_SITE_ID and b["State"] == "Processed"
    ]
    assert [r["Id"] for r in processed] == expected and expected
    nobody = (await query(api, body={"OwnerSiteId": "SITE-NOBODY"})).json()
    assert nobody == {"Cursor": encode_cursor(0), "HasMoreResults": False, "Results": []}


@pytest.mark.parametrize("order", [0, 1])
async def test_batches_created_while_paging_shift_the_pages(
    api: httpx.AsyncClient, store: EviNoticeStore, clock: SandboxClock, order: int
) -> None:
    existing = {b["Id"] for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID}
    seen: list[str] = []
    created: list[str] = []
    cursor = None
    while True:
        body = {"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 7, "Order": order}
        if cursor:
            body["Cursor"] = cursor
        page = (await query(api, body=body)).json()
        seen += [r["Id"] for r in page["Results"]]
        # New batches arrive between pages, some at the very same instant as the last one.
        created.append(await create(api))
        created.append(await create(api))
        clock.advance(1)
        if not page["HasMoreResults"]:
            break
        cursor = page["Cursor"]
    assert existing <= set(seen)  # nothing that existed before was skipped
    assert set(seen) - existing <= set(created)
    if order == 0:  # oldest first: new batches land at the end, nothing repeats
        assert len(seen) == len(set(seen)) and set(seen) - existing
    else:  # newest first: each new batch pushes the rows down, so pages repeat rows
        assert len(seen) > len(set(seen))


async def test_empty_final_page_keeps_the_cursor(
    api: httpx.AsyncClient, store: EviNoticeStore
) -> None:
    count = sum(1 for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID)
    page = (await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 100})).json()
    assert len(page["Results"]) == count and not page["HasMoreResults"]
    # Asking again after the end returns nothing, with a cursor to poll from later.
    again = (
        await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "Cursor": page["Cursor"]})
    ).json()
    assert again == {"Cursor": page["Cursor"], "HasMoreResults": False, "Results": []}
    new_id = await create(api)
    later = (
        await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "Cursor": page["Cursor"]})
    ).json()
    assert [r["Id"] for r in later["Results"]] == [new_id]


# --- a real server ---------------------------------------------------------------------------


async def test_query_method_through_uvicorn(store: EviNoticeStore) -> None:
    app = Starlette(routes=evinotice_routes(store, username=USER, password=PASSWORD))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", auth=(USER, PASSWORD)
        ) as client:
            response = await client.request(
                "QUERY", BASE_PATH, json={"OwnerSiteId": DEFAULT_SITE_ID, "Limit": 3}
            )
            assert response.status_code == 200
            assert len(response.json()["Results"]) == 3
            unauthorised = await client.request("QUERY", BASE_PATH, auth=None)
            assert unauthorised.status_code == 401
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
        sock.close()


def test_timestamps_have_seven_fractional_digits_and_an_offset(store: EviNoticeStore) -> None:
    for batch in store.snapshot():
        for name in ("CreationDate", "LastUpdate", "StartedOn", "ProcessedOn", "ScheduledFor"):
            value = batch[name]
            if value is not None:
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00", value), value
                assert datetime.fromisoformat(value).tzinfo is not None
    newest = max(datetime.fromisoformat(b["CreationDate"]) for b in store.snapshot())
    assert newest <= START
