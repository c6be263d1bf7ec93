"""Bulk staging: rows into a load's temporary stage table, chunk by chunk, in the fastest form
each warehouse takes (Arrow into DuckDB, ``COPY`` into PostgreSQL, ``executemany`` elsewhere).

Two entry points: ``Stage.write`` takes rows as dicts (the row builders' output),
``Stage.write_arrow`` takes columns already built in bulk (the JSON-lines fast path).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from connector.warehouse.rows import Row
from connector.warehouse.sql_files import statements
from connector.warehouse.tables import Table

if TYPE_CHECKING:
    from connector.warehouse.transaction import Transaction

ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "json": pa.string(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "double precision": pa.float64(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}
# PostgreSQL's CSV reading: an unquoted empty field is null, a quoted one the empty string;
# Arrow quotes every string it writes, so the two stay apart.
_CSV = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


class Stage:
    """A temporary table that receives one load's rows, chunk by chunk."""

    def __init__(self, tx: Transaction, definition: Table) -> None:
        self.tx = tx
        self.table = definition
        self.name = f"stage_{definition.name}"
        self.columns = ", ".join(definition.column_names)
        self.rows = 0
        self.bytes = 0  # as Arrow held the rows written (``write_arrow``)
        # Whether every key written so far came after the one before it (the client's reads
        # hand them in increasing order): then none repeats, and a load written straight into
        # its table need not count them all at the end (a hash of every key: about 50 MB and
        # a tenth of a second at a million). Unknown (False) for a table without a single key.
        self.keys_ascending = definition.key is not None
        self._last_key: str | None = None

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
            self.write_arrow(to_arrow(self.table, columns, constants))
            return
        self.keys_ascending = False  # not followed on this path
        if self._copies:
            with self._copy() as copy:
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
        else:
            names = self.table.column_names
            self.tx.connection.execute(
                self._insert(),
                [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)],
            )
        self.rows += len(rows)

    @property
    def _copies(self) -> bool:
        return self.tx.dialect == "postgresql" and self.tx.connection.dialect.driver == "psycopg"

    def _copy(self, name: str = "load/copy_into_stage") -> Any:
        (statement,) = statements(name, stage=self.name, columns=self.columns)
        cursor = self.tx.connection.connection.driver_connection.cursor()
        return cursor.copy(statement)

    def _insert(self) -> sa.Insert:
        names = self.table.column_names
        return sa.insert(sa.table(self.name, *(sa.column(n) for n in names)))

    def write_arrow(self, data: pa.Table, constants: Row | None = None) -> None:
        """Append an Arrow table's rows; columns are matched by name (missing ones are null,
        ``constants`` fill one value for every row) and cast to the table's types."""
        if data.num_rows == 0:
            return
        rows = notifsync_arrow_rows = conform(self.table, data, constants or {})
        if self.keys_ascending:
            self._follow_key_order(rows.column(self.table.key))
        if self.tx.dialect == "duckdb":
            duck = self.tx.connection.connection.driver_connection
            # The statement reads the Arrow table by this local's name (a replacement scan;
            # a name no warehouse table has, as a table of that name would be read instead):
            # not a registered view, which the open transaction would keep, memory and all,
            # until it ends; and cheaper than a relation's insert_into.
            (statement,) = statements(
                "load/insert_arrow_into_stage", stage=self.name, columns=self.columns
            )
            duck.execute(statement)
            del notifsync_arrow_rows
        elif self._copies:
            buffer = io.BytesIO()
            pa_csv.write_csv(_timestamps_as_text(rows), buffer, _CSV)
            with self._copy("load/copy_csv_into_stage") as copy:
                copy.write(buffer.getbuffer())
        else:
            self.tx.connection.execute(self._insert(), rows.to_pylist())
        self.rows += rows.num_rows
        self.bytes += rows.nbytes

    def _follow_key_order(self, keys: pa.ChunkedArray) -> None:
        """``keys_ascending`` kept up to date with a chunk's keys (in Arrow, no hash)."""
        values = keys.combine_chunks()
        count = len(values)
        ascending = (
            values.null_count == 0
            and pc.all(pc.greater(values.slice(1), values.slice(0, count - 1))).as_py() is not False
            and (self._last_key is None or values[0].as_py() > self._last_key)
        )
        if not ascending:
            self.keys_ascending = False
            return
        self._last_key = values[count - 1].as_py()


def conform(definition: Table, data: pa.Table, constants: Row) -> pa.Table:
    """``data`` with exactly the columns of ``definition``, in its order and types."""
    arrays = []
    present = set(data.column_names)
    for column in definition.columns:
        arrow_type = ARROW_TYPES[column.type]
        if column.name in constants:
            arrays.append(_repeat(constants[column.name], column.type, data.num_rows))
        elif column.name in present:
            values = data.column(column.name)
            if values.type != arrow_type:
                values = values.cast(arrow_type)
            arrays.append(values)
        else:
            arrays.append(pa.nulls(data.num_rows, arrow_type))
    return pa.Table.from_arrays(arrays, names=list(definition.column_names))


def _timestamps_as_text(data: pa.Table) -> pa.Table:
    """``data`` with its timestamps (UTC, as ``conform`` makes them) as ISO 8601 text, for the
    CSV writer: it formats a zoned timestamp through the time zone database value by value,
    which cost six times as much as writing all the other columns of a contacts chunk."""
    for index, field in enumerate(data.schema):
        if pa.types.is_timestamp(field.type):
            # Without its zone the value is the same UTC wall time, which casts to text fast.
            text = data.column(index).cast(pa.timestamp(field.type.unit)).cast(pa.string())
            data = data.set_column(index, field.name, pc.binary_join_element_wise(text, "Z", ""))
    return data


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


def _repeat(value: Any, column_type: str, count: int) -> pa.Array:
    # One value for every row: converted once, repeated in Arrow.
    arrow_type = ARROW_TYPES[column_type]
    if column_type == "json" and value is not None:
        value = _json_texts([value])[0]
    if value is None:
        return pa.nulls(count, arrow_type)
    scalar = pa.scalar(value)
    if scalar.type != arrow_type:
        scalar = pa.array([value], pa.string() if isinstance(value, str) else None).cast(
            arrow_type
        )[0]
    return pa.repeat(scalar, count)


def to_arrow(
    definition: Table, columns: Sequence[list[Any]], constants: Row | None = None
) -> pa.Table:
    """An Arrow table in the column order and types of ``definition``."""
    constants = constants or {}
    arrays = []
    for column, values in zip(definition.columns, columns, strict=True):
        arrow_type = ARROW_TYPES[column.type]
        if column.name in constants:
            arrays.append(_repeat(constants[column.name], column.type, len(values)))
        elif pa.types.is_timestamp(arrow_type):
            arrays.append(pa.array(values, pa.string()).cast(arrow_type))
        else:
            arrays.append(pa.array(values, arrow_type))
    return pa.Table.from_arrays(arrays, names=list(definition.column_names))
