"""The world the reconcile and push-back tests work in: a small sandbox behind a recording
gateway, a real warehouse (a DuckDB file, or a fresh PostgreSQL database: never skipped), an
exports folder, and helpers to write exports, plan, apply and read tables back.

Test modules import the ``world`` / ``warehouse_url`` fixtures from here."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import types
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import fresh_postgres_database, make_sandbox

from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import pushback, reconcile
from connector.pipelines.sync import refresh_contacts, sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox
from sandbox.behaviour import DroppedConnection
from sandbox.problems import problem_body
from sandbox.server import serve_in_thread

FAST = {"backoff_base": 0.001, "backoff_max": 0.01}
HEADER = ("Email", "Name", "Do Not Email", "Unsubscribed", "Hard Bounced")
PLAN_TABLES = (
    "crm_contacts",
    "crm_rejected_rows",
    "crm_conflicts",
    "reconciliation_plan",
    "platform_contacts_missing_from_crm",
)


# --- the platform in front of the sandbox ----------------------------------------------------


class Gateway:
    """ASGI app in front of the sandbox: records every API request with its answer's status,
    and can refuse creates for some addresses the way the platform refuses an address it
    will not accept (a 400 problem with field errors).

    Two switches make lost answers deterministic (no timeouts raced against delays):
    ``lose_answers`` holds ``(method, path suffix)`` pairs whose request is carried out by the
    sandbox and whose answer is then cut off (headers sent, connection dropped), and
    ``unavailable`` holds methods answered 503 without reaching the sandbox."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, int]] = []
        self.refused: set[str] = set()
        self.lose_answers: set[tuple[str, str]] = set()
        self.unavailable: set[str] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method in self.unavailable:
            self.requests.append((method, path, 503))
            await _answer(send, 503, problem_body(503, "Service Unavailable", "Gateway switch."))
            return
        if any(method == m and path.endswith(suffix) for m, suffix in self.lose_answers):
            await self._carried_out_then_dropped(scope, receive, send)
            return
        if method == "POST" and path.endswith("/contacts"):
            messages = []
            while True:
                message = await receive()
                messages.append(message)
                if not message.get("more_body"):
                    break
            body = orjson.loads(b"".join(m.get("body", b"") for m in messages) or b"{}")
            if body.get("email") in self.refused:
                self.requests.append((method, path, 400))
                problem = problem_body(
                    400,
                    "Bad Request",
                    "One or more validation errors occurred.",
                    {"email": ["This address is on the platform's suppression list."]},
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/problem+json")],
                    }
                )
                await send({"type": "http.response.body", "body": problem})
                return
            replay = iter(messages)

            async def receive() -> Any:
                return next(replay, {"type": "http.disconnect"})

        status: list[int] = []

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            self.requests.append((method, path, status[0] if status else 0))

    async def _carried_out_then_dropped(self, scope: Any, receive: Any, send: Any) -> None:
        status: list[int] = []

        async def swallow(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, swallow)
        self.requests.append((scope["method"], scope["path"], status[0] if status else 0))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        raise DroppedConnection("test gateway: the answer is lost after the work is done")

    def sent(self, method: str, suffix: str = "") -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] == method and r[1].endswith(suffix)]


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/problem+json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client_for(app: Any, token: str = SANDBOX_TOKEN, **limits: Any) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(token)),
        limits=ClientLimits(**{**FAST, **limits}),
        transport=httpx.ASGITransport(app=app),
    )


def loopback_client(url: str, token: str = SANDBOX_TOKEN, **limits: Any) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url=url, token=Secret(token)),
        limits=ClientLimits(**{**FAST, **limits}),
    )


@contextlib.contextmanager
def served(gateway: Gateway, sandbox: Sandbox) -> Iterator[str]:
    """The gateway (and the sandbox behind it) on loopback; yields the base URL."""
    # serve_in_thread only needs an object with the ASGI app to serve.
    with serve_in_thread(types.SimpleNamespace(app=gateway, config=sandbox.config)) as url:  # type: ignore[arg-type]
        yield url


