"""Helpers the sync tests share: clients on the sandbox, a paging proxy with a fault switch,
sync shortcuts, and reading tables back as plain values."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from conftest import ANCHOR, make_sandbox

from connector.evinotice.client import EviNoticeClient
from connector.http import CHUNK_BYTES, ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import sync
from connector.settings import SANDBOX_TOKEN, EviNoticeSettings, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from connector.warehouse.tables import table
from sandbox.app import Sandbox

FAST = {"backoff_base": 0.001, "backoff_max": 0.01}
# Every message the generator makes lies within 46 days before the anchor.
ALL_MESSAGES = (ANCHOR - timedelta(days=60), ANCHOR + timedelta(days=2))
# Columns that hold the time of the sync rather than anything from the API.
SYNC_TIMES = {"synced_at", "snapshot_at", "updated_at@sync_state"}
ORDER = {
    "contact_opt_outs": ("contact_id", "category_id"),
    "category_statistics_snapshots": ("snapshot_at", "category_id", "statistics_window"),
}
MERGED = ("contacts", "contact_opt_outs", "batches", "evinotice_batches")


# --- clients ---------------------------------------------------------------------------------


def marketplace_client(
    app: Any, chunk_bytes: int = CHUNK_BYTES, **limits: Any
) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(**{**FAST, **limits}),
        transport=httpx.ASGITransport(app=app),
        chunk_bytes=chunk_bytes,
    )


def evinotice_client(
    sandbox: Sandbox, app: Any = None, chunk_bytes: int = CHUNK_BYTES
) -> EviNoticeClient:
    config = sandbox.config
    settings = EviNoticeSettings(
        base_url="http://sandbox.local",
        username=config.evinotice_username,
        password=Secret(config.evinotice_password),
        site_id=config.evinotice_site_id,
    )
    return EviNoticeClient(
        settings,
        limits=ClientLimits(**FAST),
        transport=httpx.ASGITransport(app=app or sandbox.app),
        chunk_bytes=chunk_bytes,
    )


class Paging:
    """A proxy that strips the streaming headers (so reads page), counts requests and can
    start answering 500 after ``fail_after`` of them."""

    def __init__(self, app: Any, fail_after: int | None = None) -> None:
        self.app = app
        self.fail_after = fail_after
        self.requests = 0
        self.failed = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        if self.fail_after is not None and self.requests > self.fail_after:
            self.failed += 1
            body = orjson.dumps({"status": 500, "title": "Internal Server Error"})
            headers = [(b"content-type", b"application/problem+json")]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"mpt-streaming"]
        await self.app({**scope, "headers": headers}, receive, send)


def frozen_sandbox(contacts: int = 1500, seed: int = 5, **settings: Any) -> Sandbox:
    """A sandbox whose clock stands still unless a test advances it: EviNotice progress and
    statistics windows do not move between two syncs by themselves."""
    return make_sandbox(contacts=contacts, seed=seed, clock_speed=0.0, **settings)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _contacts(app: Any, warehouse: Warehouse, **options: Any) -> sync.SyncResult:
    async with marketplace_client(app) as client:
        return await sync.sync_contacts(client, warehouse, **options)


def sync_contacts(sandbox: Sandbox, warehouse: Warehouse, **options: Any) -> sync.SyncResult:
    return run(_contacts(sandbox.app, warehouse, **options))


def sync_messages(
    sandbox: Sandbox, warehouse: Warehouse, start: datetime, end: datetime, **options: Any
) -> sync.SyncResult:
    async def go() -> sync.SyncResult:
        async with marketplace_client(sandbox.app) as client:
            return await sync.sync_messages(client, warehouse, start, end, **options)

    return run(go())


def sync_everything(
    sandbox: Sandbox,
    warehouse: Warehouse,
    *,
    full_refresh: bool = False,
    app: Any = None,
    bulk: bool = True,
) -> dict[str, sync.SyncResult]:
    """Every collection, as the sync_platform job plus one messages range would.

    ``app`` puts a proxy (e.g. ``Paging``) in front of the sandbox; ``bulk`` False takes the
    row builders' path."""

    async def go() -> dict[str, sync.SyncResult]:
        async with marketplace_client(app or sandbox.app) as client:
            results = {
                "contacts": await sync.sync_contacts(
                    client, warehouse, full_refresh=full_refresh, bulk=bulk
                ),
                "categories": await sync.sync_categories(client, warehouse, bulk=bulk),
                "batches": await sync.sync_batches(client, warehouse, bulk=bulk),
                "messages": await sync.sync_messages(client, warehouse, *ALL_MESSAGES, bulk=bulk),
            }
        async with evinotice_client(sandbox) as evi:
            results["evinotice_batches"] = await sync.sync_evinotice_batches(
                evi, warehouse, sandbox.config.evinotice_site_id, bulk=bulk
            )
        return results

    return run(go())


