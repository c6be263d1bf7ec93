"""Loads are atomic: a load failing part-way leaves every previous table as it was, and the
next run completes (DuckDB and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database
from sync_support import (
    ALL_MESSAGES,
    Paging,
    assert_contacts_match_truth,
    evinotice_client,
    frozen_sandbox,
    marketplace_client,
    rows,
    run,
    sync_contacts,
    sync_everything,
)

from connector.errors import ConnectorError, UnreadableRecordError
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from connector.warehouse.sql_files import read_sql
from sandbox.app import Sandbox

# The client's chunk size: tests that fail a load part-way need whole chunks before the failure.
CHUNK = inspect.signature(MarketplaceClient.read).parameters["chunk_size"].default


def contact_tables(warehouse: Warehouse) -> dict[str, list[dict]]:
    """Every row of the tables a contacts sync writes (the sync state included)."""
    return {name: rows(warehouse, name) for name in ("contacts", "contact_opt_outs", "sync_state")}


# --- atomic failure --------------------------------------------------------------------------


def test_failure_in_the_middle_of_a_load_leaves_the_previous_table(
    warehouse: Warehouse,
) -> None:
    # Big enough that whole chunks reach the stage before the failure, whatever the chunk size.
    sandbox = frozen_sandbox(contacts=2 * CHUNK + 500)
    sync_contacts(sandbox, warehouse)
    # Upstream changes a failed run must not half-apply.
    store = sandbox.marketplace
    sandbox.clock.advance(600)
    truth = list(store.contacts.all())
    for contact in truth[:50]:
        store.update_contact(contact["id"], {"email": contact["email"], "name": "Changed"})
    for contact in truth[-10:]:
        store.delete_contact(contact["id"])
    before = contact_tables(warehouse)

    # Pages of 100: more than a chunk's worth arrives (and is staged), then every request
    # fails and the client gives up.
    proxy = Paging(sandbox.app, fail_after=(CHUNK + 1000) // 100 + 3)

    async def failing() -> sync.SyncResult:
        async with marketplace_client(proxy, max_attempts=2) as client:
            return await sync.sync_contacts(client, warehouse, full_refresh=True)

    with pytest.raises(ConnectorError):
        run(failing())

    assert proxy.failed > 0
    assert contact_tables(warehouse) == before

    # Nothing left behind stops the next run from completing.
    result = sync_contacts(sandbox, warehouse, full_refresh=True)
    assert result.counts["contacts"].updated == 50
    assert result.counts["contacts"].deleted == 10
    assert_contacts_match_truth(warehouse, sandbox)


def test_a_record_that_cannot_be_read_stops_the_load_with_the_tables_unchanged(
    warehouse: Warehouse,
) -> None:
    # Its chunk is flattened while earlier chunks are written (on PostgreSQL in a thread of
    # its own): the error still stops the whole load, and nothing written before it stays.
    sandbox = frozen_sandbox(contacts=3 * CHUNK)
    sync_contacts(sandbox, warehouse, full_refresh=True)
    store = sandbox.marketplace
    sandbox.clock.advance(600)
    records = list(store.contacts.all())
    for record in records[:50]:
        store.update_contact(record["id"], {"email": record["email"], "name": "Changed"})
    unreadable = records[2 * CHUNK + 5]
    store.contacts.put({**unreadable, "audit": {"created": {"at": "not a date"}}})
    before = contact_tables(warehouse)

    with pytest.raises(UnreadableRecordError, match="invalid timestamp") as raised:
        sync_contacts(sandbox, warehouse, full_refresh=True)
    assert str(raised.value).startswith(f"contacts: record {unreadable['id']} could not be read")
    assert "not a date" not in str(raised.value)

    assert contact_tables(warehouse) == before
    store.contacts.put(unreadable)
    result = sync_contacts(sandbox, warehouse, full_refresh=True)
    assert result.counts["contacts"].updated == 50
    assert_contacts_match_truth(warehouse, sandbox)


def test_a_load_stopped_while_a_chunk_is_written_waits_for_the_write_then_rolls_back(
    open_warehouse: Any,
) -> None:
    # A stopped run cancels the sync while a worker thread writes a chunk. The rollback must
    # wait for that write: run under it, it would close the transaction the thread writes in
    # (on PostgreSQL it would even block the event loop until the write ends). The write is
    # held by an advisory lock this test owns (a trigger on contacts waits for it).
    sandbox = frozen_sandbox(contacts=3 * CHUNK)
    with fresh_postgres_database() as url:
        warehouse = open_warehouse(url)
        with warehouse.transaction() as tx:
            tx.connection.exec_driver_sql(
                "create function hold() returns trigger language plpgsql as $$ begin "
                "perform pg_advisory_lock_shared(4242); perform pg_advisory_unlock_shared(4242);"
                " return null; end $$"
            )
            tx.connection.exec_driver_sql(
                "create trigger hold before insert on contacts "
                "for each statement execute function hold()"
            )
        holder = sa.create_engine(url, isolation_level="AUTOCOMMIT").connect()
        holder.exec_driver_sql("select pg_advisory_lock(4242)")
        # Only if the rollback wrongly blocks this thread's event loop: it lets the write go
        # on so that the test fails instead of hanging.
        valve = threading.Timer(120, lambda: _release(url))
        events: list[str] = []

        def write_held() -> bool:
            return bool(
                holder.exec_driver_sql(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and wait_event_type = 'Lock' and wait_event = 'advisory'"
                ).scalar_one()
            )

        async def stop_while_held() -> None:
            async with marketplace_client(sandbox.app) as client:
                task = asyncio.ensure_future(
                    sync.sync_contacts(client, warehouse, full_refresh=True)
                )
                for _ in range(6000):  # until the write waits for the lock (at most a minute)
                    if task.done() or await asyncio.to_thread(write_held):
                        break
                    await asyncio.sleep(0.01)
                assert not task.done(), "the write never waited for the lock"
                valve.start()
                task.cancel()
                for _ in range(20):
                    await asyncio.sleep(0)
                events.append("done before the write ended" if task.done() else "waiting")
                await asyncio.to_thread(holder.exec_driver_sql, "select pg_advisory_unlock(4242)")
                with pytest.raises(asyncio.CancelledError):
                    await task
                events.append("cancelled")

        try:
            run(stop_while_held())
        finally:
            valve.cancel()
            holder.close()
        assert events == ["waiting", "cancelled"]
        assert rows(warehouse, "contacts") == []  # the first load rolled back
        with warehouse.transaction() as tx:
            tx.connection.exec_driver_sql("drop trigger hold on contacts")
        sync_contacts(sandbox, warehouse, full_refresh=True)
        assert_contacts_match_truth(warehouse, sandbox)
        warehouse.dispose()


def _release(url: str) -> None:
    """End every session holding advisory locks on the database (the test's safety valve)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(
            "select pg_terminate_backend(pid) from pg_locks "
            "where locktype = 'advisory' and granted and mode = 'ExclusiveLock'"
        )
    engine.dispose()


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
        before = contact_tables(warehouse)

        with refusing_trigger(warehouse, changed[50]["id"]), pytest.raises(sa.exc.DBAPIError):
            sync_contacts(sandbox, warehouse)

        assert contact_tables(warehouse) == before
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


