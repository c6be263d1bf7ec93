"""CRM export reading: a corpus of messy real-world exports, mappings, emails, duplicates.

Every file is written by the test into ``tmp_path``; assertions are on exact outcomes: which
record becomes a contact or a rejected row, on which line, with which reason.
"""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.crm import (
    CONTACT_FIELDS,
    REJECTED_FIELDS,
    CrmFileError,
    CrmMappingError,
    CrmRead,
    load_mapping,
    mapping_from_dict,
    merge_duplicates,
    normalize_email,
    read_export,
)
from connector.crm.emails import PLAIN_EMAIL, normalize_unusual
from connector.errors import ConnectorError


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    """Write text exactly as given (no newline translation) in an encoding."""
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def read(path: Path, mapping: Any = "auto", **options: Any) -> tuple[list, list, CrmRead]:
    export = read_export(path, mapping, **options)
    contacts, rejected = export.read_all()
    return contacts, rejected, export


def brief(contacts: list[dict[str, Any]]) -> list[tuple[int, str, str | None]]:
    return [(c["line"], c["email"], c["name"]) for c in contacts]


def reasons(rejected: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(r["line"], r["reason"]) for r in rejected]


def flags(contacts: list[dict[str, Any]]) -> dict[str, tuple[bool, bool, bool, bool]]:
    return {
        c["email"]: (c["do_not_email"], c["unsubscribed"], c["hard_bounced"], c["mailable"])
        for c in contacts
    }


# -- emails --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" John.Smith@Example.COM ", "john.smith@example.com"),
        ("\u00a0ann@example.com\t", "ann@example.com"),
        ("mailto:Ann@X.org", "ann@x.org"),
        ("MAILTO:ann@x.org?subject=Hello", "ann@x.org"),
        ("Ann Lee <Ann@Example.com>", "ann@example.com"),
        ('"Lee, Ann" <ann@example.com>', "ann@example.com"),
        ("<ann@example.com>", "ann@example.com"),
        ("'ann@example.com'", "ann@example.com"),
        ("ann\u200b@example.com", "ann@example.com"),
        ("o'brien+news@example.co.uk", "o'brien+news@example.co.uk"),
        ("ann@bücher.de", "ann@xn--bcher-kva.de"),
        ("Ann@BÜCHER.DE", "ann@xn--bcher-kva.de"),
        ("ann@é.example", "ann@xn--9ca.example"),
        ("ann@xn--bcher-kva.de", "ann@xn--bcher-kva.de"),
        ("ann@mail.xn--p1ai", "ann@mail.xn--p1ai"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ],
)
def test_normalize_email_accepts(value: str, expected: str) -> None:
    assert normalize_email(value) == (expected, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("ann.example.com", "no @ sign"),
        ("ann@@example.com", "more than one @ sign"),
        ("a@b@example.com", "more than one @ sign"),
        ("ann @example.com", "contains spaces"),
        ("a@x.com; b@x.com", "several addresses in one field"),
        ("a@x.com,b@x.com", "several addresses in one field"),
        ("@example.com", "nothing before the @"),
        ("ann@", "nothing after the @"),
        ("ann@localhost", "domain has no dot"),
        ("ann..lee@example.com", "invalid characters or dots before the @"),
        (".ann@example.com", "invalid characters or dots before the @"),
        ("ann(x)@example.com", "invalid characters or dots before the @"),
        ("josé@example.com", "non-ASCII characters before the @"),
        ("ann@-example.com", "invalid domain label '-example'"),
        ("ann@example-.com", "invalid domain label 'example-'"),
        ("ann@exa_mple.com", "invalid domain label 'exa_mple'"),
        ("ann@example..com", "domain has an empty label"),
        ("ann@example.com.", "domain ends with a dot"),
        ("ann@example.123", "top-level domain is numeric"),
        ("ann@[10.0.0.1]", "IP-address domains are not accepted"),
        ("a" * 65 + "@example.com", "part before the @ is longer than 64 characters"),
        ("ann@" + "b" * 64 + ".com", "domain label longer than 63 characters"),
        ("a" * 60 + "@" + ("b" * 60 + ".") * 4 + "com", "longer than 254 characters"),
    ],
)
def test_normalize_email_rejects(value: str, problem: str) -> None:
    assert normalize_email(value) == (None, problem)


def test_normalize_email_rejects_invalid_internationalised_domain() -> None:
    email, problem = normalize_email("ann@☃.com")
    assert email is None
    assert problem is not None
    assert problem.startswith("domain is not a valid internationalised name (")


