"""The warehouse writer: one SQLAlchemy URL, DuckDB by default, PostgreSQL tested for real.

Every load happens in one transaction: rows are staged in a temporary table in chunks (Arrow
batches into DuckDB, ``COPY`` into PostgreSQL, ``executemany`` elsewhere), then merged,
replaced or appended by the statements in ``sql/load``. A failure anywhere rolls the whole
load back, so the previous table stays as it was.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from connector.errors import ConfigurationError, ConnectorError
from connector.warehouse.rows import Row
from connector.warehouse.sql_files import statements
from connector.warehouse.tables import ALL_TABLE_NAMES, Table, table

log = logging.getLogger(__name__)

WAREHOUSE_URL = "WAREHOUSE_URL"
DEFAULT_WAREHOUSE_URL = "duckdb:///data/notifsync.duckdb"
DEFAULT_DUCKDB_MEMORY_LIMIT = "256MB"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "json": pa.string(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "double precision": pa.float64(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}


@dataclass
class MergeCounts:
    """What a load did to its table."""

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated


class Warehouse:
    """A SQL warehouse reached through SQLAlchemy."""

    def __init__(self, url: str = DEFAULT_WAREHOUSE_URL) -> None:
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigurationError(f"{WAREHOUSE_URL} is not a valid SQLAlchemy URL") from exc
        except ValueError as exc:  # a port that is not a number; the message holds no password
            raise ConfigurationError(
                f"{WAREHOUSE_URL} is not a valid SQLAlchemy URL: {exc} (is the port a number?)"
            ) from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "duckdb" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "duckdb":
            # DuckDB allows one writing process per file: hold it only while a load runs.
            # Its settings come from the URL's query (?memory_limit=2GB&threads=4); memory
            # is capped by default so a big load spills to disk instead of growing the process.
            config = {"memory_limit": DEFAULT_DUCKDB_MEMORY_LIMIT, **dict(parsed.query)}
            parsed = parsed.set(query={})
            options = {"poolclass": NullPool, "connect_args": {"config": config}}
        try:
            self.engine = sa.create_engine(parsed, **options)
        except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
            raise ConfigurationError(
                f"{WAREHOUSE_URL}: no SQLAlchemy dialect installed for {parsed.drivername!r}"
            ) from exc
        # Shown in logs and metadata: no password, and no query (libpq also takes
        # password=... or sslpassword=... there).
        self.url = parsed.set(query={}).render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Warehouse({self.url})"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction; committed when the block ends, rolled back if it raises."""
        with self._connect() as connection, connection.begin():
            yield Transaction(connection, self.dialect)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        # Another process (a second run, the UI's preview) may hold a DuckDB file for a moment.
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = self.engine.connect()
                break
            except sa.exc.OperationalError as exc:
                locked = self.dialect == "duckdb" and "lock" in str(exc).lower()
                if not locked or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
            except sa.exc.ProgrammingError as exc:
                if self.dialect != "duckdb":
                    raise
                # DuckDB checks the options from the URL's query when it opens the file.
                cause = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
                raise ConfigurationError(
                    f"{WAREHOUSE_URL} ({self.url}): DuckDB refused an option: {cause}"
                ) from None
        with connection:
            yield connection

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a named lock that no other thread or process working on this warehouse can
        hold at the same time; raises ``WarehouseBusyError`` at once if it is taken.

        PostgreSQL: a session advisory lock (released if the process dies). DuckDB: a
        connection held open, since a DuckDB file admits one process at a time. Within this
        process: a lock per warehouse and name. Other warehouses get the in-process lock only.
        """
        local = _LOCAL_LOCKS.setdefault((self.url, name), threading.Lock())
        if not local.acquire(blocking=False):
            raise WarehouseBusyError(f"{name} is already running in this process")
        try:
            with self._connect() as connection:
                if self.dialect == "postgresql":
                    key = {"name": f"notifsync:{name}"}
                    taken = connection.execute(
                        sa.text("select pg_try_advisory_lock(hashtext(:name))"), key
                    ).scalar()
                    connection.commit()
                    if not taken:
                        raise WarehouseBusyError(f"{name} is already running elsewhere")
                    try:
                        yield
                    finally:
                        connection.execute(
                            sa.text("select pg_advisory_unlock(hashtext(:name))"), key
                        )
                        connection.commit()
                else:
                    yield
        finally:
            local.release()

    def ensure_tables(self, names: Sequence[str] = ALL_TABLE_NAMES) -> None:
        """Create missing tables, and add columns a newer version of the DDL defines."""
        with self.transaction() as tx:
            for name in names:
                definition = table(name)
                tx.run(f"schema/create_{name}_table")
                existing = set(
                    tx.run("schema/select_table_columns", {"table_name": name}).scalars()
                )
                for column in definition.columns:
                    if column.name not in existing:
                        log.info("adding column %s.%s", name, column.name)
                        tx.connection.exec_driver_sql(
                            f"alter table {name} add column {column.name} {column.type}"
                        )

    def count(self, table_name: str, where: str = "", **params: Any) -> int:
        """Row count of a table (``where`` is SQL from this code base; values go in params)."""
        with self.transaction() as tx:
            return tx.scalar(f"select count(*) from {table_name} {where}", **params)

    def query(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        """Rows of a read-only query."""
        with self.transaction() as tx:
            return list(tx.connection.execute(sa.text(sql), params))

    def dispose(self) -> None:
        self.engine.dispose()


class WarehouseBusyError(ConnectorError):
    """Another run holds the lock asked for."""


_LOCAL_LOCKS: dict[tuple[str, str], threading.Lock] = {}


class Transaction:
    """A connection inside one transaction, with the load operations on it."""

    def __init__(self, connection: Connection, dialect: str) -> None:
        self.connection = connection
        self.dialect = dialect

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
        return self.connection.execute(sa.text(sql), params).scalar()

    @contextlib.contextmanager
    def stage(self, target: str) -> Iterator[Stage]:
        """A temporary, empty copy of ``target`` for this load; dropped afterwards."""
        stage = Stage(self, table(target))
        self.run("load/drop_stage_table", stage=stage.name)
        self.run("load/create_stage_table", stage=stage.name, target=target, columns=stage.columns)
        yield stage
        # Only on success: after an error the transaction is aborted (the rollback drops the
        # temporary table), and a statement here would hide the error that matters.
        self.run("load/drop_stage_table", stage=stage.name)

    # -- load strategies --------------------------------------------------------------------

    def merge(self, stage: Stage, *children: tuple[Stage, str]) -> dict[str, MergeCounts]:
        """Write staged rows that are new or changed; ``children`` (stage, key column) follow.

        Returns the counts per table, the target's and each child's.
        """
        target, key = stage.table.name, _key(stage.table)
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
        self.run("load/delete_rows_to_write", **names)
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
        return counts

    def mark_missing_as_deleted(self, stage: Stage, now: datetime) -> int:
        """After a full read, flag rows the API no longer returns (``deleted_at``)."""
        target = stage.table.name
        before = self.scalar(f"select count(*) from {target} where deleted_at is not null")
        self.run(
            "load/mark_missing_as_deleted",
            {"now": now},
            stage=stage.name,
            target=target,
            key=_key(stage.table),
        )
        return self.scalar(f"select count(*) from {target} where deleted_at is not null") - before

    def replace_all(self, stage: Stage) -> MergeCounts:
        """The table becomes exactly the staged rows."""
        target = stage.table.name
        before = self.scalar(f"select count(*) from {target}")
        self.run("load/delete_all_rows", target=target)
        self.run(
            "load/insert_all_staged_rows", stage=stage.name, target=target, columns=stage.columns
        )
        return MergeCounts(staged=stage.rows, inserted=stage.rows, deleted=before)

    def replace_window(
        self, stage: Stage, time_column: str, start: datetime, end: datetime
    ) -> MergeCounts:
        """Rows with ``start <= time_column < end`` become exactly the staged rows."""
        target = stage.table.name
        window = {"start": start, "end": end}
        before = self.scalar(
            f"select count(*) from {target} where {time_column} >= :start and {time_column} < :end",
            **window,
        )
        self.run("load/delete_time_window", window, target=target, time_column=time_column)
        self.run(
            "load/insert_all_staged_rows", stage=stage.name, target=target, columns=stage.columns
        )
        return MergeCounts(staged=stage.rows, inserted=stage.rows, deleted=before)

    def append(self, stage: Stage) -> MergeCounts:
        """Add the staged rows."""
        self.run(
            "load/insert_all_staged_rows",
            stage=stage.name,
            target=stage.table.name,
            columns=stage.columns,
        )
        return MergeCounts(staged=stage.rows, inserted=stage.rows)

    # -- sync state -------------------------------------------------------------------------

    def get_state(self, name: str) -> str | None:
        """A value from ``sync_state``."""
        return self.run("load/select_sync_state", {"name": name}).scalar()

    def set_state(self, name: str, value: str, now: datetime) -> None:
        """Write a value to ``sync_state``, committed with the load it belongs to."""
        self.run("load/upsert_sync_state", {"name": name, "value": value, "now": now})


class Stage:
    """A temporary table that receives one load's rows, chunk by chunk."""

    def __init__(self, tx: Transaction, definition: Table) -> None:
        self.tx = tx
        self.table = definition
        self.name = f"stage_{definition.name}"
        self.columns = ", ".join(definition.column_names)
        self.rows = 0

    def write(self, rows: Sequence[Row], constants: Row | None = None) -> None:
        """Append rows (dicts keyed by column name; missing keys are null).

        ``constants`` fills columns that hold one value for every row (a run id), without
        copying each row to add it. Values of ``json`` columns may be Python structures.
        """
        if not rows:
            return
        constants = constants or {}
        columns = column_values(self.table, rows, constants)
        if self.tx.dialect == "duckdb":
            duck = self.tx.connection.connection.driver_connection
            # A relation over the Arrow table, not register()/unregister(): registered views
            # keep their memory until the connection closes.
            duck.from_arrow(to_arrow(self.table, columns, constants)).insert_into(self.name)
        elif self.tx.dialect == "postgresql" and self.tx.connection.dialect.driver == "psycopg":
            cursor = self.tx.connection.connection.driver_connection.cursor()
            with cursor.copy(f"copy {self.name} ({self.columns}) from stdin") as copy:
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
        else:
            names = self.table.column_names
            statement = sa.text(
                f"insert into {self.name} ({self.columns}) "
                f"values ({', '.join(':' + n for n in names)})"
            )
            self.tx.connection.execute(
                statement,
                [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)],
            )
        self.rows += len(rows)


