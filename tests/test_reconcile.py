"""Reconciliation and push-back against the sandbox and real warehouses (a DuckDB file and a
fresh PostgreSQL database per test): each planning rule on small hand-written exports, the
reports, the guards, stable action keys, rejected lines, unreadable files, a messy corpus,
and the apply: outcomes in the ledger, retries, ambiguous creates, refreshed contacts."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import io
import time
import types
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import orjson
import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database, make_sandbox

from connector.crm import CrmFileError
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import pushback, reconcile
from connector.pipelines.sync import refresh_contacts, sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse, WarehouseBusyError
from sandbox.app import Sandbox
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
    will not accept (a 400 problem with field errors)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, int]] = []
        self.refused: set[str] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
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

    def sent(self, method: str, suffix: str = "") -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] == method and r[1].endswith(suffix)]


def client_for(app: Any, **limits: Any) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(**{**FAST, **limits}),
        transport=httpx.ASGITransport(app=app),
    )


def loopback_client(url: str, **limits: Any) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url=url, token=Secret(SANDBOX_TOKEN)),
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

    def client(self) -> MarketplaceClient:
        if self.url is not None:
            return loopback_client(self.url, **self.limits)
        return client_for(self.gateway, **self.limits)

    def sync(self, *, now: datetime | None = None) -> None:
        async def go() -> None:
            async with self.client() as client:
                await sync_contacts(client, self.warehouse, full_refresh=True, now=now)

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


# --- the rules ----------------------------------------------------------------------------


def test_create_only_for_a_mailable_email_no_platform_contact_has(world: World) -> None:
    # A platform contact with an internationalised domain, created before the sync.
    world.sandbox.marketplace.create_contact({"email": "Ann@Bücher.de", "name": "Ann Idn"})
    world.sync()
    known = actives(world)[0]
    path = world.write(
        "crm.csv",
        [
            line("New.Person@Example.org", "New Person"),
            line("flagged.stranger@example.org", "Flagged Stranger", "dne"),
            line("bounced.stranger@example.org", "Bounced Stranger", "bounced"),
            # The same addresses as the platform's, written differently: no create.
            line(f"  {known['email'].upper()}  ", known["name"]),
            line("ann@BÜCHER.DE", "Ann Idn"),
            line("ANN@xn--bcher-kva.de ", "Ann Idn"),
        ],
    )

    plan = world.plan(path)

    assert world.actions() == {("create", "new.person@example.org")}
    assert plan.actions == {"create": 1, "block": 0, "unblock": 0, "update": 0}
    row = world.plan_rows()[("create", "new.person@example.org")]
    assert row["contact_id"] is None
    assert row["name"] == "New Person"
    assert (row["source_file"], row["line"]) == ("crm.csv", 2)
    assert "mailable" in row["reason"] and "no platform contact" in row["reason"]


def test_block_a_flagged_contact_only_while_it_is_active(world: World) -> None:
    # The fixture's premise: Active contacts, and platform blocks of every kind.
    assert len(actives(world)) == 34 and world.warehouse.count("contacts") == 40
    assert set(blocked_by_platform(world)) == {"Bounced", "Complained", "Blocked by administrator"}
    dne, unsub, bounced, fine = actives(world)[:4]
    platform_blocked = blocked_by_platform(world)["Complained"]
    path = world.write(
        "crm.csv",
        [
            line(dne["email"], dne["name"], "dne"),
            line(unsub["email"], unsub["name"], "unsub"),
            line(bounced["email"].title(), bounced["name"], "bounced"),
            line(fine["email"], fine["name"]),
            # Already blocked by the platform: nothing to do.
            line(platform_blocked["email"], platform_blocked["name"], "dne", "unsub"),
        ],
    )

    world.plan(path)

    plan = world.plan_rows()
    assert set(plan) == {("block", c["email"]) for c in (dne, unsub, bounced)}
    assert {k[1]: r["contact_id"] for k, r in plan.items()} == {
        c["email"]: c["id"] for c in (dne, unsub, bounced)
    }
    assert "do-not-email" in plan[("block", dne["email"])]["reason"]
    assert "unsubscribed" in plan[("block", unsub["email"])]["reason"]
    assert "hard-bounced" in plan[("block", bounced["email"])]["reason"]
    assert all("platform contact is Active" in r["reason"] for r in plan.values())


def test_unblock_only_a_contact_this_connector_blocked(world: World) -> None:
    target = actives(world)[0]
    platform_blocked = blocked_by_platform(world)
    first = world.write("week1.csv", [line(target["email"], target["name"], "unsub")])
    world.plan(first)
    assert world.actions() == {("block", target["email"])}
    world.apply()
    assert world.sandbox.marketplace.contacts.get(target["id"])["status"] == "Blocked"

    # The CRM says everyone is mailable again, including the platform's own blocks
    # (bounced, complained, blocked by an administrator).
    everyone = [target, *platform_blocked.values()]
    second = world.write("week2.csv", [line(c["email"], c["name"]) for c in everyone])
    world.plan(second)

    plan = world.plan_rows()
    assert set(plan) == {("unblock", target["email"])}
    assert plan[("unblock", target["email"])]["contact_id"] == target["id"]
    assert "this connector blocked" in plan[("unblock", target["email"])]["reason"]

    world.apply()
    assert world.sandbox.marketplace.contacts.get(target["id"])["status"] == "Active"
    for reason, contact in platform_blocked.items():
        assert world.sandbox.marketplace.contacts.get(contact["id"])["status"] == "Blocked", reason

    # Once unblocked, the same mailable export plans nothing more.
    third = world.write("week3.csv", [line(c["email"], c["name"]) for c in everyone])
    world.plan(third)
    assert world.actions() == set()


def test_never_unblock_a_platform_block_that_followed_ours(world: World) -> None:
    """The connector blocked the contact; later someone unblocked it on the platform and the
    platform blocked it again because it bounced. That block is the platform's own."""
    target = actives(world)[0]
    world.plan(world.write("week1.csv", [line(target["email"], target["name"], "dne")]))
    world.apply()
    store = world.sandbox.marketplace
    store.set_blocked(target["id"], False)
    store.set_blocked(target["id"], True, "Bounced")
    world.sync()
    synced = {r["id"]: r for r in rows(world.warehouse, "contacts")}[target["id"]]
    assert (synced["status"], synced["blocked_reason"]) == ("Blocked", "Bounced")

    world.plan(world.write("week2.csv", [line(target["email"], target["name"])]))

    assert world.actions() == set()