def test_normalize_email_reuses_unchanged_value() -> None:
    value = "ann@example.com"
    assert normalize_email(value)[0] is value


@given(
    st.from_regex(
        r"[A-Za-z0-9._%+'-]{1,20}@[A-Za-z0-9-]{1,12}(\.[A-Za-z0-9-]{1,8}){1,3}", fullmatch=True
    )
)
def test_plain_fast_path_agrees_with_the_full_rules(value: str) -> None:
    if PLAIN_EMAIL.fullmatch(value):
        assert normalize_unusual(value) == (value.lower(), None)


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


# -- xlsx ----------------------------------------------------------------------------------


def make_workbook(path: Path, rows: list[list[Any]], title: str = "Contacts") -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    other = book.create_sheet("Other")
    other.append(["Email", "Name"])
    other.append(["other@example.com", "Other"])
    book.save(path)
    return path


def test_xlsx(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "contacts.xlsx",
        [
            ["Email", "First Name", "Last Name", "Email Opt Out", "Email Bounced Reason"],
            ["Ann@Example.com", "Ann", "Lee", True, None],
            ["bob@example.com", "Bob", None, 0, "550 user unknown"],
            [None, None, None, None, None],
            ["not-an-email", "Cy", "Dee", False, None],
            ["dee@example.com", "Dee", "Eff", 1, None, None, "stray note"],
            ["eve@example.com", 42, 3.0, False, None],
        ],
    )
    contacts, rejected, export = read(path)
    assert export.summary.format == "xlsx"
    assert export.summary.mapping == "salesforce"
    assert brief(contacts) == [
        (2, "ann@example.com", "Ann Lee"),
        (3, "bob@example.com", "Bob"),
        (7, "eve@example.com", "42 3"),
    ]
    assert flags(contacts)["ann@example.com"] == (True, False, False, False)
    assert flags(contacts)["bob@example.com"] == (False, False, True, False)
    assert reasons(rejected) == [
        (5, "invalid email: no @ sign ('not-an-email')"),
        (6, "unreadable line: a value in column 7, past the last header column (5)"),
    ]
    assert export.summary.blank == 1


def test_xlsx_named_sheet_and_missing_sheet(tmp_path: Path) -> None:
    path = make_workbook(tmp_path / "book.xlsx", [["Email"], ["a@example.com"]])
    contacts, _, _ = read(path, sheet="Other")
    assert brief(contacts) == [(2, "other@example.com", "Other")]
    with pytest.raises(CrmFileError, match=r"book\.xlsx: no sheet 'Missing'"):
        read_export(path, sheet="Missing")


def test_xlsx_renamed_to_csv_is_still_read(tmp_path: Path) -> None:
    path = make_workbook(tmp_path / "export.csv", [["Email", "Name"], ["a@example.com", "A"]])
    contacts, _, export = read(path)
    assert export.summary.format == "xlsx"
    assert brief(contacts) == [(2, "a@example.com", "A")]


# -- ready-made mappings -------------------------------------------------------------------


def test_salesforce_data_loader_export(tmp_path: Path) -> None:
    text = (
        '"ID","ACCOUNTID","LASTNAME","FIRSTNAME","SALUTATION","EMAIL","HASOPTEDOUTOFEMAIL",'
        '"ISEMAILBOUNCED","EMAILBOUNCEDREASON","EMAILBOUNCEDDATE"\n'
        '"0035g00000AbCdE","0015g00000XyZ","Lee","Ann","Ms.","ann@example.com","false",'
        '"false","",""\n'
        '"0035g00000AbCdF","0015g00000XyZ","Stone","Bob","Mr.","bob@example.com","true",'
        '"false","",""\n'
        '"0035g00000AbCdG","0015g00000XyZ","Dee","Cy","","cy@example.com","false","false",'
        '"550 5.1.1 User unknown","2024-03-01T10:00:00.000Z"\n'
        '"0035g00000AbCdH","0015g00000XyZ","Eff","Dee","","dee@example.com","false","true",'
        '"",""\n'
    )
    contacts, rejected, export = read(write(tmp_path, "sf.csv", text))
    assert export.summary.mapping == "salesforce"
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, False, False, False),
        "cy@example.com": (False, False, True, False),
        "dee@example.com": (False, False, True, False),
    }
    assert contacts[0]["name"] == "Ann Lee"
    assert rejected == []


