"""The EviNotice client against the in-process sandbox: writes, reads, paging, rules, failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from evinotice_api import FAST, PASSWORD, START, USER, Recording, new_batch, people, settings_for
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    IncompleteReadError,
    NotFoundError,
    ValidationError,
)
from connector.evinotice.client import (
    MAX_RECIPIENTS_PER_REQUEST,
    Attachment,
    EviNoticeClient,
    InvalidRequestError,
    Recipient,
    build_patch,
    format_recipients,
)
from sandbox.clock import SandboxClock
from sandbox.evinotice.payloads import DEFAULT_SITE_ID, parse_recipients
from sandbox.evinotice.store import EviNoticeStore

pytestmark = pytest.mark.anyio


# --- the whole lifecycle ---------------------------------------------------------------------


async def test_lifecycle_create_fill_submit_and_watch_it_finish(
    client: EviNoticeClient, store: EviNoticeStore, clock: SandboxClock, transport: Recording
) -> None:
    batch_id = await new_batch(client, cost_centre="Legal", Language="en")
    await client.set_body(batch_id, "<p>Dear {{DisplayName}}</p>")
    await client.set_attachments(batch_id, [Attachment("terms.pdf", b"%PDF", "application/pdf")])
    assert await client.add_recipients(batch_id, people(1_234)) == 1_234
    await client.configure(batch_id, state="Submitted", allow_refusal=True)

    batch = await client.get_batch(batch_id, include_attachments=True)
    assert batch["State"] == "Submitted" and batch["TotalCount"] == 1_234
    assert batch["EviNotice"]["CostCentre"] == "Legal"
    assert batch["EviNotice"]["AllowRefusal"] is True
    assert batch["EviNotice"]["Attachments"][0]["FileName"] == "terms.pdf"
    # 1,234 recipients travel in three requests of at most 500.
    posts = [r for r in transport.sent("POST") if r.url.path.endswith("/Recipients")]
    assert len(posts) == 3

    clock.advance(12)
    running = await client.get_batch(batch_id)
    assert running["State"] == "Processing"
    clock.advance(3_600)
    done = await client.get_batch(batch_id)
    assert done["State"] == "Processed" and done["ProgressPercentage"] == 100.0
    assert done["SentCount"] + done["FailedCount"] == 1_234
    assert done["SentCount"] > running["SentCount"]
    assert done["Outcome"] in ("Completed", "CompletedWithErrors")


async def test_recipients_are_chunked_and_arrive_complete_and_unescaped(
    client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    nasty = [
        "pipe | inside",
        'quote " inside',
        '"starts with a quote',
        "new\nline",
        "crlf\r\nline",
        "  edge spaces  ",
        "ünïcødé — ✓",
        "",
    ]

    def recipients() -> Iterator[Recipient]:
        for i in range(1_234):
            value = nasty[i % len(nasty)]
            yield Recipient(
                address=f"+34 600 {i:06d}" if i % 5 == 0 else f"r{i}@example.org",
                display_name=f"{value or 'x'} #{i}",
                legal_name=value or None,
                lookup_key=f"K|{i}",
                variables={"Plan": value, "Weird|Name": f'v"{i}'},
            )

    batch_id = await new_batch(client)
    assert await client.add_recipients(batch_id, recipients()) == 1_234
    posts = [r for r in transport.sent("POST") if r.url.path.endswith("/Recipients")]
    assert len(posts) == 3  # 500 + 500 + 234
    stored = store.recipients(batch_id)
    expected = list(recipients())
    assert len(stored) == len(expected)
    for got, want in zip(stored, expected, strict=True):
        assert got["Address"] == want.address
        assert got["DisplayName"] == want.display_name
        assert got["LegalName"] == want.legal_name
        assert got["LookupKey"] == want.lookup_key
        assert got["Variables"] == dict(want.variables)


async def test_exactly_500_is_one_request_and_501_two(
    client: EviNoticeClient, transport: Recording, store: EviNoticeStore
) -> None:
    batch_id = await new_batch(client)
    await client.add_recipients(batch_id, people(MAX_RECIPIENTS_PER_REQUEST))
    assert len(transport.sent("POST")) == 2  # create + one chunk
    await client.add_recipients(batch_id, people(501, start=500))
    assert len(transport.sent("POST")) == 4
    assert len(store.recipients(batch_id)) == 1_001
    assert await client.add_recipients(batch_id, []) == 0
    assert len(transport.sent("POST")) == 4


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1).filter(lambda s: s.strip()),
            st.text(),
            st.dictionaries(st.sampled_from(["Plan", "Note", "a|b", 'q"t']), st.text(), max_size=3),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_format_recipients_round_trips_through_the_server_parser(
    rows: list[tuple[str, str, dict[str, str]]],
) -> None:
    recipients = [
        Recipient(f"u{i}@example.com", name, legal or None, None, variables)
        for i, (name, legal, variables) in enumerate(rows)
    ]
    parsed = parse_recipients(format_recipients(recipients))
    assert [p["DisplayName"] for p in parsed] == [r.display_name for r in recipients]
    assert [p["LegalName"] for p in parsed] == [r.legal_name for r in recipients]
    names = {n for r in recipients for n in r.variables}
    for got, want in zip(parsed, recipients, strict=True):
        assert got["Variables"] == {n: want.variables.get(n, "") for n in names}


@pytest.mark.parametrize(
    ("recipient", "needle"),
    [
        (Recipient("not-an-address", "X"), "neither an email"),
        (Recipient("600123456", "X"), "neither an email"),  # phone without country code
        (Recipient("a@example.com", "  "), "display name"),
        (Recipient("a@example.com", "X", variables={"address": "x"}), "clashes"),
        (Recipient("a@example.com", "X", variables={" pad": "x"}), "variable name"),
    ],
)
async def test_bad_recipients_are_refused_before_anything_is_sent(
    client: EviNoticeClient, transport: Recording, recipient: Recipient, needle: str
) -> None:
    batch_id = await new_batch(client)
    before = len(transport.requests)
    good = list(people(3))
    with pytest.raises(InvalidRequestError, match=needle) as caught:
        await client.add_recipients(batch_id, [*good, recipient])
    assert "recipient 4" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert len(transport.requests) == before


# --- configure: local rules, then the server's ----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"scheduled_date": START}, "needs state='Submitted'"),
        ({"state": "Draft", "scheduled_date": START}, "cannot come with a scheduled_date"),
        ({"state": "Processing"}, "'Draft' or 'Submitted'"),
        ({"state": "Submitted", "scheduled_date": datetime(2026, 3, 5)}, "timezone-aware"),
        ({"state": "Submitted", "scheduled_date": "2026-03-05"}, "must be a datetime"),
        ({}, "nothing to configure"),
        ({"colour": "blue"}, "unknown EviNotice option"),
        ({"lta_storage": "yes"}, "LtaStorage: Input should be a valid boolean"),
        ({"online_retention_period": True}, "OnlineRetentionPeriod: Input should be a valid int"),
        ({"OnlineRetentionPeriod": -1}, "OnlineRetentionPeriod: Input should be greater"),
        ({"reject_reasons": ["ok", 3]}, r"RejectReasons\.1: Input should be a valid string"),
        ({"batch_push_notification_url": "ftp://x"}, "BatchPushNotificationUrl"),
        (
            {"commitment_options": "Maybe"},
            "CommitmentOptions must be one of Disabled, Accept, Reject, AcceptOrReject",
        ),
        ({"language": "en", "Language": "es"}, "given twice"),
    ],
)
async def test_configure_checks_the_rules_locally(
    client: EviNoticeClient, transport: Recording, kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        await client.configure("any-id", **kwargs)
    assert transport.requests == []


def test_build_patch_writes_wire_names_and_utc() -> None:
    madrid = timezone(timedelta(hours=1))
    payload = build_patch(
        state="Submitted",
        scheduled_date=datetime(2026, 3, 5, 10, 0, 0, 123456, tzinfo=madrid),
        options={"push_notification_url": "https://x.test/hook", "RejectReasons": ["No"]},
    )
    assert payload == {
        "PushNotificationUrl": "https://x.test/hook",
        "RejectReasons": ["No"],
        "ScheduledDate": "2026-03-05T09:00:00.123Z",
        "State": "Submitted",
    }


async def test_configure_schedule_revert_and_server_side_rules(
    client: EviNoticeClient, clock: SandboxClock, store: EviNoticeStore
) -> None:
    batch_id = await new_batch(client)
    # The server refuses to submit an empty batch.
    with pytest.raises(ValidationError) as caught:
        await client.configure(batch_id, state="Submitted")
    assert {"Body", "Recipients"} <= caught.value.problem.field_errors.keys()

    await client.set_body(batch_id, "Hello")
    await client.add_recipients(batch_id, people(300))
    when = START + timedelta(hours=2)
    await client.configure(batch_id, state="Submitted", scheduled_date=when)
    batch = await client.get_batch(batch_id)
    assert batch["State"] == "Scheduled"
    assert batch["EviNotice"]["ScheduledDate"] == "2026-03-02T14:00:00.0000000+00:00"
    # Sending the same PATCH again is harmless (that is why the client may retry it).
    await client.configure(batch_id, state="Submitted", scheduled_date=when)
    with pytest.raises(ConflictError):
        await client.set_body(batch_id, "changed while scheduled")
    await client.configure(batch_id, state="Draft")
    assert (await client.get_batch(batch_id))["State"] == "Draft"

    await client.configure(batch_id, state="Submitted")
    clock.advance(15)
    assert (await client.get_batch(batch_id))["State"] == "Processing"
    # The service answers a refused revert with a 400 naming State.
    with pytest.raises(ValidationError, match="Draft") as refused:
        await client.revert(batch_id)
    assert "State" in refused.value.problem.field_errors
    with pytest.raises(ConflictError):
        await client.clear_recipients(batch_id)
    with pytest.raises(ConflictError):
        await client.clear_attachments(batch_id)


async def test_clearing_recipients_and_attachments(
    client: EviNoticeClient, store: EviNoticeStore
) -> None:
    batch_id = await new_batch(client)
    await client.add_recipients(batch_id, people(5))
    await client.set_attachments(batch_id, [Attachment("a.txt", b"a"), Attachment("b.txt", b"b")])
    await client.clear_recipients(batch_id)
    assert store.recipients(batch_id) == []
    await client.set_attachments(batch_id, [])
    batch = await client.get_batch(batch_id, include_attachments=True)
    assert batch["EviNotice"]["Attachments"] == [] and batch["TotalCount"] == 0
    await client.set_attachments(batch_id, [Attachment("c.txt", bytes(range(256)))])
    await client.clear_attachments(batch_id)
    batch = await client.get_batch(batch_id, include_attachments=True)
    assert batch["EviNotice"]["Attachments"] == []
    with pytest.raises(InvalidRequestError, match="twice"):
        await client.set_attachments(batch_id, [Attachment("x", b""), Attachment("x", b"")])


async def test_unknown_batch_is_not_found(client: EviNoticeClient) -> None:
    with pytest.raises(NotFoundError):
        await client.get_batch("00000000-0000-4000-8000-000000000000")
    with pytest.raises(NotFoundError):
        await client.configure("00000000-0000-4000-8000-000000000000", state="Draft")
    # An id can never reach another path.
    with pytest.raises(NotFoundError):
        await client.get_batch("../Batches")


async def test_options_are_checked_by_the_typed_model_before_sending(
    client: EviNoticeClient, transport: Recording
) -> None:
    with pytest.raises(InvalidRequestError, match="PushNotificationUrl"):
        await client.create_batch(
            description="d", subject="s", issuer_name="i", push_notification_url="not a url"
        )
    with pytest.raises(InvalidRequestError):
        await client.create_batch(description=" ", subject="s", issuer_name="i")
    assert transport.requests == []


# --- reading the list ------------------------------------------------------------------------


async def test_iter_batches_pages_through_everything_once(
    client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    expected = [b["Id"] for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID]
    pages = [page async for page in client.iter_batches(page_size=7)]
    assert all(1 <= len(page) <= 7 for page in pages)
    assert [b["Id"] for page in pages for b in page] == expected
    queries = transport.sent("QUERY")
    assert len(queries) == len(pages) == -(-len(expected) // 7)


async def test_iter_batches_with_batches_created_between_pages(
    client: EviNoticeClient, store: EviNoticeStore, clock: SandboxClock
) -> None:
    existing = {b["Id"] for b in store.snapshot() if b["SiteId"] == DEFAULT_SITE_ID}
    seen: list[str] = []
    created: list[str] = []
    async for page in client.iter_batches(page_size=5):
        seen += [b["Id"] for b in page]
        created.append(await new_batch(client))
        clock.advance(0.5)
    assert len(seen) == len(set(seen))
    assert existing <= set(seen)
    assert set(seen) - existing and set(seen) - existing <= set(created)


async def test_iter_batches_filters_and_orders(
    client: EviNoticeClient, store: EviNoticeStore
) -> None:
    snapshot = store.snapshot()
    partner = next(b["SiteId"] for b in snapshot if b["SiteId"] != DEFAULT_SITE_ID)
    got = [b["Id"] async for page in client.iter_batches(partner, page_size=3) for b in page]
    assert got == [b["Id"] for b in snapshot if b["SiteId"] == partner]
    processed = [
        b async for page in client.iter_batches(state="Processed", descending=True) for b in page
    ]
    want = [b["Id"] for b in snapshot if b["SiteId"] == DEFAULT_SITE_ID]
    want = [
        i
        for i in reversed(want)
        if next(b for b in snapshot if b["Id"] == i)["State"] == "Processed"
    ]
    assert [b["Id"] for b in processed] == want
    assert all(b["State"] == "Processed" for b in processed)
    for bad in ({"page_size": 0}, {"page_size": 101}, {"state": "Done"}):
        with pytest.raises(InvalidRequestError):
            async for _ in client.iter_batches(**bad):
                pass


async def test_iter_batches_stops_on_a_cursor_that_does_not_move() -> None:
    page = {"Cursor": "same", "HasMoreResults": True, "Results": [{"Id": "x"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page)

    async with EviNoticeClient(
        settings_for(), limits=FAST, transport=httpx.MockTransport(handler)
    ) as evi:
        pages = evi.iter_batches()
        assert await anext(pages) == [{"Id": "x"}]
        with pytest.raises(IncompleteReadError):
            await anext(pages)


# --- failures, retries, secrets --------------------------------------------------------------


async def test_lost_answer_to_create_is_ambiguous_and_not_resent(
    client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    count = len(store.snapshot())
    transport.lose = lambda request: request.method == "POST"
    with pytest.raises(AmbiguousOutcomeError) as caught:
        await new_batch(client)
    assert len(transport.sent("POST")) == 1  # not retried
    assert len(store.snapshot()) == count + 1  # it did happen: the caller must check
    assert "check the current state" in str(caught.value)


async def test_lost_answer_to_recipients_is_ambiguous_and_not_resent(
    client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    batch_id = await new_batch(client)
    transport.lose = lambda request: request.url.path.endswith("/Recipients")
    with pytest.raises(AmbiguousOutcomeError):
        await client.add_recipients(batch_id, people(800))
    assert len(store.recipients(batch_id)) == 500  # the first chunk only, once


async def test_idempotent_requests_are_retried_after_a_lost_answer(
    client: EviNoticeClient, store: EviNoticeStore, transport: Recording
) -> None:
    batch_id = await new_batch(client)
    await client.set_body(batch_id, "x")
    await client.add_recipients(batch_id, people(2))
    lost: list[str] = []

    def lose_once(request: httpx.Request) -> bool:
        key = f"{request.method} {request.url.path}"
        if request.method in ("PATCH", "PUT", "GET", "QUERY") and key not in lost:
            lost.append(key)
            return True
        return False

    transport.lose = lose_once
    await client.set_body(batch_id, "<p>final</p>")
    await client.configure(batch_id, state="Submitted")
    batch = await client.get_batch(batch_id)
    assert batch["State"] == "Submitted" and batch["EviNotice"]["Body"] == "<p>final</p>"
    assert [b async for page in client.iter_batches() for b in page]
    assert len(transport.sent("PATCH")) == 2  # lost once, resent, no harm done
    assert len(transport.sent("QUERY")) >= 2


async def test_wrong_password_is_an_authentication_error_without_the_secret(
    transport: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wrong-Secret-Value"
    async with EviNoticeClient(settings_for(wrong), limits=FAST, transport=transport) as evi:
        with pytest.raises(AuthenticationError) as caught:
            await evi.get_batch("00000000-0000-4000-8000-000000000000")
        text = f"{caught.value!s} {caught.value!r} {evi!r} {evi.settings!r} {caplog.text}"
    assert caught.value.status == 401
    assert wrong not in text and PASSWORD not in text
    # The header really carried Basic credentials for the configured user.
    assert transport.requests[-1].headers["Authorization"].startswith("Basic ")


async def test_repr_hides_credentials(client: EviNoticeClient) -> None:
    assert PASSWORD not in repr(client)
    assert PASSWORD not in repr(client.settings)
    assert "evinotice.test" in repr(client)


def test_from_env_reads_settings() -> None:
    env = {
        "EVINOTICE_BASE_URL": "https://evinotice.example/",
        "EVINOTICE_USERNAME": USER,
        "EVINOTICE_PASSWORD": PASSWORD,
        "EVINOTICE_SITE_ID": "SITE-1",
    }
    evi = EviNoticeClient.from_env(env)
    assert evi.settings.base_url == "https://evinotice.example"
    assert evi.settings.site_id == "SITE-1"
    with pytest.raises(ConfigurationError, match="EVINOTICE_SITE_ID"):
        EviNoticeClient.from_env({k: v for k, v in env.items() if k != "EVINOTICE_SITE_ID"})
    assert PASSWORD not in repr(evi)
