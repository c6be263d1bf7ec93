"""What reading an export makes: the row shapes, the kinds of rejected line, how the flag
cells of a record read (``FlagReader``) and the rules that make one record a contact row or a
rejected row (``RecordRules``), shared by the record-at-a-time and bulk readers.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from connector.crm.columns import FlagCell, ResolvedColumns
from connector.crm.mapping import CategoryColumn, FlagColumn, value_key
from connector.crm.sources import raw_text
from connector.emails import PLAIN_EMAIL, PLAIN_LENGTH, normalize_unusual

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


class RecordRules:
    """One record at a time to a contact row or a rejected row: the rules of ``CrmRead``,
    for every record of an .xlsx or UTF-16 export and for the records the bulk path hands on.

    ``add`` is a closure over locals, not a method reading attributes: it runs once per record
    of a record-at-a-time read, where each attribute lookup costs about 1% of the read.
    """

    def __init__(
        self,
        columns: ResolvedColumns,
        source_file: str,
        delimiter: str,
        flags: FlagReader,
        rejected_by_kind: dict[str, int],
    ) -> None:
        self.source_file = source_file
        self.delimiter = delimiter
        self.by_kind = rejected_by_kind
        self.rejected: list[dict[str, Any]] = []
        self.blank = 0  # records of blank cells only
        self.add, self.take = self._rules(columns, flags)

    def reject(
        self, line: int, kind: str, detail: str | None, raw: str, email: str | None = None
    ) -> None:
        """A rejected row."""
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.rejected.append(
            {
                "source_file": self.source_file,
                "line": line,
                "kind": kind,
                "reason": f"{kind}: {detail}" if detail else kind,
                "raw": raw,
                "email": email,
            }
        )

    def unreadable(self, line: int, problem: str, raw: str) -> None:
        """A line the source could not read."""
        self.reject(line, UNREADABLE_LINE, problem, raw)

    def _rules(
        self, columns: ResolvedColumns, flags: FlagReader
    ) -> tuple[Callable[[list[str], int], None], Callable[[], tuple[list[Any], list[Any]]]]:
        """``add(fields, line)``: one record's row; ``take()``: the rows made since the last
        call, as (contacts, rejected)."""
        source_file, delimiter, reject = self.source_file, self.delimiter, self.reject
        required_name = "name" in columns.mapping.required
        email_at, name_at = columns.email, columns.full_name
        first_at, last_at = columns.first_name, columns.last_name
        has_parts = first_at is not None or last_at is not None
        flag_key, flag_cache, read_flags = flags.key, flags.cache, flags.read
        plain, plain_length, unusual = PLAIN_EMAIL.fullmatch, PLAIN_LENGTH, normalize_unusual
        contacts: list[dict[str, Any]] = []

        def add(fields: list[str], line: int) -> None:
            original = fields[email_at]
            # normalize_email inlined: the call and its tuple cost a tenth of the row.
            email: str | None = original.strip()
            assert email is not None
            if len(email) <= plain_length and plain(email):
                email = email.lower()
                if email == original:
                    email = original  # the same object: a million rows hold it twice
            else:
                email, problem = unusual(email)
                if email is None:
                    raw = raw_text(delimiter.join(fields))
                    if problem == "empty" and not any(f.strip() for f in fields):
                        self.blank += 1  # only spaces in every cell: a blank line, not a record
                    elif problem == "empty":
                        reject(line, MISSING_EMAIL, None, raw)
                    else:
                        detail = f"{problem} ({original.strip()[:200]!r})"
                        reject(line, INVALID_EMAIL, detail, raw)
                    return
            name = fields[name_at].strip() if name_at is not None else ""
            if not name and has_parts:
                first = fields[first_at].strip() if first_at is not None else ""
                last = fields[last_at].strip() if last_at is not None else ""
                name = f"{first} {last}".strip()
            if "\n" in name or "\r" in name:
                name = " ".join(name.split())
            if not name and required_name:
                reject(line, MISSING_FIELD, "name", raw_text(delimiter.join(fields)), email)
                return
            if flag_key is None:
                do_not_email = unsubscribed = bounced = False
                categories: tuple[str, ...] = ()
            else:
                cells = flag_key(fields)
                hit = flag_cache.get(cells)
                if hit is None:
                    hit = read_flags(cells)
                do_not_email, unsubscribed, bounced, categories, unreadable = hit
                if unreadable is not None:
                    raw = raw_text(delimiter.join(fields))
                    reject(line, UNREADABLE_FLAG, unreadable, raw, email)
                    return
            contacts.append(
                {
                    "source_file": source_file,
                    "line": line,
                    "email": email,
                    "email_original": original,
                    "name": name or None,
                    "do_not_email": do_not_email,
                    "unsubscribed": unsubscribed,
                    "hard_bounced": bounced,
                    "opted_out_category_ids": categories,
                    "mailable": not (do_not_email or unsubscribed or bounced),
                }
            )

        def take() -> tuple[list[Any], list[Any]]:
            nonlocal contacts
            made, contacts = contacts, []
            rejected, self.rejected = self.rejected, []
            return made, rejected

        return add, take