def test_the_most_restrictive_line_wins_and_the_conflict_is_reported(world: World) -> None:
    twice, same_twice = actives(world)[:2]
    first = world.write(
        "a.csv",
        [
            line(twice["email"], twice["name"]),
            line("stranger@example.org", "Stranger"),
            line(same_twice["email"], same_twice["name"]),
        ],
    )
    second = world.write(
        "b.csv",
        [
            line("Stranger@Example.org", "Stranger", "unsub"),
            line(twice["email"].upper(), twice["name"], "dne"),
            line(same_twice["email"], same_twice["name"]),
        ],
    )

    plan = world.plan(first, second)

    # Do-not-email beats subscribed: a block, decided by b.csv line 3; the stranger who
    # unsubscribed in one export is not created from the other.
    assert world.actions() == {("block", twice["email"])}
    row = world.plan_rows()[("block", twice["email"])]
    assert (row["source_file"], row["line"]) == ("b.csv", 3)
    conflicts = {r["email"]: r for r in rows(world.warehouse, "crm_conflicts")}
    assert set(conflicts) == {twice["email"], "stranger@example.org"}
    assert conflicts[twice["email"]]["lines"] == "a.csv:2, b.csv:3"
    assert conflicts["stranger@example.org"]["lines"] == "a.csv:3, b.csv:2"
    assert all("most restrictive wins" in r["resolution"] for r in conflicts.values())
    assert plan.conflicts == 2


def test_name_updates_only_when_asked(world: World) -> None:
    renamed, same = actives(world)[:2]
    path = world.write(
        "crm.csv",
        [line(renamed["email"], "Completely New Name"), line(same["email"], same["name"])],
    )

    world.plan(path)
    assert world.actions() == set()

    plan = world.plan(path, include_updates=True)
    assert world.actions() == {("update", renamed["email"])}
    assert plan.actions["update"] == 1
    row = world.plan_rows()[("update", renamed["email"])]
    assert row["contact_id"] == renamed["id"]
    assert row["name"] == "Completely New Name"
    assert renamed["name"] in row["reason"]

    world.apply()
    assert world.sandbox.marketplace.contacts.get(renamed["id"])["name"] == "Completely New Name"
    assert world.ledger()[renamed["email"]]["state"] == "done"


def test_platform_contacts_missing_from_the_crm_are_reported_and_never_deleted(
    world: World,
) -> None:
    listed = actives(world)[:5]
    flagged = actives(world)[5]
    path = world.write(
        "crm.csv",
        [*(line(c["email"], c["name"]) for c in listed), line(flagged["email"], None, "dne")],
    )

    plan = world.plan(path)

    missing = {
        r["contact_id"]: r for r in rows(world.warehouse, "platform_contacts_missing_from_crm")
    }
    expected = {c["id"] for c in actives(world)} - {c["id"] for c in [*listed, flagged]}
    assert set(missing) == expected
    assert plan.missing_from_crm == len(expected) == 28
    assert {r["status"] for r in missing.values()} == {"Active"}
    assert all(
        r["email"] == world.sandbox.marketplace.contacts.get(i)["email"] for i, r in missing.items()
    )
    assert {a for a, _ in world.actions()} == {"block"}

    before = {c["id"] for c in world.sandbox.truth("contacts")}
    world.apply()
    assert {c["id"] for c in world.sandbox.truth("contacts")} == before
    assert not world.gateway.sent("DELETE")


