"""JSON lines into columns, in bulk: a chunk of source records (one JSON object per line, as
the API streams them) becomes an Arrow table through ``sql/load/flatten_<name>.sql``, run by
an in-process DuckDB. Python only moves the buffer: no record becomes a Python object.

The flattening DuckDB is a private in-memory database per thread, capped small
(``FLATTEN_MEMORY_LIMIT``): it holds one chunk at a time, whichever warehouse receives the rows.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from connector.warehouse.sql_files import statements

FLATTEN_MEMORY_LIMIT = "64MB"
NEWLINE = 10
_LOCAL = threading.local()


def lines_table(lines: bytes) -> pa.Table:
    """One row per non-empty line, in column ``raw`` (UTF-8 checked, no JSON parsed).

    The newlines are found and cut out in bulk (Arrow compute over the bytes), and the
    strings are laid over what remains: one copy of the buffer, whatever the number of lines.
    """
    if lines and not lines.endswith(b"\n"):
        lines += b"\n"
    size = len(lines)
    data = pa.Array.from_buffers(pa.uint8(), size, [None, pa.py_buffer(lines)])
    newline = pc.equal(data, NEWLINE)
    ends = pc.indices_nonzero(newline).cast(pa.int64())
    count = len(ends)
    if count == 0:
        return pa.table({"raw": pa.array([], pa.large_string())})
    # Without its newline, line i starts at (end of line i-1) + 1 - i and ends at end_i - i.
    shift = pa.array(range(count), pa.int64())
    line_ends = pc.subtract(ends, shift)
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), line_ends])
    text = data.filter(pc.invert(newline))
    values = pa.LargeStringArray.from_buffers(count, offsets.buffers()[1], text.buffers()[1])
    values.validate(full=True)  # invalid UTF-8 is an error here, not a garbled row later
    lengths = pc.binary_length(values)
    if pc.min(lengths).as_py() == 0:
        values = values.filter(pc.greater(lengths, 0))
    return pa.table({"raw": values})


def flatten(chunk: bytes | pa.Table, name: str) -> pa.Table:
    """The rows ``sql/load/flatten_<name>.sql`` makes of a chunk: JSON lines (bytes, or a
    ``lines_table``), or columns an earlier flatten made (the statement reads ``chunk``)."""
    table = chunk if isinstance(chunk, pa.Table) else lines_table(chunk)
    (statement,) = statements(f"load/flatten_{name}")
    return _connection().from_arrow(table).query("chunk", statement).to_arrow_table()


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
