"""Helpers shared by the CRM export tests: write an export, read it, summarise the outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl

from connector.crm import CrmRead, read_export


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


def make_workbook(
    path: Path,
    rows: list[list[Any]],
    title: str = "Contacts",
    **more_sheets: list[list[Any]],
) -> Path:
    """An .xlsx workbook: the first sheet holds ``rows``, then one sheet per keyword."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    for name, sheet_rows in more_sheets.items():
        other = book.create_sheet(name)
        for row in sheet_rows:
            other.append(row)
    book.save(path)
    return path


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
