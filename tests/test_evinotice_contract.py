"""The EviNotice client against the sandbox as the service really behaves (issue 9, items
8 to 12, and the schedule / revert / count helpers of issue 11): each test fails on the client
built from our first reading of the API."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from evinotice_api import (
    FAST,
    START,
    USER,
    Recording,
    evinotice_app,
    new_batch,
    people,
    settings_for,
)

from connector.errors import AmbiguousOutcomeError, ValidationError
from connector.evinotice.client import (
    MAX_RECIPIENTS_PER_BATCH,
    Attachment,
    EviNoticeClient,
    InvalidRequestError,
    Recipient,
    fill_placeholders,
    missing_placeholders,
    usable_address,
)
from connector.evinotice.records import evinotice_batch_rows
from sandbox.clock import SandboxClock
from sandbox.evinotice.payloads import DEFAULT_SITE_ID
from sandbox.evinotice.store import EviNoticeStore

pytestmark = pytest.mark.anyio


# --- 8. attachments ------------------------------------------------------------------------------


async def test_attachments_go_as_one_object_and_each_put_replaces_the_set(
    client: EviNoticeClient, transport: Recording
) -> None:
    batch_id = await new_batch(client)
    terms = Attachment(
        "terms.pdf",
        b"%PDF-1.7",
        display_name="Terms",
        attributes={"kind": "contract", "tags": ["legal", "2026"]},
    )
    logo = Attachment("logo.png", bytes(range(256)))
    await client.set_attachments(batch_id, [terms, logo])
    body = transport.sent("PUT")[-1].read()
    assert body.startswith(b'{"Attachments":[')
    batch = await client.get_batch(batch_id, include_attachments=True)
    files = batch["EviNotice"]["Attachments"]
    assert [(f["DisplayName"], f["FileName"]) for f in files] == [
        ("Terms", "terms.pdf"),
        ("logo.png", "logo.png"),
    ]
    assert base64.b64decode(files[1]["Data"]) == bytes(range(256))
    assert files[0]["Attributes"] == [
        {"Key": "kind", "Value": "contract"},
        {"Key": "tags", "Values": ["legal", "2026"]},
    ]
    await client.set_attachments(batch_id, [logo])
    batch = await client.get_batch(batch_id, include_attachments=True)
    assert [f["FileName"] for f in batch["EviNotice"]["Attachments"]] == ["logo.png"]


# --- 9. the list cursor is a position ------------------------------------------------------------


@pytest.mark.parametrize("descending", [True, False])
async def test_paging_while_batches_are_created_reaches_every_batch_exactly_once(
    store: EviNoticeStore, clock: SandboxClock, descending: bool
) -> None:
    existing = {b["Id"] for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID}
    created: list[str] = []

    class CreatingBetweenPages(Recording):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if request.method == "QUERY":
                # Two new batches land while the client reads the page it just got.
                for _ in range(2):
                    created.append(
                        store.create_batch({**NEW, "Description": "new"}, submitter=USER)
                    )
                clock.advance(0.5)
            return response

    transport = CreatingBetweenPages(evinotice_app(store))
    async with EviNoticeClient(settings_for(), limits=FAST, transport=transport) as client:
        seen = [
            b["Id"]
            async for page in client.iter_batches(page_size=5, descending=descending)
            for b in page
        ]
    assert len(transport.sent("QUERY")) > 3
    assert len(seen) == len(set(seen))  # exactly once
    assert existing <= set(seen)  # every batch that was there
    assert set(seen) - existing <= set(created)


NEW = {"Description": "d", "Subject": "s", "IssuerName": "i"}


# --- 10. spellings, states, timestamps -----------------------------------------------------------


async def test_the_vendor_spellings_are_read(clock: SandboxClock) -> None:
    store = EviNoticeStore(clock, seed=7, batches=30, vendor_spellings=True)
    transport = Recording(evinotice_app(store))
    async with EviNoticeClient(settings_for(), limits=FAST, transport=transport) as client:
        seen = [b["Id"] async for page in client.iter_batches(page_size=4) for b in page]
        one = await client.get_batch(seen[0])
    expected = [b["Id"] for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID]
    assert sorted(seen) == sorted(expected) and len(seen) > 4  # past the first page
    assert isinstance(one["ProgressPercentage"], float) and "ProgessPercentage" not in one


def test_unknown_states_and_seven_digit_offset_timestamps_become_rows() -> None:
    (row,) = evinotice_batch_rows(
        [
            {
                "Id": "b-1",
                "State": "Archived",  # no list names it: stored as it comes
                "TotalCount": 10,
                "TotalSent": 4,
                "TotalFailed": 1,
                "CreationDate": "2024-11-19T16:11:17.9870820+00:00",
                "StartedOn": "2024-11-19T18:11:17.1234567+02:00",
                "ProcessedOn": None,
            }
        ],
        "2026-03-02T12:00:00.000Z",
    )
    assert row["state"] == "Archived" and row["progress_percentage"] == 50.0
    assert row["created_at"] == "2024-11-19T16:11:17.987082+00:00"
    assert row["started_on"] == "2024-11-19T16:11:17.123456+00:00"
    assert row["processed_on"] is None
    for finished in ("Processed", "Sent", "Completed"):
        (done,) = evinotice_batch_rows([{"Id": "b", "State": finished}], "")
        assert done["progress_percentage"] == 100.0


async def test_every_documented_state_is_a_valid_filter(client: EviNoticeClient) -> None:
    for state in ("Sent", "Completed", "Scheduled"):
        found = [b["State"] async for page in client.iter_batches(state=state) for b in page]
        assert set(found) <= {state}
        assert bool(found) == (state == "Scheduled")  # the sandbox moves batches to Processed
    with pytest.raises(InvalidRequestError, match="Completed"):
        [p async for p in client.iter_batches(state="Lost")]


# --- 11. one batch ------------------------------------------------------------------------------


async def test_one_batch_carries_submitter_and_site(client: EviNoticeClient) -> None:
    batch = await client.get_batch(await new_batch(client))
    assert (batch["Submitter"], batch["SiteId"], batch["SiteName"]) == (
        USER,
        DEFAULT_SITE_ID,
        "Sandbox Site",
    )


# --- 12. body and the recipients cap -------------------------------------------------------------


async def test_the_body_is_raw_text_filled_from_the_recipients_columns(
    client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    batch_id = await new_batch(client)
    body = 'Dear {{DisplayName}}, plan "{{Plan}}" renews on {{ renewal }}.'
    await client.set_body(batch_id, body)
    put = transport.sent("PUT")[-1]
    assert put.headers["Content-Type"].startswith("text/plain") and put.read() == body.encode()
    assert (await client.get_batch(batch_id))["EviNotice"]["Body"] == body
    recipients = [
        Recipient("ann@example.com", "Ann", variables={"Plan": "Gold", "Renewal": "1 May"}),
        Recipient("bob@example.com", "Bob", variables={"Plan": "Basic", "Renewal": "2 May"}),
    ]
    assert missing_placeholders(body, ["Plan", "Renewal"]) == []
    assert missing_placeholders(body, ["Plan"]) == ["renewal"]
    await client.add_recipients(batch_id, recipients)
    # What the service sends each recipient is what the client's own filling predicts.
    assert store.bodies(batch_id) == [fill_placeholders(body, r) for r in recipients]
    assert store.bodies(batch_id)[0] == 'Dear Ann, plan "Gold" renews on 1 May.'


async def test_more_than_100000_recipients_are_refused_before_sending(
    client: EviNoticeClient, transport: Recording
) -> None:
    batch_id = await new_batch(client)
    transport.requests.clear()
    everyone = list(people(MAX_RECIPIENTS_PER_BATCH + 1))
    with pytest.raises(InvalidRequestError, match="at most 100000"):
        await client.add_recipients(batch_id, everyone)
    with pytest.raises(InvalidRequestError):
        await client.add_recipients(batch_id, everyone[:2], already=MAX_RECIPIENTS_PER_BATCH - 1)
    assert transport.requests == []

    # An unsized stream is stopped before the chunk that would pass the cap.
    def stream() -> Iterator[Recipient]:
        yield from people(1_500)

    with pytest.raises(InvalidRequestError):
        await client.add_recipients(batch_id, stream(), already=MAX_RECIPIENTS_PER_BATCH - 1_000)
    assert len(transport.sent("POST")) == 2  # 500 + 500 reached the cap exactly


def test_one_email_rule_for_recipients() -> None:
    assert usable_address("Ann.Lee@Example.com") is None
    assert usable_address("+34 600 000 000") is None
    assert "email" in (usable_address("ann@localhost") or "")
    assert usable_address("600000000") is not None


# --- schedule, revert, reschedule, count (issue 11) ---------------------------------------------


async def ready(client: EviNoticeClient, count: int = 300) -> str:
    batch_id = await new_batch(client)
    await client.set_body(batch_id, "Hello {{DisplayName}}")
    await client.add_recipients(batch_id, people(count))
    return batch_id


async def test_schedule_reschedule_and_revert_before_start(
    client: EviNoticeClient, clock: SandboxClock
) -> None:
    batch_id = await ready(client)
    await client.schedule(batch_id, START + timedelta(hours=2))
    batch = await client.get_batch(batch_id)
    assert batch["State"] == "Scheduled"
    assert datetime.fromisoformat(batch["EviNotice"]["ScheduledDate"]) == START + timedelta(hours=2)
    await client.reschedule(batch_id, START + timedelta(hours=5))
    moved = await client.get_batch(batch_id)
    assert datetime.fromisoformat(moved["EviNotice"]["ScheduledDate"]) == START + timedelta(hours=5)
    await client.revert(batch_id)
    clock.advance(6 * 3600)
    reverted = await client.get_batch(batch_id)
    assert reverted["State"] == "Draft" and reverted["SentCount"] == 0
    await client.submit_now(batch_id)
    clock.advance(11)
    assert (await client.get_batch(batch_id))["State"] == "Processing"


async def test_revert_or_reschedule_after_start_is_a_clear_refusal(
    client: EviNoticeClient, clock: SandboxClock
) -> None:
    batch_id = await ready(client)
    await client.submit_now(batch_id)
    clock.advance(12)
    with pytest.raises(ValidationError, match="no longer go back to Draft") as refused:
        await client.revert(batch_id)
    assert refused.value.problem.status == 400
    with pytest.raises(ValidationError, match="cannot be rescheduled"):
        await client.reschedule(batch_id, START + timedelta(days=1))
    assert (await client.get_batch(batch_id))["State"] == "Processing"


async def test_the_patch_rules_are_checked_before_sending(
    client: EviNoticeClient, transport: Recording
) -> None:
    with pytest.raises(InvalidRequestError, match="timezone-aware"):
        await client.schedule("any", datetime(2026, 3, 5, 10, 0))
    with pytest.raises(InvalidRequestError, match="cannot come with a scheduled_date"):
        await client.configure("any", state="Draft", scheduled_date=START)
    with pytest.raises(InvalidRequestError, match="needs state='Submitted'"):
        await client.configure("any", scheduled_date=START)
    assert transport.requests == []


async def test_an_ambiguous_recipients_request_is_settled_by_the_count(
    client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    batch_id = await new_batch(client)
    await client.add_recipients(batch_id, people(500))
    transport.lose = lambda request: request.url.path.endswith("/Recipients")
    with pytest.raises(AmbiguousOutcomeError):
        await client.add_recipients(batch_id, people(500, start=500), already=500)
    transport.lose = lambda request: False
    # The lost chunk landed: the count says so, so the caller does not send it again.
    assert await client.recipients_count(batch_id) == 1000 == len(store.recipients(batch_id))
