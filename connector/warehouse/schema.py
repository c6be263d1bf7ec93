"""Schema upgrades: create the tables the DDL files define, and add the columns a newer DDL
defines to tables an older version created (rows kept)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from connector.warehouse.sql_files import statements
from connector.warehouse.tables import table

if TYPE_CHECKING:
    from connector.warehouse.transaction import Transaction

log = logging.getLogger(__name__)

# The column types the DDL files use; anything else in a DDL is a mistake, not a type.
COLUMN_TYPES = ("text", "json", "bigint", "boolean", "double precision", "timestamptz")

# DuckDB keeps a table's key index wholly in memory, beyond what its memory cap can spill
# (about 52 MB per million contacts, all needed at commit), so a growing table would grow
# every load's memory with it. On DuckDB the tables the sync loads in bulk are created
# without it; their keys stay unique all the same, as every load writes them by key (a merge
# replaces the rows it rewrites, a window replaces its window). PostgreSQL keeps its indexes.
# Warehouses created before keep theirs too: loads work either way.
WITHOUT_KEY_INDEX_ON_DUCKDB = frozenset(
    {"contacts", "contact_opt_outs", "batches", "messages", "evinotice_batches"}
)
_KEY_CONSTRAINT = re.compile(r",\s*primary key \([^)]*\)")
_KEY_COLUMN = re.compile(r"\s+primary key\b")


def ensure_tables(tx: Transaction, names: Sequence[str]) -> None:
    """Create missing tables and add missing columns, inside the caller's transaction."""
    for name in names:
        if tx.dialect == "duckdb" and name in WITHOUT_KEY_INDEX_ON_DUCKDB:
            for statement in statements(f"schema/create_{name}_table"):
                tx.connection.execute(sa.text(_without_key(statement)))
        else:
            tx.run(f"schema/create_{name}_table")
        add_missing_columns(tx, name)


def _without_key(statement: str) -> str:
    """A ``create table`` statement with its primary key (column or table constraint) left out."""
    return _KEY_COLUMN.sub("", _KEY_CONSTRAINT.sub("", statement))


def add_missing_columns(tx: Transaction, name: str) -> list[str]:
    """Add the columns ``sql/schema/create_<name>_table.sql`` defines that the table lacks."""
    existing = set(tx.run("schema/select_table_columns", {"table_name": name}).scalars())
    added = []
    for column in table(name).columns:
        if column.name in existing:
            continue
        if column.type not in COLUMN_TYPES:
            raise ValueError(f"{name}.{column.name}: unknown column type {column.type!r}")
        log.info("adding column %s.%s", name, column.name)
        tx.run("schema/add_column", target=name, column=column.name, column_type=column.type)
        added.append(column.name)
    return added
