"""The sync functions against the sandbox and real warehouses (a DuckDB file and a fresh
PostgreSQL database per test): complete loads, no-op re-runs, incremental changes, deletions,
churn, atomic failure, idempotent message windows, state kept in the warehouse, DuckDB and
PostgreSQL agreeing, and schema evolution."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import weakref
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, fresh_postgres_database, make_sandbox

from connector.errors import ConnectorError
from connector.evinotice.client import EviNoticeClient
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.marketplace.records import STATISTICS_PARTS, STATISTICS_WINDOWS
from connector.pipelines import sync
from connector.settings import SANDBOX_TOKEN, EviNoticeSettings, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse
from connector.warehouse.sql_files import read_sql
from connector.warehouse.tables import TABLE_NAMES, table
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


# --- warehouses ------------------------------------------------------------------------------


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A SQLAlchemy URL of an empty warehouse: a DuckDB file, or a fresh PostgreSQL database.

    PostgreSQL is not optional: when the server is unreachable these tests fail."""
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def open_warehouse() -> Iterator[Any]:
    """Factory: a ``Warehouse`` with its tables ensured, disposed at the end of the test."""
    opened: list[Warehouse] = []

    def open_(url: str, ensure: bool = True) -> Warehouse:
        warehouse = Warehouse(url)
        opened.append(warehouse)
        if ensure:
            warehouse.ensure_tables()
        return warehouse

    yield open_
    for warehouse in opened:
        warehouse.dispose()


@pytest.fixture
def warehouse(warehouse_url: str, open_warehouse: Any) -> Warehouse:
    return open_warehouse(warehouse_url)


# --- clients ---------------------------------------------------------------------------------


def marketplace_client(app: Any, **limits: Any) -> MarketplaceClient:
    return MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(**{**FAST, **limits}),
        transport=httpx.ASGITransport(app=app),
    )


def evinotice_client(sandbox: Sandbox) -> EviNoticeClient:
    config = sandbox.config
    settings = EviNoticeSettings(
        base_url="http://sandbox.local",
        username=config.evinotice_username,
        password=Secret(config.evinotice_password),
        site_id=config.evinotice_site_id,
    )
    return EviNoticeClient(
        settings, limits=ClientLimits(**FAST), transport=httpx.ASGITransport(app=sandbox.app)
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
    sandbox: Sandbox, warehouse: Warehouse, start: datetime, end: datetime
) -> sync.SyncResult:
    async def go() -> sync.SyncResult:
        async with marketplace_client(sandbox.app) as client:
            return await sync.sync_messages(client, warehouse, start, end)

    return run(go())


