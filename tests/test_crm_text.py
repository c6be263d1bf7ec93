"""CSV exports read as text: encodings, delimiters, quoting, broken and blank lines, odd headers.

Every file is written by the test into ``tmp_path``; assertions are on exact outcomes: which
record becomes a contact or a rejected row, on which line, with which reason.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from crm_files import brief, flags, read, reasons, write

from connector.crm import (
    CONTACT_FIELDS,
    REJECTED_FIELDS,
)

# -- encodings -----------------------------------------------------------------------------

SIMPLE = "Email,Name\r\nann@example.com,Chloé Müller\r\nbob@example.com,Bob \u2019Quote\u2019\r\n"
SIMPLE_ROWS = [
    (2, "ann@example.com", "Chloé Müller"),
    (3, "bob@example.com", "Bob \u2019Quote\u2019"),
]


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (SIMPLE.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + SIMPLE.encode("utf-8"), "utf-8"),
        (SIMPLE.encode("cp1252"), "cp1252"),
        (SIMPLE.encode("utf-16"), "utf-16"),  # with BOM, as Excel's "Unicode Text"
        (codecs.BOM_UTF16_BE + SIMPLE.encode("utf-16-be"), "utf-16"),
        (SIMPLE.encode("utf-16-le"), "utf-16-le"),  # no BOM
        (SIMPLE.encode("utf-32"), "utf-32"),
    ],
    ids=["utf8", "utf8-bom", "cp1252", "utf16-bom", "utf16-be-bom", "utf16-le-no-bom", "utf32"],
)
def test_encodings(tmp_path: Path, data: bytes, encoding: str) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(data)
    contacts, rejected, export = read(path)
    assert brief(contacts) == SIMPLE_ROWS
    assert rejected == []
    assert export.summary.encoding == encoding
    assert export.summary.header == ["Email", "Name"]


def test_latin1_reads_as_cp1252(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("Email;Name\nann@example.com;José Ñúñez\n".encode("latin-1"))
    contacts, _, export = read(path)
    assert brief(contacts) == [(2, "ann@example.com", "José Ñúñez")]
    assert export.summary.encoding == "cp1252"


def test_excel_unicode_text_is_utf16_tab_separated(tmp_path: Path) -> None:
    text = "Email\tFirst Name\tLast Name\r\nann@example.com\tZoë\tO'Neil, Jr\r\n"
    path = tmp_path / "unicode.txt"
    path.write_bytes(text.encode("utf-16"))
    contacts, _, export = read(path)
    assert brief(contacts) == [(2, "ann@example.com", "Zoë O'Neil, Jr")]
    assert (export.summary.encoding, export.summary.delimiter) == ("utf-16", "tab")


def test_undecodable_line_in_utf8_file_is_rejected(tmp_path: Path) -> None:
    data = (
        b"Email,Name\n"
        + "ann@example.com,Zoë Müller\n".encode()
        + "bob@example.com,Ren\xe9e\n".encode("cp1252")
        + b"cy@example.com,Cy\n"
    )
    path = tmp_path / "mixed.csv"
    path.write_bytes(data)
    contacts, rejected, export = read(path)
    assert export.summary.encoding == "utf-8"
    assert brief(contacts) == [(2, "ann@example.com", "Zoë Müller"), (4, "cy@example.com", "Cy")]
    assert reasons(rejected) == [(3, "unreadable line: undecodable bytes (not valid utf-8)")]
    assert rejected[0]["raw"] == "bob@example.com,Ren\ufffde"


def test_undefined_cp1252_byte_is_rejected(tmp_path: Path) -> None:
    data = b"Email,Name\nann@example.com,Ren\xe9e\nbob@example.com,B\x81b\n"
    path = tmp_path / "cp.csv"
    path.write_bytes(data)
    contacts, rejected, _ = read(path)
    assert brief(contacts) == [(2, "ann@example.com", "Renée")]
    assert reasons(rejected) == [(3, "unreadable line: undecodable bytes (not valid cp1252)")]


def test_non_ascii_far_into_a_file_still_decides_the_encoding(tmp_path: Path) -> None:
    rows = "".join(f"user{i}@example.com,User {i}\n" for i in range(8000))
    data = b"Email,Name\n" + rows.encode() + "late@example.com,Zoë\n".encode("cp1252")
    path = tmp_path / "late.csv"
    path.write_bytes(data)
    assert len(data) > 64 * 1024
    contacts, rejected, export = read(path)
    assert export.summary.encoding == "cp1252"
    assert contacts[-1]["name"] == "Zoë"
    assert (len(contacts), rejected) == (8001, [])


# -- delimiters and quoting ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("delimiter", "name"), [(",", "comma"), (";", "semicolon"), ("\t", "tab"), ("|", "pipe")]
)
def test_delimiters(tmp_path: Path, delimiter: str, name: str) -> None:
    d = delimiter
    text = (
        f"Email{d}First Name{d}Last Name{d}Unsubscribed\r\n"
        f'ann@example.com{d}Ann{d}"Lee, Jr; III | x\tz"{d}false\r\n'
        f"bob@example.com{d}Bob{d}Stone{d}true\r\n"
        f'cy@example.com{d}"Cy ""The Fox"""{d}Dee{d}\r\n'
    )
    contacts, rejected, export = read(write(tmp_path, "contacts.csv", text))
    assert export.summary.delimiter == name
    assert brief(contacts) == [
        (2, "ann@example.com", "Ann Lee, Jr; III | x\tz"),
        (3, "bob@example.com", "Bob Stone"),
        (4, "cy@example.com", 'Cy "The Fox" Dee'),
    ]
    assert [c["unsubscribed"] for c in contacts] == [False, True, False]
    assert rejected == []


