"""The warehouse: one SQLAlchemy URL, DuckDB by default, PostgreSQL tested for real; its
engine, connections, named locks and the read helpers other layers use.

Every load happens in one transaction (``transaction.py``): rows are staged in a temporary
table in chunks (``staging.py``), then merged, replaced or appended by the statements in
``sql/load``. A failure anywhere rolls the whole load back, so the previous table stays as it
was. Schema upgrades are in ``schema.py``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from connector.errors import ConfigurationError, ConnectorError
from connector.warehouse.schema import ensure_tables
from connector.warehouse.sql_files import statements
from connector.warehouse.staging import Stage, column_values, to_arrow
from connector.warehouse.streamed_merge import MERGE_EVERY_BYTES, MERGE_EVERY_ROWS
from connector.warehouse.tables import ALL_TABLE_NAMES, table
from connector.warehouse.transaction import MergeCounts, Transaction

__all__ = [
    "DEFAULT_DUCKDB_MEMORY_LIMIT",
    "DEFAULT_DUCKDB_SYNC_MEMORY_LIMIT",
    "DEFAULT_WAREHOUSE_URL",
    "WAREHOUSE_URL",
    "MergeCounts",
    "Stage",
    "Transaction",
    "Warehouse",
    "WarehouseBusyError",
    "column_values",
    "to_arrow",
]

log = logging.getLogger(__name__)

WAREHOUSE_URL = "WAREHOUSE_URL"
DEFAULT_WAREHOUSE_URL = "duckdb:///data/notifsync.duckdb"
# DuckDB's own memory cap (its ``memory_limit`` setting; override in the URL's query, e.g.
# ``?memory_limit=2GB``). Beyond it DuckDB spills to disk instead of growing the process: a
# full sync of a million contacts stays within it.
DEFAULT_DUCKDB_MEMORY_LIMIT = "256MB"
# DuckDB's cap while a first load writes rows straight into empty tables
# (``?sync_memory_limit=`` in the URL; never above ``memory_limit``). Such a load holds a
# bounded batch of rows: what DuckDB would keep beyond it is blocks it has already written, a
# cache it will not read again. A first load of a million contacts peaked at 248-275 MB at
# 32 MB, 279-304 MB at 64 MB and 416-436 MB at 256 MB (5-13% faster there). Loads that
# rewrite rows keep ``memory_limit``: DuckDB's record of the rows a transaction replaces grows
# with them (a refresh rewriting a million contacts ran out of 32 MB; 48 MB was enough).
DEFAULT_DUCKDB_SYNC_MEMORY_LIMIT = "32MB"
# The rows of a DuckDB row group, as this connector writes them. DuckDB writes a load's rows to
# the file as each row group fills, while the load goes on; only the last, partial group waits
# for the commit. At DuckDB's default (122,880 rows) a load of 100k contacts was one partial
# group, compressed and written at commit, after the read (about 0.3 s). Groups this size are
# written between pages instead, in the time a paged read waits for the API. Compression is a
# few per cent worse (about 4% bigger files). Override with ``?row_group_size=`` in the URL.
DUCKDB_ROW_GROUP_ROWS = 16_384
# The name the warehouse file is attached under (each connection's default database).
DUCKDB_FILE_ALIAS = "notifsync_warehouse"
# How long a connection waits for a DuckDB file another process holds.
LOCK_WAIT_SECONDS = 120
_OFF = ("false", "0", "off", "no")


class WarehouseBusyError(ConnectorError):
    """Another run holds the lock asked for."""


class Warehouse:
    """A SQL warehouse reached through SQLAlchemy."""

    def __init__(
        self,
        url: str = DEFAULT_WAREHOUSE_URL,
        *,
        merge_every_rows: int = MERGE_EVERY_ROWS,
        merge_every_bytes: int = MERGE_EVERY_BYTES,
    ) -> None:
        # How many staged rows a load merges at a time (connector/warehouse/streamed_merge.py).
        self.merge_every_rows = merge_every_rows
        self.merge_every_bytes = merge_every_bytes
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigurationError(f"{WAREHOUSE_URL} is not a valid SQLAlchemy URL") from exc
        except ValueError as exc:  # a port that is not a number; the message holds no password
            raise ConfigurationError(
                f"{WAREHOUSE_URL} is not a valid SQLAlchemy URL: {exc} (is the port a number?)"
            ) from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "duckdb" and _is_file(parsed.database):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"pool_pre_ping": True}
        shown = parsed
        # DuckDB's (memory cap, cap while a first load writes) and the instance they apply to.
        self._memory_limits: tuple[str, str] | None = None
        self._instance = ""
        attach: functools.partial[None] | None = None
        if self.dialect == "duckdb":
            # DuckDB allows one writing process per file: hold it only while a load runs.
            # Its settings come from the URL's query (?memory_limit=2GB&threads=4); memory
            # is capped by default so a big load spills to disk instead of growing the process.
            config = {"memory_limit": DEFAULT_DUCKDB_MEMORY_LIMIT, **dict(parsed.query)}
            if str(config.get("preserve_insertion_order", "true")).lower() in _OFF:
                # The bulk path pairs each JSON line with the row DuckDB made of it by position.
                raise ConfigurationError(
                    f"{WAREHOUSE_URL}: DuckDB's preserve_insertion_order must stay on (the bulk "
                    "load pairs each source line with its row by position)"
                )
            sync_memory_limits = _memory_limits(config)
            parsed = parsed.set(query={})
            if _is_file(parsed.database):
                # The row group size is an option of attaching a file (not a setting, not
                # stored in it): the file is attached to a DuckDB instance of its own, one per
                # file and process, as opening the file would make (so its connections share
                # one cache and memory cap, and a file is never opened twice in a process).
                # The first Warehouse of a process to attach the file sets its options.
                path = str(Path(parsed.database).resolve())
                rows = _row_group_rows(config.pop("row_group_size", DUCKDB_ROW_GROUP_ROWS))
                read_only = _read_only(config.pop("access_mode", "automatic"))
                # Where DuckDB spills for a file it opens; an instance in memory would spill
                # into the working directory.
                config.setdefault("temp_directory", f"{path}.tmp")
                digest = hashlib.sha256(path.encode()).hexdigest()[:16]
                parsed = parsed.set(database=f":memory:notifsync_{digest}")
                # Loads lower the cap of this instance (a connection of its own sets it).
                self._instance = str(parsed.database)
                self._memory_limits = sync_memory_limits
                attach = functools.partial(_attach_file, path=path, rows=rows, read_only=read_only)
            options = {"poolclass": NullPool, "connect_args": {"config": config}}
        try:
            self.engine = sa.create_engine(parsed, **options)
        except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
            raise ConfigurationError(
                f"{WAREHOUSE_URL}: no SQLAlchemy dialect installed for {parsed.drivername!r}"
            ) from exc
        if attach is not None:
            sa.event.listen(self.engine, "connect", attach)
        # Shown in logs and metadata: no password, and no query (libpq also takes
        # password=... or sslpassword=... there).
        self.url = shown.set(query={}).render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Warehouse({self.url})"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction; committed when the block ends, rolled back if it raises.

        On PostgreSQL the tables it changed get fresh planner statistics after the commit.
        """
        with self._connect() as connection:
            with connection.begin():
                tx = Transaction(
                    connection, self.dialect, self.merge_every_rows, self.merge_every_bytes
                )
                yield tx
            if self.dialect == "postgresql" and tx.changed:
                with connection.begin():
                    for name in sorted(tx.changed):
                        tx.run("load/analyze_table", target=name)

    @contextlib.contextmanager
    def load(self) -> Iterator[Transaction]:
        """A ``transaction`` for a sync's load. On DuckDB, a load writing new rows straight
        into empty tables calls ``tx.lower_memory_cap()``: capped at the URL's
        ``sync_memory_limit`` until it calls ``tx.lift_memory_cap()`` (before the work after
        the read) or ends. The cap is DuckDB's, for the whole instance: lower while such a load
        streams and none works over a whole table, ``memory_limit`` otherwise
        (``_LoadCaps``)."""
        limits = self._memory_limits
        if limits is None:
            with self.transaction() as tx:
                yield tx
            return
        with contextlib.ExitStack() as opened:
            # The connection that sets the cap, opened only by a load that lowers it.
            setter: Connection | None = None
            state: str | None = None

            def move(to: str | None) -> None:
                nonlocal setter, state
                if setter is None:
                    setter = opened.enter_context(self._connect())
                _LOAD_CAPS.move(self._instance, setter, limits, state, to)
                state = to

            def lower() -> None:
                if state is None:
                    move(_STREAMING)

            def lift() -> None:
                if state == _STREAMING:
                    move(_LIFTED)

            try:
                with self.transaction() as tx:
                    tx.lower_memory_cap, tx.lift_memory_cap = lower, lift
                    yield tx
            finally:
                if state is not None:
                    move(None)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        # Another process (a second run, the UI's preview) may hold a DuckDB file for a moment.
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        waiting = False
        while True:
            try:
                connection = self.engine.connect()
                break
            except sa.exc.OperationalError as exc:
                locked = self.dialect == "duckdb" and "lock" in str(exc).lower()
                if not locked or time.monotonic() > deadline:
                    raise
                if not waiting:
                    # Said once: who holds the file (DuckDB names the process) and how long.
                    waiting = True
                    log.warning(
                        "%s is locked by another process; waiting up to %d s for it (%s)",
                        self.url,
                        LOCK_WAIT_SECONDS,
                        _lock_holder(exc),
                    )
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
                    tx = Transaction(
                        connection, self.dialect, self.merge_every_rows, self.merge_every_bytes
                    )
                    key = {"name": f"notifsync:{name}"}
                    taken = tx.run("warehouse/try_advisory_lock", key).scalar()
                    connection.commit()
                    if not taken:
                        raise WarehouseBusyError(f"{name} is already running elsewhere")
                    try:
                        yield
                    finally:
                        tx.run("warehouse/release_advisory_lock", key)
                        connection.commit()
                else:
                    yield
        finally:
            local.release()

    def ensure_tables(self, names: Sequence[str] = ALL_TABLE_NAMES) -> None:
        """Create missing tables, and add columns a newer version of the DDL defines."""
        with self.transaction() as tx:
            ensure_tables(tx, names)

    # -- reads for other layers (metadata, checks, the CLI) ---------------------------------

    def count_rows(self, table_name: str) -> int:
        """Row count of a table."""
        with self.transaction() as tx:
            return tx.count_rows(table_name)

    def count(self, table_name: str) -> int:
        """Row count of a table (``count_rows``; the name other layers call today)."""
        return self.count_rows(table_name)

    def count_window(self, table_name: str, time_column: str, start: Any, end: Any) -> int:
        """Rows with ``start <= time_column < end``."""
        with self.transaction() as tx:
            return tx.count_window(table_name, time_column, start, end)

    def preview(self, table_name: str, limit: int = 5, order_column: str | None = None) -> list:
        """The latest rows of a table (by ``order_column``, else ``synced_at`` or the first
        column), every column of its DDL."""
        columns = table(table_name).column_names
        order = order_column or ("synced_at" if "synced_at" in columns else columns[0])
        with self.transaction() as tx:
            return tx.run(
                "warehouse/select_preview",
                {"limit": limit},
                target=table_name,
                columns=", ".join(columns),
                order_column=order,
            ).all()

    def query_file(self, name: str, **params: Any) -> list[sa.Row[Any]]:
        """Rows of the read-only statement in ``sql/<name>.sql``."""
        with self.transaction() as tx:
            return list(tx.run(name, params))

    def query(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        """Rows of a read-only query given as text (tests; use ``query_file`` in code)."""
        with self.transaction() as tx:
            return list(tx.connection.execute(sa.text(sql), params))

    def dispose(self) -> None:
        self.engine.dispose()


_STREAMING, _LIFTED = "streaming", "lifted"


class _LoadCaps:
    """The loads running per DuckDB instance in this process, and so its cap: the lower one
    while a load streams and none works over a whole table (that one needs the full cap)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._running: dict[str, list[str]] = {}

    def move(
        self,
        instance: str,
        connection: Connection,
        limits: tuple[str, str],
        before: str | None,
        after: str | None,
    ) -> None:
        """One load moves from ``before`` to ``after`` (None: not running); the cap follows.
        Never raises: the cap saves memory, and a load is not stopped for it."""
        memory_limit, sync_memory_limit = limits
        with self.lock:
            running = self._running.setdefault(instance, [])
            if before is not None:
                running.remove(before)
            if after is not None:
                running.append(after)
            streaming_only = bool(running) and _LIFTED not in running
            if not running:
                del self._running[instance]
            limit = sync_memory_limit if streaming_only else memory_limit
            try:
                (statement,) = statements("warehouse/set_memory_limit")
                connection.execute(sa.text(statement), {"limit": limit})
                connection.commit()
            except sa.exc.DBAPIError as exc:
                # E.g. DuckDB cannot free enough memory to go lower (nowhere to spill).
                cause = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
                connection.rollback()
                log.warning("DuckDB memory cap left as it was (wanted %s): %s", limit, cause)


_LOAD_CAPS = _LoadCaps()


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def _memory_limits(config: dict[str, Any]) -> tuple[str, str] | None:
    """(``memory_limit``, the cap while a first load writes), ``sync_memory_limit`` taken out of
    ``config``; None when loads keep ``memory_limit`` (a load never raises a smaller one; one
    in another form, a share of RAM, is kept for loads too)."""
    memory_limit = str(config["memory_limit"])
    given = config.pop("sync_memory_limit", None)
    sync_limit = str(given if given is not None else DEFAULT_DUCKDB_SYNC_MEMORY_LIMIT)
    sync_bytes = _bytes(sync_limit)
    if sync_bytes is None or sync_bytes <= 0:
        raise ConfigurationError(
            f"{WAREHOUSE_URL}: sync_memory_limit must be a size such as 64MB or 1GB, "
            f"not {sync_limit!r}"
        )
    limit_bytes = _bytes(memory_limit)
    if limit_bytes is None or limit_bytes <= sync_bytes:
        return None
    return memory_limit, sync_limit


def _bytes(size: str) -> float | None:
    """A DuckDB size (``64MB``, ``1.5 GiB``) in bytes; None for another form."""
    match = _SIZE.fullmatch(size)
    if match is None:
        return None
    return float(match[1]) * _UNITS[(match[2] or "b").lower()]


def _is_file(database: str | None) -> bool:
    """Whether a DuckDB URL's database is a file (not in memory, not a MotherDuck one)."""
    return bool(database) and not str(database).startswith((":memory:", "md:", "motherduck:"))


def _row_group_rows(value: Any) -> int:
    """The ``row_group_size`` URL option: a positive number of rows, a multiple of DuckDB's
    vector size (2,048), as DuckDB requires."""
    try:
        rows = int(value)
    except (TypeError, ValueError):  # TypeError: the option given twice
        rows = 0
    if rows <= 0 or rows % 2048:
        raise ConfigurationError(
            f"{WAREHOUSE_URL}: row_group_size must be a positive multiple of 2048 rows, "
            f"not {value!r}"
        )
    return rows


def _read_only(value: Any) -> bool:
    """The ``access_mode`` URL option (DuckDB's values), as the file is attached."""
    mode = str(value).lower()
    if mode not in ("automatic", "read_write", "read_only"):
        raise ConfigurationError(
            f"{WAREHOUSE_URL}: access_mode must be automatic, read_write or read_only, "
            f"not {value!r}"
        )
    return mode == "read_only"


def _attach_file(
    driver_connection: Any, _record: Any, *, path: str, rows: int, read_only: bool
) -> None:
    """On each new connection: the warehouse file attached (once per instance) and used."""
    (attach,) = statements("warehouse/attach_duckdb_file", alias=DUCKDB_FILE_ALIAS)
    driver_connection.execute(attach, {"path": path, "rows": rows, "read_only": read_only})
    (use,) = statements("warehouse/use_duckdb_file", alias=DUCKDB_FILE_ALIAS)
    driver_connection.execute(use)


def _lock_holder(exc: sa.exc.OperationalError) -> str:
    """DuckDB's words for who holds the lock ("Conflicting lock is held in ... (PID n)")."""
    text = str(exc.orig)
    start = text.find("Conflicting lock")
    return text[start:].split(". ")[0] if start >= 0 else "holder unknown"


_LOCAL_LOCKS: dict[tuple[str, str], threading.Lock] = {}