# --- guards -------------------------------------------------------------------------------


def guard_results(
    plan: reconcile.PlanSummary, overrides: Sequence[str] = (), **limits: Any
) -> dict[str, reconcile.GuardResult]:
    return {
        g.name: g for g in reconcile.evaluate_guards(plan, reconcile.Guards(**limits), overrides)
    }


def test_guards_trip_and_an_override_lets_only_its_own_guard_pass(world: World) -> None:
    active = actives(world)
    path = world.write(
        "crm.csv",
        [
            *(line(f"new{n}@example.org", f"New {n}") for n in range(3)),
            *(line(c["email"], c["name"], "dne") for c in active[:2]),
        ],
    )
    synced = datetime.now(UTC)
    world.sync(now=synced)
    plan = world.plan(path, now=synced + timedelta(minutes=30))
    assert plan.actions["create"] == 3 and plan.actions["block"] == 2
    assert plan.active_contacts == 34

    # Within every limit (limits are inclusive): all pass.
    ok = guard_results(
        plan, max_creates=3, max_block_share=2 / 34, max_snapshot_age=timedelta(hours=1)
    )
    assert all(g.passed and g.allows_apply and not g.overridden for g in ok.values())

    # The defaults: 2 blocks of 34 active contacts is 5.88%, over the 5% default.
    defaults = guard_results(plan)
    assert [n for n, g in defaults.items() if not g.passed] == ["max_block_share"]
    assert defaults["max_block_share"].figure == "5.88%"

    tripped = guard_results(
        plan, max_creates=2, max_block_share=0.05, max_snapshot_age=timedelta(minutes=29)
    )
    assert {n: g.passed for n, g in tripped.items()} == {
        "max_creates": False,
        "max_block_share": False,
        "max_snapshot_age": False,
    }
    assert tripped["max_creates"].message == "3 creates planned (limit 2)"
    assert tripped["max_snapshot_age"].figure == "0:30:00"

    overridden = guard_results(
        plan,
        ["max_creates"],
        max_creates=2,
        max_block_share=0.05,
        max_snapshot_age=timedelta(minutes=29),
    )
    assert {n: (g.overridden, g.allows_apply) for n, g in overridden.items()} == {
        "max_creates": (True, True),
        "max_block_share": (False, False),
        "max_snapshot_age": (False, False),
    }
    # The overridden guard still reports that it tripped, with its figure.
    assert not overridden["max_creates"].passed and overridden["max_creates"].figure == "3"
    # Overriding a guard that passes changes nothing; an unknown guard is an error.
    assert not guard_results(plan, ["max_snapshot_age"])["max_snapshot_age"].overridden
    with pytest.raises(ValueError, match="max_blocks"):
        guard_results(plan, ["max_blocks"])


def test_snapshot_age_guard_trips_when_contacts_were_never_synced(
    warehouse_url: str, tmp_path: Path
) -> None:
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    try:
        path = write_export(tmp_path / "crm.csv", [line("a@example.org", "A")])
        load = reconcile.load_exports(warehouse, [path], "generic", run_id="r")
        plan = reconcile.make_plan(warehouse, run_id="r", export_key=load.export_key)
    finally:
        warehouse.dispose()
    assert plan.contacts_synced_at is None and plan.actions["create"] == 1
    age = guard_results(plan, max_snapshot_age=timedelta(days=365))["max_snapshot_age"]
    assert (age.passed, age.figure, age.message) == (
        False,
        "never synced",
        "contacts were never synced",
    )
    assert guard_results(plan, ["max_snapshot_age"])["max_snapshot_age"].allows_apply


# --- keys, rejected lines, unreadable files -------------------------------------------------


def test_action_keys_are_stable_for_the_same_export_and_new_for_another(world: World) -> None:
    active = actives(world)
    lines_ = [line("new@example.org", "New"), line(active[0]["email"], None, "dne")]
    path = world.write("crm.csv", lines_)

    world.plan(path)
    first = {
        (r["action"], r["email"]): r["action_key"]
        for r in rows(world.warehouse, "reconciliation_plan")
    }
    world.plan(path)
    again = {
        (r["action"], r["email"]): r["action_key"]
        for r in rows(world.warehouse, "reconciliation_plan")
    }
    assert first == again and len(first) == 2
    assert len(set(first.values())) == 2

    world.write("crm.csv", [*lines_, line("another@example.org", "Another")])
    world.plan(path)
    changed = {
        (r["action"], r["email"]): r["action_key"]
        for r in rows(world.warehouse, "reconciliation_plan")
    }
    assert set(first) < set(changed)
    assert all(changed[k] != first[k] for k in first)


