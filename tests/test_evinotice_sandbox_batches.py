"""The EviNotice sandbox over HTTP: seeded data, auth, and building a batch (create, body,
attachments, recipients)."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from evinotice_api import (
    NEW_BATCH,
    PASSWORD,
    SOME_ID,
    TEXT,
    USER,
    assert_problem,
    create,
    get,
    recipients_text,
)

from sandbox.clock import SandboxClock
from sandbox.evinotice.payloads import BASE_PATH, DEFAULT_SITE_ID, SandboxProblem, parse_recipients
from sandbox.evinotice.store import EviNoticeStore

pytestmark = pytest.mark.anyio


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
            assert batch["StartedOn"] <= batch["ProcessedOn"] <= "2026-03-02T12:00:00.0000000+00:00"
            assert batch["Outcome"] in ("Completed", "CompletedWithErrors", "Failed")
        elif batch["State"] == "Scheduled":
            assert batch["ScheduledFor"] > "2026-03-02T12:00:00.0000000+00:00"
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
    assert batch["CreationDate"] == batch["LastUpdate"] == "2026-03-02T12:00:00.0000000+00:00"
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
        ({**NEW_BATCH, "cost_centre": "Legal"}, "cost_centre"),  # wire names only
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


async def test_the_body_is_raw_text_with_placeholders(
    api: httpx.AsyncClient, store: EviNoticeStore
) -> None:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}/Body"
    body = "<p>Dear {{DisplayName}}, your plan {{ Plan }} renews; {{Unknown}} stays.</p>"
    assert (await api.put(path, content=body, headers=TEXT)).status_code == 200
    assert (await get(api, batch_id))["EviNotice"]["Body"] == body
    # Raw text whatever the content type: a JSON string keeps its quotes.
    assert (await api.put(path, json="<b>json</b>")).status_code == 200
    assert (await get(api, batch_id))["EviNotice"]["Body"] == '"<b>json</b>"'
    response = await api.put(path, content="<i>ünïcode</i>", headers={"Content-Type": "text/html"})
    assert response.status_code == 200
    assert (await get(api, batch_id))["EviNotice"]["Body"] == "<i>ünïcode</i>"
    assert_problem(await api.put(path, content=b"\xff\xfe", headers=TEXT), 400, "Body")
    assert_problem(await api.put(f"{BASE_PATH}/{SOME_ID}/Body", content="x"), 404)
    assert (await api.put(path, content=body, headers=TEXT)).status_code == 200
    text = "Address|DisplayName|Plan\nann@example.com|Ann|Gold\n"
    assert (await api.post(f"{BASE_PATH}/{batch_id}/Recipients", content=text)).status_code == 200
    assert store.bodies(batch_id) == ["<p>Dear Ann, your plan Gold renews; {{Unknown}} stays.</p>"]


def attachment(name: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"FileName": name, "Data": base64.b64encode(data).decode(), **extra}


async def test_attachments_put_replaces_the_whole_set(api: httpx.AsyncClient) -> None:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}/Attachments"
    files = [
        attachment(
            "terms.pdf",
            b"%PDF-1.7 ...",
            DisplayName="Terms and conditions",
            Attributes=[{"Key": "kind", "Value": "contract"}, {"Key": "tags", "Values": ["a"]}],
        ),
        attachment("logo.png", bytes(range(256))),
    ]
    assert (await api.put(path, json={"Attachments": files})).status_code == 200
    without = await get(api, batch_id)
    assert "Attachments" not in without["EviNotice"]
    listed = (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"]
    assert [(a["DisplayName"], a["FileName"]) for a in listed] == [
        ("Terms and conditions", "terms.pdf"),
        ("logo.png", "logo.png"),
    ]
    assert base64.b64decode(listed[1]["Data"]) == bytes(range(256))
    assert listed[0]["Attributes"] == files[0]["Attributes"]
    # Each PUT replaces the set: the second one leaves only its own file.
    assert (await api.put(path, json={"Attachments": files[1:]})).status_code == 200
    listed = (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"]
    assert [a["FileName"] for a in listed] == ["logo.png"]
    assert (await api.put(path, json={"Attachments": []})).status_code == 200
    assert (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"] == []
    assert (await api.put(path, json={"Attachments": files[:1]})).status_code == 200
    assert (await api.delete(path)).status_code == 200
    assert (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"] == []


@pytest.mark.parametrize(
    ("files", "field"),
    [
        ([{"FileName": "a.txt", "Data": "not base64!"}], "Attachments[0].Data"),
        ([{"FileName": "a.txt", "Data": "QUJD="}], "Attachments[0].Data"),  # bad padding
        ([{"FileName": "a.txt"}], "Attachments[0].Data"),
        ([{"Data": "QUJD"}], "Attachments[0].FileName"),
        ([{"FileName": "a.txt", "Content": "QUJD"}], "Attachments[0].Content"),  # old shape
        (
            [{"FileName": "a", "Data": "QUJD"}, {"FileName": "a", "Data": "QUJD"}],
            "Attachments[1].FileName",
        ),
        (
            [{"FileName": "a", "Data": "QUJD", "Attributes": [{"Key": "k"}]}],
            "Attachments[0].Attributes[0]",
        ),
        (
            [{"FileName": "a", "Data": "QUJD", "Attributes": [{"Key": "k", "Values": "v"}]}],
            "Attachments[0].Attributes[0].Values",
        ),
        ({"FileName": "a", "Data": "QUJD"}, "Attachments"),
    ],
)
async def test_attachments_reject_invalid_files(
    api: httpx.AsyncClient, files: Any, field: str
) -> None:
    batch_id = await create(api)
    path = f"{BASE_PATH}/{batch_id}/Attachments"
    keep = {"Attachments": [{"FileName": "keep.txt", "Data": "QUJD"}]}
    assert (await api.put(path, json=keep)).status_code == 200
    payload = {"Attachments": files} if isinstance(files, list) else files
    assert_problem(await api.put(path, json=payload), 400, field)
    kept = (await get(api, batch_id, IncludeAttachments="true"))["EviNotice"]["Attachments"]
    assert [a["FileName"] for a in kept] == ["keep.txt"]  # a refused PUT changes nothing
    # The bare list of the old shape is refused too.
    assert_problem(await api.put(path, json=keep["Attachments"]), 400, "Attachments")


async def test_attachments_of_unknown_batch(api: httpx.AsyncClient) -> None:
    assert_problem(
        await api.put(f"{BASE_PATH}/{SOME_ID}/Attachments", json={"Attachments": []}), 404
    )
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


def test_a_batch_holds_at_most_100000_recipients(store: EviNoticeStore) -> None:
    batch_id = store.create_batch(NEW_BATCH, submitter=USER)
    for start in range(0, 100_000, 500):
        store.add_recipients(batch_id, recipients_text(500, start=start))
    with pytest.raises(SandboxProblem) as refused:
        store.add_recipients(batch_id, recipients_text(1, start=100_000))
    assert refused.value.status == 400 and "100000" in refused.value.detail
    assert "Recipients" in refused.value.errors
    assert len(store.recipients(batch_id)) == 100_000


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
