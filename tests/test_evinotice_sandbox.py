"""The EviNotice sandbox over HTTP: every endpoint's success and error paths, auth, time."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from sandbox.clock import SandboxClock
from sandbox.evinotice.routes import (
    BASE_PATH,
    DEFAULT_SITE_ID,
    EviNoticeStore,
    encode_cursor,
    evinotice_routes,
    parse_recipients,
)

pytestmark = pytest.mark.anyio

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
USER, PASSWORD = "sandbox-user", "s3cret-pa55"
NEW_BATCH = {"Description": "Renewal notice", "Subject": "Your renewal", "IssuerName": "Legal"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> SandboxClock:
    return SandboxClock(start=START, speed=0.0)  # frozen: only advance() moves it


@pytest.fixture
def store(clock: SandboxClock) -> EviNoticeStore:
    return EviNoticeStore(clock, seed=7, batches=40)


@pytest.fixture
async def api(store: EviNoticeStore) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=evinotice_routes(store, username=USER, password=PASSWORD))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://evinotice.test",
        auth=(USER, PASSWORD),
    ) as client:
        yield client


async def create(api: httpx.AsyncClient, **extra: Any) -> str:
    response = await api.post(BASE_PATH, json={**NEW_BATCH, **extra})
    assert response.status_code == 200, response.text
    return response.json()["BatchId"]


def recipients_text(count: int, start: int = 0) -> str:
    lines = ["Address|DisplayName"] + [
        f"user{i}@example.com|User {i}" for i in range(start, start + count)
    ]
    return "\n".join(lines)


async def ready_batch(api: httpx.AsyncClient, recipients: int = 10) -> str:
    batch_id = await create(api)
    assert (await api.put(f"{BASE_PATH}/{batch_id}/Body", json="<p>Hello</p>")).status_code == 200
    response = await api.post(
        f"{BASE_PATH}/{batch_id}/Recipients", json=recipients_text(recipients)
    )
    assert response.status_code == 200, response.text
    return batch_id


async def get(api: httpx.AsyncClient, batch_id: str, **params: str) -> dict[str, Any]:
    response = await api.get(f"{BASE_PATH}/{batch_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "traceId", "errors"} <= body.keys()
    if field is not None:
        assert field in body["errors"], body
    return body


# --- seeded data -----------------------------------------------------------------------------


def test_seeded_batches_cover_every_state_and_are_deterministic(clock: SandboxClock) -> None:
    first = EviNoticeStore(clock, seed=3, batches=30).snapshot()
    again = EviNoticeStore(clock, seed=3, batches=30).snapshot()
    other = EviNoticeStore(clock, seed=4, batches=30).snapshot()
    assert first == again
    assert [b["Id"] for b in first] != [b["Id"] for b in other]
    assert len(first) == 30
    states = Counter(b["State"] for b in first)
    assert {"Draft", "Submitted", "Scheduled", "Processing", "Processed"} <= states.keys()
    for batch in first:
        assert batch["TotalCount"] >= 1 and batch["Submitter"] and batch["Description"]
        assert batch["TotalSent"] + batch["TotalFailed"] <= batch["TotalCount"]
        if batch["State"] == "Processed":
            assert batch["TotalSent"] + batch["TotalFailed"] == batch["TotalCount"]
            assert batch["StartedOn"] <= batch["ProcessedOn"] <= "2026-03-02T12:00:00.000Z"
            assert batch["Outcome"] in ("Completed", "CompletedWithErrors", "Failed")
        elif batch["State"] == "Scheduled":
            assert batch["ScheduledFor"] > "2026-03-02T12:00:00.000Z"
    assert any(b["SiteId"] != DEFAULT_SITE_ID for b in first)  # OwnerSiteId filtering matters
    assert sum(b["TotalFailed"] for b in first) > 0  # a small share fails
    assert sum(b["TotalFailed"] for b in first) < sum(b["TotalSent"] for b in first) / 10


def test_seeded_batches_keep_moving_with_the_clock(clock: SandboxClock) -> None:
    store = EviNoticeStore(clock, seed=3, batches=30)
    before = {b["Id"]: b for b in store.snapshot()}
    clock.advance(30 * 86_400)
    after = store.snapshot()
    for batch in after:
        old = before[batch["Id"]]
        if old["State"] == "Draft":
            assert batch["State"] == "Draft"
        else:
            assert batch["State"] == "Processed", batch
            assert batch["TotalSent"] >= old["TotalSent"]


# --- auth ------------------------------------------------------------------------------------

SOME_ID = str(uuid.UUID(int=1))
EVERY_ROUTE = [
    ("POST", BASE_PATH),
    ("QUERY", BASE_PATH),
    ("GET", f"{BASE_PATH}/{SOME_ID}"),
    ("PATCH", f"{BASE_PATH}/{SOME_ID}"),
    ("PUT", f"{BASE_PATH}/{SOME_ID}/Body"),
    ("PUT", f"{BASE_PATH}/{SOME_ID}/Attachments"),
    ("DELETE", f"{BASE_PATH}/{SOME_ID}/Attachments"),
    ("POST", f"{BASE_PATH}/{SOME_ID}/Recipients"),
    ("DELETE", f"{BASE_PATH}/{SOME_ID}/Recipients"),
]


@pytest.mark.parametrize(("method", "path"), EVERY_ROUTE)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode(),
        "Basic " + base64.b64encode(f"other:{PASSWORD}".encode()).decode(),
        "Basic " + base64.b64encode(f"{USER}{PASSWORD}".encode()).decode(),
        "Basic not-base64!!",
        f"Bearer {PASSWORD}",
    ],
)
async def test_every_route_needs_basic_credentials(
    api: httpx.AsyncClient, store: EviNoticeStore, method: str, path: str, authorization: str | None
) -> None:
    before = store.snapshot()
    headers = {"Authorization": authorization} if authorization else {}
    request = api.build_request(method, path, json=NEW_BATCH, headers=headers)
    response = await api.send(request, auth=None)  # only the header given, if any
    assert response.request.headers.get("Authorization") == authorization
    body = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert PASSWORD not in response.text
    assert body["title"] == "Unauthorized"
    assert store.snapshot() == before  # nothing happened


# --- create / body / attachments ------------------------------------------------------------


async def test_create_gives_a_draft_batch(api: httpx.AsyncClient, store: EviNoticeStore) -> None:
    batch_id = await create(api, CostCentre="Legal", Language="es")
    assert uuid.UUID(batch_id).version == 4
    batch = await get(api, batch_id, IncludeRecipientsCount="true")
    assert batch["State"] == "Draft"
    assert batch["Description"] == "Renewal notice"
    assert batch["CreationDate"] == batch["LastUpdate"] == "2026-03-02T12:00:00.000Z"
    assert (batch["SentCount"], batch["FailedCount"], batch["ProgressPercentage"]) == (0, 0, 0.0)
    assert batch["Outcome"] is None and batch["TotalCount"] == 0
    assert batch["EviNotice"]["Subject"] == "Your renewal"
    assert batch["EviNotice"]["IssuerName"] == "Legal"
    assert batch["EviNotice"]["CostCentre"] == "Legal"
    assert batch["EviNotice"]["Language"] == "es"
    mine = [b for b in store.snapshot() if b["Id"] == batch_id]
    assert mine[0]["Submitter"] == USER and mine[0]["SiteId"] == DEFAULT_SITE_ID


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"Subject": "s", "IssuerName": "i"}, "Description"),
        ({**NEW_BATCH, "Subject": " "}, "Subject"),
        ({**NEW_BATCH, "IssuerName": None}, "IssuerName"),
        ({**NEW_BATCH, "Colour": "blue"}, "Colour"),
        ({**NEW_BATCH, "LtaStorage": "yes"}, "LtaStorage"),
        ({**NEW_BATCH, "OnlineRetentionPeriod": -1}, "OnlineRetentionPeriod"),
        ({**NEW_BATCH, "CommitmentOptions": "Maybe"}, "CommitmentOptions"),
        ({**NEW_BATCH, "PushNotificationUrl": "ftp://x"}, "PushNotificationUrl"),
        ({**NEW_BATCH, "State": "Submitted"}, "State"),
        ([NEW_BATCH], "body"),
    ],
)
async def test_create_rejects_invalid_input(
    api: httpx.AsyncClient, store: EviNoticeStore, payload: Any, field: str
) -> None:
    count = len(store.snapshot())
    assert_problem(await api.post(BASE_PATH, json=payload), 400, field)
    assert len(store.snapshot()) == count


async def test_create_rejects_a_body_that_is_not_json(api: httpx.AsyncClient) -> None:
    assert_problem(await api.post(BASE_PATH, content=b"{not json"), 400, "body")


async def test_body_as_json_string_or_text(api: httpx.AsyncClient) -> None:
    batch_id = await create(api)
    assert (await api.put(f"{BASE_PATH}/{batch_id}/Body", json="<b>json</b>")).status_code == 200
    assert (await get(api, batch_id))["EviNotice"]["Body"] == "<b>json</b>"
    response = await api.put(
        f"{BASE_PATH}/{batch_id}/Body",
        content="<i>ünïcode</i>",
        headers={"Content-Type": "text/html"},
    )
    assert response.status_code == 200
    assert (await get(api, batch_id))["EviNotice"]["Body"] == "<i>ünïcode</i>"
    assert_problem(await api.put(f"{BASE_PATH}/{batch_id}/Body", json=[1]), 400, "Body")
    assert_problem(await api.put(f"{BASE_PATH}/{SOME_ID}/Body", json="x"), 404)


async def test_attachments_put_list_and_clear(api: httpx.AsyncClient) -> None:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}/Attachments"
    files = [
        {
            "FileName": "terms.pdf",
            "Content": base64.b64encode(b"%PDF-1.7 ...").decode(),
            "ContentType": "application/pdf",
        },
        {"FileName": "logo.png", "Content": base64.b64encode(bytes(range(256))).decode()},
    ]
    assert (await api.put(path, json=files)).status_code == 200
    without = await get(api, batch_id)
    assert "Attachments" not in without["EviNotice"]
    listed = (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"]
    assert [(a["FileName"], a["Size"]) for a in listed] == [("terms.pdf", 12), ("logo.png", 256)]
    assert base64.b64decode(listed[1]["Content"]) == bytes(range(256))
    assert listed[0]["ContentType"] == "application/pdf"
    assert (await api.put(path, json=[])).status_code == 200
    assert (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"] == []
    assert (await api.put(path, json=files[:1])).status_code == 200
    assert (await api.delete(path)).status_code == 200
    assert (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"] == []


@pytest.mark.parametrize(
    ("files", "field"),
    [
        ([{"FileName": "a.txt", "Content": "not base64!"}], "[0].Content"),
        ([{"FileName": "a.txt", "Content": "QUJD="}], "[0].Content"),  # bad padding
        ([{"FileName": "a.txt"}], "[0].Content"),
        ([{"Content": "QUJD"}], "[0].FileName"),
        (
            [{"FileName": "a", "Content": "QUJD"}, {"FileName": "a", "Content": "QUJD"}],
            "[1].FileName",
        ),
        ({"FileName": "a", "Content": "QUJD"}, "Attachments"),
    ],
)
async def test_attachments_reject_invalid_files(
    api: httpx.AsyncClient, files: Any, field: str
) -> None:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}/Attachments"
    assert (
        await api.put(path, json=[{"FileName": "keep.txt", "Content": "QUJD"}])
    ).status_code == 200
    assert_problem(await api.put(path, json=files), 400, field)
    kept = (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"]
    assert [a["FileName"] for a in kept] == ["keep.txt"]  # a refused PUT changes nothing


async def test_attachments_of_unknown_batch(api: httpx.AsyncClient) -> None:
    assert_problem(await api.put(f"{BASE_PATH}/{SOME_ID}/Attachments", json=[]), 404)
    assert_problem(await api.delete(f"{BASE_PATH}/{SOME_ID}/Attachments"), 404)


# --- recipients ------------------------------------------------------------------------------


async def test_recipients_parse_quotes_variables_and_phones(
    api: httpx.AsyncClient, store: EviNoticeStore
) -> None:
    batch_id = await create(api)
    text = (
        "Address|DisplayName|LegalName|LookupKey|Plan|Note\r\n"
        'ana@example.com|"García | Ana"|Ana García S.L.|K-1|Gold|"said ""hi"""\r\n'
        '+34 600 123 456|Bob||K-2|Silver|"two\nlines"\n'
        "\n"
    )
    response = await api.post(
        f"{BASE_PATH}/{batch_id}/Recipients", content=text, headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    rows = store.recipients(batch_id)
    assert rows == [
        {
            "Address": "ana@example.com",
            "DisplayName": "García | Ana",
            "LegalName": "Ana García S.L.",
            "LookupKey": "K-1",
            "Variables": {"Plan": "Gold", "Note": 'said "hi"'},
        },
        {
            "Address": "+34 600 123 456",
            "DisplayName": "Bob",
            "LegalName": None,
            "LookupKey": "K-2",
            "Variables": {"Plan": "Silver", "Note": "two\nlines"},
        },
    ]
    # A JSON string works the same and appends.
    assert (
        await api.post(f"{BASE_PATH}/{batch_id}/Recipients", json=recipients_text(3))
    ).status_code == 200
    assert (await get(api, batch_id, IncludeRecipientsCount="true"))["TotalCount"] == 5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("Address|Name\nx@example.com|X", "missing required column DisplayName"),
        ("DisplayName\nX", "missing required column Address"),
        ("Address|DisplayName|Address\na@b.co|A|c@d.co", "duplicate column"),
        ("Address|DisplayName\na@example.com|A\nnot-an-address|B", "Line 3"),
        ("Address|DisplayName\na@example.com|A\n600123456|B", "Line 3"),  # no country code
        ("Address|DisplayName\na@example.com|A|extra", "Line 2: expected 2 fields"),
        ('Address|DisplayName\na@example.com|"A\nb@example.com|B', "Line 2"),  # unclosed quote
        ("Address|DisplayName\na@example.com| ", "Line 2: DisplayName is empty"),
        ("Address|DisplayName\n", "No recipient lines"),
        ("", "empty"),
    ],
)
async def test_recipients_reject_bad_rows_naming_the_line(
    api: httpx.AsyncClient, store: EviNoticeStore, text: str, needle: str
) -> None:
    batch_id = await create(api)
    body = assert_problem(
        await api.post(f"{BASE_PATH}/{batch_id}/Recipients", json=text), 400, "Recipients"
    )
    assert needle in body["detail"], body["detail"]
    assert store.recipients(batch_id) == []  # all or nothing


