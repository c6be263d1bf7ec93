"""RQL on the sandbox's side: turn a list request's raw query string into a compiled query.

The Marketplace API takes its filter straight in the query string, e.g.
``?and(eq(status,Active),gt(audit.updated.at,"2026-01-31T23:00:00.000Z"))&select=audit&limit=100``
(see ``../shared/api/README.md``, "RQL"). ``parse_query`` splits that string, checks every field
against the resource's ``FieldSet`` and compiles the filter once into nested closures: evaluating
it over a million records does no parsing, and in the common cases no regex and no timestamp
parsing, per record. ``sort_key`` / ``sort_records`` order records by the parsed ``order``.

Choices made where the API documentation is silent:

- ``limit`` defaults to 10 when the request has none (``default_limit``); larger values are capped
  at ``max_limit`` (100); ``limit=0`` asks for the count only.
- Quoted and bare values mean the same text. The literal is coerced to the type of the record's
  value: bool, number, or - when both are ISO timestamps - an instant; otherwise text is compared
  by code point. A value of another type than the literal can express never matches.
- A missing key is null. null never satisfies gt/ge/lt/le or ilike; ``ne`` is ``not eq``, so a
  null value is ``ne`` any literal. ``any`` over a null or empty collection is false, ``all`` true.
- ilike is a whole-value match, case-insensitive by Unicode case folding; ``*`` matches any run of
  characters, ``\\*`` a literal star.
- Whitespace outside quotes is an error: the real API would take it as part of a value.
- Operator names are case-insensitive (as in the real parser); field names are not.
- Sorting puts null first ascending (last descending); values of different types never compare
  with each other: null < bool < number < text < anything else.
"""

from __future__ import annotations

import operator
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from itertools import pairwise
from typing import Any, Literal
from urllib.parse import unquote

Record = Mapping[str, Any]
Predicate = Callable[[Any], bool]
OrderSpec = Sequence[tuple[str, bool]]

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# Deep enough for any real filter, shallow enough that neither the parser nor the compiled
# closures get near Python's recursion limit.
MAX_DEPTH = 64

_PATH_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")
_COUNT_RE = re.compile(r"[0-9]+")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?)?"
)
_NAMED = ("limit", "offset", "select", "order")
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_OPERATORS = _COMPARISONS | {"ilike", "in", "out", "and", "or", "not", "any", "all"}
_CONSTANTS = frozenset({"null", "empty"})
# ``flip[op](literal, value)`` is ``value <op> literal``: the literal is bound first with partial.
_FLIPPED: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.lt,
    "ge": operator.le,
    "lt": operator.gt,
    "le": operator.ge,
}


