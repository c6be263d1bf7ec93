"""JSON lines into an Arrow table of lines (``lines_table``): one row per non-empty line, the
text as it came, invalid UTF-8 refused."""

from __future__ import annotations

import duckdb
import orjson
import pyarrow as pa
import pytest

from connector.errors import UnreadableRecordError
from connector.marketplace.records import contact_rows, message_rows
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


def test_opt_outs_of_the_bulk_path_equal_the_row_builders() -> None:
    # A category listed twice under two names keeps the first; entries without an id (or
    # a null or empty one) are left out; a missing or null list gives no rows.
    records = [
        {
            "id": "CTT-1",
            "optOuts": [{"id": "NTC-1", "name": "First"}, {"id": "NTC-1", "name": "Later"}],
        },
        {"id": "CTT-2", "optOuts": [{"name": "no id"}, {"id": None}, {"id": ""}, {"id": "NTC-2"}]},
        {"id": "CTT-3", "optOuts": [{"id": "NTC-3", "name": "c"}, {"id": "NTC-1", "name": "a"}]},
        {"id": "CTT-4", "optOuts": []},
        {"id": "CTT-5", "optOuts": None},
        {"id": "CTT-6"},
    ]
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
    _, expected = contact_rows(records, "2026-11-18T15:30:00.000Z")

    got = flatten(flatten(lines, "contacts"), "contact_opt_outs").to_pylist()

    def key(row: dict) -> tuple:
        return (row["contact_id"], row["category_id"], row["category_name"])

    assert sorted(map(key, got)) == sorted(map(key, expected))


def test_messages_of_the_bulk_path_leave_the_body_out_of_raw_as_the_row_builder() -> None:
    # The body comes out of raw wherever the key is, however it is spelled; a line without
    # one is kept exactly as it came.
    lines = [
        b'{"id":"MSG-1","subject":"no body here","status":"Sent"}',
        b'{"id":"MSG-2","subject":"a \\"body\\" in the text","body":"<p>hi</p>"}',
        b'{"id":"MSG-3","body":null,"status":"Sent"}',
        b'{"id":"MSG-4","\\u0062ody":"<p>escaped key</p>","status":"Sent"}',
        b'{"id":"MSG-5","subject":"caf\\u00e9","status":"Sent"}',
        b'{"id":"MSG-6","subject":"body","contact":{"id":"CTT-1","body":"kept: not on top"}}',
    ]
    records = [orjson.loads(line) for line in lines]
    expected = message_rows(records, "2026-11-18T15:30:00.000Z")

    got = flatten(b"\n".join(lines) + b"\n", "messages").column("raw").to_pylist()

    assert [orjson.loads(raw) for raw in got] == [orjson.loads(r["raw"]) for r in expected]
    assert [got[0], got[4], got[5]] == [lines[0].decode(), lines[4].decode(), lines[5].decode()]
    assert all("body" not in orjson.loads(raw) for raw in got)


def _contact(number: int, **fields: object) -> dict[str, object]:
    record: dict[str, object] = {
        "id": f"CTT-{number:04d}",
        "email": f"person.{number}@example.com",
        "audit": {"created": {"at": "2026-11-30T10:00:00.000Z"}},
    }
    return {**record, **fields}


def _lines(records: list[object]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.mark.parametrize("position", [0, 1, 500, 998, 999])
def test_a_record_that_cannot_be_read_is_named_by_its_id(position: int) -> None:
    records: list[object] = [_contact(n) for n in range(1000)]
    records[position] = _contact(position, audit={"created": {"at": "30/11/2026"}})
    with pytest.raises(UnreadableRecordError) as raised:
        flatten(_lines(records), "contacts")
    error = raised.value
    assert (error.collection, error.record) == ("contacts", f"record CTT-{position:04d}")
    assert "invalid timestamp" in error.cause
    assert "30/11/2026" not in str(error)  # the value itself may be personal data


def test_a_line_that_is_not_json_is_named_by_its_place_without_its_text() -> None:
    lines = _lines([_contact(1), _contact(2)]) + b'{"email": "private@example.com",\n'
    with pytest.raises(UnreadableRecordError) as raised:
        flatten(lines, "contacts")
    assert raised.value.record == "line 3 of a chunk (not JSON)"
    assert "Malformed JSON" in raised.value.cause
    assert "private@example.com" not in str(raised.value)


def test_the_first_of_several_unreadable_records_is_named() -> None:
    records: list[object] = [_contact(n) for n in range(100)]
    for position in (40, 41, 90):
        records[position] = _contact(position, audit={"updated": {"at": "yesterday"}})
    with pytest.raises(UnreadableRecordError, match="record CTT-0040 could not be read"):
        flatten(_lines(records), "contacts")
