"""A list request's query string, parsed: the filter compiled, ``select``, ``order``, ``limit``
and ``offset`` checked against the resource's fields.

The Marketplace API takes its filter straight in the query string, e.g.
``?and(eq(status,Active),gt(audit.updated.at,"2026-01-31T23:00:00.000Z"))&select=audit&limit=100``
(see ``../shared/api/README.md``, "RQL"). The string is percent-decoded once, then split on the
``&`` that stand outside quotes and parentheses: the parts naming ``limit``, ``offset``,
``select`` or ``order`` are parameters, the rest together form one filter (so ``a&b|c`` keeps
*and* binding tighter than *or*, and a quoted value may hold an ``&``).

Choices made where the API documentation is silent: ``limit`` defaults to 10 when the request
has none (``default_limit``); larger values are capped at ``max_limit`` (100); ``limit=0`` asks
for the count only. Field names are case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from sandbox.marketplace.rql.errors import RqlSyntaxError
from sandbox.marketplace.rql.fields import PATH_RE, FieldSet
from sandbox.marketplace.rql.parser import Parser

DEFAULT_LIMIT = 10
MAX_LIMIT = 100

_COUNT_RE = re.compile(r"[0-9]+")
_NAMED = ("limit", "offset", "select", "order")


@dataclass(frozen=True)
class ParsedQuery:
    """Everything a list request asked for, with the filter compiled to a predicate."""

    filter_text: str
    predicate: Callable[[Any], bool] | None
    order: tuple[tuple[str, bool], ...] = ()
    select_add: tuple[str, ...] = ()
    select_remove: tuple[str, ...] = ()
    limit: int | None = DEFAULT_LIMIT
    offset: int = 0


def parse_query(
    raw_query: str,
    fields: FieldSet,
    *,
    max_limit: int | None = MAX_LIMIT,
    default_limit: int | None = DEFAULT_LIMIT,
) -> ParsedQuery:
    """Parse a raw, still percent-encoded query string; raise ``RqlSyntaxError`` if malformed.

    ``max_limit=None`` disables the cap and ``default_limit=None`` leaves ``limit`` None when the
    request has none (both useful for streaming mode, which answers the whole result).
    """
    if raw_query.startswith("?"):
        raw_query = raw_query[1:]
    try:
        decoded = unquote(raw_query, errors="strict")
    except UnicodeDecodeError:
        raise RqlSyntaxError("the query string is not valid percent-encoded UTF-8") from None
    filters: list[str] = []
    used: list[tuple[str, str]] = []  # (top-level path, "filtering"/"ordering") for select checks
    order: tuple[tuple[str, bool], ...] | None = None
    select_add: list[str] = []
    select_remove: list[str] = []
    limit: int | None = None
    offset: int | None = None

    for part in _top_level_parts(decoded):
        name, eq, value = part.partition("=")
        if not (eq and name in _NAMED):
            filters.append(part)
            continue
        if name == "select":
            for sign, path in _parse_items(value, "select", fields):
                (select_remove if sign == "-" else select_add).append(path)
        elif name == "order":
            if order is not None:
                raise RqlSyntaxError("order is given more than once", parameter="order")
            order = _parse_order(value, fields)
            used.extend((path, "ordering") for path, _ in order)
        elif name == "limit":
            if limit is not None:
                raise RqlSyntaxError("limit is given more than once", parameter="limit")
            limit = _parse_count(value, name)
        else:
            if offset is not None:
                raise RqlSyntaxError("offset is given more than once", parameter="offset")
            offset = _parse_count(value, name)

    filter_text, predicate = "", None
    if filters:
        parser = Parser("&".join(filters), fields)
        filter_text, predicate = parser.parse()
        used.extend((path, "filtering") for path in parser.top_paths)

    _check_selected(used, fields, select_add, select_remove)

    if limit is None:
        limit = default_limit
    elif max_limit is not None:
        limit = min(limit, max_limit)

    return ParsedQuery(
        filter_text=filter_text,
        predicate=predicate,
        order=order or (),
        select_add=tuple(dict.fromkeys(select_add)),
        select_remove=tuple(dict.fromkeys(select_remove)),
        limit=limit,
        offset=offset or 0,
    )


def _top_level_parts(text: str) -> list[str]:
    """``text`` split on the ``&`` outside quotes and parentheses, empty parts dropped."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "&" and depth <= 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _parse_count(value: str, name: str) -> int:
    if not _COUNT_RE.fullmatch(value):
        raise RqlSyntaxError(
            f"{name} must be a non-negative integer, got {value!r}", parameter=name
        )
    try:
        return int(value)
    except ValueError:  # more digits than Python converts
        raise RqlSyntaxError(f"{name} is too large: {value[:20]}...", parameter=name) from None


def _parse_items(value: str, parameter: str, fields: FieldSet) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    # Strip blanks: a client that form-encodes turns a literal '+' into a space.
    for raw in value.split(","):
        item = raw.strip()
        sign = ""
        if item[:1] in ("+", "-"):
            sign, item = item[0], item[1:].strip()
        if not item:
            raise RqlSyntaxError(f"{parameter} has an empty item in {value!r}", parameter=parameter)
        if not PATH_RE.fullmatch(item):
            raise RqlSyntaxError(
                f"{parameter}: {item!r} is not a field name", parameter=parameter, field=item
            )
        if fields.kind(item) is None:
            raise RqlSyntaxError(
                f"unknown field {item!r} in {parameter}", parameter=parameter, field=item
            )
        items.append((sign, item))
    return items


def _parse_order(value: str, fields: FieldSet) -> tuple[tuple[str, bool], ...]:
    order: list[tuple[str, bool]] = []
    for sign, path in _parse_items(value, "order", fields):
        kind = fields.kind(path)
        if kind != "value":
            raise RqlSyntaxError(
                f"cannot order by {path!r}: it is {'an' if kind == 'object' else 'a'} {kind},"
                " order needs a value field",
                parameter="order",
                field=path,
            )
        order.append((path, sign == "-"))
    return tuple(order)


def _covers(selected: str, path: str) -> bool:
    return path == selected or path.startswith(selected + ".")


def _check_selected(
    used: list[tuple[str, str]], fields: FieldSet, add: list[str], remove: list[str]
) -> None:
    for path, doing in used:
        for root in fields.select_required:
            if not _covers(root, path):
                continue
            chosen = any(_covers(s, path) or _covers(path, s) for s in add) and not any(
                _covers(r, path) for r in remove
            )
            if not chosen:
                raise RqlSyntaxError(
                    f"{doing} on {path!r} needs {root!r} in select (add select={root})",
                    parameter="order" if doing == "ordering" else "filter",
                    field=path,
                )
