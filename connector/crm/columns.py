"""Matching a mapping against an export's header, and choosing a built-in mapping for it.

Header names compare case- and whitespace-insensitively. When the email or a name column
appears more than once the first is used; a flag or category column is read from every
column that matches (two "Email Opt Out" columns), the most restrictive reading winning. A
warning in the summary says either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from connector.crm.errors import CrmFileError
from connector.crm.mapping import (
    BUILTIN_NAMES,
    FLAG_NAMES,
    CategoryColumn,
    CrmMapping,
    FlagColumn,
    builtin_mappings,
    header_key,
)


@dataclass(frozen=True)
class FlagCell:
    """One header column read for a flag or a category opt-out, and how to read it."""

    index: int
    label: str
    column: FlagColumn | CategoryColumn
    target: str  # the flag name, or the category id


@dataclass(frozen=True)
class ResolvedColumns:
    """A mapping matched against one header: column indexes, and what was used or missing."""

    mapping: CrmMapping
    width: int
    email: int
    full_name: int | None
    first_name: int | None
    last_name: int | None
    flags: dict[str, tuple[FlagCell, ...]]  # per flag, every column read for it
    categories: tuple[FlagCell, ...]
    used: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _index(header: Sequence[str]) -> tuple[dict[str, int], dict[str, list[int]]]:
    first: dict[str, int] = {}
    all_positions: dict[str, list[int]] = {}
    for i, label in enumerate(header):
        key = header_key(label)
        if not key:
            continue
        first.setdefault(key, i)
        all_positions.setdefault(key, []).append(i)
    return first, all_positions


def resolve_columns(mapping: CrmMapping, header: Sequence[str], path: str) -> ResolvedColumns:
    """Match a mapping against a header; ``CrmFileError`` when a required column is missing."""
    first, positions = _index(header)
    used: dict[str, str] = {}
    warnings: list[str] = []

    def find(names: Iterable[str], field_name: str) -> int | None:
        for name in names:
            index = first.get(header_key(name))
            if index is not None:
                used[field_name] = header[index]
                if len(positions[header_key(name)]) > 1:
                    columns = ", ".join(str(p + 1) for p in positions[header_key(name)])
                    warnings.append(
                        f"column {header[index]!r} appears {len(positions[header_key(name)])} "
                        f"times (columns {columns}); column {index + 1} is used for {field_name}"
                    )
                return index
        return None

    email = find(mapping.email, "email")
    if email is None:
        raise CrmFileError(
            path,
            f"no email column for mapping {mapping.name!r} (looked for "
            f"{_quoted(mapping.email)}); the header is {_quoted(header)}",
        )
    full_name = find(mapping.full_name, "name")
    first_name = find(mapping.first_name, "first_name")
    last_name = find(mapping.last_name, "last_name")
    if (
        "name" in mapping.required
        and full_name is None
        and first_name is None
        and (last_name is None)
    ):
        names = (*mapping.full_name, *mapping.first_name, *mapping.last_name)
        raise CrmFileError(
            path,
            f"mapping {mapping.name!r} requires a name but no name column is in the header "
            f"(looked for {_quoted(names)}); the header is {_quoted(header)}",
        )

    def find_all(
        column: FlagColumn | CategoryColumn, field_name: str, target: str
    ) -> list[FlagCell]:
        # Every column that carries one of the names: reading only the first of two "Email Opt
        # Out" columns would ignore an opt-out the other one holds.
        indexes = sorted({i for name in column.names for i in positions.get(header_key(name), ())})
        if indexes:
            used.setdefault(field_name, header[indexes[0]])
        return [FlagCell(i, header[i], column, target) for i in indexes]

    flags: dict[str, tuple[FlagCell, ...]] = {}
    for flag in FLAG_NAMES:
        entries = mapping.flags(flag)
        found: list[FlagCell] = []
        for n, column in enumerate(entries):
            found.extend(find_all(column, f"{flag}[{n}]" if len(entries) > 1 else flag, flag))
        if entries and not found:
            names = [name for column in entries for name in column.names]
            warnings.append(f"no {flag} column in the header (looked for {_quoted(names)})")
        _warn_repeated(found, flag, warnings)
        flags[flag] = tuple(found)
    categories: list[FlagCell] = []
    for category in mapping.category_opt_outs:
        cells = find_all(category, f"opt-out {category.category_id}", category.category_id)
        if not cells:
            warnings.append(
                f"no opt-out column for category {category.category_id} "
                f"(looked for {_quoted(category.names)})"
            )
        _warn_repeated(cells, f"the opt-out of {category.category_id}", warnings)
        categories.extend(cells)
    return ResolvedColumns(
        mapping=mapping,
        width=len(header),
        email=email,
        full_name=full_name,
        first_name=first_name,
        last_name=last_name,
        flags=flags,
        categories=tuple(categories),
        used=used,
        warnings=tuple(warnings),
    )


def _warn_repeated(cells: list[FlagCell], what: str, warnings: list[str]) -> None:
    if len(cells) < 2:
        return
    labels = list(dict.fromkeys(cell.label for cell in cells))
    columns = ", ".join(str(cell.index + 1) for cell in cells)
    if len(labels) == 1:
        warnings.append(
            f"column {labels[0]!r} appears {len(cells)} times (columns {columns}); all are read "
            f"for {what} and the most restrictive reading wins"
        )
    else:
        warnings.append(
            f"{what} is read from {len(cells)} columns ({', '.join(map(repr, labels))}: "
            f"columns {columns}); the most restrictive reading wins"
        )


def detect_mapping(header: Sequence[str], path: str) -> CrmMapping:
    """The built-in mapping whose columns match the header best (it must find the email)."""
    keys = {header_key(label) for label in header if header_key(label)}
    best: tuple[int, CrmMapping] | None = None
    for mapping in builtin_mappings():
        if not keys & {header_key(name) for name in mapping.email}:
            continue
        score = len(keys & mapping.known_columns())
        if best is None or score > best[0]:
            best = (score, mapping)
    if best is None:
        raise CrmFileError(
            path,
            "no built-in mapping fits: no email column found (tried "
            f"{', '.join(BUILTIN_NAMES)}); the header is {_quoted(header)}. "
            "Pass a custom mapping naming the email column.",
        )
    return best[1]


def _quoted(names: Iterable[str], limit: int = 40) -> str:
    items = list(names)
    text = ", ".join(repr(n) for n in items[:limit])
    return f"[{text}{', ...' if len(items) > limit else ''}]"