# --- every synced table ----------------------------------------------------------------------

# Per table, a text column that a CHECK constraint refuses to hold the value REFUSED: a record
# carrying it makes the load fail inside its transaction, after the table's old rows were
# already deleted or replaced there (replace_all, replace_window, merge) - on both warehouses.
REFUSED = "refused by the test"
POISON = {
    "contacts": "name",
    "categories": "name",
    "batches": "subject",
    "messages": "subject",
    "evinotice_batches": "description",
}
SYNCED = (*POISON, "contact_opt_outs", "category_statistics_snapshots", "sync_state")


def _create_refusing_tables(warehouse: Warehouse) -> None:
    with warehouse.transaction() as tx:
        for name, column in POISON.items():
            ddl = read_sql(f"schema/create_{name}_table").rstrip().rstrip(";").rstrip()
            assert ddl.endswith(")")
            check = f"\n    , check (coalesce({column}, '') <> '{REFUSED}')\n)"
            tx.connection.exec_driver_sql(ddl[:-1].rstrip() + check)
    warehouse.ensure_tables()


def _poison(sandbox: Sandbox, name: str) -> None:
    """Change two records of ``name`` upstream: one harmlessly, one to the refused value."""
    store = sandbox.marketplace
    if name == "evinotice_batches":
        site = sandbox.config.evinotice_site_id
        ids = [b["Id"] for b in sandbox.truth("evinotice-batches") if b["SiteId"] == site]
        batches = sandbox.evinotice._batches  # the store keeps no public setter for this
        batches[ids[0]].description = "changed upstream"
        batches[ids[-1]].description = REFUSED
        return
    collection = getattr(store, name)
    records = sorted(collection.all(), key=lambda r: r["id"])
    column = POISON[name]
    if name == "contacts":
        # Through the API's own update, so audit.updated.at moves and the incremental run sees it.
        for record, value in ((records[0], "changed upstream"), (records[-1], REFUSED)):
            store.update_contact(record["id"], {"email": record["email"], column: value})
        return
    collection.put({**records[0], column: "changed upstream"})
    collection.put({**records[-1], column: REFUSED})