class RqlSyntaxError(ValueError):
    """A query string the API would answer with 400: says what is wrong and where."""

    def __init__(
        self,
        message: str,
        *,
        parameter: str = "filter",
        position: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.parameter = parameter  # filter, limit, offset, select or order
        self.position = position  # 0-based offset in the decoded query part, when known
        self.field = field  # the offending field name, when there is one


# --------------------------------------------------------------------------- fields


FieldKind = Literal["value", "object", "collection"]


@dataclass(frozen=True)
class FieldSet:
    """The dotted paths of one resource that a query may filter, order and select on.

    ``paths`` are value fields (``status``, ``category.id``, ``audit.updated.at``); every prefix
    of one is an object field (``category``, ``audit``) usable in ``select`` and with
    ``null()``/``empty()``. ``collections`` maps a list field to the fields of its elements, for
    ``any``/``all``. ``select_required`` are the roots that must be selected before filtering or
    ordering on anything under them.
    """

    paths: frozenset[str]
    collections: tuple[tuple[str, FieldSet], ...] = ()
    select_required: frozenset[str] = frozenset({"audit"})
    _kinds: dict[str, FieldKind] = field(init=False, repr=False, compare=False, hash=False)
    _elements: dict[str, FieldSet] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        kinds: dict[str, FieldKind] = {}
        elements = dict(self.collections)
        for path in (*self.paths, *elements):
            if not _PATH_RE.fullmatch(path):
                raise ValueError(f"not a dotted field path: {path!r}")
            parts = path.split(".")
            for i in range(1, len(parts)):
                kinds.setdefault(".".join(parts[:i]), "object")
        for path in self.paths:
            # A path listed as well as something under it ("user" and "user.id") is an object.
            kinds.setdefault(path, "value")
        for path in elements:
            kinds[path] = "collection"
        object.__setattr__(self, "_kinds", kinds)
        object.__setattr__(self, "_elements", elements)

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str],
        *,
        collections: Mapping[str, FieldSet | Iterable[str]] | None = None,
        select_required: Iterable[str] = ("audit",),
    ) -> FieldSet:
        """Build a field set: value paths, plus collection fields with their elements' paths."""
        nested = tuple(
            (
                name,
                inner if isinstance(inner, FieldSet) else cls.from_paths(inner, select_required=()),
            )
            for name, inner in (collections or {}).items()
        )
        return cls(frozenset(paths), nested, frozenset(select_required))

    @classmethod
    def from_example(
        cls, record: Mapping[str, Any], *, select_required: Iterable[str] = ("audit",)
    ) -> FieldSet:
        """Derive a field set from one fully populated record (lists of objects = collections)."""
        paths: list[str] = []
        collections: dict[str, FieldSet] = {}

        def walk(prefix: str, value: Mapping[str, Any]) -> None:
            for key, item in value.items():
                path = f"{prefix}{key}"
                if not _PATH_RE.fullmatch(path):
                    continue  # e.g. "$meta" sub-keys that are not addressable
                if isinstance(item, Mapping) and item:
                    walk(path + ".", item)
                elif isinstance(item, list) and item and isinstance(item[0], Mapping):
                    collections[path] = cls.from_example(item[0], select_required=())
                else:
                    paths.append(path)

        walk("", record)
        return cls.from_paths(paths, collections=collections, select_required=select_required)

    def kind(self, path: str) -> FieldKind | None:
        """What ``path`` is in this resource: a value, an object, a collection, or unknown."""
        return self._kinds.get(path)

    def element(self, path: str) -> FieldSet:
        """The field set of the elements of collection ``path``."""
        return self._elements[path]


# --------------------------------------------------------------------------- parsed query


@dataclass(frozen=True)
class ParsedQuery:
    """Everything a list request asked for, with the filter compiled to a predicate."""

    filter_text: str
    predicate: Callable[[Record], bool] | None
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
    filters: list[tuple[str, Predicate]] = []
    used: list[tuple[str, str]] = []  # (top-level path, "filtering"/"ordering") for select checks
    order: tuple[tuple[str, bool], ...] | None = None
    select_add: list[str] = []
    select_remove: list[str] = []
    limit: int | None = None
    offset: int | None = None

    for raw_part in raw_query.split("&"):
        if not raw_part:
            continue
        try:
            part = unquote(raw_part, errors="strict")
        except UnicodeDecodeError:
            raise RqlSyntaxError(
                f"query part {raw_part!r} is not valid percent-encoded UTF-8"
            ) from None
        name, eq, value = part.partition("=")
        if eq and name in _NAMED:
            if name == "select":
                for sign, path in _parse_items(value, "select", fields):
                    (select_remove if sign == "-" else select_add).append(path)
                continue
            if name == "order":
                if order is not None:
                    raise RqlSyntaxError("order is given more than once", parameter="order")
                order = _parse_order(value, fields)
                used.extend((path, "ordering") for path, _ in order)
                continue
            number = _parse_count(value, name)
            if name == "limit":
                if limit is not None:
                    raise RqlSyntaxError("limit is given more than once", parameter="limit")
                limit = number
            else:
                if offset is not None:
                    raise RqlSyntaxError("offset is given more than once", parameter="offset")
                offset = number
            continue
        parser = _Parser(part, fields)
        filters.append(parser.parse())
        used.extend((path, "filtering") for path in parser.top_paths)

    _check_selected(used, fields, select_add, select_remove)

    if limit is None:
        limit = default_limit
    elif max_limit is not None:
        limit = min(limit, max_limit)

    if not filters:
        filter_text, predicate = "", None
    elif len(filters) == 1:
        filter_text, predicate = filters[0]
    else:
        filter_text = "and(" + ",".join(text for text, _ in filters) + ")"
        predicate = _all_of([p for _, p in filters])

    return ParsedQuery(
        filter_text=filter_text,
        predicate=predicate,
        order=order or (),
        select_add=tuple(dict.fromkeys(select_add)),
        select_remove=tuple(dict.fromkeys(select_remove)),
        limit=limit,
        offset=offset or 0,
    )


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
        if not _PATH_RE.fullmatch(item):
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


# --------------------------------------------------------------------------- literals