def test_every_bad_line_lands_in_crm_rejected_rows_with_file_line_and_reason(
    world: World,
) -> None:
    path = world.write(
        "crm.csv",
        [
            line("good@example.org", "Good"),
            line("", "No Email"),
            line("not-an-email", "Bad"),
            line("two@@example.org", "Two Ats"),
            ("extra@example.org", "Extra", "false", "false", "false", "surplus"),
            line("also.good@example.org", "Also Good"),
        ],
    )
    other = world.write(
        "other.csv", [line("x@example", "No Dot"), line("fine@example.org", "Fine")]
    )

    world.plan(path, other)

    rejected = {
        (r["source_file"], r["line"]): r for r in rows(world.warehouse, "crm_rejected_rows")
    }
    assert {k: r["kind"] for k, r in rejected.items()} == {
        ("crm.csv", 3): "missing email",
        ("crm.csv", 4): "invalid email",
        ("crm.csv", 5): "invalid email",
        ("crm.csv", 6): "unreadable line",
        ("other.csv", 2): "invalid email",
    }
    assert all(r["reason"].startswith(r["kind"]) for r in rejected.values())
    assert "not-an-email" in rejected[("crm.csv", 4)]["reason"]
    assert "too many fields" in rejected[("crm.csv", 6)]["reason"]
    assert "surplus" in rejected[("crm.csv", 6)]["raw"]
    assert {(r["source_file"], r["line"]) for r in rows(world.warehouse, "crm_contacts")} == {
        ("crm.csv", 2),
        ("crm.csv", 7),
        ("other.csv", 3),
    }
    assert world.actions() == {
        ("create", "good@example.org"),
        ("create", "also.good@example.org"),
        ("create", "fine@example.org"),
    }


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


UNREADABLE = {
    "png": (PNG, "this is a PNG image, not a CSV export"),
    "binary": (b"\x00\x01\x02\xff\xfe" * 200, "binary data"),
    "no email column": (b"Name,Phone\r\nAnn,123\r\n", "no email column"),
}


def test_an_unreadable_file_names_itself_and_changes_nothing(world: World) -> None:
    good = world.write("crm.csv", [line("good@example.org", "Good"), line("", "Bad")])
    world.plan(good)
    before = snapshot(world.warehouse)
    assert before["crm_contacts"] and before["crm_rejected_rows"] and before["reconciliation_plan"]

    newer = world.write("newer.csv", [line("newer@example.org", "Newer"), line("x", "Bad")])
    for kind, (data, problem) in UNREADABLE.items():
        junk = world.folder / f"export-{kind.replace(' ', '-')}.csv"
        junk.write_bytes(data)
        with pytest.raises(CrmFileError) as caught:
            # The good file is read (and staged) before the junk one.
            world.plan(newer, junk)

        assert caught.value.path == str(junk), kind
        assert str(caught.value).startswith(f"{junk}: "), kind
        assert problem in str(caught.value), kind
        assert snapshot(world.warehouse) == before, kind


