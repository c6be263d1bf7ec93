"""Build RQL filters and list query strings for the Marketplace API without injection mistakes.

Expressions are immutable ``Rql`` values made by the functions below; ``str(expr)`` is the RQL
text and ``build_query_string`` the percent-encoded query string, with the filter written
straight into it as the API expects
(``and(eq(status,%22Active%22),gt(audit.updated.at,%22...%22))&select=audit&order=id&limit=100``).

Values are always written so that the platform's engine reads exactly the value given:

- ``str``: in double quotes, or in single quotes when it holds a ``"``. The engine has no
  escapes inside quotes (a quoted value ends at the next quote of the same kind), so a value
  holding both kinds of quote cannot be written and raises ``RqlBuildError``; a backslash is
  an ordinary character.
- ``datetime``: must be timezone-aware (a naive one is ambiguous and raises ``RqlBuildError``);
  converted to UTC and written as ``"YYYY-MM-DDTHH:mm:ss.sssZ"``, the microseconds truncated to
  milliseconds as the API stores them.
- ``bool``: ``true`` / ``false``; ``int``; finite ``float``; ``None``: ``null()``; ``Enum``: its
  value; ``NULL`` / ``EMPTY``: the API's ``null()`` / ``empty()`` constants.

Field names must be dotted identifiers (``audit.updated.at``). In ``like`` / ``ilike`` patterns
only a leading and/or trailing ``*`` is a wildcard and ``\\*`` escapes a star only at the very
start or end; pass user text through ``escape_wildcards`` to match it exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Literal, TypeAlias
from urllib.parse import quote

from connector.errors import RqlBuildError

__all__ = [
    "EMPTY",
    "NULL",
    "Rql",
    "RqlConstant",
    "all_",
    "and_",
    "any_",
    "build_query_string",
    "eq",
    "escape_wildcards",
    "format_datetime",
    "ge",
    "gt",
    "ilike",
    "in_",
    "le",
    "like",
    "like_pattern",
    "lt",
    "ne",
    "not_",
    "or_",
    "out",
    "raw",
]

_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# Left readable in the query string: RQL structure and timestamp punctuation. Everything else,
# notably & = + # % " \ ; space and non-ASCII, is percent-encoded so that it survives intact.
_SAFE = "(),*:'!"
# Roots that must be selected before the API lets a query filter or order on fields under them.
_SELECT_REQUIRED = ("audit",)


@dataclass(frozen=True, slots=True)
class RqlConstant:
    """One of the API's value constants, ``null()`` or ``empty()``."""

    name: str

    def __str__(self) -> str:
        return f"{self.name}()"


NULL = RqlConstant("null")
EMPTY = RqlConstant("empty")  # null, "" or an empty list

Value: TypeAlias = str | int | float | bool | datetime | Enum | RqlConstant | None


@dataclass(frozen=True, slots=True)
class Rql:
    """An immutable RQL expression; build it with the functions of this module, not directly."""

    text: str
    fields: tuple[str, ...] = ()  # top-level fields it reads (a collection, not its elements)

    def __str__(self) -> str:
        return self.text


def _field(name: object) -> str:
    if not isinstance(name, str) or not _FIELD_RE.fullmatch(name):
        raise RqlBuildError(f"not a field name: {name!r} (expected a dotted identifier)")
    return name


def _expr(value: object, context: str) -> Rql:
    if not isinstance(value, Rql):
        raise RqlBuildError(f"{context} needs RQL expressions, got {type(value).__name__}")
    return value


