"""Whole exports: .xlsx workbooks, files that cannot be read at all, chunking."""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path

import pytest
from crm_files import brief, flags, make_workbook, read, reasons, write

from connector.crm import (
    CrmFileError,
    read_export,
)

# -- xlsx ----------------------------------------------------------------------------------


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
    path = make_workbook(
        tmp_path / "book.xlsx",
        [["Email"], ["a@example.com"]],
        Other=[["Email", "Name"], ["other@example.com", "Other"]],
    )
    contacts, _, export = read(path, sheet="Other")
    assert brief(contacts) == [(2, "other@example.com", "Other")]
    assert contacts[0]["source_file"] == "book.xlsx"
    assert export.summary.sheets == ["Other"]
    assert export.summary.warnings[0] == (
        "read sheet 'Other' of 2; not read: 'Contacts' (the run names sheet 'Other')"
    )
    with pytest.raises(CrmFileError, match=r"book\.xlsx: no sheet 'Missing'"):
        read_export(path, sheet="Missing")


def test_xlsx_renamed_to_csv_is_still_read(tmp_path: Path) -> None:
    path = make_workbook(tmp_path / "export.csv", [["Email", "Name"], ["a@example.com", "A"]])
    contacts, _, export = read(path)
    assert export.summary.format == "xlsx"
    assert brief(contacts) == [(2, "a@example.com", "A")]


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