def test_a_messy_corpus_plans_the_good_lines_and_rejects_the_bad_ones(world: World) -> None:
    active = actives(world)
    a, b, c, d, e = active[:5]
    platform_blocked = blocked_by_platform(world)["Bounced"]
    files: list[Path] = []

    # Salesforce report export, UTF-8 with BOM, quoted name over two lines, CRLF.
    sf = world.folder / "salesforce.csv"
    sf.write_bytes(
        codecs.BOM_UTF8
        + (
            '"Contact ID","First Name","Last Name","Email","Email Opt Out",'
            '"Email Bounced Reason"\r\n'
            f'"003A","A","A","{a["email"].upper()}","0",""\r\n'
            f'"003B","Zoë","Ünal","zoe.unal@example.org","0",""\r\n'
            '"003C","Multi","Line\r\nName","multi.line@example.org","0",""\r\n'
            f'"003D","B","B","{b["email"]}","1",""\r\n'
            '"003E","No","Mail","","0",""\r\n'
            f'"003F","Dup","Dup","dup.new@example.org","0",""\r\n'
        ).encode()
    )
    files.append(sf)
    # HubSpot-like export in Windows-1252 with semicolons, a broken line and a duplicate.
    hub = world.folder / "hubspot.csv"
    hub.write_bytes(
        (
            "Email;First Name;Last Name;Unsubscribed from all email;Email hard bounce reason\r\n"
            f"{c['email']};C;C;true;\r\n"
            "josé.garcía@example.org;José;García;false;\r\n"
            "rene@exämple.org;René;Exämple;false;\r\n"
            "broken@example.org;Too;Many;false;;x;y\r\n"
            "dup.new@example.org;Dup;Dup;true;\r\n"
            f"{platform_blocked['email']};Was;Bounced;false;\r\n"
        ).encode("cp1252")
    )
    files.append(hub)
    # A tab-separated generic list with an unterminated quote at the end.
    tab = world.folder / "list.txt"
    tab.write_bytes(
        (
            "E-mail\tFull Name\tHard Bounced\n"
            f"{d['email']}\tD D\tyes\n"
            "tabbed.new@example.org\tTabbed New\tno\n"
            'quote@example.org\t"Unterminated\tno\n'
        ).encode()
    )
    files.append(tab)
    # An Excel workbook (Dynamics-style labels).
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Full Name", "Email", "Do not allow Emails"])
    sheet.append([e["name"], e["email"], "Do Not Allow"])
    sheet.append(["Excel New", "excel.new@example.org", "Allow"])
    sheet.append(["Excel Bad", "excel bad@example.org", "Allow"])
    xlsx = world.folder / "dynamics.xlsx"
    book.save(xlsx)
    files.append(xlsx)

    run_id = "messy"
    load = reconcile.load_exports(world.warehouse, files, "auto", run_id=run_id)
    plan = reconcile.make_plan(world.warehouse, run_id=run_id, export_key=load.export_key)

    assert {s["file"]: s["mapping"] for s in load.summaries} == {
        "salesforce.csv": "salesforce",
        "hubspot.csv": "hubspot",
        "list.txt": "generic",
        "dynamics.xlsx": "dynamics365",
    }
    rejected = {
        (r["source_file"], r["line"]): r["kind"] for r in rows(world.warehouse, "crm_rejected_rows")
    }
    assert rejected == {
        ("salesforce.csv", 7): "missing email",
        ("hubspot.csv", 5): "unreadable line",
        ("list.txt", 4): "unreadable line",
        ("dynamics.xlsx", 4): "invalid email",
    }
    assert load.rejected == 4
    good = {
        (r["source_file"], r["line"]): r["email"] for r in rows(world.warehouse, "crm_contacts")
    }
    assert good == {
        ("salesforce.csv", 2): a["email"],
        ("salesforce.csv", 3): "zoe.unal@example.org",
        ("salesforce.csv", 4): "multi.line@example.org",
        ("salesforce.csv", 6): b["email"],
        ("salesforce.csv", 8): "dup.new@example.org",
        ("hubspot.csv", 2): c["email"],
        # RFC 6531: a non-ASCII part before the @ is a valid address.
        ("hubspot.csv", 3): "josé.garcía@example.org",
        ("hubspot.csv", 4): "rene@xn--exmple-cua.org",
        ("hubspot.csv", 6): "dup.new@example.org",
        ("hubspot.csv", 7): platform_blocked["email"],
        ("list.txt", 2): d["email"],
        ("list.txt", 3): "tabbed.new@example.org",
        ("dynamics.xlsx", 2): e["email"],
        ("dynamics.xlsx", 3): "excel.new@example.org",
    }
    assert load.rows == len(good)
    names = {r["email"]: r["name"] for r in rows(world.warehouse, "crm_contacts")}
    assert names["zoe.unal@example.org"] == "Zoë Ünal"
    assert names["multi.line@example.org"] == "Multi Line Name"

    # dup.new@example.org unsubscribed in one export: not created. The platform's own
    # bounce block stays. Everything else that is new and mailable is created once.
    assert world.actions() == {
        ("create", "zoe.unal@example.org"),
        ("create", "josé.garcía@example.org"),
        ("create", "rene@xn--exmple-cua.org"),
        ("create", "multi.line@example.org"),
        ("create", "tabbed.new@example.org"),
        ("create", "excel.new@example.org"),
        ("block", b["email"]),
        ("block", c["email"]),
        ("block", d["email"]),
        ("block", e["email"]),
    }
    assert plan.conflicts == 1

    world.limits["max_concurrency"] = 4
    summary = world.apply()
    assert summary.outcomes == Counter(done=10)
    truth = world.truth()
    created = (
        "zoe.unal@example.org",
        "josé.garcía@example.org",
        "rene@xn--exmple-cua.org",
        "multi.line@example.org",
        "tabbed.new@example.org",
        "excel.new@example.org",
    )
    for email in created:
        assert truth[email]["status"] == "Active"
    for contact in (b, c, d, e):
        assert truth[contact["email"]]["status"] == "Blocked"
    assert len(truth) == 46 and "dup.new@example.org" not in truth


# --- apply ----------------------------------------------------------------------------------


def ledger_requests(world: World, start: int) -> list[tuple[str, str, int]]:
    return world.gateway.requests[start:]