def column_values(definition: Table, rows: Sequence[Row], constants: Row) -> list[list[Any]]:
    """The rows as one list of values per column, in the order of ``definition``."""
    columns = []
    for column in definition.columns:
        name = column.name
        if name in constants:
            values = [constants[name]] * len(rows)
        else:
            values = [row.get(name) for row in rows]
        if column.type == "json":
            values = _json_texts(values)
        columns.append(values)
    return columns


def _json_texts(values: list[Any]) -> list[str | None]:
    # Tuples (e.g. a CRM line's opt-out ids, mostly empty) repeat: encode each once.
    encoded: dict[tuple[Any, ...], str] = {}
    texts: list[str | None] = []
    for value in values:
        if value is None or isinstance(value, str):
            texts.append(value)
        elif isinstance(value, tuple):
            text = encoded.get(value)
            if text is None:
                text = encoded[value] = orjson.dumps(value).decode()
            texts.append(text)
        else:
            texts.append(orjson.dumps(value).decode())
    return texts


def to_arrow(
    definition: Table, columns: Sequence[list[Any]], constants: Row | None = None
) -> pa.Table:
    """An Arrow table in the column order and types of ``definition``."""
    constants = constants or {}
    arrays = []
    for column, values in zip(definition.columns, columns, strict=True):
        arrow_type = _ARROW_TYPES[column.type]
        if column.name in constants:
            # One value for every row: converted once, repeated in Arrow.
            value = _json_texts([constants[column.name]])[0] if column.type == "json" else None
            scalar = pa.scalar(value if value is not None else constants[column.name])
            if scalar.type != arrow_type:
                scalar = scalar.cast(arrow_type)
            arrays.append(pa.repeat(scalar, len(values)))
        elif pa.types.is_timestamp(arrow_type):
            arrays.append(pa.array(values, pa.string()).cast(arrow_type))
        else:
            arrays.append(pa.array(values, arrow_type))
    return pa.Table.from_arrays(arrays, names=list(definition.column_names))


def _key(definition: Table) -> str:
    if definition.key is None:
        raise ValueError(f"table {definition.name} has no single-column key to merge on")
    return definition.key