@dataclass(frozen=True, slots=True)
class _Literal:
    """A value as written: its text and where in it an unescaped ``*`` stood."""

    text: str
    wild: tuple[int, ...] = ()

    def canonical(self) -> str:
        wild = set(self.wild)
        out = ['"']
        for i, ch in enumerate(self.text):
            if ch == "*" and i not in wild:
                out.append("\\*")
            elif ch in '"\\':
                out.append("\\" + ch)
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)


@dataclass(frozen=True, slots=True)
class _Constant:
    name: str  # "null" or "empty"

    def canonical(self) -> str:
        return self.name + "()"


_Value = _Literal | _Constant


def _parse_instant(text: str) -> datetime | None:
    """An ISO-8601 date or timestamp as an aware UTC datetime; None if ``text`` is not one."""
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = match.groups()
    micro = int((fraction + "000000")[:6]) if fraction else 0
    try:
        tz = UTC
        if sign:
            delta = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-delta if sign == "-" else delta)
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _canonical_timestamp(moment: datetime) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def _looks_canonical(v: str) -> bool:
    # The shape the API (and the sandbox) store timestamps in; same-shape strings compare
    # chronologically as plain text, which saves parsing a timestamp per record.
    return len(v) == 24 and v[23] == "Z" and v[10] == "T" and v[19] == "." and v[4] == "-"


def _record_instant(v: str) -> datetime | None:
    if len(v) < 10 or v[4] != "-" or v[7] != "-":
        return None
    return _parse_instant(v)