def test_apply_records_every_outcome_and_never_sends_a_settled_action_again(
    world: World,
) -> None:
    a, b, gone = actives(world)[:3]
    world.gateway.refused.add("refused@suppressed.example")
    path = world.write(
        "crm.csv",
        [
            line("new.one@example.org", "New One"),
            line("New.Two@Example.org", "New Two"),
            line("refused@suppressed.example", "Refused"),
            line(a["email"], a["name"], "dne"),
            line(b["email"], b["name"], "bounced"),
            line(gone["email"], gone["name"], "unsub"),
        ],
    )
    world.plan(path)
    planned = {r["action_key"]: r for r in rows(world.warehouse, "reconciliation_plan")}
    assert len(planned) == 6
    # Deleted on the platform after the plan was made.
    world.sandbox.marketplace.delete_contact(gone["id"])

    summary = world.apply(refresh=False)

    assert summary.outcomes == Counter(done=4, rejected=2)
    assert summary.skipped == 0
    ledger = world.ledger()
    assert set(ledger) == {r["email"] for r in planned.values()}
    assert {r["action_key"] for r in ledger.values()} == set(planned)
    truth = world.truth()
    for email in ("new.one@example.org", "new.two@example.org"):
        row = ledger[email]
        assert (row["action"], row["state"], row["attempts"]) == ("create", "done", 1)
        assert row["contact_id"] == truth[email]["id"]
        assert row["done_at"] is not None and row["first_attempt_at"] is not None
        assert row["http_status"] is None and row["problem_title"] is None
        assert row["run_id"] == "apply"
    for contact in (a, b):
        row = ledger[contact["email"]]
        assert (row["action"], row["state"], row["contact_id"]) == ("block", "done", contact["id"])
        assert truth[contact["email"]]["status"] == "Blocked"

    refused = ledger["refused@suppressed.example"]
    assert refused["state"] == "rejected" and refused["done_at"] is None
    assert (refused["http_status"], refused["problem_title"], refused["problem_detail"]) == (
        400,
        "Bad Request",
        "One or more validation errors occurred.",
    )
    assert refused["field_errors"] == {
        "email": ["This address is on the platform's suppression list."]
    }
    assert "refused@suppressed.example" not in truth
    missing = ledger[gone["email"]]
    # Block answers an unknown id with 400 "not found" (its published responses are 200 and
    # 400); the client calls that ContactGoneError: final, not retried.
    assert (missing["state"], missing["http_status"], missing["problem_title"]) == (
        "rejected",
        400,
        "Bad Request",
    )
    assert missing["problem_detail"] == f"Contact {gone['id']} was not found."

    # Each action went out once; nothing was created twice.
    assert len(world.gateway.sent("POST", "/contacts")) == 3
    assert len(world.gateway.sent("POST", "/block")) == 3
    assert Counter(c["email"] for c in world.sandbox.truth("contacts"))["new.two@example.org"] == 1

    # Again: every action is settled (done or rejected for good), so nothing is sent; the
    # settled contacts are only read again.
    sent_before = len(world.gateway.requests)
    again = world.apply()
    assert again.outcomes == Counter() and again.skipped == 6
    assert [r for r in world.gateway.requests[sent_before:] if r[0] != "GET"] == []
    assert world.ledger() == ledger


def test_refresh_contacts_shows_what_the_apply_changed(world: World) -> None:
    a = actives(world)[0]
    path = world.write(
        "crm.csv", [line("fresh@example.org", "Fresh"), line(a["email"], None, "dne")]
    )
    world.plan(path)

    async def go() -> pushback.ApplySummary:
        async with world.client() as client:
            return await pushback.apply_plan(client, world.warehouse, run_id="r")

    summary = asyncio.run(go())
    created = world.truth()["fresh@example.org"]
    assert sorted(summary.touched_contacts) == sorted([created["id"], a["id"]])
    table = {r["id"]: r for r in rows(world.warehouse, "contacts")}
    assert created["id"] not in table and table[a["id"]]["status"] == "Active"

    async def refresh() -> None:
        async with world.client() as client:
            await refresh_contacts(client, world.warehouse, summary.touched_contacts)

    asyncio.run(refresh())
    table = {r["id"]: r for r in rows(world.warehouse, "contacts")}
    assert (table[created["id"]]["email"], table[created["id"]]["status"]) == (
        "fresh@example.org",
        "Active",
    )
    assert table[created["id"]]["email_key"] == "fresh@example.org"
    assert (table[a["id"]]["status"], table[a["id"]]["blocked_reason"]) == (
        "Blocked",
        "Blocked by API",
    )
    assert len(table) == 41
    # With the table current, the same export plans nothing more.
    world.plan(path)
    assert world.actions() == set()


