"""Transactions and what a load does inside one: run the statements of ``sql/``, stage rows,
then merge, replace or append them, with the sync state committed alongside."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.errors import RepeatedKeysError
from connector.warehouse import json_lines
from connector.warehouse.merge_counts import MergeCounts
from connector.warehouse.sql_files import statements
from connector.warehouse.staging import Stage
from connector.warehouse.streamed_merge import (
    MERGE_EVERY_BYTES,
    MERGE_EVERY_ROWS,
    ReadKeys,
    StreamedMerge,
    streamed_merge,
)
from connector.warehouse.tables import Table, table


class Transaction:
    """A connection inside one transaction, with the load operations on it."""

    def __init__(
        self,
        connection: Connection,
        dialect: str,
        merge_every_rows: int = MERGE_EVERY_ROWS,
        merge_every_bytes: int = MERGE_EVERY_BYTES,
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self.merge_every_rows = merge_every_rows
        self.merge_every_bytes = merge_every_bytes
        # Tables this transaction wrote, so their statistics can be refreshed after commit.
        self.changed: set[str] = set()
        # A load's lower memory cap while it writes straight into empty tables, and its end
        # (``Warehouse.load``); outside a load, nothing to lower or lift.
        self.lower_memory_cap: Callable[[], None] = _nothing
        self.lift_memory_cap: Callable[[], None] = _nothing

    def run(self, name: str, params: dict[str, Any] | None = None, **identifiers: str) -> Any:
        """Run the statements of ``sql/<name>.sql``; returns the last result."""
        params = params or {}
        # Sequence values (``in :values``) expand into one bound parameter per item.
        expanding = [
            sa.bindparam(k, expanding=True)
            for k, v in params.items()
            if isinstance(v, list | tuple)
        ]
        result = None
        for statement in statements(name, **identifiers):
            clause = sa.text(statement)
            used = [b for b in expanding if f":{b.key}" in statement]
            if used:
                clause = clause.bindparams(*used)
            result = self.connection.execute(clause, params)
        return result

    def run_many(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        """Run the single statement of ``sql/<name>.sql`` once per parameter set, in bulk."""
        if not rows:
            return
        (statement,) = statements(name)
        self.connection.execute(sa.text(statement), list(rows))

    def scalar(self, sql: str, **params: Any) -> Any:
        """The first value of a query given as text (kept for callers not yet on files)."""
        return self.connection.execute(sa.text(sql), params).scalar()

    def count_rows(self, target: str) -> int:
        """Row count of a table."""
        # scalar_one reads the result to its end: DuckDB refuses other work on a connection
        # whose last result is unfinished (the bulk flatten runs on it next).
        return int(self.run("warehouse/count_rows", target=target).scalar_one())

    @property
    def flattens_beside_writes(self) -> bool:
        """Whether ``flatten`` may run in another thread while this transaction writes: it
        does not use the warehouse connection (only a DuckDB warehouse's flattens on it)."""
        return self.dialect != "duckdb"

    def flatten(self, lines: bytes | pa.Table, name: str) -> pa.Table:
        """JSON lines turned into columns by ``sql/load/flatten_<name>.sql``, in bulk (by
        DuckDB: this warehouse's own connection, or a private in-memory one)."""
        duck = self.connection.connection.driver_connection if self.dialect == "duckdb" else None
        return json_lines.flatten(lines, name, duck)

    @contextlib.contextmanager
    def stage(self, target: str) -> Iterator[Stage]:
        """A temporary, empty copy of ``target`` for this load; dropped afterwards."""
        stage = Stage(self, table(target))
        self.empty_stage(stage)
        yield stage
        # Only on success: after an error the transaction is aborted (the rollback drops the
        # temporary table), and a statement here would hide the error that matters.
        self.run("load/drop_stage_table", stage=stage.name)

    def empty_stage(self, stage: Stage) -> None:
        """``stage`` made anew, empty. Dropped and made again rather than deleted from: DuckDB
        frees a dropped temporary table's memory, not deleted rows'."""
        self.run("load/drop_stage_table", stage=stage.name)
        self.run(
            "load/create_stage_table",
            stage=stage.name,
            target=stage.table.name,
            columns=stage.columns,
        )
        stage.rows = 0
        stage.bytes = 0

    def writer(self, target: str) -> Stage:
        """A writer straight into ``target`` (no stage): for rows known to be new."""
        return _TableWriter(self, table(target))

    @contextlib.contextmanager
    def replacing(self, target: str) -> Iterator[Stage]:
        """A writer straight into ``target``, emptied first: for a table a load replaces
        whole, where staging would copy every row once more. The transaction still makes the
        replacement all or nothing."""
        writer = self.writer(target)
        self.run("load/delete_all_rows", target=target)
        yield writer
        self.changed.add(target)

    # -- load strategies --------------------------------------------------------------------

    def streamed_merge(
        self,
        target: str,
        *children: tuple[str, str],
        before_merge: Callable[[Stage], None] | None = None,
        keys_once: bool = False,
        keep_read: bool = False,
    ) -> contextlib.AbstractContextManager[StreamedMerge]:
        """Stages for ``target`` and its children, merged in batches of this transaction's
        ``merge_every_rows`` or ``merge_every_bytes`` as rows arrive (see
        ``connector/warehouse/streamed_merge.py``)."""
        return streamed_merge(
            self,
            target,
            *children,
            every=self.merge_every_rows,
            every_bytes=self.merge_every_bytes,
            before_merge=before_merge,
            keys_once=keys_once,
            keep_read=keep_read,
        )

    def merge(self, stage: Stage, *children: tuple[Stage, str]) -> dict[str, MergeCounts]:
        """Write staged rows that are new or changed; ``children`` (stage, key column) follow.

        Returns the counts per table, the target's and each child's.
        """
        target, key = stage.table.name, self.key(stage.table)
        names = {"stage": stage.name, "target": target, "key": key}
        self.run("load/drop_rows_to_write", **names)
        self.run("load/create_rows_to_write", **names)
        written, updated = self.run("load/count_rows_to_write", **names).one()
        counts = {
            target: MergeCounts(staged=stage.rows, inserted=written - updated, updated=updated)
        }
        for child, child_key in children:
            child_names = {
                **names,
                "child": child.table.name,
                "child_stage": child.name,
                "child_key": child_key,
            }
            removed, added = self.run("load/count_children_of_written_rows", **child_names).one()
            counts[child.table.name] = MergeCounts(
                staged=child.rows, inserted=added, deleted=removed
            )
        if updated:
            self.run("load/delete_rows_to_write", **names)
        if written == stage.rows:
            # Every staged row is new or changed (a first load): no semi-join on a million
            # keys, which on DuckDB would hold its hash table beside the key index.
            self.run(
                "load/insert_all_staged_rows",
                stage=stage.name,
                target=target,
                columns=stage.columns,
            )
        else:
            self.run("load/insert_rows_to_write", **names, columns=stage.columns)
        for child, child_key in children:
            self.run(
                "load/replace_children_of_written_rows",
                **names,
                child=child.table.name,
                child_stage=child.name,
                child_key=child_key,
                child_columns=child.columns,
            )
        self.run("load/drop_rows_to_write", **names)
        if written:
            self.changed.update([target, *(child.table.name for child, _ in children)])
        return counts

    def refuse_repeated_keys(self, stage: Stage) -> None:
        """Raise ``RepeatedKeysError`` if ``stage`` holds a key more than once: a load writes
        one row per key, and on DuckDB no key index would stop a second."""
        key = self.key(stage.table)
        repeated = self.run("load/count_repeated_keys", stage=stage.name, key=key).scalar_one()
        if repeated:
            raise RepeatedKeysError(stage.table.name, int(repeated))

    def count_missing(self, read: Stage | ReadKeys) -> int:
        """Live rows of the target that a full read did not return (what a refresh would mark)."""
        return int(
            self.run(
                "load/count_missing_rows",
                stage=read.name,
                target=read.table.name,
                key=self.key(read.table),
            ).scalar()
        )

    def mark_missing_as_deleted(self, read: Stage | ReadKeys, now: datetime) -> int:
        """After a full read, flag rows the API no longer returns (``deleted_at``)."""
        target = read.table.name
        before = self.run("load/count_deleted_rows", target=target).scalar()
        self.run(
            "load/mark_missing_as_deleted",
            {"now": now},
            stage=read.name,
            target=target,
            key=self.key(read.table),
        )
        marked = int(self.run("load/count_deleted_rows", target=target).scalar() - before)
        if marked:
            self.changed.add(target)
        return marked

    def replace_all(self, stage: Stage) -> MergeCounts:
        """The table becomes exactly the staged rows."""
        target = stage.table.name
        before = self.count_rows(target)
        self.run("load/delete_all_rows", target=target)
        self.run(
            "load/insert_all_staged_rows", stage=stage.name, target=target, columns=stage.columns
        )
        self.changed.add(target)
        return MergeCounts(staged=stage.rows, inserted=stage.rows, deleted=before)

    def replace_window(
        self, stage: Stage, time_column: str, start: datetime, end: datetime
    ) -> MergeCounts:
        """Rows with ``start <= time_column < end`` become exactly the staged rows."""
        target = stage.table.name
        self.refuse_repeated_keys(stage)
        window = {"start": start, "end": end}
        before = self.count_window(target, time_column, start, end)
        self.run("load/delete_time_window", window, target=target, time_column=time_column)
        self.run(
            "load/insert_all_staged_rows", stage=stage.name, target=target, columns=stage.columns
        )
        self.changed.add(target)
        return MergeCounts(staged=stage.rows, inserted=stage.rows, deleted=before)

    def count_window(self, target: str, time_column: str, start: datetime, end: datetime) -> int:
        """Rows with ``start <= time_column < end``."""
        window = {"start": start, "end": end}
        return int(
            self.run(
                "load/count_time_window", window, target=target, time_column=time_column
            ).scalar()
        )

    def append(self, stage: Stage) -> MergeCounts:
        """Add the staged rows."""
        self.run(
            "load/insert_all_staged_rows",
            stage=stage.name,
            target=stage.table.name,
            columns=stage.columns,
        )
        if stage.rows:
            self.changed.add(stage.table.name)
        return MergeCounts(staged=stage.rows, inserted=stage.rows)

    @staticmethod
    def key(definition: Table) -> str:
        """The single-column key a merge matches rows on."""
        if definition.key is None:
            raise ValueError(f"table {definition.name} has no single-column key to merge on")
        return definition.key

    # -- sync state -------------------------------------------------------------------------

    def get_state(self, name: str) -> str | None:
        """A value from ``sync_state``."""
        return self.run("load/select_sync_state", {"name": name}).scalar()

    def set_state(self, name: str, value: str, now: datetime) -> None:
        """Write a value to ``sync_state``, committed with the load it belongs to."""
        self.run("load/upsert_sync_state", {"name": name, "value": value, "now": now})
        self.changed.add("sync_state")


def _nothing() -> None:
    return None


class _TableWriter(Stage):
    """A ``Stage`` whose rows go into the table itself."""

    def __init__(self, tx: Transaction, definition: Table) -> None:
        super().__init__(tx, definition)
        self.name = definition.name