def _datetime_utc(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class _Coerced:
    """One literal in every type a record value may have, computed once per query."""

    text: str
    boolean: bool | None
    number: int | float | None
    instant: datetime | None
    canon: str | None  # canonical timestamp text when it loses nothing, for the fast path

    @classmethod
    def of(cls, text: str) -> _Coerced:
        lowered = text.lower()
        boolean = True if lowered == "true" else False if lowered == "false" else None
        number: int | float | None = None
        try:
            if _INT_RE.fullmatch(text):
                number = int(text)
            elif _FLOAT_RE.fullmatch(text):
                number = float(text)
        except ValueError:  # an int too long to convert
            number = None
        instant = _parse_instant(text)
        canon = None
        if instant is not None and instant.microsecond % 1000 == 0:
            canon = _canonical_timestamp(instant)
        return cls(text, boolean, number, instant, canon)


class _TypeTable(dict[type, Callable[[Any], bool] | None]):
    """Per-type test of a record value; subclasses (IntEnum, str subclasses) resolve via MRO."""

    def __missing__(self, cls: type) -> Callable[[Any], bool] | None:
        found = None
        for base in cls.__mro__[1:]:
            if base in self:
                found = dict.__getitem__(self, base)
                break
        self[cls] = found
        return found


def _text_test(op: str, lit: _Coerced) -> Callable[[str], bool]:
    flipped = _FLIPPED[op]
    if lit.instant is None:
        return partial(flipped, lit.text)
    text, instant, canon = lit.text, lit.instant, lit.canon

    def test(v: str) -> bool:
        if canon is not None and _looks_canonical(v):
            return flipped(canon, v)
        other = _record_instant(v)
        if other is None:
            return flipped(text, v)
        return flipped(instant, other)

    return test


def _comparison_table(op: str, lit: _Coerced) -> _TypeTable:
    flipped = _FLIPPED[op]
    table = _TypeTable({type(None): None, str: _text_test(op, lit)})
    if lit.boolean is not None:
        table[bool] = partial(flipped, lit.boolean)
    else:
        table[bool] = None  # bool is an int subclass: do not let it fall through to numbers
    if lit.number is not None:
        table[int] = table[float] = partial(flipped, lit.number)
    if lit.instant is not None:
        instant = lit.instant
        table[datetime] = lambda v: flipped(instant, _datetime_utc(v))
    return table


def _ilike_test(lit: _Literal) -> Callable[[str], bool]:
    """Compile a pattern once; per record only casefold plus str methods run."""
    cuts = [-1, *lit.wild, len(lit.text)]
    segments = [lit.text[a + 1 : b].casefold() for a, b in pairwise(cuts)]
    if len(segments) == 1:
        whole = segments[0]
        return lambda v: v.casefold() == whole
    prefix, middle, suffix = segments[0], [s for s in segments[1:-1] if s], segments[-1]
    if not middle:
        if not prefix and not suffix:
            return lambda v: True
        if not prefix:
            return lambda v: v.casefold().endswith(suffix)
        if not suffix:
            return lambda v: v.casefold().startswith(prefix)
    if not prefix and not suffix and len(middle) == 1:
        (needle,) = middle
        return lambda v: needle in v.casefold()
    least = len(prefix) + len(suffix)

    def test(v: str) -> bool:
        s = v.casefold()
        if len(s) < least or not s.startswith(prefix) or not s.endswith(suffix):
            return False
        pos, end = len(prefix), len(s) - len(suffix)
        # Leftmost greedy placement of each middle segment is optimal for '*'-only patterns.
        for piece in middle:
            found = s.find(piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True

    return test


def _is_empty(v: Any) -> bool:
    return v is None or (isinstance(v, (str, list, tuple, dict)) and len(v) == 0)


# --------------------------------------------------------------------------- compiled nodes


def _getter(path: str) -> Callable[[Any], Any]:
    keys = tuple(path.split("."))
    if len(keys) == 1:
        (key,) = keys

        def get_one(rec: Any) -> Any:
            try:
                return rec.get(key)
            except AttributeError:  # an element that is not an object
                return None

        return get_one

    def get_path(rec: Any) -> Any:
        value = rec
        for key in keys:
            try:
                value = value.get(key)
            except AttributeError:
                return None
            if value is None:
                return None
        return value

    return get_path


def _leaf(path: str, table: _TypeTable, default: bool) -> Predicate:
    """Fetch ``path`` and run the test for the value's type; ``default`` when there is none."""
    keys = tuple(path.split("."))
    # Top-level and one-level-deep fields are by far the most common: inline their lookup.
    if len(keys) == 1:
        (key,) = keys

        def leaf_one(rec: Any) -> bool:
            try:
                v = rec.get(key)
            except AttributeError:
                v = None
            test = table[v.__class__]
            return default if test is None else test(v)

        return leaf_one
    if len(keys) == 2:
        first, second = keys

        def leaf_two(rec: Any) -> bool:
            try:
                v = rec.get(first).get(second)
            except AttributeError:
                v = None
            test = table[v.__class__]
            return default if test is None else test(v)

        return leaf_two
    get = _getter(path)

    def leaf_deep(rec: Any) -> bool:
        v = get(rec)
        test = table[v.__class__]
        return default if test is None else test(v)

    return leaf_deep


def _value_leaf(path: str, test: Callable[[Any], bool]) -> Predicate:
    get = _getter(path)
    return lambda rec: test(get(rec))


def _negate(predicate: Predicate) -> Predicate:
    return lambda rec: not predicate(rec)


def _all_of(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        a, b = predicates
        return lambda rec: a(rec) and b(rec)

    def every(rec: Any) -> bool:
        # A plain loop: all() over a generator costs an extra frame per record.
        for predicate in predicates:  # noqa: SIM110
            if not predicate(rec):
                return False
        return True

    return every


def _any_of(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        a, b = predicates
        return lambda rec: a(rec) or b(rec)

    def some(rec: Any) -> bool:
        for predicate in predicates:  # noqa: SIM110
            if predicate(rec):
                return True
        return False

    return some


def _compile_comparison(op: str, path: str, value: _Value) -> Predicate:
    if isinstance(value, _Constant):
        predicate = _value_leaf(path, _is_null if value.name == "null" else _is_empty)
        return _negate(predicate) if op == "ne" else predicate
    return _leaf(path, _comparison_table(op, _Coerced.of(value.text)), op == "ne")


def _is_null(v: Any) -> bool:
    return v is None


def _compile_in(path: str, values: list[_Value], negate: bool) -> Predicate:
    texts: set[str] = set()
    numbers: set[int | float] = set()
    booleans: set[bool] = set()
    instant_tests: list[Callable[[str], bool]] = []
    instants: list[datetime] = []
    null = empty = False
    for value in values:
        if isinstance(value, _Constant):
            null = True
            empty = empty or value.name == "empty"
            continue
        lit = _Coerced.of(value.text)
        if lit.instant is not None:
            instant_tests.append(_text_test("eq", lit))
            instants.append(lit.instant)
        else:
            texts.add(lit.text)
        if lit.boolean is not None:
            booleans.add(lit.boolean)
        if lit.number is not None:
            numbers.add(lit.number)

    text_test = _membership(frozenset(texts), tuple(instant_tests), empty)
    table = _TypeTable(
        {
            type(None): (lambda v: True) if null else None,
            str: text_test,
            bool: frozenset(booleans).__contains__ if booleans else None,
        }
    )
    if numbers:
        table[int] = table[float] = frozenset(numbers).__contains__
    if instants:
        moments = frozenset(instants)
        table[datetime] = lambda v: _datetime_utc(v) in moments
    if empty:
        table[list] = table[tuple] = table[dict] = lambda v: len(v) == 0
    predicate = _leaf(path, table, False)
    return _negate(predicate) if negate else predicate


def _membership(
    texts: frozenset[str], instant_tests: tuple[Callable[[str], bool], ...], empty: bool
) -> Callable[[str], bool]:
    if not instant_tests and not empty:
        return texts.__contains__

    def test(v: str) -> bool:
        if v in texts or (empty and v == ""):
            return True
        return any(t(v) for t in instant_tests)

    return test


def _compile_quantifier(op: str, path: str, inner: Predicate) -> Predicate:
    get = _getter(path)
    if op == "any":

        def some_element(rec: Any) -> bool:
            items = get(rec)
            if not isinstance(items, (list, tuple)):
                return False
            return any(map(inner, items))

        return some_element

    def every_element(rec: Any) -> bool:
        items = get(rec)
        if not isinstance(items, (list, tuple)):
            return True  # null or absent: no element fails the condition
        return all(map(inner, items))

    return every_element


# --------------------------------------------------------------------------- parser


class _Parser:
    """Recursive descent over one decoded query part; yields (canonical text, predicate)."""

    def __init__(self, text: str, fields: FieldSet) -> None:
        self.text = text
        self.pos = 0
        self.fields = fields
        self.top_paths: list[str] = []

    # ---- errors

    def _where(self, position: int) -> str:
        shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
        return f"at character {position + 1} of {shown!r}"

    def _found(self, position: int) -> str:
        if position >= len(self.text):
            return "the end of the expression"
        ch = self.text[position]
        if ch.isspace():
            return "whitespace (quote values that contain spaces)"
        return repr(ch)

    def error(self, message: str, position: int | None = None, field: str | None = None) -> None:
        position = self.pos if position is None else position
        raise RqlSyntaxError(f"{message} {self._where(position)}", position=position, field=field)

    def expect(self, ch: str, context: str) -> None:
        if self.pos < len(self.text) and self.text[self.pos] == ch:
            self.pos += 1
            return
        if ch == ")" and self.pos >= len(self.text):
            self.error(f"unbalanced parentheses: missing ')' to close {context}")
        self.error(f"expected {ch!r} in {context} but found {self._found(self.pos)}")

    # ---- grammar

    def parse(self) -> tuple[str, Predicate]:
        result = self.expression(self.fields, 0, top=True)
        if self.pos < len(self.text):
            if self.text[self.pos] == ")":
                self.error("unbalanced parentheses: unexpected ')'")
            self.error(f"unexpected {self._found(self.pos)} after the end of the expression")
        return result

    def word(self) -> str:
        start = self.pos
        text = self.text
        while (
            self.pos < len(text)
            and text[self.pos] not in "(),=\"'\\"
            and not text[self.pos].isspace()
        ):
            self.pos += 1
        return text[start : self.pos]

    def path(self, fields: FieldSet, context: str, top: bool) -> str:
        start = self.pos
        path = self.word()
        if not path:
            self.error(f"expected a field name in {context} but found {self._found(start)}", start)
        if not _PATH_RE.fullmatch(path):
            self.error(f"{path!r} is not a field name", start, field=path)
        if fields.kind(path) is None:
            self.error(f"unknown field {path!r}", start, field=path)
        if top:
            self.top_paths.append(path)
        return path

    def require_value_field(self, fields: FieldSet, path: str, op: str, start: int) -> None:
        kind = fields.kind(path)
        if kind != "value":
            self.error(
                f"{op}() compares values but {path!r} is {'an' if kind == 'object' else 'a'} "
                f"{kind}; only eq/ne with null() or empty() apply to it",
                start,
                field=path,
            )

    def expression(self, fields: FieldSet, depth: int, *, top: bool) -> tuple[str, Predicate]:
        if depth >= MAX_DEPTH:
            self.error(f"expression nested more than {MAX_DEPTH} levels deep")
        start = self.pos
        name = self.word()
        if not name:
            self.error(
                f"expected an expression like eq(field,value) but found {self._found(start)}",
                start,
            )
        nxt = self.text[self.pos] if self.pos < len(self.text) else ""
        if nxt == "=":
            # The shortcut ``field=value`` is an expression anywhere, as in the real parser.
            self.pos = start
            path = self.path(fields, "field=value", top)
            self.pos += 1
            value = self.value("field=value")
            if isinstance(value, _Literal):
                self.require_value_field(fields, path, "eq", start)
            return f"eq({path},{value.canonical()})", _compile_comparison("eq", path, value)
        if nxt != "(":
            self.error(f"expected an expression like eq(field,value) but found {name!r}", start)
        op = name.lower()
        if op not in _OPERATORS:
            if op in _CONSTANTS:
                self.error(f"{op}() is a value, not a condition", start)
            self.error(f"unknown operator {name!r}", start)
        self.pos += 1
        context = f"{op}() opened at character {start + 1}"

        if op in _COMPARISONS or op == "ilike":
            path = self.path(fields, context, top)
            self.expect(",", context)
            value = self.value(context)
            self.expect(")", context)
            text = f"{op}({path},{value.canonical()})"
            if not isinstance(value, _Constant) or op not in ("eq", "ne"):
                self.require_value_field(fields, path, op, start)
            if op == "ilike":
                if isinstance(value, _Constant):
                    self.error(f"ilike() needs a pattern, not {value.name}()", start)
                table = _TypeTable({type(None): None, str: _ilike_test(value)})
                return text, _leaf(path, table, False)
            if op not in ("eq", "ne") and isinstance(value, _Constant):
                self.error(f"{op}() needs a value to compare with, not {value.name}()", start)
            return text, _compile_comparison(op, path, value)

        if op in ("in", "out"):
            path = self.path(fields, context, top)
            self.require_value_field(fields, path, op, start)
            self.expect(",", context)
            if self.pos >= len(self.text) or self.text[self.pos] != "(":
                self.error(
                    f"{op}() needs a list in parentheses, like {op}(field,(a,b)),"
                    f" but found {self._found(self.pos)}"
                )
            list_start = self.pos
            self.pos += 1
            values: list[_Value] = []
            if self.pos < len(self.text) and self.text[self.pos] == ")":
                self.pos += 1
            else:
                list_context = f"the list opened at character {list_start + 1}"
                while True:
                    values.append(self.value(list_context))
                    if self.pos < len(self.text) and self.text[self.pos] == ",":
                        self.pos += 1
                        continue
                    self.expect(")", list_context)
                    break
            self.expect(")", context)
            text = f"{op}({path},({','.join(v.canonical() for v in values)}))"
            return text, _compile_in(path, values, op == "out")

        if op in ("and", "or"):
            parts = [self.expression(fields, depth + 1, top=top)]
            while self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                parts.append(self.expression(fields, depth + 1, top=top))
            self.expect(")", context)
            text = f"{op}({','.join(t for t, _ in parts)})"
            predicates = [p for _, p in parts]
            return text, (_all_of(predicates) if op == "and" else _any_of(predicates))

        if op == "not":
            inner_text, inner = self.expression(fields, depth + 1, top=top)
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.error("not() takes exactly one condition")
            self.expect(")", context)
            return f"not({inner_text})", _negate(inner)

        # any / all: the condition's paths are relative to one element of the collection.
        path_start = self.pos
        path = self.path(fields, context, top)
        if fields.kind(path) != "collection":
            self.error(f"{op}() needs a collection field; {path!r} is not one", path_start, path)
        self.expect(",", context)
        inner_text, inner = self.expression(fields.element(path), depth + 1, top=False)
        self.expect(")", context)
        return f"{op}({path},{inner_text})", _compile_quantifier(op, path, inner)

    def value(self, context: str) -> _Value:
        text = self.text
        start = self.pos
        if start < len(text) and text[start] in "\"'":
            return self.quoted()
        chars: list[str] = []
        wild: list[int] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in "(),=" or ch.isspace():
                break
            if ch in "\"'":
                self.error("a quote inside an unquoted value; quote the whole value")
            if ch == "\\":
                if self.pos + 1 >= len(text):
                    self.error("a backslash at the end of a value escapes nothing")
                chars.append(text[self.pos + 1])
                self.pos += 2
                continue
            if ch == "*":
                wild.append(len(chars))
            chars.append(ch)
            self.pos += 1
        if self.pos == start:
            self.error(f"expected a value in {context} but found {self._found(start)}")
        word = "".join(chars)
        if self.pos < len(text) and text[self.pos] == "(":
            constant = text[start : self.pos].lower()
            if constant not in _CONSTANTS:
                self.error(
                    f"expected a value in {context} but found the operator {word!r}; "
                    "only null() and empty() may stand for a value",
                    start,
                )
            self.pos += 1
            self.expect(")", f"{constant}()")
            return _Constant(constant)
        return _Literal(word, tuple(wild))

    def quoted(self) -> _Literal:
        text = self.text
        quote = text[self.pos]
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        wild: list[int] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\" and self.pos + 1 < len(text):
                chars.append(text[self.pos + 1])  # an escaped '*' is literal: not in ``wild``
                self.pos += 2
                continue
            if ch == quote:
                self.pos += 1
                return _Literal("".join(chars), tuple(wild))
            if ch == "*":
                wild.append(len(chars))
            chars.append(ch)
            self.pos += 1
        self.error(f"unterminated string: the {quote} opened here is never closed", start)
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------- sorting

# Sort keys are flat strings (ascending) or bytes (descending), so that sorting a million records
# compares in C without nested tuples. The first character ranks the type:
# null < bool < number < text < anything else. A descending key is the exact byte-wise inverse
# of the ascending one: UTF-8 keeps code point order, NUL is escaped as NUL 01 and the key ends
# with NUL NUL, which keeps the order and makes the encoding prefix-free, so that inverting
# every byte reverses the order exactly.
_INVERT = bytes(range(255, -1, -1))
_DOUBLE = struct.Struct(">d")
_UINT64 = struct.Struct(">Q")
_SIGN = 1 << 63


def _number_text(v: int | float) -> str:
    try:
        x = float(v)
    except OverflowError:  # ints beyond float range sort at the ends, in their own order
        x = float("inf") if v > 0 else float("-inf")
    (bits,) = _UINT64.unpack(_DOUBLE.pack(x))
    # IEEE 754 bits ordered as unsigned integers: flip all bits of negatives, the sign of others.
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits & _SIGN else bits | _SIGN
    return bits.to_bytes(8, "big").decode("latin-1")


def _ascending(v: Any) -> str:
    """Ascending sort key of one value; never raises."""
    cls = v.__class__
    if cls is str:
        if not _looks_canonical(v) and len(v) > 10 and v[10] in "Tt ":
            # An ISO timestamp written differently still sorts by the instant it names.
            instant = _record_instant(v)
            if instant is not None:
                return "\x03" + _canonical_timestamp(instant)
        return "\x03" + v
    if v is None:
        return "\x00"
    if cls is bool:
        return "\x011" if v else "\x010"
    if cls is int or cls is float:
        return "\x02" + _number_text(v)
    if isinstance(v, bool):
        return "\x011" if v else "\x010"
    if isinstance(v, (int, float)):
        return "\x02" + _number_text(v)
    if isinstance(v, str):
        return _ascending(str(v))
    if isinstance(v, datetime):
        return "\x03" + _canonical_timestamp(_datetime_utc(v))
    return "\x04" + repr(v)


def _inverted(key: str) -> bytes:
    """A key that sorts exactly in the reverse order of ``key``."""
    escaped = key.replace("\x00", "\x00\x01") + "\x00\x00"
    return escaped.encode("utf-8", "surrogatepass").translate(_INVERT)


def sort_key(order: OrderSpec) -> Callable[[Any], Any]:
    """A key function for ``sorted`` ordering records by ``order`` ((path, descending), ...)."""
    one_field = [_field_key(path, descending) for path, descending in order]
    if len(one_field) == 1:
        return one_field[0]
    if len(one_field) == 2:
        first, second = one_field
        return lambda rec: (first(rec), second(rec))
    return lambda rec: tuple([key(rec) for key in one_field])


def _field_key(path: str, descending: bool) -> Callable[[Any], Any]:
    get = _getter(path)
    if descending:
        return lambda rec: _inverted(_ascending(get(rec)))
    return lambda rec: _ascending(get(rec))


def sort_records(records: Iterable[Any], order: OrderSpec) -> list[Any]:
    """Records sorted by ``order``; a stable sort, so ties keep their incoming order."""
    return sorted(records, key=sort_key(order))