def test_retryable_failures_are_sent_again_on_the_next_apply(world: World) -> None:
    active = actives(world)
    path = world.write(
        "crm.csv",
        [
            *(line(f"retry{n}@example.org", f"Retry {n}") for n in range(3)),
            *(line(c["email"], c["name"], "unsub") for c in active[:5]),
        ],
    )
    world.plan(path)
    world.limits.update(max_attempts=1, max_concurrency=1)
    with served(world.gateway, world.sandbox) as url:
        world.url = url
        world.sandbox.behaviour.update({"faults": "error=0.5"})
        first = world.apply(refresh=False)
        after_first = world.ledger()
        states = Counter(r["state"] for r in after_first.values())
        # Half the answers were server errors: some actions are done, the rest wait.
        assert states["done"] and states["retry"] and states["done"] < 8
        assert set(states) <= {"done", "retry", "ambiguous"}
        assert sum(first.outcomes.values()) == 8
        for row in after_first.values():
            if row["state"] == "retry":
                assert row["http_status"] in (500, 502, 503, 504)
                assert row["problem_title"] == "Server Error"
            if row["action"] == "block" and row["state"] != "done":
                assert row["state"] == "retry"

        world.sandbox.behaviour.update({"faults": None})
        start = len(world.gateway.requests)
        second = world.apply(refresh=False)
        sent = world.gateway.requests[start:]

    assert second.skipped == states["done"]
    assert second.outcomes == Counter(done=8 - states["done"])
    # Only the pending actions were sent; the done ones were skipped.
    pending = {e: r for e, r in after_first.items() if r["state"] != "done"}
    blocked_paths = {p.rsplit("/", 2)[-2] for m, p, _ in sent if p.endswith("/block")}
    assert blocked_paths == {r["contact_id"] for r in pending.values() if r["action"] == "block"}
    # A pending create is looked up, then sent (the injected errors never reached the API).
    pending_creates = [r for r in pending.values() if r["action"] == "create"]
    contacts = "/public/v1/notifications/contacts"
    assert Counter((m, p) for m, p, _ in sent if p == contacts) == {
        ("GET", contacts): len(pending_creates),
        ("POST", contacts): len(pending_creates),
    }
    ledger = world.ledger()
    assert {r["state"] for r in ledger.values()} == {"done"}
    for email, row in ledger.items():
        expected = 1 if after_first[email]["state"] == "done" else 2
        assert row["attempts"] == expected, email
    truth = Counter(c["email"] for c in world.sandbox.truth("contacts"))
    assert all(truth[f"retry{n}@example.org"] == 1 for n in range(3))
    statuses = world.truth()
    assert all(statuses[c["email"]]["status"] == "Blocked" for c in active[:5])


@pytest.mark.parametrize(
    ("fault", "landed"),
    [("slow", True), ("drop", False)],
    ids=["slow-answer-landed", "dropped-before-landing"],
)
def test_an_ambiguous_create_is_looked_up_before_it_is_sent_again(
    world: World, fault: str, landed: bool
) -> None:
    email = "o.brien+news@example.org"
    world.plan(world.write("crm.csv", [line(email, "O Brien")]))
    (action_key,) = [r["action_key"] for r in rows(world.warehouse, "reconciliation_plan")]
    world.limits.update(max_attempts=2, timeout=0.4)
    with served(world.gateway, world.sandbox) as url:
        world.url = url
        world.sandbox.behaviour.update({"faults": f"{fault}=1", "slow_seconds": 0.8})
        first = world.apply(refresh=False)
        assert first.outcomes == Counter(ambiguous=1)
        row = world.ledger()[email]
        assert (row["action_key"], row["state"], row["attempts"]) == (action_key, "ambiguous", 1)
        assert row["contact_id"] is None and row["done_at"] is None

        world.sandbox.behaviour.update({"faults": None})
        if landed:
            # The slow answer's work is done on the server once its delay has passed.
            for _ in range(100):
                if email in world.truth():
                    break
                time.sleep(0.05)
            assert email in world.truth()
        else:
            assert email not in world.truth()
        start = len(world.gateway.requests)
        second = world.apply(refresh=False)
        sent = [(m, p) for m, p, _ in world.gateway.requests[start:]]

    assert second.outcomes == Counter(done=1)
    contacts = "/public/v1/notifications/contacts"
    # The email is looked up first; it is sent only when no contact has it.
    assert sent == ([("GET", contacts)] if landed else [("GET", contacts), ("POST", contacts)])
    matching = [c for c in world.sandbox.truth("contacts") if c["email"].casefold() == email]
    assert len(matching) == 1
    row = world.ledger()[email]
    assert (row["state"], row["attempts"], row["contact_id"]) == ("done", 2, matching[0]["id"])