def _unpoison(sandbox: Sandbox, name: str) -> None:
    if name == "evinotice_batches":
        for batch in sandbox.evinotice._batches.values():
            if batch.description == REFUSED:
                batch.description = "accepted"
        return
    collection = getattr(sandbox.marketplace, name)
    column = POISON[name]
    for record in list(collection.all()):
        if record.get(column) != REFUSED:
            continue
        if name == "contacts":
            sandbox.marketplace.update_contact(
                record["id"], {"email": record["email"], column: "accepted"}
            )
        else:
            collection.put({**record, column: "accepted"})


def _sync_one(sandbox: Sandbox, warehouse: Warehouse, name: str) -> None:
    async def go() -> None:
        if name == "evinotice_batches":
            async with evinotice_client(sandbox) as evi:
                site = sandbox.config.evinotice_site_id
                await sync.sync_evinotice_batches(evi, warehouse, site)
            return
        async with marketplace_client(sandbox.app) as client:
            if name == "messages":
                await sync.sync_messages(client, warehouse, *ALL_MESSAGES)
            else:
                await getattr(sync, f"sync_{name}")(client, warehouse)

    run(go())


@pytest.mark.parametrize("name", list(POISON))
def test_a_load_failing_part_way_leaves_every_table_as_it_was(
    name: str, warehouse_url: str, open_warehouse: Any
) -> None:
    sandbox = frozen_sandbox(contacts=600)
    warehouse = open_warehouse(warehouse_url, ensure=False)
    _create_refusing_tables(warehouse)
    sync_everything(sandbox, warehouse)
    before = {table_name: rows(warehouse, table_name) for table_name in SYNCED}
    assert all(before[t] for t in SYNCED), "every table has rows to lose"
    sandbox.clock.advance(60)
    _poison(sandbox, name)

    with pytest.raises(sa.exc.IntegrityError, match=r"(?i)check"):
        _sync_one(sandbox, warehouse, name)

    # Row by row, every table is as it was: the old rows the load had already deleted or
    # replaced inside its transaction are back, the harmless change is not half-applied.
    for table_name in SYNCED:
        assert rows(warehouse, table_name) == before[table_name], table_name

    # Without the refused value the same load goes through and brings the harmless change.
    _unpoison(sandbox, name)
    _sync_one(sandbox, warehouse, name)
    column = POISON[name]
    assert "changed upstream" in {r[column] for r in rows(warehouse, name)}
