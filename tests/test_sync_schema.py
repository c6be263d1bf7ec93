"""The tables themselves: DuckDB and PostgreSQL give the same rows, older tables gain new
columns in place, and a sync leaves no garbage behind."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from conftest import fresh_postgres_database
from sync_support import (
    assert_contacts_match_truth,
    content,
    frozen_sandbox,
    rows,
    sync_contacts,
    sync_everything,
)

from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from connector.warehouse.schema import WITHOUT_KEY_INDEX_ON_DUCKDB
from connector.warehouse.sql_files import read_sql
from connector.warehouse.tables import TABLE_NAMES

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


# --- key indexes -----------------------------------------------------------------------------


def test_the_bulk_loaded_tables_have_no_key_index_on_duckdb_only(warehouse: Warehouse) -> None:
    # DuckDB would hold such an index in memory whole; the loads keep the keys unique.
    keyed = {
        row[0]
        for row in warehouse.query(
            "select table_name from information_schema.table_constraints"
            " where constraint_type = 'PRIMARY KEY'"
        )
    }
    assert "sync_state" in keyed
    if warehouse.dialect == "duckdb":
        assert keyed.isdisjoint(WITHOUT_KEY_INDEX_ON_DUCKDB)
    else:
        assert keyed >= WITHOUT_KEY_INDEX_ON_DUCKDB