def test_contacts_reflect_actions_done_by_an_apply_that_stopped_before_its_refresh(
    world: World,
) -> None:
    a = actives(world)[0]
    world.plan(
        world.write("crm.csv", [line("late@example.org", "Late"), line(a["email"], None, "dne")])
    )
    world.apply(refresh=False)  # the run stops here, before it re-reads the contacts
    world.apply()  # the retried run, as the pushback_results asset runs it

    table = {r["email"]: r for r in rows(world.warehouse, "contacts")}
    assert table[a["email"]]["status"] == "Blocked"
    assert "late@example.org" in table


# --- protections added after review -----------------------------------------------------------


def test_two_applies_at_once_send_each_action_once(world: World) -> None:
    a, b = actives(world)[:2]
    world.plan(
        world.write(
            "crm.csv",
            [
                line("twice.one@example.org", "One"),
                line("twice.two@example.org", "Two"),
                line(a["email"], None, "dne"),
                line(b["email"], None, "unsub"),
            ],
        )
    )

    async def both() -> list[Any]:
        async with world.client() as first, world.client() as second:
            return list(
                await asyncio.gather(
                    pushback.apply_plan(first, world.warehouse, run_id="a"),
                    pushback.apply_plan(second, world.warehouse, run_id="b"),
                    return_exceptions=True,
                )
            )

    results = asyncio.run(both())

    # One apply ran; the other was refused before it claimed or sent anything.
    done = [r for r in results if isinstance(r, pushback.ApplySummary)]
    refused = [r for r in results if isinstance(r, WarehouseBusyError)]
    assert len(done) == 1 and len(refused) == 1, results
    assert done[0].sent == 4
    assert len(world.gateway.sent("POST", "/contacts")) == 2
    assert len(world.gateway.sent("POST", "/block")) == 2
    assert {r["state"] for r in world.ledger().values()} == {"done"}


def test_an_apply_in_another_process_holding_the_postgres_lock_refuses_this_one(
    postgres_url: str,
) -> None:
    holder = Warehouse(postgres_url)
    other = Warehouse(postgres_url)
    with holder.exclusive("pushback"):
        # Another process has only its own session: the advisory lock is what refuses it.
        with other.engine.connect() as session:
            taken = session.execute(
                sa.text("select pg_try_advisory_lock(hashtext('notifsync:pushback'))")
            ).scalar()
        assert taken is False
    with other.engine.connect() as session:
        taken = session.execute(
            sa.text("select pg_try_advisory_lock(hashtext('notifsync:pushback'))")
        ).scalar()
        assert taken is True


def test_a_create_pending_under_an_older_export_is_looked_up_before_a_new_export_sends_it(
    world: World,
) -> None:
    first = world.write("week1.csv", [line("landed@example.org", "Landed")])
    world.plan(first)
    # The first export's create landed, but its answer was lost (the ledger says ambiguous).
    world.sandbox.marketplace.create_contact({"email": "landed@example.org", "name": "Landed"})
    with world.warehouse.transaction() as tx:
        key = tx.scalar("select action_key from reconciliation_plan")
        tx.connection.exec_driver_sql(
            "insert into pushback_results (action_key, action, email, state, attempts) "
            f"values ('{key}', 'create', 'landed@example.org', 'ambiguous', 1)"
        )
    # A new export (different content, so different action keys) still lists the person.
    second = world.write(
        "week2.csv", [line("landed@example.org", "Landed"), line("other@example.org", "Other")]
    )
    world.plan(second)
    world.apply()

    creates = world.gateway.sent("POST", "/contacts")
    assert [c for c in creates if c[2] == 201] == creates  # no 409: nothing sent blind
    assert len(creates) == 1  # only other@example.org
    emails = [c["email"] for c in world.sandbox.truth("contacts")]
    assert emails.count("landed@example.org") == 1


def test_an_unblock_is_not_sent_when_the_contact_changed_after_the_plan(world: World) -> None:
    target = actives(world)[0]
    world.plan(world.write("week1.csv", [line(target["email"], target["name"], "dne")]))
    world.apply()
    world.sync()
    world.plan(world.write("week2.csv", [line(target["email"], target["name"])]))
    assert world.actions() == {("unblock", target["email"])}
    # Between plan and apply someone unblocks it and the platform blocks it for a bounce.
    store = world.sandbox.marketplace
    store.set_blocked(target["id"], False)
    world.sandbox.clock.advance(1)
    store.set_blocked(target["id"], True, "Bounced")

    summary = world.apply()

    assert summary.outcomes == Counter({"rejected": 1})
    assert world.gateway.sent("POST", "/unblock") == []
    assert store.contacts.get(target["id"])["blockedReason"] == "Bounced"
    (entry,) = [r for r in world.ledger().values() if r["action"] == "unblock"]
    assert "changed since this connector blocked it" in entry["problem_title"]