def test_space_after_delimiter_before_quotes(tmp_path: Path) -> None:
    text = 'Email, Name, Unsubscribed\n"ann@example.com", "Lee, Ann", "true"\n'
    contacts, rejected, _ = read(
        write(tmp_path, "spaced.csv", text),
        {"columns": {"email": "Email", "name": "Name"}, "flags": {"unsubscribed": "Unsubscribed"}},
    )
    assert brief(contacts) == [(2, "ann@example.com", "Lee, Ann")]
    assert flags(contacts) == {"ann@example.com": (False, True, False, False)}
    assert rejected == []


def test_excel_sep_hint_line(tmp_path: Path) -> None:
    text = "sep=;\r\nEmail;Name\r\nann@example.com;Lee, Ann\r\nbad;Bad\r\n"
    contacts, rejected, export = read(write(tmp_path, "hint.csv", text))
    assert export.summary.delimiter == "semicolon"
    assert brief(contacts) == [(3, "ann@example.com", "Lee, Ann")]
    assert reasons(rejected) == [(4, "invalid email: no @ sign ('bad')")]


def test_embedded_newlines_keep_line_numbers(tmp_path: Path) -> None:
    text = (
        "Email,Name,Notes\r\n"
        'ann@example.com,"Ann\r\nLee","line one\r\nline two\r\nline three"\r\n'
        "bob@example.com,Bob,plain\r\n"
        'cy@example.com,Cy,"a\nb"\n'
        "dee@example.com,Dee,\r\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "multi.csv", text))
    assert brief(contacts) == [
        (2, "ann@example.com", "Ann Lee"),
        (6, "bob@example.com", "Bob"),
        (7, "cy@example.com", "Cy"),
        (9, "dee@example.com", "Dee"),
    ]
    assert rejected == []


def test_bare_carriage_return_line_endings(tmp_path: Path) -> None:
    text = "Email,Name\rann@example.com,Ann\r\rbob@example.com,Bob\r"
    contacts, rejected, export = read(write(tmp_path, "mac.csv", text))
    assert brief(contacts) == [(2, "ann@example.com", "Ann"), (4, "bob@example.com", "Bob")]
    assert (rejected, export.summary.blank) == ([], 1)


# -- odd headers ---------------------------------------------------------------------------


def test_header_match_ignores_case_and_spacing(tmp_path: Path) -> None:
    text = "  EMAIL ,first    NAME,Last\tName ,hasoptedoutofemail\nAnn@Example.com,Ann,Lee,1\n"
    contacts, _, export = read(write(tmp_path, "odd.csv", text), "salesforce")
    assert brief(contacts) == [(2, "ann@example.com", "Ann Lee")]
    assert contacts[0]["do_not_email"] is True
    assert export.summary.columns == {
        "email": "EMAIL",
        "first_name": "first    NAME",
        "last_name": "Last\tName",
        "do_not_email": "hasoptedoutofemail",
    }


def test_duplicate_column_names_use_the_first(tmp_path: Path) -> None:
    text = "Email,Name,Email\nann@example.com,Ann,owner@example.com\n"
    contacts, _, export = read(write(tmp_path, "dup.csv", text), "generic")
    assert brief(contacts) == [(2, "ann@example.com", "Ann")]
    assert (
        "column 'Email' appears 2 times (columns 1, 3); column 1 is used for email"
        in export.summary.warnings
    )


def test_trailing_delimiters_and_unnamed_columns(tmp_path: Path) -> None:
    text = "Email,Name,\nann@example.com,Ann,\nbob@example.com,Bob\ncy@example.com,Cy,,,\n"
    contacts, rejected, _ = read(write(tmp_path, "trail.csv", text))
    assert brief(contacts) == [
        (2, "ann@example.com", "Ann"),
        (3, "bob@example.com", "Bob"),
        (4, "cy@example.com", "Cy"),
    ]
    assert rejected == []


# -- broken lines --------------------------------------------------------------------------


def test_wrong_field_counts_are_rejected_with_the_raw_line(tmp_path: Path) -> None:
    text = (
        "Email,First Name,Last Name\n"
        "ann@example.com,Ann,Lee,extra\n"
        "bob@example.com,Bob\n"
        "cy@example.com,Cy,Dee,,\n"
        "dee@example.com,Dee,Eff\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "counts.csv", text))
    assert brief(contacts) == [(4, "cy@example.com", "Cy Dee"), (5, "dee@example.com", "Dee Eff")]
    assert reasons(rejected) == [
        (2, "unreadable line: too many fields (4, the header has 3)"),
        (3, "unreadable line: too few fields (2, the header has 3)"),
    ]
    assert [r["raw"] for r in rejected] == ["ann@example.com,Ann,Lee,extra", "bob@example.com,Bob"]
    assert all(r["kind"] == "unreadable line" for r in rejected)


def test_unterminated_quote_mid_file_loses_only_its_line(tmp_path: Path) -> None:
    text = (
        "Email,First Name,Last Name\n"
        'ann@example.com,"Ann,Lee\n'
        "bob@example.com,Bob,Stone\n"
        "cy@example.com,Cy,Dee\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "quote.csv", text))
    assert brief(contacts) == [(3, "bob@example.com", "Bob Stone"), (4, "cy@example.com", "Cy Dee")]
    assert reasons(rejected) == [(2, "unreadable line: unterminated quote at the end of the file")]
    assert rejected[0]["raw"] == 'ann@example.com,"Ann,Lee'


def test_open_quote_closed_lines_later_rereads_the_lines_between(tmp_path: Path) -> None:
    text = (
        "Email,First Name,Last Name\n"
        'ann@example.com,"Ann,Lee\n'
        "bob@example.com,Bob,Stone\n"
        'cy@example.com,Cy,"Dee"\n'
        "dee@example.com,Dee,Eff\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "quote2.csv", text))
    assert reasons(rejected) == [
        (2, "unreadable line: unterminated quote (misplaced quote 2 lines later)")
    ]
    assert brief(contacts) == [
        (3, "bob@example.com", "Bob Stone"),
        (4, "cy@example.com", "Cy Dee"),
        (5, "dee@example.com", "Dee Eff"),
    ]


def test_open_quote_giving_the_wrong_width_rereads_the_next_lines(tmp_path: Path) -> None:
    text = (
        "Email,First Name,Last Name\n"
        'ann@example.com,"Ann,Lee\n'
        'bob@example.com,Bob",Stone,extra\n'
        "cy@example.com,Cy,Dee\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "quote4.csv", text))
    assert reasons(rejected) == [
        (
            2,
            "unreadable line: unterminated quote (the record runs over 2 lines and has 4 "
            "fields, the header has 3)",
        ),
        (3, "unreadable line: too many fields (4, the header has 3)"),
    ]
    assert [r["raw"] for r in rejected] == [
        'ann@example.com,"Ann,Lee',
        'bob@example.com,Bob",Stone,extra',
    ]
    assert brief(contacts) == [(4, "cy@example.com", "Cy Dee")]


def test_runaway_quote_in_a_large_file_stops_at_the_field_limit(tmp_path: Path) -> None:
    rows = "".join(f"u{i}@example.com,U,{i}\n" for i in range(3, 8003))
    text = 'Email,First Name,Last Name\nann@example.com,"Ann,Lee\n' + rows
    contacts, rejected, _ = read(write(tmp_path, "runaway.csv", text))
    # The field limit (128 KiB) stops the runaway field; the lines it swallowed are read again.
    assert reasons(rejected) == [
        (
            2,
            "unreadable line: unterminated quote (field longer than the CSV field limit "
            "5331 lines later)",
        )
    ]
    assert [c["line"] for c in contacts] == list(range(3, 8003))


def test_misplaced_quote_and_quote_in_last_column_at_end_of_file(tmp_path: Path) -> None:
    text = (
        "Email,First Name,Last Name\n"
        'ann@example.com,"Ann"x,Lee\n'
        "bob@example.com,Bob,Stone\n"
        'cy@example.com,Cy,"Dee\n'
        "dee@example.com,Dee,Eff\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "quote3.csv", text))
    assert brief(contacts) == [
        (3, "bob@example.com", "Bob Stone"),
        (5, "dee@example.com", "Dee Eff"),
    ]
    assert reasons(rejected) == [
        (2, "unreadable line: misplaced quote"),
        (4, "unreadable line: unterminated quote at the end of the file"),
    ]


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    text = "\n\nEmail,Name\n\nann@example.com,Ann\n,\n  ,  \nbob@example.com,Bob\n\n"
    contacts, rejected, export = read(write(tmp_path, "blank.csv", text))
    assert brief(contacts) == [(5, "ann@example.com", "Ann"), (8, "bob@example.com", "Bob")]
    assert rejected == []
    assert export.summary.blank == 4


def test_every_record_lands_once(tmp_path: Path) -> None:
    text = (
        "Email,Name\n"
        "ann@example.com,Ann\n"
        ",No email\n"
        "not-an-email,Bad\n"
        "ann@example.com,Ann again\n"
        "x@example.com,X,extra\n"
    )
    contacts, rejected, export = read(write(tmp_path, "all.csv", text))
    assert sorted([c["line"] for c in contacts] + [r["line"] for r in rejected]) == [2, 3, 4, 5, 6]
    assert reasons(rejected) == [
        (3, "missing email"),
        (4, "invalid email: no @ sign ('not-an-email')"),
        (6, "unreadable line: too many fields (3, the header has 2)"),
    ]
    assert [r["kind"] for r in rejected] == ["missing email", "invalid email", "unreadable line"]
    assert rejected[0] == {
        "source_file": "all.csv",
        "line": 3,
        "kind": "missing email",
        "reason": "missing email",
        "raw": ",No email",
        "email": None,
    }
    summary = export.summary
    assert (summary.records, summary.contacts, summary.rejected) == (5, 2, 3)
    assert summary.rejected_by_kind == {
        "missing email": 1,
        "invalid email": 1,
        "unreadable line": 1,
    }
    assert summary.complete


def test_contact_row_shape(tmp_path: Path) -> None:
    text = 'Email,Name\n" Ann@Bücher.DE ",Ann\n'
    contacts, _, _ = read(write(tmp_path, "idn.csv", text))
    assert contacts == [
        {
            "source_file": "idn.csv",
            "line": 2,
            "email": "ann@xn--bcher-kva.de",
            "email_original": " Ann@Bücher.DE ",
            "name": "Ann",
            "do_not_email": False,
            "unsubscribed": False,
            "hard_bounced": False,
            "opted_out_category_ids": (),
            "mailable": True,
        }
    ]
    assert tuple(contacts[0]) == CONTACT_FIELDS


def test_raw_is_truncated(tmp_path: Path) -> None:
    text = "Email,Name\nbad," + "x" * 5000 + "\n"
    _, rejected, _ = read(write(tmp_path, "long.csv", text))
    assert tuple(rejected[0]) == REJECTED_FIELDS
    assert len(rejected[0]["raw"]) == 1001
    assert rejected[0]["raw"].endswith("…")