def test_salesforce_report_export(tmp_path: Path) -> None:
    text = (
        '"Contact ID","First Name","Last Name","Account Name","Email","Email Opt Out",'
        '"Email Bounced Reason","Contact Owner"\n'
        '"003A","Ann","Lee","Acme","ann@example.com","0","","Sam"\n'
        '"003B","Bob","Stone","Acme","bob@example.com","1","","Sam"\n'
    )
    contacts, _, export = read(write(tmp_path, "report.csv", text))
    assert export.summary.mapping == "salesforce"
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, False, False, False),
    }


def test_hubspot_export(tmp_path: Path) -> None:
    text = (
        "Record ID,First Name,Last Name,Email,Marketing contact status,"
        "Unsubscribed from all email,Email hard bounce reason,Lifecycle Stage\n"
        "101,Ann,Lee,ann@example.com,Marketing contact,false,,Lead\n"
        "102,Bob,Stone,bob@example.com,Non-marketing contact,true,,Customer\n"
        "103,Cy,Dee,cy@example.com,Marketing contact,,Unknown user,Lead\n"
        "104,Dee,Eff,dee@example.com,Non-marketing contact,,,Lead\n"
    )
    contacts, _, export = read(write(tmp_path, "hubspot-crm-exports-all-contacts.csv", text))
    assert export.summary.mapping == "hubspot"
    # Non-marketing is a billing status, not consent: dee stays mailable.
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (False, True, False, False),
        "cy@example.com": (False, False, True, False),
        "dee@example.com": (False, False, False, True),
    }


def test_hubspot_unsubscribes_and_bounces_export(tmp_path: Path) -> None:
    text = (
        "Email,Portal Bounce,Portal Unsubscribe,Portal Spam Report,Global Bounce,"
        "Marketing Information\n"
        "ann@example.com,,TRUE,,,\n"
        "bob@example.com,Mailbox does not exist,,,,\n"
        "cy@example.com,,,TRUE,,\n"
        "dee@example.com,FALSE,FALSE,FALSE,FALSE,TRUE\n"
    )
    contacts, _, export = read(write(tmp_path, "unsubscribes.csv", text))
    assert export.summary.mapping == "hubspot"
    assert flags(contacts) == {
        "ann@example.com": (False, True, False, False),
        "bob@example.com": (False, False, True, False),
        "cy@example.com": (True, False, False, False),
        "dee@example.com": (False, False, False, True),
    }


def test_dynamics_excel_export(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "Active Contacts 2024-05-01.xlsx",
        [
            [
                "(Do Not Modify) Contact",
                "(Do Not Modify) Row Checksum",
                "(Do Not Modify) Modified On",
                "Full Name",
                "Email",
                "Company Name",
                "Do not allow Emails",
                "Do not allow Bulk Emails",
            ],
            ["c1", "x", "2024-01-01", "Ann Lee", "ann@example.com", "Acme", "Allow", "Allow"],
            ["c2", "x", "2024-01-01", "Bob Stone", "bob@example.com", "Acme", "Do Not Allow", ""],
            ["c3", "x", "2024-01-01", "Cy Dee", "cy@example.com", "Acme", "Allow", "Do Not Allow"],
        ],
    )
    contacts, _, export = read(path)
    assert export.summary.mapping == "dynamics365"
    assert brief(contacts)[0] == (2, "ann@example.com", "Ann Lee")
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, False, False, False),
        "cy@example.com": (False, True, False, False),
    }


def test_dynamics_logical_names(tmp_path: Path) -> None:
    text = (
        "contactid,fullname,emailaddress1,donotemail,donotbulkemail\n"
        "c1,Ann Lee,ann@example.com,False,True\n"
        "c2,,bob@example.com,1,0\n"
    )
    contacts, _, export = read(write(tmp_path, "contacts.csv", text))
    assert export.summary.mapping == "dynamics365"
    assert brief(contacts) == [(2, "ann@example.com", "Ann Lee"), (3, "bob@example.com", None)]
    assert flags(contacts) == {
        "ann@example.com": (False, True, False, False),
        "bob@example.com": (True, False, False, False),
    }


def test_auto_prefers_salesforce_on_a_bare_header_and_falls_back_to_generic(
    tmp_path: Path,
) -> None:
    _, _, bare = read(write(tmp_path, "bare.csv", "Email,First Name,Last Name\na@b.co,A,B\n"))
    assert bare.summary.mapping == "salesforce"
    text = "E-mail;Display Name;Unsubscribed;Bounce Reason\na@b.co;A;Unsubscribed;\n"
    contacts, _, generic = read(write(tmp_path, "plain.csv", text))
    assert generic.summary.mapping == "generic"
    assert flags(contacts) == {"a@b.co": (False, True, False, False)}