def sync_everything(
    sandbox: Sandbox, warehouse: Warehouse, *, full_refresh: bool = False
) -> dict[str, sync.SyncResult]:
    """Every collection, as the sync_platform job plus one messages range would."""

    async def go() -> dict[str, sync.SyncResult]:
        async with marketplace_client(sandbox.app) as client:
            results = {
                "contacts": await sync.sync_contacts(client, warehouse, full_refresh=full_refresh),
                "categories": await sync.sync_categories(client, warehouse),
                "batches": await sync.sync_batches(client, warehouse),
                "messages": await sync.sync_messages(client, warehouse, *ALL_MESSAGES),
            }
        async with evinotice_client(sandbox) as evi:
            results["evinotice_batches"] = await sync.sync_evinotice_batches(
                evi, warehouse, sandbox.config.evinotice_site_id
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


# --- a full sync -----------------------------------------------------------------------------


def test_full_sync_fills_every_table_with_the_truth(
    warehouse: Warehouse, warehouse_url: str
) -> None:
    sandbox = frozen_sandbox()
    results = sync_everything(sandbox, warehouse)

    assert results["contacts"].mode == "full"
    assert_contacts_match_truth(warehouse, sandbox)
    assert all(r["deleted_at"] is None for r in rows(warehouse, "contacts"))
    assert results["contacts"].counts["contacts"].inserted == 1500
    assert results["contacts"].api_count == results["contacts"].table_count == 1500

    categories = list(sandbox.truth("categories"))
    stored = by_id(rows(warehouse, "categories"))
    assert sorted(stored) == sorted(c["id"] for c in categories)
    for category in categories:
        row = stored[category["id"]]
        assert (row["name"], row["status"], row["opt_out_allowed"]) == (
            category["name"],
            category["status"],
            category["optOutAllowed"],
        )
        assert row["raw"] == category

    # One snapshot: each category's statistics, window by window, exactly as the API gave them.
    snapshots = rows(warehouse, "category_statistics_snapshots")
    assert len({r["snapshot_at"] for r in snapshots}) == 1
    assert {
        (r["category_id"], r["statistics_window"]): {p: r[p] for p in (*STATISTICS_PARTS, "total")}
        for r in snapshots
    } == {
        (c["id"], window): c["statistics"][window]
        for c in categories
        for window in STATISTICS_WINDOWS
    }
    assert len(snapshots) == 3 * len(categories)
    # The anchor-day batches make "today" non-empty, so the comparison above means something.
    assert sum(r["total"] for r in snapshots if r["statistics_window"] == "today") > 0

    batches = list(sandbox.truth("batches"))
    stored = by_id(rows(warehouse, "batches"))
    assert sorted(stored) == sorted(b["id"] for b in batches)
    for batch in batches:
        row = stored[batch["id"]]
        assert (row["category_id"], row["category_name"], row["subject"]) == (
            batch["category"]["id"],
            batch["category"]["name"],
            batch["subject"],
        )
        assert row["account_id"] == batch["account"]["id"]
        assert row["created_at"] == iso(at(batch, "created"))

    messages = list(sandbox.truth("messages"))
    assert len(messages) > 100
    stored = by_id(rows(warehouse, "messages"))
    assert sorted(stored) == sorted(m["id"] for m in messages)
    for message in messages:
        row = stored[message["id"]]
        assert (
            row["batch_id"],
            row["contact_id"],
            row["contact_email"],
            row["category_id"],
            row["status"],
            row["created_at"],
        ) == (
            message["batch"]["id"],
            message["contact"]["id"],
            message["contact"]["email"],
            message["category"]["id"],
            message["status"],
            iso(at(message, "created")),
        )
        assert "body" not in row["raw"]

    # The owner site's batches; the sandbox also holds a partner site's, which are not ours.
    site = sandbox.config.evinotice_site_id
    everything = list(sandbox.truth("evinotice-batches"))
    evinotice = [b for b in everything if b["SiteId"] == site]
    assert len(everything) > len(evinotice)
    stored = by_id(rows(warehouse, "evinotice_batches"))
    assert sorted(stored) == sorted(b["Id"] for b in evinotice)
    for batch in evinotice:
        row = stored[batch["Id"]]
        assert (
            row["state"],
            row["total_count"],
            row["sent_count"],
            row["failed_count"],
            row["created_at"],
            row["started_on"],
            row["processed_on"],
        ) == (
            batch["State"],
            batch["TotalCount"],
            batch["SentCount"],
            batch["FailedCount"],
            iso(batch["CreationDate"]),
            iso(batch["StartedOn"]),
            iso(batch["ProcessedOn"]),
        )
        assert row["progress_percentage"] == pytest.approx(batch["ProgressPercentage"], abs=0.011)
    assert {b["State"] for b in evinotice} >= {"Processed", "Draft"}

    for name, result in results.items():
        assert result.api_count == result.table_count, name
    # The cursor is the newest change the API had when the read began.
    # (created or updated: a contact never updated has no audit.updated)
    newest = max(at(c, e) or "" for c in sandbox.truth("contacts") for e in ("created", "updated"))
    assert state(warehouse)[sync.CONTACTS_CURSOR] == newest
    assert sync.CONTACTS_LAST_FULL_REFRESH in state(warehouse)


# --- a second run ----------------------------------------------------------------------------


def test_second_run_changes_nothing_that_did_not_change_upstream(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    sync_everything(sandbox, warehouse)
    before = {name: rows(warehouse, name) for name in TABLE_NAMES}

    results = sync_everything(sandbox, warehouse)

    assert results["contacts"].mode == "incremental"
    for result in results.values():
        for name, counts in result.counts.items():
            if name in MERGED:
                assert (counts.inserted, counts.updated, counts.deleted) == (0, 0, 0), name
    # Merged tables: not a single value rewritten, synced_at included.
    for name in MERGED:
        assert rows(warehouse, name) == before[name], name
    # Only the time of the last contacts sync moves; cursors stay where they were.
    after_state = state(warehouse)
    before_state = {r["name"]: r["value"] for r in before["sync_state"]}
    assert after_state.pop(sync.CONTACTS_SYNCED_AT) > before_state.pop(sync.CONTACTS_SYNCED_AT)
    assert after_state == before_state
    # Replaced tables: same content; snapshots: the old one untouched, an identical new one.
    for name in ("categories", "messages"):
        assert content(warehouse, name) == [
            {k: v for k, v in r.items() if k != "synced_at"} for r in before[name]
        ]
    snapshots = rows(warehouse, "category_statistics_snapshots")
    old = before["category_statistics_snapshots"]
    assert snapshots[: len(old)] == old
    new = snapshots[len(old) :]
    assert [{k: v for k, v in r.items() if k != "snapshot_at"} for r in new] == [
        {k: v for k, v in r.items() if k != "snapshot_at"} for r in old
    ]


def test_evinotice_progress_equals_the_api_figure(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=100)

    async def go() -> None:
        async with evinotice_client(sandbox) as evi:
            await sync.sync_evinotice_batches(evi, warehouse, sandbox.config.evinotice_site_id)

    run(go())
    truth = {b["Id"]: b["ProgressPercentage"] for b in sandbox.truth("evinotice-batches")}
    stored = {r["id"]: r["progress_percentage"] for r in rows(warehouse, "evinotice_batches")}
    assert stored == {i: truth[i] for i in stored}


def test_opt_out_rows_written_are_counted(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    result = sync_contacts(sandbox, warehouse)
    written = len(rows(warehouse, "contact_opt_outs"))
    assert written > 0
    assert result.counts["contact_opt_outs"].inserted == written


# --- changes between runs --------------------------------------------------------------------


def test_changes_between_runs_show_up_after_the_next_incremental_run(
    warehouse: Warehouse,
) -> None:
    sandbox = frozen_sandbox()
    store = sandbox.marketplace
    sync_everything(sandbox, warehouse)
    before = by_id(rows(warehouse, "contacts"))
    cursor = state(warehouse)[sync.CONTACTS_CURSOR]

    sandbox.clock.advance(3600)
    truth = list(sandbox.truth("contacts"))
    active = [c for c in truth if c["status"] == "Active"]
    renamed = next(c for c in active if not c["optOuts"])
    blocked = next(c for c in active if not c["optOuts"] and c is not renamed)
    opted = next(c for c in active if c["optOuts"])
    unblocked = next(c for c in truth if c["status"] == "Blocked")
    store.update_contact(
        renamed["id"],
        {"email": "renamed@example.test", "name": "Renamed Person", "optOuts": []},
    )
    store.set_blocked(blocked["id"], True, "Bounced")
    store.set_blocked(unblocked["id"], False)
    store.update_contact(opted["id"], {"email": opted["email"], "name": opted["name"]})
    created = store.create_contact(
        {
            "email": "new.person@example.test",
            "name": "New Person",
            "optOuts": [{"id": "NTC-0000-0001"}],
        }
    )

    result = sync_contacts(sandbox, warehouse)

    assert result.mode == "incremental"
    # Only what changed was read (plus the look-back window), not the whole collection.
    assert result.read is not None and result.read.rows < 100
    assert (result.counts["contacts"].inserted, result.counts["contacts"].updated) == (1, 4)
    assert_contacts_match_truth(warehouse, sandbox)
    after = by_id(rows(warehouse, "contacts"))
    assert after[renamed["id"]]["email"] == "renamed@example.test"
    assert after[blocked["id"]]["status"] == "Blocked"
    assert after[blocked["id"]]["blocked_reason"] == "Bounced"
    assert after[unblocked["id"]]["status"] == "Active"
    assert after[unblocked["id"]]["blocked_reason"] is None
    assert after[opted["id"]]["opt_out_count"] == 0
    assert after[created["id"]]["opt_out_count"] == 1
    assert not [r for r in rows(warehouse, "contact_opt_outs") if r["contact_id"] == opted["id"]]
    # Rows that did not change were not rewritten.
    changed = {renamed["id"], blocked["id"], unblocked["id"], opted["id"], created["id"]}
    for identifier, row in before.items():
        if identifier not in changed:
            assert after[identifier] == row, identifier
    assert state(warehouse)[sync.CONTACTS_CURSOR] > cursor


def test_deleted_contact_gets_deleted_at_on_full_refresh_and_is_kept(
    warehouse: Warehouse,
) -> None:
    sandbox = frozen_sandbox()
    sync_contacts(sandbox, warehouse)
    victim = list(sandbox.truth("contacts"))[42]
    kept_opt_outs = [
        r for r in rows(warehouse, "contact_opt_outs") if r["contact_id"] == victim["id"]
    ]
    sandbox.clock.advance(60)
    sandbox.marketplace.delete_contact(victim["id"])

    now = sandbox.clock.now()
    result = sync_contacts(sandbox, warehouse, full_refresh=True, now=now)

    assert result.mode == "full"
    assert result.counts["contacts"].deleted == 1
    stored = by_id(rows(warehouse, "contacts"))
    assert len(stored) == 1500  # nothing dropped
    assert stored[victim["id"]]["deleted_at"] == sync._now(now).isoformat()
    assert stored[victim["id"]]["email"] == victim["email"]
    assert [r for r in stored.values() if r["deleted_at"] is not None] == [stored[victim["id"]]]
    assert_contacts_match_truth(warehouse, sandbox)
    assert result.api_count == result.table_count == 1499
    # Its opt-outs stay with it, so the row remains whole.
    assert [
        r for r in rows(warehouse, "contact_opt_outs") if r["contact_id"] == victim["id"]
    ] == kept_opt_outs

    # A later full refresh keeps the first deletion time.
    sync_contacts(sandbox, warehouse, full_refresh=True, now=now + timedelta(hours=1))
    assert by_id(rows(warehouse, "contacts"))[victim["id"]]["deleted_at"] == (
        sync._now(now).isoformat()
    )


def test_incremental_run_notices_a_deletion_through_the_count(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    sync_contacts(sandbox, warehouse)
    victim = list(sandbox.truth("contacts"))[7]
    sandbox.marketplace.delete_contact(victim["id"])

    result = sync_contacts(sandbox, warehouse)

    # The incremental read cannot see a deletion; the API's count can, and a refresh follows.
    assert result.mode == "full"
    assert result.notes and "full refresh" in result.notes[0]
    assert by_id(rows(warehouse, "contacts"))[victim["id"]]["deleted_at"] is not None
    assert_contacts_match_truth(warehouse, sandbox)


def test_a_contact_that_reappears_is_live_again(warehouse: Warehouse) -> None:
    # The API has no undelete, but a contact restored on the platform side comes back with
    # its old id and audit: the store puts the very same record back.
    sandbox = frozen_sandbox()
    sync_contacts(sandbox, warehouse)
    victim = list(sandbox.truth("contacts"))[99]
    sandbox.marketplace.delete_contact(victim["id"])
    sync_contacts(sandbox, warehouse, full_refresh=True)
    assert by_id(rows(warehouse, "contacts"))[victim["id"]]["deleted_at"] is not None

    sandbox.marketplace.contacts.put(victim)
    sync_contacts(sandbox, warehouse)

    row = by_id(rows(warehouse, "contacts"))[victim["id"]]
    assert row["deleted_at"] is None
    assert_contacts_match_truth(warehouse, sandbox)


# --- churn -----------------------------------------------------------------------------------


def test_churn_during_a_sync_is_settled_by_one_follow_up_run(warehouse: Warehouse) -> None:
    sandbox = make_sandbox(contacts=3000, seed=13, churn_per_request=3)
    # Paging (not one streamed snapshot), so rows move between the pages of the read.
    proxy = Paging(sandbox.app)
    run(_contacts(proxy, warehouse))
    churn = sandbox.marketplace.churn
    assert proxy.requests > 30
    assert churn.created and churn.updated and churn.deleted and churn.blocked

    sandbox.behaviour.update({"churn_per_request": 0})
    result = run(_contacts(proxy, warehouse))

    live = live_contacts(warehouse)
    truth = by_id(list(sandbox.truth("contacts")))
    assert sorted(live) == sorted(truth)
    assert {i: (r["name"], r["status"]) for i, r in live.items()} == {
        i: (c["name"], c["status"]) for i, c in truth.items()
    }
    assert_contacts_match_truth(warehouse, sandbox)
    assert result.api_count == result.table_count == len(truth)
    # Every contact churn deleted is still there, marked.
    stored = by_id(rows(warehouse, "contacts"))
    seen_deleted = [i for i in churn.deleted_ids if i in stored]
    assert all(stored[i]["deleted_at"] is not None for i in seen_deleted)


# --- atomic failure --------------------------------------------------------------------------


def test_failure_in_the_middle_of_a_load_leaves_the_previous_table(
    warehouse: Warehouse,
) -> None:
    # Big enough that whole chunks reach the stage before the failure, whatever the chunk size.
    chunk = inspect.signature(MarketplaceClient.read).parameters["chunk_size"].default
    sandbox = frozen_sandbox(contacts=2 * chunk + 500)
    sync_contacts(sandbox, warehouse)
    # Upstream changes a failed run must not half-apply.
    store = sandbox.marketplace
    sandbox.clock.advance(600)
    truth = list(store.contacts.all())
    for contact in truth[:50]:
        store.update_contact(contact["id"], {"email": contact["email"], "name": "Changed"})
    for contact in truth[-10:]:
        store.delete_contact(contact["id"])
    before = {
        name: rows(warehouse, name) for name in ("contacts", "contact_opt_outs", "sync_state")
    }

    # Pages of 100: more than a chunk's worth arrives (and is staged), then every request
    # fails and the client gives up.
    proxy = Paging(sandbox.app, fail_after=(chunk + 1000) // 100 + 3)

    async def failing() -> sync.SyncResult:
        async with marketplace_client(proxy, max_attempts=2) as client:
            return await sync.sync_contacts(client, warehouse, full_refresh=True)

    with pytest.raises(ConnectorError):
        run(failing())

    assert proxy.failed > 0
    for name, previous in before.items():
        assert rows(warehouse, name) == previous, name

    # Nothing left behind stops the next run from completing.
    result = sync_contacts(sandbox, warehouse, full_refresh=True)
    assert result.counts["contacts"].updated == 50
    assert result.counts["contacts"].deleted == 10
    assert_contacts_match_truth(warehouse, sandbox)


@contextlib.contextmanager
def refusing_trigger(warehouse: Warehouse, contact_id: str) -> Iterator[None]:
    """PostgreSQL: inserting this contact into ``contacts`` raises 'injected failure'."""
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql(
            "create function refuse() returns trigger language plpgsql as $$ begin "
            f"if new.id = '{contact_id}' then raise exception 'injected failure'; end if; "
            "return new; end $$"
        )
        tx.connection.exec_driver_sql(
            "create trigger refuse before insert on contacts for each row execute function refuse()"
        )
    try:
        yield
    finally:
        with warehouse.transaction() as tx:
            tx.connection.exec_driver_sql("drop trigger refuse on contacts")
            tx.connection.exec_driver_sql("drop function refuse()")


def test_failure_inside_the_merge_statements_rolls_everything_back(
    open_warehouse: Any,
) -> None:
    # A trigger fails the insert half of the merge, after the changed rows were already
    # deleted from the table in the same transaction (PostgreSQL only: DuckDB has no triggers).
    sandbox = frozen_sandbox(contacts=500)
    with fresh_postgres_database() as url:
        warehouse = open_warehouse(url)
        sync_contacts(sandbox, warehouse)
        sandbox.clock.advance(60)
        changed = list(sandbox.truth("contacts"))[200:260]
        for contact in changed:
            sandbox.marketplace.update_contact(
                contact["id"], {"email": contact["email"], "name": "Half Way"}
            )
        before = {n: rows(warehouse, n) for n in ("contacts", "contact_opt_outs", "sync_state")}

        with refusing_trigger(warehouse, changed[50]["id"]), pytest.raises(sa.exc.DBAPIError):
            sync_contacts(sandbox, warehouse)

        for name, previous in before.items():
            assert rows(warehouse, name) == previous, name
        result = sync_contacts(sandbox, warehouse)
        assert result.counts["contacts"].updated == 60
        assert_contacts_match_truth(warehouse, sandbox)
        warehouse.dispose()


def test_a_database_error_during_a_load_surfaces_as_itself(open_warehouse: Any) -> None:
    sandbox = frozen_sandbox(contacts=50)
    with fresh_postgres_database() as url:
        warehouse = open_warehouse(url)
        target = next(iter(sandbox.truth("contacts")))["id"]
        with refusing_trigger(warehouse, target), pytest.raises(Exception) as raised:
            sync_contacts(sandbox, warehouse)
        warehouse.dispose()
    assert "injected failure" in str(raised.value)


# --- messages windows ------------------------------------------------------------------------


def _days_with_messages(sandbox: Sandbox) -> dict[date, list[dict]]:
    days: dict[date, list[dict]] = {}
    for message in sandbox.truth("messages"):
        moment = datetime.fromisoformat(at(message, "created").replace("Z", "+00:00"))
        days.setdefault(moment.date(), []).append(message)
    return days


def _day(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def test_rerunning_a_messages_window_is_idempotent(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=2000)
    days = _days_with_messages(sandbox)
    day = max(days, key=lambda d: len(days[d]))
    start, end = _day(day)

    first = sync_messages(sandbox, warehouse, start, end)
    once = content(warehouse, "messages")
    second = sync_messages(sandbox, warehouse, start, end)

    assert content(warehouse, "messages") == once
    assert sorted(r["id"] for r in once) == sorted(m["id"] for m in days[day])
    assert first.api_count == first.table_count == len(days[day])
    assert second.counts["messages"].deleted == len(days[day])
    assert second.counts["messages"].inserted == len(days[day])


def test_adjacent_windows_do_not_touch_each_other(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=2000)
    store = sandbox.marketplace
    # Move the clock to 150 ms before midnight: a new batch's first message is created at
    # exactly 00:00:00.000, the first instant of the next day's partition.
    midnight = datetime(2026, 11, 19, tzinfo=UTC)
    sandbox.clock.advance((midnight - timedelta(milliseconds=150) - ANCHOR).total_seconds())
    recipients = [{"id": c["id"]} for c in list(store.contacts.all())[:20]]
    batch = store.create_batch(
        {"category": {"id": "NTC-0000-0001"}, "subject": "Midnight", "contacts": recipients}
    )
    messages = [m for m in sandbox.truth("messages") if m["batch"]["id"] == batch["id"]]
    assert at(messages[0], "created") == "2026-11-19T00:00:00.000Z"

    today, tomorrow = _day(date(2026, 11, 18)), _day(date(2026, 11, 19))
    sync_messages(sandbox, warehouse, *today)
    sync_messages(sandbox, warehouse, *tomorrow)
    days = _days_with_messages(sandbox)
    stored = rows(warehouse, "messages")
    assert sorted(r["id"] for r in stored) == sorted(
        m["id"] for m in (*days[date(2026, 11, 18)], *days[date(2026, 11, 19)])
    )
    assert sorted(r["id"] for r in stored if r["created_at"] >= midnight.isoformat()) == sorted(
        m["id"] for m in messages
    )
    tomorrow_rows = [r for r in stored if r["created_at"] >= midnight.isoformat()]

    # More messages arrive tomorrow; re-running today neither drops nor adds tomorrow's rows.
    sandbox.clock.advance(3600)
    store.create_batch(
        {"category": {"id": "NTC-0000-0001"}, "subject": "Later", "contacts": recipients}
    )
    sync_messages(sandbox, warehouse, *today)
    after = rows(warehouse, "messages")
    assert [r for r in after if r["created_at"] >= midnight.isoformat()] == tomorrow_rows
    assert content(warehouse, "messages") == [
        {k: v for k, v in r.items() if k != "synced_at"} for r in stored
    ]

    # Re-running tomorrow picks up the new batch and leaves today's rows as they were.
    today_rows = [r for r in after if r["created_at"] < midnight.isoformat()]
    result = sync_messages(sandbox, warehouse, *tomorrow)
    final = rows(warehouse, "messages")
    assert [r for r in final if r["created_at"] < midnight.isoformat()] == today_rows
    assert result.table_count == result.api_count == 40


def test_a_range_of_days_is_loaded_as_one_window(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=2000)
    days = _days_with_messages(sandbox)
    first, last = min(days), max(days)
    start, end = _day(first)[0], _day(last)[1]
    middle = sorted(days)[len(days) // 2]
    # Only the middle day first, then the whole range over it.
    sync_messages(sandbox, warehouse, *_day(middle))
    result = sync_messages(sandbox, warehouse, start, end)
    assert result.counts["messages"].deleted == len(days[middle])
    assert sorted(r["id"] for r in rows(warehouse, "messages")) == sorted(
        m["id"] for m in sandbox.truth("messages")
    )


# --- state in the warehouse ------------------------------------------------------------------


def test_a_new_warehouse_object_continues_from_the_stored_cursor(
    warehouse_url: str, open_warehouse: Any
) -> None:
    sandbox = frozen_sandbox()
    first = open_warehouse(warehouse_url)
    sync_contacts(sandbox, first)
    first.dispose()
    sandbox.clock.advance(120)
    target = list(sandbox.truth("contacts"))[500]
    sandbox.marketplace.update_contact(
        target["id"], {"email": target["email"], "name": "Moved Machines"}
    )

    # As on a new machine: nothing in memory, only the warehouse.
    second = open_warehouse(warehouse_url)
    result = sync_contacts(sandbox, second)

    assert result.mode == "incremental"
    assert result.read is not None and result.read.rows < 100
    assert result.counts["contacts"].updated == 1
    assert by_id(rows(second, "contacts"))[target["id"]]["name"] == "Moved Machines"
    assert state(second)[sync.CONTACTS_CURSOR] == at(
        sandbox.marketplace.contacts.get(target["id"]), "updated"
    )


def test_full_refresh_is_due_after_its_interval(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    now = datetime(2026, 11, 20, 8, tzinfo=UTC)
    policy = sync.ContactsPolicy(full_refresh_every=timedelta(hours=24))
    assert sync_contacts(sandbox, warehouse, policy=policy, now=now).mode == "full"
    later = now + timedelta(hours=23)
    assert sync_contacts(sandbox, warehouse, policy=policy, now=later).mode == "incremental"
    assert state(warehouse)[sync.CONTACTS_LAST_FULL_REFRESH] == "2026-11-20T08:00:00.000Z"
    day_later = now + timedelta(hours=24)
    assert sync_contacts(sandbox, warehouse, policy=policy, now=day_later).mode == "full"
    assert state(warehouse)[sync.CONTACTS_LAST_FULL_REFRESH] == "2026-11-21T08:00:00.000Z"


# --- DuckDB and PostgreSQL agree -------------------------------------------------------------


def test_duckdb_and_postgresql_give_the_same_tables(tmp_path: Any, open_warehouse: Any) -> None:
    sandbox = frozen_sandbox()
    with fresh_postgres_database() as pg_url:
        duck = open_warehouse(f"duckdb:///{tmp_path / 'same.duckdb'}")
        pg = open_warehouse(pg_url)
        sync_everything(sandbox, duck)
        sync_everything(sandbox, pg)
        for name in TABLE_NAMES:
            duck_rows, pg_rows = content(duck, name), content(pg, name)
            assert duck_rows, name
            if name == "sync_state":
                # last_full_refresh is the time each sync ran.
                duck_rows = [r for r in duck_rows if r["name"] == sync.CONTACTS_CURSOR]
                pg_rows = [r for r in pg_rows if r["name"] == sync.CONTACTS_CURSOR]
            assert duck_rows == pg_rows, name
        pg.dispose()


# --- schema evolution ------------------------------------------------------------------------


def _create_older_contacts_table(warehouse: Warehouse, missing: str) -> None:
    ddl = read_sql("schema/create_contacts_table")
    older = "\n".join(
        line for line in ddl.splitlines() if not line.strip().startswith(f"{missing} ")
    )
    assert older != ddl
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql(older)
        tx.connection.exec_driver_sql(
            "insert into contacts (id, email, status, row_hash) "
            "values ('CTT-0000-0000-0001', 'old@example.test', 'Active', 'old')"
        )


def test_ensure_tables_adds_a_missing_column_and_keeps_the_rows(
    warehouse_url: str, open_warehouse: Any
) -> None:
    warehouse = open_warehouse(warehouse_url, ensure=False)
    _create_older_contacts_table(warehouse, "name")
    assert "name" not in {
        r[0]
        for r in warehouse.query(
            "select column_name from information_schema.columns where table_name = 'contacts'"
        )
    }

    warehouse.ensure_tables()
    warehouse.ensure_tables()  # a second time finds nothing to add

    stored = rows(warehouse, "contacts")
    assert [(r["id"], r["email"], r["name"]) for r in stored] == [
        ("CTT-0000-0000-0001", "old@example.test", None)
    ]
    for name in TABLE_NAMES:
        assert warehouse.count(name) == (1 if name == "contacts" else 0)


def test_sync_after_a_column_was_added_loads_every_column_in_place(
    warehouse_url: str, open_warehouse: Any
) -> None:
    sandbox = frozen_sandbox(contacts=300)
    warehouse = open_warehouse(warehouse_url, ensure=False)
    _create_older_contacts_table(warehouse, "name")
    warehouse.ensure_tables()

    sync_contacts(sandbox, warehouse, full_refresh=True)

    assert_contacts_match_truth(warehouse, sandbox)


# --- memory ----------------------------------------------------------------------------------


class _Cycle:
    """An object that refers to itself: only the cyclic garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_sync_leaves_earlier_garbage_collectable(tmp_path: Any, open_warehouse: Any) -> None:
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'gc.duckdb'}")
    sandbox = frozen_sandbox(contacts=50)
    gc.collect()
    gc.disable()  # so the cycle below is still pending when the sync starts
    try:
        garbage = _Cycle()
        alive = weakref.ref(garbage)
        del garbage
        sync_contacts(sandbox, warehouse)
    finally:
        gc.enable()
        gc.collect()
        leaked = alive() is not None
        gc.unfreeze()
    assert not leaked
