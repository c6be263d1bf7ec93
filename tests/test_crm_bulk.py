"""The bulk read (``CrmRead.batches``: plain lines through Arrow, the rest record by record)
gives exactly the rows, line numbers, rejections and counts of the record-at-a-time read, for
any export: generated messy files, block boundaries, every encoding and workbooks, and the
same ``crm_contacts`` / ``crm_rejected_rows`` on both warehouses."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from crm_files import make_workbook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.crm import CrmFileError, read_export
from connector.crm.blocks import BLOCK_BYTES
from connector.crm.bulk import ODD_BATCH, PLAIN_EMAIL_RE2
from connector.emails import PLAIN_EMAIL
from connector.pipelines import reconcile
from connector.warehouse.engine import Warehouse

MAPPING = {
    "columns": {"email": "Email", "first_name": "First", "last_name": "Last", "name": "Name"},
    "flags": {
        "do_not_email": ["No Mail"],
        "hard_bounced": [{"column": "Bounce", "when": "nonempty"}],
    },
    "category_opt_outs": [{"column": "Opt-out: Invoices", "category": "NTC-1234-5678"}],
}
HEADER = ["Email", "First", "Last", "Name", "No Mail", "Bounce", "Opt-out: Invoices", "No Mail"]


def classic(path: Path, mapping: Any = "auto") -> tuple[list, list, dict]:
    """Rows and summary of the record-at-a-time read, contacts as the bulk read gives them."""
    export = read_export(path, mapping)
    contacts, rejected = export.read_all()
    for row in contacts:
        row["opted_out_category_ids"] = orjson.dumps(row["opted_out_category_ids"]).decode()
    return _sorted(contacts), _sorted(rejected), vars(export.summary)


def bulk(path: Path, mapping: Any = "auto") -> tuple[list, list, dict]:
    export = read_export(path, mapping)
    contacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for batch in export.batches():
        contacts.extend(batch.contacts.to_pylist())
        rejected.extend(batch.rejected)
    return _sorted(contacts), _sorted(rejected), vars(export.summary)


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["source_file"], r["line"]))


def assert_same(path: Path, mapping: Any = "auto") -> tuple[list, list, dict]:
    try:
        expected = classic(path, mapping)
    except CrmFileError as exc:
        # A file that cannot be read at all is refused before either way reads a line.
        with pytest.raises(CrmFileError, match=re.escape(exc.problem)):
            bulk(path, mapping)
        return [], [], {}
    got = bulk(path, mapping)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    return got


# -- generated messy exports -----------------------------------------------------------------

EMAILS = [
    "ann@example.com",
    "Bob.Lee@Example.COM",
    " spaced@example.com ",
    "jörg@bücher.de",
    "no-at-sign",
    "",
    "a@b",
    "x@-bad.com",
    "mailto:m@example.org",
    "Ann <ann@example.com>",
    "a@b.c0m",
    "tab\t@example.com",
    'q"uote@example.com',
    "a" * 70 + "@example.com",
]
CELLS = [
    "",
    "Ann",
    " lead",
    "Zoë",
    "x,y",
    "a;b",
    "true",
    "no",
    "Ja",
    "-",
    "yes ",
    "550 user unknown",
    '"quoted"',
    '"a ""b"" c"',
    '"multi\nline"',
    '"multi\r\nline"',
    '"open',
    'mid"quote',
    '"closed"tail',
    "nul\x00cell",
    "bare\rcr",
    "\u3000wide\u3000",
    "\x1cfs",
    "\xa0nbsp",
]


@st.composite
def messy_export(draw: st.DrawFn) -> bytes:
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]))
    # The full header, a single column, or one with unnamed columns at the end (records may
    # then be shorter than the header).
    header = draw(st.sampled_from([HEADER, ["Email"], ["Email", "Name", "", ""]]))
    lines = [delimiter.join(header)]
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from(["", " ", delimiter * 3, delimiter * 9])))
            continue
        width = len(header) if kind > 2 else draw(st.integers(1, len(header) + 2))
        # Mostly lines that are plain or nearly so, as in real exports; some messy ones.
        emails, cells_ = (EMAILS, CELLS) if kind < 6 else (EMAILS[:4], CELLS[:14])
        cells = [draw(st.sampled_from(emails))] + [
            draw(st.sampled_from(cells_)) for _ in range(width - 1)
        ]
        lines.append(delimiter.join(cells))
    text = ending.join(lines) + draw(st.sampled_from(["", ending]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        # Bytes no encoding reads the same way: invalid UTF-8, undefined in Windows-1252.
        at = draw(st.integers(len(lines[0]) + 2, max(len(lines[0]) + 2, len(data))))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\x81", b"\xe9"])) + data[at:]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=messy_export())
def test_bulk_and_record_reads_agree_on_any_export(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("messy") / "export.csv"
    path.write_bytes(data)
    assert_same(path, MAPPING)


# -- block boundaries, encodings, workbooks --------------------------------------------------


def test_odd_lines_at_a_block_boundary_keep_their_line_numbers(tmp_path: Path) -> None:
    """A quoted record running over lines across the block boundary, a NUL, a bare CR and a
    broken quote around it: every other line is plain and read in bulk."""
    lines = ["Email,Name,Do Not Email"]
    line_bytes = len(lines[0]) + 1
    number = 0
    while line_bytes < BLOCK_BYTES - 200:
        number += 1
        text = f"person.{number}@example.com,Person {number},{'true' if number % 7 else 'no'}"
        lines.append(text)
        line_bytes += len(text) + 1
    lines += [
        'near.edge@example.com,"Name that runs',
        "over the",
        "block boundary" + "x" * 300 + '",false',
        "nul@example.com,Nul\x00,false",
        "cr@example.com,Bare\rCR,false",
        'broken@example.com,"Open,false',
        "after@example.com,After,false",
        "",
        "   ",
        "last@example.com,Last,maybe",
    ]
    path = tmp_path / "big.csv"
    path.write_bytes("\n".join(lines).encode())
    assert path.stat().st_size > BLOCK_BYTES
    contacts, rejected, summary = assert_same(path)
    assert summary["contacts"] == len(contacts) > number
    by_line = {r["line"]: r["kind"] for r in rejected}
    assert set(by_line.values()) == {"unreadable line", "unreadable flag"}
    spanning = next(c for c in contacts if c["email"] == "near.edge@example.com")
    assert spanning["line"] == number + 2
    assert next(c for c in contacts if c["email"] == "after@example.com")["line"] == number + 9


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "cp1252", "utf-16", "utf-16-le", "utf-32"]
)
def test_every_encoding_reads_the_same_in_bulk(tmp_path: Path, encoding: str) -> None:
    text = (
        "sep=;\r\n"
        "Email;First Name;Last Name;HasOptedOutOfEmail;IsEmailBounced\r\n"
        "rené@exämple.org;René;Ünal;false;false\r\n"
        '"Quoted@Example.org";"Q ""the"" one";;true;false\r\n'
        "plain@example.org; Spaced ;Name;false; true\r\n"
        "\r\n"
        "bad email;X;Y;false;false\r\n"
    )
    path = tmp_path / "export.csv"
    data = text.encode(encoding)
    if encoding == "utf-16-le":
        data = text.encode("utf-16-le")
    path.write_bytes(data)
    contacts, rejected, _ = assert_same(path)
    assert len(contacts) == 3 and len(rejected) == 1


@pytest.mark.parametrize("quoted", [False, True])
def test_a_field_over_the_csv_limit_rejects_its_line_in_bulk_too(
    tmp_path: Path, quoted: bool
) -> None:
    huge = "x" * (csv.field_size_limit() + 1)
    cell = f'"{huge}"' if quoted else huge
    rows = ["Email,Name", "a@example.com,A", f"b@example.com,{cell}", "c@example.com,C"]
    path = tmp_path / "huge.csv"
    path.write_bytes("\n".join(rows).encode())
    contacts, rejected, _ = assert_same(path)
    assert [c["line"] for c in contacts] == [2, 4]
    assert [r["line"] for r in rejected] == [3]


def test_a_fully_quoted_export_is_read_in_bulk_the_same_way(tmp_path: Path) -> None:
    rows = [
        '"Id","FirstName","LastName","Email","HasOptedOutOfEmail"',
        *(
            f'"003{i:05d}","Ann, {i}","O""Brien","Ann.{i}@Example.com","{i % 3 == 0}"'
            for i in range(500)
        ),
        '"0039","Bad","Quote" ,"bad.quote@example.com","false"',
        '"0040", "Spaced","Quote","spaced.quote@example.com","false"',
    ]
    path = tmp_path / "salesforce.csv"
    path.write_bytes("\r\n".join(rows).encode())
    contacts, rejected, _ = assert_same(path)
    assert len(contacts) == 501 and len(rejected) == 1
    # Every line plain: the block is checked and parsed whole.
    path.write_bytes("\r\n".join(rows[:-2]).encode())
    contacts, rejected, _ = assert_same(path)
    assert len(contacts) == 500 and not rejected
    assert contacts[0]["name"] == 'Ann, 0 O"Brien'


def test_an_export_of_odd_lines_is_read_by_the_record_reader_in_batches(tmp_path: Path) -> None:
    """Fields quoted after a space are never plain: every record goes through CsvSource,
    still in batches of ODD_BATCH (memory stays flat), then the plain lines after them."""
    rows = ['"Email", "Name", "Do Not Email"']
    rows += [f'"p.{i}@example.com", "P {i}", "{i % 3 == 0}"' for i in range(ODD_BATCH + 10)]
    rows += [f"plain.{i}@example.com,Plain,false" for i in range(10)]
    path = tmp_path / "spaced.csv"
    path.write_bytes("\n".join(rows).encode())
    contacts, rejected, _ = assert_same(path)
    assert len(contacts) == ODD_BATCH + 20 and not rejected
    sizes = [batch.contacts.num_rows for batch in read_export(path).batches()]
    assert sizes[0] == ODD_BATCH and sum(sizes) == ODD_BATCH + 20


def test_workbooks_give_the_same_rows_through_batches(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "book.xlsx",
        [["Email", "Name", "Do Not Email"], ["A@Example.com", "A", "yes"], ["bad", "B", "no"]],
        Leads=[["Email", "Name"], ["lead@example.com", "Lead"]],
    )
    contacts, _, summary = assert_same(path)
    assert summary["sheets"] == ["Contacts", "Leads"] and len(contacts) == 2


# -- the pieces Arrow does: the email pattern and trimming -----------------------------------


@pytest.mark.parametrize(
    "value",
    [
        *EMAILS,
        "a.b@c.de",
        "a..b@c.de",
        ".a@c.de",
        "a@c-.de",
        "a@c.d",
        "a@c.de-",
        "a@1.23",
        "a@b.c-d.ef",
        "o'brien+tag@mail.example.co.uk",
        "a@b..c",
        "A@B.CO\n",
        "ä@b.de",
    ],
)
def test_the_arrow_email_pattern_is_the_python_one(value: str) -> None:
    arrow = pc.match_substring_regex(pa.array([value]), PLAIN_EMAIL_RE2)[0].as_py()
    assert arrow == (PLAIN_EMAIL.fullmatch(value) is not None)


@given(st.text(alphabet=st.sampled_from("aZ09.-@_+'é \n"), max_size=30))
def test_the_arrow_email_pattern_agrees_on_generated_values(value: str) -> None:
    arrow = pc.match_substring_regex(pa.array([value]), PLAIN_EMAIL_RE2)[0].as_py()
    assert arrow == (PLAIN_EMAIL.fullmatch(value) is not None)


def test_arrow_trims_the_whitespace_python_strips() -> None:
    characters = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    values = [f"{c}x{c}" for c in characters]
    trimmed = pc.utf8_trim_whitespace(pa.array(values)).to_pylist()
    differ = [
        hex(ord(c)) for c, v, t in zip(characters, values, trimmed, strict=True) if t != v.strip()
    ]
    assert differ == []


# -- the warehouse: the same tables ----------------------------------------------------------


def test_loading_in_bulk_stores_the_rows_of_the_record_read(
    warehouse_url: str, tmp_path: Path
) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    plain = exports / "plain.csv"
    plain.write_bytes(
        (
            "Email,FirstName,LastName,HasOptedOutOfEmail\n"
            + "".join(
                f"Person.{i}@Example.com,Person,{i},{'true' if i % 5 == 0 else 'false'}\n"
                for i in range(2000)
            )
            + 'multi@example.com,"Two\nLines",X,false\n'
            + "jörg@bücher.de,Jörg,B,false\n"
            + "bad,Bad,Email,false\n"
            + "flag@example.com,Flag,Unread,Ja\n"
            + "nul@example.com,N\x00,X,false\n"
        ).encode()
    )
    cp1252 = exports / "hubspot.csv"
    cp1252.write_bytes(
        (
            "Email;First Name;Last Name;Unsubscribed from all email\r\n"
            "josé@example.org;José;García;true\r\n"
            "rene@exämple.org;René;Exämple;false\r\n"
        ).encode("cp1252")
        + b"und\x81efined@example.org;U;D;false\r\n"
    )
    book = make_workbook(
        exports / "book.xlsx", [["Email", "Name"], ["Book@Example.com", "Book"], ["x", "y"]]
    )
    files = [plain, cp1252, book]
    warehouse = Warehouse(warehouse_url)
    try:
        warehouse.ensure_tables()
        reconcile.load_exports(warehouse, files, run_id="bulk")
        stored = {
            table: _stored(warehouse, table) for table in ("crm_contacts", "crm_rejected_rows")
        }
    finally:
        warehouse.dispose()
    contacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for path in files:
        rows, bad, _ = classic(path)
        contacts += rows
        rejected += bad
    for row in contacts:
        row["opted_out_category_ids"] = orjson.loads(row["opted_out_category_ids"])
    assert stored["crm_contacts"] == _sorted(contacts)
    assert stored["crm_rejected_rows"] == _sorted(rejected)
    assert len(contacts) == 2000 + 5 and len(rejected) == 5


def _stored(warehouse: Warehouse, table: str) -> list[dict[str, Any]]:
    rows = []
    for row in warehouse.query(f"select * from {table} order by source_file, line"):
        row = dict(row._mapping)
        del row["run_id"], row["read_at"]
        if isinstance(row.get("opted_out_category_ids"), str):
            row["opted_out_category_ids"] = orjson.loads(row["opted_out_category_ids"])
        rows.append(row)
    return rows