async def test_recipients_cap_is_500_per_request(
    api: httpx.AsyncClient, store: EviNoticeStore
) -> None:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}/Recipients"
    body = assert_problem(await api.post(path, json=recipients_text(501)), 400, "Recipients")
    assert "500" in body["detail"] and "line 502" in body["detail"]
    assert store.recipients(batch_id) == []
    assert (await api.post(path, json=recipients_text(500))).status_code == 200
    assert (await api.post(path, json=recipients_text(500, start=500))).status_code == 200
    assert len(store.recipients(batch_id)) == 1000


async def test_delete_recipients_removes_all(api: httpx.AsyncClient, store: EviNoticeStore) -> None:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}/Recipients"
    await api.post(path, json=recipients_text(4))
    assert (await api.delete(path)).status_code == 200
    assert store.recipients(batch_id) == []
    assert (await get(api, batch_id, IncludeRecipientsCount="true"))["TotalCount"] == 0
    assert_problem(await api.delete(f"{BASE_PATH}/{SOME_ID}/Recipients"), 404)
    assert_problem(
        await api.post(f"{BASE_PATH}/{SOME_ID}/Recipients", json=recipients_text(1)), 404
    )


def test_parse_recipients_handles_a_quoted_header() -> None:
    rows = parse_recipients('Address|DisplayName|"a|b"\nx@example.com|X|1\n')
    assert rows[0]["Variables"] == {"a|b": "1"}


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
    assert batch["EviNotice"]["ScheduledDate"] == "2026-03-05T08:00:00.000Z"  # read with its offset
    # Content cannot change while scheduled...
    assert_problem(await api.put(f"{path}/Body", json="changed"), 409)
    assert_problem(await api.post(f"{path}/Recipients", json=recipients_text(1)), 409)
    assert_problem(await api.patch(path, json={"Language": "fr"}), 409)
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