# --- reading tables back ---------------------------------------------------------------------


def _normal(value: Any, column_type: str) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    if column_type == "json" and isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


def rows(warehouse: Warehouse, name: str, *, without: tuple[str, ...] = ()) -> list[dict]:
    """Every row of a table as plain values (UTC ISO timestamps, JSON decoded), in key order."""
    definition = table(name)
    columns = [c for c in definition.columns if c.name not in without]
    order = ", ".join(ORDER.get(name, (definition.key or definition.column_names[0],)))
    result = warehouse.query(
        f"select {', '.join(c.name for c in columns)} from {name} order by {order}"
    )
    return [
        {c.name: _normal(v, c.type) for c, v in zip(columns, row, strict=True)} for row in result
    ]


def content(warehouse: Warehouse, name: str) -> list[dict]:
    """A table's rows without the columns that only say when a sync ran."""
    sync_times = tuple(
        c for c in table(name).column_names if c in SYNC_TIMES or f"{c}@{name}" in SYNC_TIMES
    )
    return rows(warehouse, name, without=sync_times)


def by_id(records: list[dict], key: str = "id") -> dict[str, dict]:
    return {r[key]: r for r in records}


def at(record: dict, event: str) -> str | None:
    # An event that has not happened is absent from audit (a contact never updated).
    return (record["audit"].get(event) or {}).get("at")


def iso(text: str | None) -> str | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).isoformat()


def live_contacts(warehouse: Warehouse) -> dict[str, dict]:
    return {r["id"]: r for r in rows(warehouse, "contacts") if r["deleted_at"] is None}


def state(warehouse: Warehouse) -> dict[str, str]:
    return {r["name"]: r["value"] for r in rows(warehouse, "sync_state")}


def assert_contacts_match_truth(warehouse: Warehouse, sandbox: Sandbox) -> None:
    truth = by_id(list(sandbox.truth("contacts")))
    live = live_contacts(warehouse)
    assert sorted(live) == sorted(truth)
    for identifier, contact in truth.items():
        row = live[identifier]
        expected = {
            "email": contact["email"],
            "name": contact["name"],
            "status": contact["status"],
            "blocked_reason": contact.get("blockedReason"),
            "user_id": (contact.get("user") or {}).get("id"),
            "user_name": (contact.get("user") or {}).get("name"),
            "opt_out_count": len(contact["optOuts"]),
            "created_at": iso(at(contact, "created")),
            "updated_at": iso(at(contact, "updated")),
        }
        assert {k: row[k] for k in expected} == expected, identifier
        # Fields without a column are not lost: the whole record is kept.
        assert row["raw"] == contact
    opt_outs = {
        (r["contact_id"], r["category_id"]): r["category_name"]
        for r in rows(warehouse, "contact_opt_outs")
        if r["contact_id"] in truth
    }
    assert opt_outs == {(c["id"], o["id"]): o["name"] for c in truth.values() for o in c["optOuts"]}


class ContactsAnswerRewriter:
    """A proxy in front of the sandbox that rewrites each whole answer to a contacts list
    (``rewrite(body, start)``: the body and the ``http.response.start`` message) before the
    client sees it; other requests pass through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def rewrite(self, body: bytes, start: dict[str, Any]) -> bytes:
        raise NotImplementedError

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/contacts"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def collect(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.extend(message.get("body", b""))

        await self.app(scope, receive, collect)
        content = self.rewrite(bytes(body), start)
        headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": content})
