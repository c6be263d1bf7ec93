"""JSON lines into an Arrow table of lines (``lines_table``): one row per non-empty line, the
text as it came, invalid UTF-8 refused."""

from __future__ import annotations

import duckdb
import orjson
import pyarrow as pa
import pytest

from connector.warehouse.json_lines import flatten, lines_table


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (b"", []),
        (b"\n", []),
        (b'{"a":1}\n{"b":2}\n', ['{"a":1}', '{"b":2}']),
        (b'{"a":1}\n{"b":2}', ['{"a":1}', '{"b":2}']),
        (b'\n{"a":1}\n\n\n{"b":"\xc3\xa9"}\n\n', ['{"a":1}', '{"b":"\u00e9"}']),
        (b' {"a": 1} \r\n', [' {"a": 1} \r']),
    ],
)
def test_lines_table_has_one_row_per_non_empty_line(lines: bytes, expected: list[str]) -> None:
    table = lines_table(lines)
    assert table.column_names == ["raw"]
    assert table.column("raw").to_pylist() == expected


def test_lines_table_refuses_invalid_utf8() -> None:
    with pytest.raises(pa.ArrowInvalid):
        lines_table(b'{"a":1}\n{"b":"\xff"}\n')


def test_flatten_keeps_each_line_with_its_row() -> None:
    # The line is attached to the statement's columns by position: the rows must come out of
    # DuckDB in the lines' order, on several threads and over several Arrow batches too.
    records = [orjson.dumps({"id": f"CTT-{i:06d}", "email": f"p{i}@x.org"}) for i in range(60_000)]
    pieces = [lines_table(b"\n".join(records[i : i + 20_000])) for i in range(0, 60_000, 20_000)]
    duck = duckdb.connect(":memory:", config={"threads": 4})
    flat = flatten(pa.concat_tables(pieces), "contacts", duck)
    ids = flat.column("id").to_pylist()
    assert ids == [f"CTT-{i:06d}" for i in range(60_000)]
    assert [orjson.loads(raw)["id"] for raw in flat.column("raw").to_pylist()] == ids