def test_explicit_builtin_mapping_and_missing_flag_columns_warn(tmp_path: Path) -> None:
    contacts, _, export = read(write(tmp_path, "h.csv", "Email,First Name\na@b.co,A\n"), "hubspot")
    assert export.summary.mapping == "hubspot"
    assert contacts[0]["mailable"] is True
    assert export.summary.warnings == [
        "no do_not_email column in the header (looked for ['Portal Spam Report', "
        "'Global Spam Report'])",
        "no unsubscribed column in the header (looked for ['Unsubscribed from all email', "
        "'Opted out of all email', 'hs_email_optout', 'Portal Unsubscribe', "
        "'Global Unsubscribe'])",
        "no hard_bounced column in the header (looked for ['Email hard bounce reason', "
        "'hs_email_hard_bounce_reason_enum', 'Email Hard Bounce Reason Enum', "
        "'Portal Bounce', 'Global Bounce', 'Email Address Quarantined', "
        "'hs_email_quarantined'])",
    ]


def test_builtin_mappings_load() -> None:
    for name in ("salesforce", "hubspot", "dynamics365", "generic"):
        mapping = load_mapping(name)
        assert mapping.name == name
        assert mapping.source == f"built-in:{name}"
        assert mapping.email


# -- custom mappings -----------------------------------------------------------------------

ACME_YAML = """\
name: acme
description: ACME CRM
columns:
  email: [Mail Address, Email]
  name: Contact
true_values: [yes, Y, "1"]
flags:
  do_not_email: [No Mail]
  unsubscribed:
    - column: Newsletter
      true_values: [Opted Out, Unsubscribed]
  hard_bounced:
    - column: Bounce Date
      when: nonempty
category_opt_outs:
  - column: "Opt-out: Invoices"
    category: NTC-1234-5678
  - column: "Opt-out: Orders"
    category: NTC-2222-3333
  - column: "Opt-out: Billing"
    category: NTC-1234-5678
required: [name]
"""


def test_custom_yaml_mapping(tmp_path: Path) -> None:
    mapping_path = write(tmp_path, "acme.yaml", ACME_YAML)
    text = (
        "Contact,Mail Address,No Mail,Newsletter,Bounce Date,Opt-out: Invoices,"
        "Opt-out: Orders,Opt-out: Billing\n"
        "Ann Lee,ann@example.com,no,Subscribed,,Y,,yes\n"
        "Bob Stone,bob@example.com,YES,Opted out,,,1,\n"
        ",cy@example.com,,,,,,\n"
        "Dee Eff,dee@example.com,true,,2024-01-02,,,\n"
        "Eve Gee,eve@example.com,,,n/a,,,\n"
    )
    contacts, rejected, export = read(write(tmp_path, "acme.csv", text), mapping_path)
    assert export.summary.mapping == "acme"
    assert [(c["email"], c["opted_out_category_ids"]) for c in contacts] == [
        ("ann@example.com", ("NTC-1234-5678",)),
        ("bob@example.com", ("NTC-2222-3333",)),
        ("dee@example.com", ()),
        ("eve@example.com", ()),
    ]
    # "true" is not among this mapping's true values; "n/a" is not a bounce date.
    assert flags(contacts) == {
        "ann@example.com": (False, False, False, True),
        "bob@example.com": (True, True, False, False),
        "dee@example.com": (False, False, True, False),
        "eve@example.com": (False, False, False, True),
    }
    assert reasons(rejected) == [(4, "missing field: name")]


