"""JSON lines into columns, in bulk: a chunk of source records (one JSON object per line, as
the API streams them) becomes an Arrow table through ``sql/load/flatten_<name>.sql``, run by
an in-process DuckDB. Python only moves the buffer: no record becomes a Python object.

On a DuckDB warehouse the flattening runs on the warehouse's own connection (one memory cap);
otherwise on a private in-memory DuckDB per thread, capped small (``FLATTEN_MEMORY_LIMIT``): it
holds one chunk at a time.
"""

from __future__ import annotations

import re
import threading

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.errors import UnreadableRecordError
from connector.warehouse.sql_files import statements

FLATTEN_MEMORY_LIMIT = "32MB"
# The statements that make one row of each line, in the lines' order, and keep the line as
# it came (column ``raw``): it is attached to their columns here rather than copied out of
# DuckDB again (the biggest column by far). One that changes some lines (messages) gives
# their new text as its own ``raw``, null for the lines kept as they are. DuckDB keeps the
# rows of such a statement in order (its ``preserve_insertion_order``, on by default).
KEEPS_LINE = frozenset({"contacts", "categories", "batches", "messages", "evinotice_batches"})
_LOCAL = threading.local()


def lines_table(lines: bytes) -> pa.Table:
    """One row per non-empty line, in column ``raw`` (UTF-8 checked, no JSON parsed)."""
    # One copy of the buffer into Arrow, split there: no Python object per line (bytes.split
    # and pa.array cost about three times as much; these kernels' first call costs ms). A
    # chunk is far below 2 GiB, but a bigger one still works, with 64-bit offsets.
    small = len(lines) < 2**31
    whole = pa.array([lines], pa.binary() if small else pa.large_binary())
    parts = pc.split_pattern(whole, b"\n").flatten()
    if lines.endswith(b"\n"):
        parts = parts.slice(0, len(parts) - 1)  # the nothing after the last newline
    values = parts.cast(pa.string() if small else pa.large_string())  # checks the UTF-8
    lengths = pc.binary_length(values)
    if len(values) and pc.min(lengths).as_py() == 0:
        values = values.filter(pc.greater(lengths, 0))
    return pa.table({"raw": values})


def flatten(
    lines: bytes | pa.Table, name: str, duck: duckdb.DuckDBPyConnection | None = None
) -> pa.Table:
    """The rows ``sql/load/flatten_<name>.sql`` makes of a chunk: JSON lines (bytes, or a
    ``lines_table``), or columns an earlier flatten made (the statement reads them as
    ``notifsync_arrow_chunk``).
    For the statements of ``KEEPS_LINE``, the line comes along as column ``raw``.

    ``duck``: a DuckDB connection to run it on (a DuckDB warehouse's own, so one memory cap
    covers both); else this thread's private in-memory one."""
    chunk = notifsync_arrow_chunk = lines if isinstance(lines, pa.Table) else lines_table(lines)
    (statement,) = statements(f"load/flatten_{name}")
    connection = duck if duck is not None else _connection()
    # DuckDB finds the table the statement reads by this local's name (a replacement scan;
    # a name no warehouse table has, as a table of that name would be read instead) and
    # binds the statement once. Not a relation's .query(), which binds it three times (a
    # bind of the contacts statement costs more than parsing 10,000 contacts), nor a view
    # registered for the call, which a warehouse's open transaction keeps, memory and all,
    # until it ends.
    try:
        rows = connection.sql(statement).to_arrow_table()
    except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:
        record = _first_unreadable(chunk, statement)
        raise UnreadableRecordError(name, record, _cause(exc)) from None
    del notifsync_arrow_chunk
    if name not in KEEPS_LINE:
        return rows
    if rows.num_rows != chunk.num_rows:
        raise ValueError(f"flatten_{name}.sql made {rows.num_rows} rows of {chunk.num_rows} lines")
    line = chunk.column("raw")
    if "raw" not in rows.column_names:
        return rows.append_column("raw", line)
    changed = rows.column("raw")
    if changed.null_count < len(changed):
        line = pc.coalesce(changed.cast(line.type), line)
    return rows.set_column(rows.schema.get_field_index("raw"), "raw", line)


def _first_unreadable(chunk: pa.Table, statement: str) -> str:
    """The first row of ``chunk`` the statement refuses, named by its id where it has one
    (found by halving: a few runs of the statement, only once a chunk has failed), or "a
    record of a chunk" when no single row fails on its own. On this thread's private DuckDB:
    a warehouse's transaction is aborted by the failure."""
    connection = _connection()

    def refused(start: int, count: int) -> bool:
        notifsync_arrow_chunk = chunk.slice(start, count)  # noqa: F841 (read by name)
        try:
            connection.sql(statement).to_arrow_table()
        except (duckdb.ConversionException, duckdb.InvalidInputException):
            return True
        return False

    try:
        start, end = 0, chunk.num_rows
        while end - start > 1:
            middle = (start + end) // 2
            if refused(start, middle - start):
                end = middle
            else:
                start = middle
        if chunk.num_rows and refused(start, 1):
            return _record_name(chunk.slice(start, 1), start)
    except duckdb.Error:  # the search itself failed (memory): the chunk is named as a whole
        pass
    return "a record of a chunk"


def _record_name(row: pa.Table, position: int) -> str:
    """``record <id>`` of a one-row chunk (its line, or columns with an id), else its place."""
    for column in ("id", "Id"):
        if column in row.column_names:
            value = row.column(column)[0].as_py()
            if value is not None:
                return f"record {value}"
    if "raw" in row.column_names:
        try:
            record = orjson.loads(row.column("raw")[0].as_py())
        except orjson.JSONDecodeError:
            return f"line {position + 1} of a chunk (not JSON)"
        if isinstance(record, dict):
            for key in ("id", "Id"):
                if isinstance(record.get(key), str | int):
                    return f"record {record[key]}"
    return f"line {position + 1} of a chunk"


# DuckDB quotes the value it refused, and after "Input:" the start of a malformed line: both
# left out, as they may hold personal data (the record is named instead).
_QUOTED = re.compile(r'"[^"]*"')


def _cause(exc: Exception) -> str:
    """The first line of DuckDB's message, without the values it quotes."""
    first = str(exc).strip().splitlines()[0].split("  Input:", 1)[0].strip()
    return _QUOTED.sub('"…"', first)


def _connection() -> duckdb.DuckDBPyConnection:
    # One per thread: a DuckDB connection is not shared between threads at once.
    connection = getattr(_LOCAL, "duck", None)
    if connection is None:
        connection = duckdb.connect(
            ":memory:",
            config={"memory_limit": FLATTEN_MEMORY_LIMIT, "threads": 2},
        )
        _LOCAL.duck = connection
    return connection