async def test_no_way_back_to_draft_once_processing(
    api: httpx.AsyncClient, clock: SandboxClock
) -> None:
    batch_id = await ready_batch(api, recipients=400)
    path = f"{BASE_PATH}/{batch_id}"
    assert (await api.patch(path, json={"State": "Submitted"})).status_code == 200
    clock.advance(12)
    assert (await get(api, batch_id))["State"] == "Processing"
    body = assert_problem(await api.patch(path, json={"State": "Draft"}), 409)
    assert "Draft" in body["detail"]
    assert_problem(
        await api.patch(path, json={"State": "Submitted", "ScheduledDate": "2027-01-01T00:00:00Z"}),
        409,
    )
    # Repeating the submit that got it here is harmless.
    assert (await api.patch(path, json={"State": "Submitted"})).status_code == 200
    assert (await get(api, batch_id))["State"] == "Processing"


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
    assert summary["StartedOn"] == "2026-03-02T12:00:10.000Z"  # queue delay
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


async def test_query_cursor_is_bound_to_its_order(api: httpx.AsyncClient) -> None:
    cursor = encode_cursor((START, SOME_ID), order=0)
    response = await query(api, body={"OwnerSiteId": DEFAULT_SITE_ID, "Cursor": cursor, "Order": 1})
    assert_problem(response, 400, "Cursor")


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
    assert nobody == {"Cursor": None, "HasMoreResults": False, "Results": []}


@pytest.mark.parametrize("order", [0, 1])
async def test_cursor_paging_sees_every_batch_once_despite_inserts(
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
    assert len(seen) == len(set(seen))  # nothing twice
    assert existing <= set(seen)  # nothing that existed before was skipped
    assert set(seen) - existing <= set(created)
    if order == 0:  # ascending reaches the new batches at the end
        assert set(seen) - existing


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


def test_timestamps_are_utc_with_milliseconds(store: EviNoticeStore) -> None:
    for batch in store.snapshot():
        for name in ("CreationDate", "LastUpdate", "StartedOn", "ProcessedOn", "ScheduledFor"):
            value = batch[name]
            if value is not None:
                parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
                assert len(value) == 24 and parsed.year == 2026
    assert max(b["CreationDate"] for b in store.snapshot()) <= (START + timedelta(0)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
