"""Duplicate emails within and across exports: the most restrictive line wins, conflicts shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crm_files import ACME_YAML, flags, read, write

from connector.crm import merge_duplicates

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
