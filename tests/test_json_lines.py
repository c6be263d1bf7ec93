"""JSON lines into an Arrow table of lines (``lines_table``): one row per non-empty line, the
text as it came, invalid UTF-8 refused."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connector.warehouse.json_lines import lines_table


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