def _quote(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RqlBuildError(f"text value {text!r} is not valid Unicode (lone surrogate)") from None
    # No escapes inside quotes on the platform: pick the quote kind the value does not hold.
    if '"' not in text:
        return '"' + text + '"'
    if "'" not in text:
        return "'" + text + "'"
    raise RqlBuildError(
        f"text value {text!r} holds both kinds of quote: RQL has no escapes, so no query "
        "can compare with it"
    )


def format_datetime(moment: datetime) -> str:
    """The API's timestamp form, ``YYYY-MM-DDTHH:mm:ss.sssZ`` in UTC (not quoted)."""
    if not isinstance(moment, datetime):
        raise RqlBuildError(f"expected a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RqlBuildError(f"naive datetime {moment.isoformat()} is ambiguous: give it a tzinfo")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise RqlBuildError(f"datetime {moment.isoformat()} is out of range in UTC") from None
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def _value(value: object) -> str:
    if value is None:
        return str(NULL)
    if isinstance(value, RqlConstant):
        return str(value)
    if isinstance(value, Enum):
        return _value(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RqlBuildError(f"{value!r} cannot be compared in RQL")
        return float.__repr__(value)
    if isinstance(value, datetime):
        return _quote(format_datetime(value))
    if isinstance(value, date):
        raise RqlBuildError(f"use a timezone-aware datetime, not the date {value.isoformat()}")
    if isinstance(value, str):
        return _quote(value)
    raise RqlBuildError(f"cannot write a {type(value).__name__} value in RQL")


def _compare(op: str, name: str, value: Value) -> Rql:
    return Rql(f"{op}({_field(name)},{_value(value)})", (name,))


def _ordered(op: str, name: str, value: Value) -> Rql:
    if value is None or isinstance(value, RqlConstant):
        raise RqlBuildError(f"{op}() needs a value to compare with, not {_value(value)}")
    return _compare(op, name, value)


def eq(field: str, value: Value) -> Rql:
    """``field`` equals ``value`` (``None``/``NULL``: is null; ``EMPTY``: null, "" or [])."""
    return _compare("eq", field, value)


def ne(field: str, value: Value) -> Rql:
    """``field`` differs from ``value``."""
    return _compare("ne", field, value)


def gt(field: str, value: Value) -> Rql:
    """``field`` is greater than ``value``."""
    return _ordered("gt", field, value)


def ge(field: str, value: Value) -> Rql:
    """``field`` is greater than or equal to ``value``."""
    return _ordered("ge", field, value)


def lt(field: str, value: Value) -> Rql:
    """``field`` is less than ``value``."""
    return _ordered("lt", field, value)


def le(field: str, value: Value) -> Rql:
    """``field`` is less than or equal to ``value``."""
    return _ordered("le", field, value)


Match = Literal["exact", "prefix", "suffix", "contains"]


def like_pattern(text: str, match: Match = "exact") -> str:
    r"""A ``like`` / ``ilike`` pattern matching values that equal, start with, end with or
    contain ``text``, every character of it taken literally.

    The engine strips one leading and one trailing ``*`` (or ``\*``, keeping the star) and
    reads nothing else specially, so only the ends of ``text`` may need care; the few texts no
    pattern can express (e.g. a prefix ending in a backslash) raise ``RqlBuildError``.
    """
    if not isinstance(text, str):
        raise RqlBuildError(f"a like pattern needs text, got {type(text).__name__}")
    lead = match in ("suffix", "contains")
    trail = match in ("prefix", "contains")
    head = "*" if lead else ("\\" if text.startswith("*") else "")
    body = text
    if not trail and text.endswith("*"):
        # A trailing star kept literal; a lone star is escaped once, as both ends.
        body = text[:-1] + ("*" if text == "*" and not lead else "\\*")
    tail = "*" if trail else ""
    written = head + body + tail
    # An empty prefix, suffix or infix is read as "contains nothing": every value, as meant.
    if _read_like(written) != (match, text) and (text or match == "exact"):
        raise RqlBuildError(f"no like pattern matches {match} {text!r} literally")
    return written


def _read_like(written: str) -> tuple[str, str]:
    """How the engine reads a pattern (to check ``like_pattern``): (match, literal text)."""
    starts_wild = written.startswith("*")
    starts_escaped = written.startswith("\\*")
    ends_escaped = written.endswith("\\*")
    ends_wild = not ends_escaped and written.endswith("*")
    start = 1 if starts_wild or starts_escaped else 0
    end = len(written)
    if ends_escaped:
        end = max(start, end - 2)
    elif ends_wild:
        end = max(start, end - 1)
    literal = written[start:end] + ("*" if ends_escaped else "")
    kind = {(True, True): "contains", (True, False): "suffix", (False, True): "prefix"}
    return kind.get((starts_wild, ends_wild), "exact"), literal


def escape_wildcards(text: str) -> str:
    """The pattern matching exactly ``text``: ``like_pattern(text, "exact")``."""
    return like_pattern(text, "exact")


def _pattern(op: str, field: str, pattern: str) -> Rql:
    if not isinstance(pattern, str):
        raise RqlBuildError(f"{op}() needs a text pattern, got {type(pattern).__name__}")
    return Rql(f"{op}({_field(field)},{_quote(pattern)})", (field,))


def like(field: str, pattern: str) -> Rql:
    r"""Case-sensitive match: a leading/trailing ``*`` is a wildcard, none means the whole value."""
    return _pattern("like", field, pattern)


def ilike(field: str, pattern: str) -> Rql:
    r"""Case-insensitive ``like``: ``*x*`` contains, ``x*`` starts with, ``*x`` ends with ``x``.

    A ``*`` in the middle is a literal star, as is ``\*`` at the very start or end.
    """
    return _pattern("ilike", field, pattern)


def _listed(op: str, field: str, values: Iterable[Value]) -> Rql:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise RqlBuildError(f"{op}() needs a list of values, got {type(values).__name__}")
    written = [_value(v) for v in values]
    if not written:
        raise RqlBuildError(f"{op}() needs at least one value")
    return Rql(f"{op}({_field(field)},({','.join(written)}))", (field,))


def in_(field: str, values: Iterable[Value]) -> Rql:
    """``field`` equals one of ``values``."""
    return _listed("in", field, values)


def out(field: str, values: Iterable[Value]) -> Rql:
    """``field`` equals none of ``values``."""
    return _listed("out", field, values)


def _group(op: str, exprs: tuple[Rql, ...]) -> Rql:
    if not exprs:
        raise RqlBuildError(f"{op}_() needs at least one expression")
    for expr in exprs:
        _expr(expr, f"{op}_()")
    if len(exprs) == 1:
        return exprs[0]
    fields = dict.fromkeys(name for expr in exprs for name in expr.fields)
    return Rql(f"{op}({','.join(e.text for e in exprs)})", tuple(fields))


def and_(*exprs: Rql) -> Rql:
    """All of ``exprs`` hold (a single expression is returned as is)."""
    return _group("and", exprs)


def or_(*exprs: Rql) -> Rql:
    """At least one of ``exprs`` holds (a single expression is returned as is)."""
    return _group("or", exprs)


def not_(expr: Rql) -> Rql:
    """``expr`` does not hold."""
    _expr(expr, "not_()")
    return Rql(f"not({expr.text})", expr.fields)


def any_(collection: str, expr: Rql) -> Rql:
    """Some element of ``collection`` satisfies ``expr`` (fields relative to the element)."""
    _expr(expr, "any_()")
    return Rql(f"any({_field(collection)},{expr.text})", (collection,))


def all_(collection: str, expr: Rql) -> Rql:
    """Every element of ``collection`` satisfies ``expr`` (fields relative to the element)."""
    _expr(expr, "all_()")
    return Rql(f"all({_field(collection)},{expr.text})", (collection,))


def raw(text: str) -> Rql:
    """An expression written by a person (e.g. a CLI ``--filter``), checked to be self-contained.

    Only the structure is checked - quotes closed, parentheses balanced - so that it cannot
    spill into the expression or query string around it; the server checks the rest.
    """
    if not isinstance(text, str) or not text.strip():
        raise RqlBuildError("an RQL filter cannot be empty")
    depth = 0
    quote_char: str | None = None
    for i, ch in enumerate(text):
        if quote_char is not None:
            # No escapes inside quotes: a quoted value ends at the next quote of its kind.
            if ch == quote_char:
                quote_char = None
        elif ch in "\"'":
            quote_char = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise RqlBuildError(f"unbalanced ')' at character {i + 1} of {text!r}")
        elif ch in "&,|;" and depth == 0:
            # Between expressions these are and/or: they would join the filter to the query
            # parameters around it. Group them: and(...), or(...) or ( ... ).
            raise RqlBuildError(
                f"{ch!r} at character {i + 1} of {text!r}: give one expression "
                "(group several in and(...), or(...) or parentheses)"
            )
    if quote_char is not None:
        raise RqlBuildError(f"unterminated {quote_char} string in {text!r}")
    if depth:
        raise RqlBuildError(f"unbalanced parentheses: {depth} '(' never closed in {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RqlBuildError(f"{text!r} is not valid Unicode") from None
    return Rql(text)  # its fields are unknown: the server checks them


def _items(values: Iterable[str], parameter: str) -> list[tuple[str, str]]:
    if isinstance(values, str):
        raise RqlBuildError(f"{parameter} takes a sequence of fields, not the string {values!r}")
    items: list[tuple[str, str]] = []
    for value in values:
        if not isinstance(value, str):
            raise RqlBuildError(f"{parameter}: not a field name: {value!r}")
        sign, name = (value[0], value[1:]) if value[:1] in ("+", "-") else ("", value)
        # '+' is the default and would need encoding (a form decoder reads it as a space).
        items.append(("-" if sign == "-" else "", _field(name)))
    return items


def _count(value: object, parameter: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RqlBuildError(f"{parameter} must be a non-negative int, got {value!r}")
    return value


def build_query_string(
    filter: Rql | None = None,
    *,
    select: Iterable[str] = (),
    order: Iterable[str] = (),
    limit: int | None = None,
    offset: int | None = None,
) -> str:
    """The percent-encoded query string (no leading ``?``) of a list request.

    ``select`` items are ``field`` / ``+field`` (add) or ``-field`` (remove); ``order`` items
    ``field`` / ``+field`` (ascending) or ``-field`` (descending). Filtering or ordering on
    ``audit.*`` without ``audit`` selected raises ``RqlBuildError``, as the API would answer 400.
    """
    parts: list[str] = []
    used: list[str] = []
    if filter is not None:
        _expr(filter, "build_query_string()")
        parts.append(quote(filter.text, safe=_SAFE))
        used.extend(filter.fields)
    select_items = _items(select, "select")
    order_items = _items(order, "order")
    if select_items:
        parts.append("select=" + ",".join(sign + name for sign, name in select_items))
    if order_items:
        parts.append("order=" + ",".join(sign + name for sign, name in order_items))
        used.extend(name for _, name in order_items)
    if limit is not None:
        parts.append(f"limit={_count(limit, 'limit')}")
    if offset is not None:
        parts.append(f"offset={_count(offset, 'offset')}")

    added = [name for sign, name in select_items if sign != "-"]
    for path in used:
        for root in _SELECT_REQUIRED:
            if (path == root or path.startswith(root + ".")) and not any(
                path == name or path.startswith(name + ".") or name.startswith(path + ".")
                for name in added
            ):
                raise RqlBuildError(f"filtering or ordering on {path!r} needs {root!r} in select")
    return "&".join(parts)