def test_mapping_from_dict_accepts_real_booleans() -> None:
    mapping = mapping_from_dict(
        {
            "columns": {"email": "E"},
            "flags": {"do_not_email": [{"column": "D", "true_values": [True, 1]}]},
        },
        source="run config",
    )
    assert mapping.do_not_email[0].true_values == frozenset({"true", "1"})
    assert mapping.source == "run config"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colums: {email: E}\n", "acme.yaml: colums: unknown key (allowed: category_opt_outs, "),
        (
            "columns: {name: N}\n",
            "acme.yaml: columns.email: required: the header name of the email",
        ),
        ("columns: {email: E, phone: P}\n", "acme.yaml: columns.phone: unknown key"),
        ("columns: {email: [E, '']}\n", "acme.yaml: columns.email: '' is not a column name"),
        (
            "columns: {email: E}\ncategory_opt_outs:\n  - {column: X, category: NTC-12}\n",
            "acme.yaml: category_opt_outs[0].category: 'NTC-12' is not a category id "
            "(NTC-####-####)",
        ),
        (
            "columns: {email: E}\ncategory_opt_outs:\n  - {column: X}\n",
            "acme.yaml: category_opt_outs[0].category: None is not a category id",
        ),
        ("columns: {email: E}\nflags: {bounced: [B]}\n", "acme.yaml: flags.bounced: unknown key"),
        (
            "columns: {email: E}\nflags:\n  hard_bounced:\n    - {column: B, when: always}\n",
            "acme.yaml: flags.hard_bounced[0].when: 'always' is not one of nonempty, true_values",
        ),
        (
            "columns: {email: E}\nflags:\n  unsubscribed:\n    - {colum: B}\n",
            "acme.yaml: flags.unsubscribed[0].colum: unknown key",
        ),
        ("columns: {email: E}\nrequired: [phone]\n", "acme.yaml: required: unknown field 'phone'"),
        (
            "columns: {email: E}\nrequired: [name]\n",
            "acme.yaml: required: 'name' is required but no name column is mapped",
        ),
        ("columns: {email: E}\ntrue_values: []\n", "acme.yaml: true_values: must list at least"),
        ("- just a list\n", "acme.yaml: a mapping must be a YAML mapping of keys"),
        ("columns: {email: [E\n", "acme.yaml: not valid YAML"),
    ],
)
def test_invalid_mappings(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "acme.yaml", text)
    with pytest.raises(CrmMappingError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{tmp_path}/{message}")
    assert isinstance(caught.value, ConnectorError)


def test_unknown_mapping_name() -> None:
    with pytest.raises(CrmMappingError, match="unknown mapping 'zoho': use one of salesforce, "):
        load_mapping("zoho")


# -- unreadable files ----------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def zip_bytes(tmp_path: Path) -> bytes:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("contacts.csv", "Email\na@b.co\n")
    return archive.read_bytes()


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("bom.csv", codecs.BOM_UTF8 + b"\r\n \r\n", "the file is empty (no header line)"),
        ("image.csv", PNG, "this is a PNG image, not a CSV export"),
        ("doc.csv", b"%PDF-1.7\n...", "this is a PDF document, not a CSV export"),
        (
            "old.csv",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500),
            "this is a legacy Excel .xls (or other OLE) file; save it as .xlsx or CSV, "
            "not a CSV export",
        ),
        (
            "nul.csv",
            b"Email,Name\n\x00\x01\x02\x03\xff" * 50,
            "binary data (NUL bytes), not a text export",
        ),
        (
            "junk.csv",
            bytes(range(1, 32)) * 40,
            "binary data (control characters), not a text export",
        ),
        (
            "page.csv",
            b"<!DOCTYPE html><html><body>Session expired</body></html>",
            "an HTML or XML page, not a CSV export",
        ),
        (
            "fake.xlsx",
            b"Email,Name\na@b.co,A\n",
            "not an Excel workbook (an .xlsx file is a ZIP archive; this one is not)",
        ),
        (
            "data.csv",
            b"ann@example.com,Ann,Lee\nbob@example.com,Bob,Stone\n",
            "the first line looks like data, not a header",
        ),
        (
            "nomail.csv",
            b"Name,Phone\nAnn,123\n",
            "no built-in mapping fits: no email column found (tried salesforce, hubspot, "
            "dynamics365, generic); the header is ['Name', 'Phone']",
        ),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, data: bytes, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CrmFileError) as caught:
        read_export(path)
    assert str(caught.value).startswith(f"{path}: {problem}")
    assert caught.value.path == str(path)


