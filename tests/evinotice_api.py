"""Shared EviNotice test fixtures (registered as a plugin by conftest) and helpers.

The sandbox's EviNotice routes in-process on a frozen clock: ``api`` is a raw httpx client for
the sandbox tests, ``client`` the connector's ``EviNoticeClient`` behind a recording transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from connector.evinotice.client import EviNoticeClient, Recipient
from connector.http import ClientLimits
from connector.settings import EviNoticeSettings, Secret
from sandbox.clock import SandboxClock
from sandbox.evinotice.payloads import BASE_PATH, DEFAULT_SITE_ID
from sandbox.evinotice.routes import evinotice_routes
from sandbox.evinotice.store import EviNoticeStore

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
USER, PASSWORD = "sandbox-user", "s3cret-pa55"
NEW_BATCH = {"Description": "Renewal notice", "Subject": "Your renewal", "IssuerName": "Legal"}
SOME_ID = "00000000-0000-0000-0000-000000000001"  # a batch id no store holds
FAST = ClientLimits(timeout=5.0, backoff_base=0.001, backoff_max=0.01, max_attempts=3)


class Recording(httpx.AsyncBaseTransport):
    """Forwards to the sandbox app, records requests, and can lose chosen responses."""

    def __init__(self, app: Starlette) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.requests: list[httpx.Request] = []
        self.lose: Callable[[httpx.Request], bool] = lambda request: False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        if self.lose(request):
            # The server did the work; the answer never arrives.
            raise httpx.ReadTimeout("answer lost", request=request)
        return response

    def sent(self, method: str | None = None) -> list[httpx.Request]:
        return [r for r in self.requests if method is None or r.method == method]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> SandboxClock:
    return SandboxClock(start=START, speed=0.0)  # frozen: only advance() moves it


@pytest.fixture
def store(clock: SandboxClock) -> EviNoticeStore:
    return EviNoticeStore(clock, seed=7, batches=40)


def evinotice_app(store: EviNoticeStore) -> Starlette:
    """The sandbox's EviNotice routes alone, over ``store``."""
    return Starlette(routes=evinotice_routes(store, username=USER, password=PASSWORD))


@pytest.fixture
async def api(store: EviNoticeStore) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=evinotice_app(store)),
        base_url="http://evinotice.test",
        auth=(USER, PASSWORD),
    ) as client:
        yield client


@pytest.fixture
def transport(store: EviNoticeStore) -> Recording:
    return Recording(evinotice_app(store))


def settings_for(password: str = PASSWORD) -> EviNoticeSettings:
    return EviNoticeSettings(
        base_url="http://evinotice.test",
        username=USER,
        password=Secret(password),
        site_id=DEFAULT_SITE_ID,
    )


@pytest.fixture
async def client(transport: Recording) -> AsyncIterator[EviNoticeClient]:
    async with EviNoticeClient(settings_for(), limits=FAST, transport=transport) as evi:
        yield evi


# --- helpers -----------------------------------------------------------------------------------


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
    response = await api.put(f"{BASE_PATH}/{batch_id}/Body", content="<p>Hello</p>", headers=TEXT)
    assert response.status_code == 200, response.text
    response = await api.post(
        f"{BASE_PATH}/{batch_id}/Recipients", json=recipients_text(recipients)
    )
    assert response.status_code == 200, response.text
    return batch_id


TEXT = {"Content-Type": "text/plain; charset=utf-8"}


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


async def new_batch(client: EviNoticeClient, **options: Any) -> str:
    return await client.create_batch(
        description="Renewal notice", subject="Your renewal", issuer_name="Legal", **options
    )


def people(count: int, start: int = 0) -> Iterator[Recipient]:
    for i in range(start, start + count):
        yield Recipient(address=f"person{i}@example.com", display_name=f"Person {i}")
