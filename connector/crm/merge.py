"""Fold contact rows into one row per email; the most restrictive flags win.

Any of ``do_not_email`` / ``unsubscribed`` / ``hard_bounced`` set on any occurrence is set on
the merged row, opted-out categories are unioned, the first non-empty name is kept, and the
merged row keeps the source file and line of the email's first occurrence. Occurrences that
disagree on flags or categories are reported as conflicts.

Memory: one row per distinct email (the caller's dicts, not copies, unless merged) plus a
small record per occurrence of an email that appears more than once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FLAGS = ("do_not_email", "unsubscribed", "hard_bounced")

_Occurrence = tuple[str, int, tuple[bool, bool, bool], frozenset[str]]


def merge_duplicates(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(one row per email in first-seen order, conflicts)``; see the module docstring."""
    merged: dict[str, dict[str, Any]] = {}
    repeats: dict[str, list[_Occurrence]] = {}
    for row in rows:
        email = row["email"]
        kept = merged.get(email)
        if kept is None:
            merged[email] = row  # type: ignore[assignment]
            continue
        occurrences = repeats.get(email)
        if occurrences is None:
            occurrences = repeats[email] = [_occurrence(kept)]
            # Copy before changing it: the first row belongs to the caller.
            kept = merged[email] = dict(kept)
        occurrences.append(_occurrence(row))
        for flag in FLAGS:
            if row[flag]:
                kept[flag] = True
        categories = kept["opted_out_category_ids"]
        extra = tuple(c for c in row["opted_out_category_ids"] if c not in categories)
        if extra:
            kept["opted_out_category_ids"] = (*categories, *extra)
        if not kept["name"] and row["name"]:
            kept["name"] = row["name"]
        kept["mailable"] = not any(kept[flag] for flag in FLAGS)
    conflicts = [
        _conflict(email, occurrences, merged[email])
        for email, occurrences in repeats.items()
        if len({(o[2], o[3]) for o in occurrences}) > 1
    ]
    return list(merged.values()), conflicts


def _occurrence(row: Mapping[str, Any]) -> _Occurrence:
    return (
        row["source_file"],
        row["line"],
        (bool(row["do_not_email"]), bool(row["unsubscribed"]), bool(row["hard_bounced"])),
        frozenset(row["opted_out_category_ids"]),
    )


def _conflict(email: str, occurrences: list[_Occurrence], row: Mapping[str, Any]) -> dict[str, Any]:
    files = {o[0] for o in occurrences}

    def where(o: _Occurrence) -> str:
        return f"line {o[1]}" if len(files) == 1 else f"{o[0]}:{o[1]}"

    parts = []
    for position, flag in enumerate(FLAGS):
        setters = [where(o) for o in occurrences if o[2][position]]
        if setters:
            parts.append(f"{flag} ({', '.join(setters)})")
    resolution = "most restrictive wins: " + ", ".join(parts) if parts else "mailable everywhere"
    category_sets = {o[3] for o in occurrences}
    if len(category_sets) > 1:
        resolution += "; opted-out categories unioned: " + ", ".join(row["opted_out_category_ids"])
    return {
        "email": email,
        "lines": [o[1] for o in occurrences],
        "sources": [f"{o[0]}:{o[1]}" for o in occurrences],
        "resolution": resolution,
    }