def test_zip_renamed_to_csv(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(zip_bytes(tmp_path))
    with pytest.raises(
        CrmFileError, match=r"contacts\.csv: a ZIP archive, not a CSV export or an Excel \.xlsx"
    ):
        read_export(path)


def test_mapping_that_does_not_fit(tmp_path: Path) -> None:
    path = write(tmp_path, "hub.csv", "E-mail Address,Name\na@b.co,A\n")
    with pytest.raises(CrmFileError) as caught:
        read_export(path, "salesforce")
    assert str(caught.value) == (
        f"{path}: no email column for mapping 'salesforce' (looked for ['Email', "
        "'Email Address']); the header is ['E-mail Address', 'Name']"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CrmFileError, match=r"nothing\.csv: no such file"):
        read_export(tmp_path / "nothing.csv")


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    contacts, rejected, export = read(write(tmp_path, "head.csv", "Email,Name\r\n"))
    assert (contacts, rejected, export.summary.records) == ([], [], 0)


# -- chunks --------------------------------------------------------------------------------


def test_chunks_and_single_iteration(tmp_path: Path) -> None:
    rows = "".join(f"u{i}@example.com,U{i}\n" for i in range(5)) + "bad,B\n"
    export = read_export(write(tmp_path, "c.csv", "Email,Name\n" + rows), chunk_size=2)
    chunks = list(export)
    assert [(len(c.contacts), len(c.rejected)) for c in chunks] == [(2, 0), (2, 0), (1, 1)]
    assert export.summary.contacts == 5
    with pytest.raises(RuntimeError, match="only once"):
        list(export)


# -- duplicates ----------------------------------------------------------------------------


def test_duplicates_most_restrictive_wins_and_are_reported(tmp_path: Path) -> None:
    mapping_path = write(tmp_path, "acme.yaml", ACME_YAML)
    text = (
        "Contact,Mail Address,No Mail,Newsletter,Bounce Date,Opt-out: Invoices,Opt-out: Orders,"
        "Opt-out: Billing\n"
        "Ann Lee,Ann@Example.com,,,,Y,,\n"
        "Bob Stone,bob@example.com,,,,,,\n"
        "Ann L.,ann@example.com,yes,,,,1,\n"
        "Bob Stone,BOB@example.com,,,,,,\n"
        "Ann,ANN@EXAMPLE.COM,,Unsubscribed,,,,\n"
    )
    contacts, _, _ = read(write(tmp_path, "acme.csv", text), mapping_path)
    before = [dict(c) for c in contacts]
    merged, conflicts = merge_duplicates(contacts)
    assert contacts == before  # the caller's rows are not changed
    assert [(m["email"], m["line"], m["name"]) for m in merged] == [
        ("ann@example.com", 2, "Ann Lee"),
        ("bob@example.com", 3, "Bob Stone"),
    ]
    assert flags(merged) == {
        "ann@example.com": (True, True, False, False),
        "bob@example.com": (False, False, False, True),
    }
    assert merged[0]["opted_out_category_ids"] == ("NTC-1234-5678", "NTC-2222-3333")
    assert conflicts == [
        {
            "email": "ann@example.com",
            "lines": [2, 4, 6],
            "sources": ["acme.csv:2", "acme.csv:4", "acme.csv:6"],
            "resolution": "most restrictive wins: do_not_email (line 4), unsubscribed (line 6); "
            "opted-out categories unioned: NTC-1234-5678, NTC-2222-3333",
        }
    ]


def test_duplicates_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.csv", "Email,Name,Unsubscribed\nann@example.com,Ann,false\n")
    second = write(
        tmp_path, "b.csv", "Email,Name,Bounced\nx@example.com,X,\nAnn@example.com,,yes\n"
    )
    rows = [c for path in (first, second) for c in read(path)[0]]
    merged, conflicts = merge_duplicates(rows)
    assert [(m["email"], m["source_file"], m["line"]) for m in merged] == [
        ("ann@example.com", "a.csv", 2),
        ("x@example.com", "b.csv", 2),
    ]
    assert flags(merged)["ann@example.com"] == (False, False, True, False)
    assert conflicts == [
        {
            "email": "ann@example.com",
            "lines": [2, 3],
            "sources": ["a.csv:2", "b.csv:3"],
            "resolution": "most restrictive wins: hard_bounced (b.csv:3)",
        }
    ]


def test_category_only_conflict_keeps_contact_mailable() -> None:
    def row(line: int, categories: tuple[str, ...]) -> dict[str, Any]:
        return {
            "source_file": "f.csv",
            "line": line,
            "email": "a@b.co",
            "email_original": "a@b.co",
            "name": None,
            "do_not_email": False,
            "unsubscribed": False,
            "hard_bounced": False,
            "opted_out_category_ids": categories,
            "mailable": True,
        }

    merged, conflicts = merge_duplicates([row(2, ("NTC-1111-1111",)), row(3, ())])
    assert merged[0]["mailable"] is True
    assert merged[0]["opted_out_category_ids"] == ("NTC-1111-1111",)
    assert conflicts[0]["resolution"] == (
        "mailable everywhere; opted-out categories unioned: NTC-1111-1111"
    )
