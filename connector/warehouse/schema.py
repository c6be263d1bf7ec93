"""Schema upgrades: create the tables the DDL files define, and add the columns a newer DDL
defines to tables an older version created (rows kept)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from connector.warehouse.tables import table

if TYPE_CHECKING:
    from connector.warehouse.transaction import Transaction

log = logging.getLogger(__name__)

# The column types the DDL files use; anything else in a DDL is a mistake, not a type.
COLUMN_TYPES = ("text", "json", "bigint", "boolean", "double precision", "timestamptz")


def ensure_tables(tx: Transaction, names: Sequence[str]) -> None:
    """Create missing tables and add missing columns, inside the caller's transaction."""
    for name in names:
        tx.run(f"schema/create_{name}_table")
        add_missing_columns(tx, name)


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
