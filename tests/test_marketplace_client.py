"""The Marketplace client against the sandbox: complete reads in every mode, under faults,
rate limits and churn; write safety; secrets kept out of reprs and errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import pytest
from conftest import asgi_marketplace, make_sandbox

from connector.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from connector.http import ClientLimits
from connector.marketplace import rql
from connector.marketplace.client import MarketplaceClient, ReadReport
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from sandbox.app import Sandbox

Start = Callable[[Sandbox], str]


def loopback_client(url: str, **limits: object) -> MarketplaceClient:
    limits.setdefault("backoff_base", 0.02)
    limits.setdefault("backoff_max", 1.0)
    return MarketplaceClient(
        MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(**limits),  # type: ignore[arg-type]
    )


async def read_all(
    client: MarketplaceClient, resource: str, **options: object
) -> tuple[list[dict], ReadReport]:
    report = ReadReport(resource)
    rows: list[dict] = []
    async for chunk in client.read(resource, report=report, **options):  # type: ignore[arg-type]
        assert 0 < len(chunk) <= 5000  # the default chunk size
        rows.extend(chunk)
    return rows, report


@pytest.mark.parametrize("mode", ["auto", "concurrent", "sequential"])
@pytest.mark.parametrize("resource", ["contacts", "categories", "batches", "messages"])
def test_read_returns_exactly_the_truth(small_sandbox: Sandbox, mode: str, resource: str) -> None:
    async def run() -> tuple[list[dict], ReadReport]:
        async with asgi_marketplace(small_sandbox) as client:
            return await read_all(client, resource, mode=mode)

    rows, report = asyncio.run(run())
    truth = list(small_sandbox.truth(resource))
    assert [r["id"] for r in rows] == [t["id"] for t in truth]
    assert report.complete and report.rows == len(truth) == report.final_count
    expected_mode = "streaming" if mode == "auto" else mode
    assert report.mode == expected_mode
    # audit is selected by default, so the incremental cursor field is there
    assert all("audit" in r for r in rows)


def test_filtered_read_matches_the_truth(small_sandbox: Sandbox) -> None:
    expression = rql.and_(rql.eq("status", "Active"), rql.ilike("email", "*smith*"))

    async def run() -> list[dict]:
        async with asgi_marketplace(small_sandbox) as client:
            assert await client.count("contacts", expression) > 0
            return (await read_all(client, "contacts", filter=expression, mode="concurrent"))[0]

    rows = asyncio.run(run())
    expected = [
        c["id"]
        for c in small_sandbox.truth("contacts")
        if c["status"] == "Active" and "smith" in c["email"]
    ]
    assert [r["id"] for r in rows] == expected


def test_server_that_does_not_stream_falls_back_to_paging(small_sandbox: Sandbox) -> None:
    # A proxy in front of the API that strips the streaming request headers.
    async def strip_streaming(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            scope = {
                **scope,
                "headers": [(k, v) for k, v in scope["headers"] if k != b"mpt-streaming"],
            }
        await small_sandbox.app(scope, receive, send)

    async def run() -> tuple[list[dict], ReadReport]:
        client = MarketplaceClient(
            MarketplaceSettings("http://sandbox.local", Secret(SANDBOX_TOKEN)),
            transport=httpx.ASGITransport(app=strip_streaming),
        )
        async with client:
            return await read_all(client, "contacts", mode="auto")

    rows, report = asyncio.run(run())
    assert report.mode == "concurrent"
    assert [r["id"] for r in rows] == [c["id"] for c in small_sandbox.truth("contacts")]


@pytest.mark.parametrize("mode", ["auto", "concurrent"])
def test_read_under_faults_and_rate_limit_is_exact_and_keeps_to_the_limit(
    loopback: Start, mode: str
) -> None:
    sandbox = make_sandbox(contacts=3000, seed=21, faults=0.2, rate_limit=40, slow_seconds=0.6)
    url = loopback(sandbox)

    async def run() -> tuple[list[dict], ReadReport]:
        async with loopback_client(url, timeout=0.3, rate_limit=36, max_attempts=12) as client:
            return await read_all(client, "contacts", mode=mode)

    rows, report = asyncio.run(run())
    assert report.complete
    assert [r["id"] for r in rows] == [c["id"] for c in sandbox.truth("contacts")]
    stats = httpx.get(f"{url}/_sandbox/stats").json()
    # Faults really happened, and the client never pushed past the limit for long.
    assert sum(v for k, v in stats.items() if k.startswith("fault:")) > 0
    assert stats["seconds_over_rate_limit"] <= 1
    assert stats.get("throttled", 0) <= 2


def test_client_backs_off_on_429_and_honours_retry_after(loopback: Start) -> None:
    # A bucket of two requests refilled at two a second: the pages the client launches at
    # once after the first exceed it however fast or slow this machine is.
    sandbox = make_sandbox(contacts=1000, seed=4, rate_limit=2)
    url = loopback(sandbox)

    async def run() -> tuple[list[dict], dict]:
        # No client-side rate: the server's 429s and Retry-After are all that slow it down.
        async with loopback_client(url, max_attempts=20, max_concurrency=4) as client:
            rows, _ = await read_all(client, "contacts", mode="concurrent")
            return rows, dict(client.http.stats)

    rows, client_stats = asyncio.run(run())
    assert [r["id"] for r in rows] == [c["id"] for c in sandbox.truth("contacts")]
    assert client_stats.get("retry:http_429", 0) > 0
    stats = httpx.get(f"{url}/_sandbox/stats").json()
    assert stats["throttled"] == client_stats["retry:http_429"]
    # After a 429 every caller waits: beyond the first burst (at most the client's window of
    # 2 x 4 requests in flight) the server throttles almost nothing.
    assert stats["throttled"] <= 8 + 2


@pytest.mark.parametrize("mode", ["concurrent", "sequential", "auto"])
def test_rows_moving_during_the_read_are_neither_skipped_nor_repeated(mode: str) -> None:
    # Before every request the sandbox creates, updates, blocks and deletes contacts.
    sandbox = make_sandbox(contacts=2500, seed=9, churn_per_request=4)
    before = {c["id"] for c in sandbox.truth("contacts")}

    async def run() -> tuple[list[dict], ReadReport]:
        async with asgi_marketplace(sandbox, max_concurrency=4) as client:
            return await read_all(client, "contacts", mode=mode)

    rows, report = asyncio.run(run())
    sandbox.behaviour.churn_per_request = 0
    ids = [r["id"] for r in rows]
    after = {c["id"] for c in sandbox.truth("contacts")}
    assert len(ids) == len(set(ids)), "no row may be read twice"
    assert ids == sorted(ids) or report.gaps_repaired > 0
    # Every contact that existed throughout the read was read.
    assert (before & after) - set(ids) == set()
    assert sandbox.marketplace.churn.deleted > 0
    if mode == "sequential":
        assert report.gaps_repaired > 0, "deletions shift later pages; the repair must find them"


def test_ambiguous_create_is_surfaced_not_retried(loopback: Start) -> None:
    # The answer is held back past the client's timeout, but the contact is created.
    sandbox = make_sandbox(contacts=50, seed=2, faults="slow=1.0", slow_seconds=0.5)
    url = loopback(sandbox)

    async def run() -> dict | None:
        async with loopback_client(url, timeout=0.2) as client:
            with pytest.raises(AmbiguousOutcomeError) as caught:
                await client.create_contact("slow.create@example.com", "Slow Create")
            assert "check the current state" in str(caught.value)
            await asyncio.sleep(0.6)
            sandbox.behaviour.faults = {}
            return await client.find_contact_by_email("SLOW.create@example.com")

    found = asyncio.run(run())
    assert found is not None and found["email"] == "slow.create@example.com"
    matches = [c for c in sandbox.truth("contacts") if c["email"] == "slow.create@example.com"]
    assert len(matches) == 1


def test_dropped_connection_on_a_create_is_ambiguous_but_a_read_is_retried(
    loopback: Start,
) -> None:
    sandbox = make_sandbox(contacts=50, seed=2, faults="drop=1.0")
    url = loopback(sandbox)

    async def run() -> None:
        async with loopback_client(url, max_attempts=3) as client:
            with pytest.raises(AmbiguousOutcomeError):
                await client.create_contact("dropped@example.com")
            assert client.http.stats["requests"] == 1
            with pytest.raises(Exception) as caught:
                await client.count("contacts")
            assert caught.value.retryable
            assert client.http.stats["requests"] == 1 + 3

    asyncio.run(run())


def test_writes_and_their_errors() -> None:
    sandbox = make_sandbox(contacts=20, seed=8)

    async def run() -> None:
        async with asgi_marketplace(sandbox) as client:
            created = await client.create_contact("writer@example.com", "Writer", ["NTC-0000-0001"])
            assert created["optOuts"][0]["id"] == "NTC-0000-0001"
            with pytest.raises(ConflictError) as conflict:
                await client.create_contact("WRITER@example.com")
            assert conflict.value.status == 409
            assert "email" in conflict.value.problem.field_errors
            assert conflict.value.problem.trace_id
            blocked = await client.block_contact(created["id"])
            assert blocked["status"] == "Blocked"
            # Blocking again (say, a retry after a lost answer) is already done, not an error.
            assert (await client.block_contact(created["id"]))["status"] == "Blocked"
            assert (await client.unblock_contact(created["id"]))["status"] == "Active"
            updated = await client.update_contact(created["id"], "writer@example.com", "W. Riter")
            assert updated["name"] == "W. Riter"
            with pytest.raises(ValidationError) as invalid:
                await client.create_contact("not-an-email")
            assert not invalid.value.retryable
            await client.delete_contact(created["id"])
            with pytest.raises(NotFoundError):
                await client.get("contacts", created["id"])

    asyncio.run(run())
    assert "writer@example.com" not in {c["email"] for c in sandbox.truth("contacts")}


def test_token_never_shows_in_reprs_errors_or_logs(
    small_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-token-value"
    settings = MarketplaceSettings(base_url="http://sandbox.local", token=Secret(secret))
    client = MarketplaceClient(settings, transport=httpx.ASGITransport(app=small_sandbox.app))

    async def run() -> None:
        async with client:
            with pytest.raises(AuthenticationError) as caught:
                await client.count("contacts")
            assert secret not in str(caught.value)
            assert secret not in repr(caught.value.problem)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(run())
    assert secret not in repr(settings)
    assert secret not in repr(client.http._http.auth)
    assert secret not in caplog.text