# --- warehouses and the world a test works in ------------------------------------------------


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty warehouse: a DuckDB file, or a fresh PostgreSQL database (never skipped)."""
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@dataclass
class World:
    """A small sandbox, the gateway in front of it, a warehouse and the exports folder."""

    sandbox: Sandbox
    gateway: Gateway
    warehouse: Warehouse
    folder: Path
    limits: dict[str, Any] = field(default_factory=dict)
    url: str | None = None  # set when the gateway is served on loopback
    token: str = SANDBOX_TOKEN

    def client(self) -> MarketplaceClient:
        if self.url is not None:
            return loopback_client(self.url, self.token, **self.limits)
        return client_for(self.gateway, self.token, **self.limits)

    def sync(self, *, now: datetime | None = None, mass_deletion_reason: str | None = None) -> None:
        async def go() -> None:
            async with self.client() as client:
                await sync_contacts(
                    client,
                    self.warehouse,
                    full_refresh=True,
                    now=now,
                    mass_deletion_reason=mass_deletion_reason,
                )

        asyncio.run(go())

    def write(self, name: str, rows: Sequence[Sequence[Any]], **options: Any) -> Path:
        return write_export(self.folder / name, rows, **options)

    def plan(
        self,
        *paths: Path,
        include_updates: bool = False,
        now: datetime | None = None,
    ) -> reconcile.PlanSummary:
        run_id = f"run-{uuid.uuid4().hex[:8]}"
        load = reconcile.load_exports(self.warehouse, list(paths), "generic", run_id=run_id)
        return reconcile.make_plan(
            self.warehouse,
            run_id=run_id,
            export_key=load.export_key,
            include_updates=include_updates,
            now=now,
        )

    def apply(self, *, refresh: bool = True, **options: Any) -> pushback.ApplySummary:
        async def go() -> pushback.ApplySummary:
            async with self.client() as client:
                summary = await pushback.apply_plan(
                    client, self.warehouse, run_id="apply", **options
                )
                # As the pushback_results asset does: re-read what the plan has settled.
                settled = pushback.contacts_settled_by_plan(self.warehouse)
                if refresh and settled:
                    await refresh_contacts(client, self.warehouse, settled)
                return summary

        return asyncio.run(go())

    def actions(self) -> set[tuple[str, str]]:
        return {(r["action"], r["email"]) for r in rows(self.warehouse, "reconciliation_plan")}

    def plan_rows(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["action"], r["email"]): r for r in rows(self.warehouse, "reconciliation_plan")}

    def ledger(self) -> dict[str, dict[str, Any]]:
        return {r["email"]: r for r in rows(self.warehouse, "pushback_results")}

    def truth(self) -> dict[str, dict[str, Any]]:
        return {c["email"].casefold(): c for c in self.sandbox.truth("contacts")}

    def contact(self, **where: Any) -> list[dict[str, Any]]:
        return [
            c
            for c in self.sandbox.truth("contacts")
            if all(c.get(k) == v for k, v in where.items())
        ]


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[World]:
    """40 contacts (34 Active, 6 Blocked by the platform: bounced, complained, administrator),
    synced into the warehouse."""
    sandbox = make_sandbox(contacts=40, seed=3, clock_speed=0.0)
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    folder = tmp_path / "exports"
    folder.mkdir()
    world = World(sandbox, Gateway(sandbox.app), warehouse, folder)
    world.sync()
    try:
        yield world
    finally:
        warehouse.dispose()


def write_export(
    path: Path,
    rows: Sequence[Sequence[Any]],
    *,
    header: Sequence[str] = HEADER,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> Path:
    """A CSV export; each row is (email, name, do_not_email, unsubscribed, hard_bounced) with
    flags as booleans (written true/false) or as the text to write."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    path.write_bytes(out.getvalue().encode(encoding))
    return path


def _cell(value: Any) -> str:
    if value is True:
        return "true"
    if value is False or value is None:
        return "false" if value is False else ""
    return str(value)


def line(email: str, name: str | None = None, *flags: str) -> tuple[Any, ...]:
    """A CRM line; flags among 'dne', 'unsub', 'bounced'."""
    return (email, name or "", "dne" in flags, "unsub" in flags, "bounced" in flags)


def rows(warehouse: Warehouse, table: str) -> list[dict[str, Any]]:
    with warehouse.transaction() as tx:
        result = tx.connection.exec_driver_sql(f"select * from {table}")
        return [_plain(dict(r)) for r in result.mappings()]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    # JSON columns come back as text from DuckDB and decoded from PostgreSQL.
    for key in ("field_errors", "guards_tripped", "overrides", "export_files"):
        if isinstance(row.get(key), str):
            row[key] = orjson.loads(row[key])
    return row


def snapshot(warehouse: Warehouse) -> dict[str, list[dict[str, Any]]]:
    """The planning tables, sorted, for before/after comparisons."""
    return {t: sorted(rows(warehouse, t), key=repr) for t in PLAN_TABLES}


def actives(world: World) -> list[dict[str, Any]]:
    return world.contact(status="Active")


def blocked_by_platform(world: World) -> dict[str, dict[str, Any]]:
    return {c["blockedReason"]: c for c in world.contact(status="Blocked")}
