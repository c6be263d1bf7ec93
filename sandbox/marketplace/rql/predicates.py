"""Compiled filter nodes: each condition becomes a closure over one record, built once per
query, so evaluating it over a million records does no parsing and, in the common cases, no
regex and no timestamp parsing per record.

Rules where the API documentation is silent: a missing key is null; null never satisfies
gt/ge/lt/le or like/ilike; ``ne`` is ``not eq``, so a null value is ``ne`` any literal; ``any``
over a null or empty collection is false, ``all`` true. A value of another type than the
literal can express never matches.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

from sandbox.marketplace.rql.values import (
    Coerced,
    Constant,
    Literal,
    Value,
    datetime_utc,
    looks_canonical,
    record_instant,
)

Predicate = Callable[[Any], bool]

# ``flip[op](literal, value)`` is ``value <op> literal``: the literal is bound first with partial.
_FLIPPED: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.lt,
    "ge": operator.le,
    "lt": operator.gt,
    "le": operator.ge,
}


class TypeTable(dict[type, Callable[[Any], bool] | None]):
    """Per-type test of a record value; subclasses (IntEnum, str subclasses) resolve via MRO."""

    def __missing__(self, cls: type) -> Callable[[Any], bool] | None:
        found = None
        for base in cls.__mro__[1:]:
            if base in self:
                found = dict.__getitem__(self, base)
                break
        self[cls] = found
        return found


def _text_test(op: str, lit: Coerced) -> Callable[[str], bool]:
    flipped = _FLIPPED[op]
    if lit.instant is None:
        return partial(flipped, lit.text)
    text, instant, canon = lit.text, lit.instant, lit.canon

    def test(v: str) -> bool:
        if canon is not None and looks_canonical(v):
            return flipped(canon, v)
        other = record_instant(v)
        if other is None:
            return flipped(text, v)
        return flipped(instant, other)

    return test


def _comparison_table(op: str, lit: Coerced) -> TypeTable:
    flipped = _FLIPPED[op]
    table = TypeTable({type(None): None, str: _text_test(op, lit)})
    if lit.boolean is not None:
        table[bool] = partial(flipped, lit.boolean)
    else:
        table[bool] = None  # bool is an int subclass: do not let it fall through to numbers
    if lit.number is not None:
        table[int] = table[float] = partial(flipped, lit.number)
    if lit.instant is not None:
        instant = lit.instant
        table[datetime] = lambda v: flipped(instant, datetime_utc(v))
    return table


def like_pattern(pattern: str) -> tuple[str, str]:
    r"""How the platform reads a like/ilike pattern: ``(kind, literal text)``.

    Only a leading and/or trailing ``*`` is a wildcard (kind ``contains``, ``endswith`` or
    ``startswith``); without one the whole value must match (``equals``). A ``*`` anywhere else
    is a literal star, and ``\*`` escapes a star only at the very start or end.
    """
    starts_wild = pattern.startswith("*")
    starts_escaped = pattern.startswith("\\*")
    ends_escaped = pattern.endswith("\\*")
    ends_wild = not ends_escaped and pattern.endswith("*")
    start = 1 if starts_wild or starts_escaped else 0
    end = len(pattern)
    if ends_escaped:
        end = max(start, end - 2)
    elif ends_wild:
        end = max(start, end - 1)
    literal = pattern[start:end] + ("*" if ends_escaped else "")
    if starts_wild and ends_wild:
        return "contains", literal
    if starts_wild:
        return "endswith", literal
    if ends_wild:
        return "startswith", literal
    return "equals", literal


def _like_test(pattern: str, *, fold: bool) -> Callable[[str], bool]:
    kind, literal = like_pattern(pattern)
    if fold:
        literal = literal.casefold()
    prepare: Callable[[str], str] = str.casefold if fold else str.__str__
    if kind == "contains":
        return lambda v: literal in prepare(v)
    if kind == "endswith":
        return lambda v: prepare(v).endswith(literal)
    if kind == "startswith":
        return lambda v: prepare(v).startswith(literal)
    return lambda v: prepare(v) == literal


def compile_like(path: str, pattern: Literal, *, case_insensitive: bool) -> Predicate:
    """``like`` (case-sensitive) or ``ilike`` (Unicode case folding) on a text field."""
    table = TypeTable({type(None): None, str: _like_test(pattern.text, fold=case_insensitive)})
    return _leaf(path, table, False)


# The predicates that are exactly ``ne(path,null())``: sorting by that path can tell them from
# the sort key alone (only null has the null key), without running them.
_NOT_NULL: WeakKeyDictionary[Predicate, str] = WeakKeyDictionary()


def not_null_path(predicate: Predicate) -> str | None:
    """The ``path`` when ``predicate`` is exactly ``ne(path,null())``, else None."""
    return _NOT_NULL.get(predicate)


def _is_empty(v: Any) -> bool:
    return v is None or (isinstance(v, (str, list, tuple, dict)) and len(v) == 0)


def getter(path: str) -> Callable[[Any], Any]:
    """A function reading dotted ``path`` from a record (None when any step is missing)."""
    keys = tuple(path.split("."))
    if len(keys) == 1:
        (key,) = keys

        def get_one(rec: Any) -> Any:
            try:
                return rec.get(key)
            except AttributeError:  # an element that is not an object
                return None

        return get_one
    # Two and three steps (``user.id``, ``audit.updated.at``) are chained inline: a missing
    # step gives None, and ``None.get`` (or ``.get`` on any non-object) raises AttributeError,
    # so the chain answers as the loop below does, in one frame instead of a loop per record.
    if len(keys) == 2:
        first, second = keys

        def get_two(rec: Any) -> Any:
            try:
                return rec.get(first).get(second)
            except AttributeError:
                return None

        return get_two
    if len(keys) == 3:
        first, second, third = keys

        def get_three(rec: Any) -> Any:
            try:
                return rec.get(first).get(second).get(third)
            except AttributeError:
                return None

        return get_three

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


def _leaf(path: str, table: TypeTable, default: bool) -> Predicate:
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
    get = getter(path)

    def leaf_deep(rec: Any) -> bool:
        v = get(rec)
        test = table[v.__class__]
        return default if test is None else test(v)

    return leaf_deep


def _value_leaf(path: str, test: Callable[[Any], bool]) -> Predicate:
    get = getter(path)
    return lambda rec: test(get(rec))


def negate(predicate: Predicate) -> Predicate:
    """The opposite condition."""
    return lambda rec: not predicate(rec)


def all_of(predicates: list[Predicate]) -> Predicate:
    """Every condition holds."""
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


def any_of(predicates: list[Predicate]) -> Predicate:
    """Some condition holds."""
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


def compile_comparison(op: str, path: str, value: Value) -> Predicate:
    """eq/ne/gt/ge/lt/le of a field against a literal (or eq/ne against a constant)."""
    if isinstance(value, Constant):
        get = getter(path)
        if value.name == "null":
            # ne(x,null()) is the newest-change query's filter: one frame per record, not three.
            if op == "ne":

                def present(rec: Any) -> bool:
                    return get(rec) is not None

                _NOT_NULL[present] = path
                return present
            return lambda rec: get(rec) is None
        predicate = _value_leaf(path, _is_empty)
        return negate(predicate) if op == "ne" else predicate
    return _leaf(path, _comparison_table(op, Coerced.of(value.text)), op == "ne")


def compile_in(path: str, values: list[Value], exclude: bool) -> Predicate:
    """``in`` (or, with ``exclude``, ``out``) over a list of values and constants."""
    texts: set[str] = set()
    numbers: set[int | float] = set()
    booleans: set[bool] = set()
    instant_tests: list[Callable[[str], bool]] = []
    instants: list[datetime] = []
    null = empty = False
    for value in values:
        if isinstance(value, Constant):
            null = True
            empty = empty or value.name == "empty"
            continue
        lit = Coerced.of(value.text)
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
    table = TypeTable(
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
        table[datetime] = lambda v: datetime_utc(v) in moments
    if empty:
        table[list] = table[tuple] = table[dict] = lambda v: len(v) == 0
    predicate = _leaf(path, table, False)
    return negate(predicate) if exclude else predicate


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


def compile_quantifier(op: str, path: str, inner: Predicate) -> Predicate:
    """``any`` / ``all`` elements of a collection satisfy ``inner``."""
    get = getter(path)
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
