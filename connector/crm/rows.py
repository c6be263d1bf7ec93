"""What reading an export makes: the row shapes, the kinds of rejected line, and how the
flag cells of a record read (``FlagReader``), shared by the record-at-a-time and bulk readers.
"""

from __future__ import annotations

import operator
from typing import Any

from connector.crm.columns import FlagCell, ResolvedColumns
from connector.crm.mapping import CategoryColumn, FlagColumn, value_key

CONTACT_FIELDS = (
    "source_file",
    "line",
    "email",
    "email_original",
    "name",
    "do_not_email",
    "unsubscribed",
    "hard_bounced",
    "opted_out_category_ids",
    "mailable",
)
REJECTED_FIELDS = ("source_file", "line", "kind", "reason", "raw", "email")

# ``kind`` of a rejected row; ``reason`` starts with it and adds the detail.
MISSING_EMAIL = "missing email"
INVALID_EMAIL = "invalid email"
MISSING_FIELD = "missing field"
UNREADABLE_LINE = "unreadable line"
UNREADABLE_FLAG = "unreadable flag"

_CACHE_LIMIT = 4096


# do_not_email, unsubscribed, hard_bounced, opted-out categories, why the flags are unreadable
_Flags = tuple[bool, bool, bool, tuple[str, ...], str | None]
_SLOTS = {"do_not_email": 0, "unsubscribed": 1, "hard_bounced": 2}


class FlagReader:
    """The flags and category opt-outs of a record, cached by the cells that decide them.

    Flag columns hold a handful of distinct values, so the tuple of a record's flag cells is
    looked up in a dict; only a new combination is read cell by cell. A cell that reads
    neither true nor false makes the record unreadable (fail closed: never guess "mailable").
    """

    def __init__(self, columns: ResolvedColumns) -> None:
        self.cells: list[FlagCell] = [
            *(
                cell
                for flag in ("do_not_email", "unsubscribed", "hard_bounced")
                for cell in columns.flags[flag]
            ),
            *columns.categories,
        ]
        self.mapping = columns.mapping.name
        indexes = [cell.index for cell in self.cells]
        self.key = operator.itemgetter(*indexes) if indexes else None
        self.cache: dict[Any, _Flags] = {}

    def read(self, cells: Any) -> _Flags:
        """Read one combination of flag cells (a tuple, or a string for a single column)."""
        values = (cells,) if len(self.cells) == 1 else cells
        flags = [False, False, False]
        categories: list[str] = []
        problem: str | None = None
        for value, cell in zip(values, self.cells, strict=True):
            reading = _reading(value, cell.column) if value else False
            if reading is None:
                problem = problem or self._problem(value, cell)
                continue
            if not reading:
                continue
            slot = _SLOTS.get(cell.target)
            if slot is not None:
                flags[slot] = True
            elif cell.target not in categories:
                categories.append(cell.target)
        result = (flags[0], flags[1], flags[2], tuple(categories), problem)
        # Bounce reasons or dates can make many combinations; stop caching past a limit.
        if len(self.cache) < _CACHE_LIMIT:
            self.cache[cells] = result
        return result

    def _problem(self, value: str, cell: FlagCell) -> str:
        what = cell.target if cell.target in _SLOTS else f"the opt-out of {cell.target}"
        where = f"column {cell.label!r} ({what})"
        if cell.column.nonempty:
            return f"{where} holds {value.strip()[:100]!r}, punctuation only: not a value"
        return (
            f"{where} holds {value.strip()[:100]!r}, neither a true value "
            f"({_listing(cell.column.true_values)}) nor a false value "
            f"({_listing(cell.column.false_values)}) of mapping {self.mapping!r}"
        )


def _reading(value: str, column: FlagColumn | CategoryColumn) -> bool | None:
    """True or false for a flag cell, or None when it reads as neither."""
    key = value_key(value)
    if column.nonempty:
        if not key or key in column.false_values:
            return False
        # "-" or "?" in a bounce-reason column is a placeholder, not a reason: do not guess.
        return True if any(char.isalnum() for char in key) else None
    if key in column.true_values:
        return True
    if not key or key in column.false_values:
        return False
    return None


def _listing(values: frozenset[str], limit: int = 8) -> str:
    items = sorted(values)
    text = ", ".join(items[:limit])
    return text + (", ..." if len(items) > limit else "") if items else "none"
