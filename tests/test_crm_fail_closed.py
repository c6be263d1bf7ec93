"""When in doubt, do not email: inputs the reader cannot read with certainty reject the row
(never the whole file) with a reason naming what to fix, and are never read as "mailable".

Flag cells that are neither true nor false, repeated flag columns, NUL bytes, bare carriage
returns, a line in another encoding, several sheets and title rows in a workbook.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crm_files import brief, flags, make_workbook, read, reasons, write

from connector.crm import UNREADABLE_FLAG, CrmFileError, read_export

# -- flag values -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Ja", "wahr", "✓", "-", "nope", "si", "?"])
def test_a_flag_value_neither_true_nor_false_rejects_the_row_naming_column_and_value(
    tmp_path: Path, value: str
) -> None:
    text = f"Email,Name,Email Opt Out\nann@example.com,Ann,{value}\nbob@example.com,Bob,0\n"
    contacts, rejected, export = read(write(tmp_path, "sf.csv", text), "salesforce")
    assert brief(contacts) == [(3, "bob@example.com", "Bob")]
    assert [(r["line"], r["kind"]) for r in rejected] == [(2, UNREADABLE_FLAG)]
    assert rejected[0]["reason"] == (
        f"unreadable flag: column 'Email Opt Out' (do_not_email) holds {value!r}, neither a "
        "true value (1, true) nor a false value (0, false) of mapping 'salesforce'"
    )
    assert export.summary.rejected_by_kind == {UNREADABLE_FLAG: 1}


def test_every_flag_and_category_column_fails_closed(tmp_path: Path) -> None:
    mapping = {
        "columns": {"email": "Email"},
        "flags": {
            "unsubscribed": "Unsubscribed",
            "hard_bounced": [{"column": "Bounce Reason", "when": "nonempty"}],
        },
        "category_opt_outs": [{"column": "No Invoices", "category": "NTC-1234-5678"}],
    }
    text = (
        "Email,Unsubscribed,Bounce Reason,No Invoices\n"
        "a@example.com,vielleicht,,\n"
        "b@example.com,no,-,\n"  # a dash is a placeholder, not a bounce reason
        "c@example.com,no,,peut-être\n"
        "d@example.com,no,n/a,no\n"
        "e@example.com,yes,550 unknown user,yes\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "list.csv", text), mapping)
    assert flags(contacts) == {
        "d@example.com": (False, False, False, True),
        "e@example.com": (False, True, True, False),
    }
    assert contacts[1]["opted_out_category_ids"] == ("NTC-1234-5678",)
    assert [(r["line"], r["reason"].split(", ")[0]) for r in rejected] == [
        (2, "unreadable flag: column 'Unsubscribed' (unsubscribed) holds 'vielleicht'"),
        (3, "unreadable flag: column 'Bounce Reason' (hard_bounced) holds '-'"),
        (
            4,
            "unreadable flag: column 'No Invoices' (the opt-out of NTC-1234-5678) holds "
            "'peut-être'",
        ),
    ]
    assert rejected[1]["reason"].endswith("punctuation only: not a value")


def test_a_mapping_lists_its_own_true_and_false_values(tmp_path: Path) -> None:
    mapping = {
        "columns": {"email": "E-Mail"},
        "true_values": ["Ja", "wahr"],
        "false_values": ["Nein", "falsch", "-"],
        "flags": {"do_not_email": "Keine Werbung"},
    }
    text = (
        "E-Mail;Keine Werbung\n"
        "a@example.de;Ja\n"
        "b@example.de;Nein\n"
        "c@example.de;-\n"
        "d@example.de;\n"
        "e@example.de;true\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "de.csv", text), mapping)
    assert {c["email"]: c["mailable"] for c in contacts} == {
        "a@example.de": False,
        "b@example.de": True,
        "c@example.de": True,
        "d@example.de": True,
    }
    # The mapping's own lists replace the defaults: "true" is not among them.
    assert reasons(rejected) == [
        (
            6,
            "unreadable flag: column 'Keine Werbung' (do_not_email) holds 'true', neither a "
            "true value (ja, wahr) nor a false value (-, falsch, nein) of mapping 'custom'",
        )
    ]


# -- repeated columns ------------------------------------------------------------------------


def test_two_columns_with_the_same_flag_header_the_most_restrictive_wins(tmp_path: Path) -> None:
    text = (
        "Email,Email Opt Out,Name,Email Opt Out\n"
        "ann@example.com,0,Ann,1\n"
        "bob@example.com,1,Bob,0\n"
        "cy@example.com,0,Cy,0\n"
        "dee@example.com,0,Dee,Ja\n"
    )
    contacts, rejected, export = read(write(tmp_path, "report.csv", text), "salesforce")
    assert {c["email"]: c["mailable"] for c in contacts} == {
        "ann@example.com": False,
        "bob@example.com": False,
        "cy@example.com": True,
    }
    assert [(r["line"], r["kind"]) for r in rejected] == [(5, UNREADABLE_FLAG)]
    assert (
        "column 'Email Opt Out' appears 2 times (columns 2, 4); all are read for do_not_email "
        "and the most restrictive reading wins"
    ) in export.summary.warnings


# -- bytes and lines -------------------------------------------------------------------------


def test_a_nul_byte_rejects_only_its_line_and_the_raw_text_holds_no_nul(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(
        b"Email,Name,Unsubscribed\n"
        b"ann@example.com,Ann,false\n"
        b"bob@example.com,Bob,\x00\n"
        b'"cy@exa\x00mple.com","Cy\nDee",false\n'
        b"dee@example.com,Dee,false\n"
    )
    contacts, rejected, export = read(path)
    assert export.summary.encoding == "utf-8"
    assert brief(contacts) == [(2, "ann@example.com", "Ann"), (6, "dee@example.com", "Dee")]
    assert reasons(rejected) == [
        (3, "unreadable line: a NUL byte (\\x00) in the line"),
        (4, "unreadable line: a NUL byte (\\x00) in the line"),
    ]
    assert [r["raw"] for r in rejected] == [
        "bob@example.com,Bob,\u2400",
        '"cy@exa\u2400mple.com","Cy\nDee",false',
    ]


def test_a_nul_byte_in_the_header_or_many_of_them_refuse_the_file(tmp_path: Path) -> None:
    header = tmp_path / "header.csv"
    header.write_bytes(b"Email,Na\x00me\nann@example.com,Ann\n")
    with pytest.raises(CrmFileError, match="the header line holds a NUL byte"):
        read_export(header)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"Email,Name\n" + b"a\x00b\x00c\x00\n" * 20)
    with pytest.raises(CrmFileError, match=r"binary data \(NUL bytes\)"):
        read_export(binary)


def test_a_bare_carriage_return_in_an_lf_file_ends_a_line(tmp_path: Path) -> None:
    text = (
        "Email,Name\n"
        "ann@example.com,Ann\rbob@example.com,Bob\n"
        'cy@example.com,"Cy\rDee"\n'
        "dee@example.com,Dee\r\n"
    )
    contacts, rejected, _ = read(write(tmp_path, "cr.csv", text))
    assert brief(contacts) == [
        (2, "ann@example.com", "Ann"),
        (3, "bob@example.com", "Bob"),
        (4, "cy@example.com", "Cy Dee"),
        (6, "dee@example.com", "Dee"),
    ]
    assert rejected == []


def test_one_line_in_another_encoding_does_not_turn_a_utf8_file_into_mojibake(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"Email,Name\n"
        # The first non-ASCII line, with more accented letters than the rest of the file.
        + "bob@example.com,Renée Núñez-Gómez\n".encode("cp1252")
        + "ann@example.com,Zoë\n".encode()
        + "cy@example.com,Łukasz\n".encode()
    )
    contacts, rejected, export = read(path)
    assert export.summary.encoding == "utf-8"
    assert brief(contacts) == [(3, "ann@example.com", "Zoë"), (4, "cy@example.com", "Łukasz")]
    assert reasons(rejected) == [(2, "unreadable line: undecodable bytes (not valid utf-8)")]


def test_an_internationalised_local_part_is_a_contact(tmp_path: Path) -> None:
    text = "Email,Name\njörg@example.de,Jörg\nJÖRG@Bücher.de,Jörg B\n"
    contacts, rejected, _ = read(write(tmp_path, "idn.csv", text))
    assert brief(contacts) == [
        (2, "jörg@example.de", "Jörg"),
        (3, "jörg@xn--bcher-kva.de", "Jörg B"),
    ]
    assert rejected == []


# -- workbooks -------------------------------------------------------------------------------


def test_every_sheet_with_the_mapped_header_is_read_and_the_others_are_named(
    tmp_path: Path,
) -> None:
    path = make_workbook(
        tmp_path / "book.xlsx",
        [["Email", "Name", "Unsubscribed"], ["ann@example.com", "Ann", "no"]],
        Leads=[["Email", "Name", "Unsubscribed"], ["bob@example.com", "Bob", "yes"]],
        Notes=[["Exported by Sam for the spring campaign"]],
    )
    contacts, rejected, export = read(path, "generic")
    assert [(c["source_file"], c["line"], c["email"], c["mailable"]) for c in contacts] == [
        ("book.xlsx[Contacts]", 2, "ann@example.com", True),
        ("book.xlsx[Leads]", 2, "bob@example.com", False),
    ]
    assert rejected == []
    assert export.summary.sheets == ["Contacts", "Leads"]
    assert export.summary.warnings[0] == (
        "read sheets 'Contacts', 'Leads' of 3; not read: 'Notes' (no email column for "
        "mapping 'generic')"
    )


def test_a_title_above_the_header_is_skipped(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "report.xlsx",
        [
            ["Contacts with email opt-out"],
            ["Generated 2026-11-30 by Sam", None, "Confidential"],
            [],
            ["Email", "First Name", "Email Opt Out"],
            ["ann@example.com", "Ann", True],
            ["bob@example.com", "Bob", False],
        ],
    )
    contacts, rejected, export = read(path)
    assert export.summary.mapping == "salesforce"
    assert [(c["line"], c["email"], c["mailable"]) for c in contacts] == [
        (5, "ann@example.com", False),
        (6, "bob@example.com", True),
    ]
    assert rejected == []
    assert export.summary.sheets == ["Contacts"]
    assert export.summary.warnings[0] == (
        "sheet 'Contacts': 2 row(s) above the header skipped (a title or notes); the header "
        "is row 4"
    )


def test_a_workbook_without_the_mapped_header_names_its_sheets(tmp_path: Path) -> None:
    path = make_workbook(
        tmp_path / "book.xlsx", [["Name", "Phone"], ["Ann", "123"]], Notes=[["Hello"]]
    )
    with pytest.raises(CrmFileError) as caught:
        read_export(path)
    assert str(caught.value) == (
        f"{path}: no sheet has a header with an email column for any built-in mapping "
        "(the sheets are ['Contacts', 'Notes']) in its first 20 rows"
    )
    with pytest.raises(CrmFileError, match="sheet 'Notes' has no header with an email column"):
        read_export(path, "generic", sheet="Notes")


def test_two_names_of_one_flag_column_are_both_read(tmp_path: Path) -> None:
    text = (
        "Email,HasOptedOutOfEmail,Email Opt Out\n"
        "ann@example.com,false,1\n"
        "bob@example.com,true,0\n"
        "cy@example.com,false,0\n"
    )
    contacts, _, export = read(write(tmp_path, "sf.csv", text), "salesforce")
    assert {c["email"]: c["mailable"] for c in contacts} == {
        "ann@example.com": False,
        "bob@example.com": False,
        "cy@example.com": True,
    }
    assert (
        "do_not_email is read from 2 columns ('HasOptedOutOfEmail', 'Email Opt Out': columns "
        "2, 3); the most restrictive reading wins"
    ) in export.summary.warnings
