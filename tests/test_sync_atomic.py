"""Loads are atomic: a load failing part-way leaves every previous table as it was, and the
next run completes (DuckDB and PostgreSQL)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database
from sync_support import (
    Paging,
    assert_contacts_match_truth,
    frozen_sandbox,
    marketplace_client,
    rows,
    run,
    sync_contacts,
)

from connector.errors import ConnectorError
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse

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
