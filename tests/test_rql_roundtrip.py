"""Round trip: builder output for adversarial values, parsed by the sandbox, filters exactly
like a plain Python evaluation of the same condition."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.marketplace import rql
from sandbox.marketplace.rql import FieldSet, parse_query

# plain Python evaluation of the same condition.

PROPERTY_FIELDS = FieldSet.from_paths(
    ["name", "count", "flag", "audit.updated.at"], collections={"tags": ["label"]}
)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]

adversarial_text = st.text(
    alphabet=st.one_of(
        # Case-folding traps: sharp s, the three sigmas, dotted capital I.
        st.sampled_from(list("aAbBßSs\u03a3\u03c3\u03c2*\\\"'(),&=+#%; \t\n|\x00é😀İi")),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=8,
)
# A literal shaped like a timestamp would (by design) compare as an instant: keep them apart.
# One holding both kinds of quote cannot be written (the builder refuses it, tested apart).
literal_text = adversarial_text.filter(
    lambda s: not re.match(r"[0-9]{4}-", s) and not ('"' in s and "'" in s)
)
moments = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.sampled_from(ZONES)
)
numbers = st.integers(min_value=-(10**20), max_value=10**20)


@dataclass(frozen=True)
class Case:
    expr: rql.Rql
    check: Any  # record -> bool, the reference evaluation


def _truncated(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


COMPARE = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
BUILD = {"eq": rql.eq, "ne": rql.ne, "gt": rql.gt, "ge": rql.ge, "lt": rql.lt, "le": rql.le}


def _compared(op: str, value: Any, literal: Any) -> bool:
    if value is None:
        return op == "ne"  # null equals nothing, so it differs from everything
    return bool(COMPARE[op](value, literal))


def _like_reference(match: str, text: str, fold: bool) -> Any:
    def prepared(v: str) -> str:
        return v.casefold() if fold else v

    wanted = prepared(text)
    tests = {
        "exact": lambda v: prepared(v) == wanted,
        "prefix": lambda v: prepared(v).startswith(wanted),
        "suffix": lambda v: prepared(v).endswith(wanted),
        "contains": lambda v: wanted in prepared(v),
    }
    test = tests[match]
    return lambda v: isinstance(v, str) and test(v)


def _expressible(match: str, text: str) -> bool:
    # The engine reads a leading "\\*" as an escaped star, and a trailing backslash before the
    # wildcard as escaping it: such texts have no literal pattern (the builder says so).
    if match in ("exact", "prefix") and text.startswith("\\*"):
        return False
    return not (match in ("prefix", "contains") and text.endswith("\\"))


@st.composite
def text_leaf(draw: Any, key: str) -> Case:
    op = draw(st.sampled_from(sorted(COMPARE)))
    kind = draw(st.sampled_from(["compare", "ilike", "in", "out", "null", "empty"]))
    if kind == "compare":
        literal = draw(literal_text)
        return Case(BUILD[op](key, literal), lambda r: _compared(op, r.get(key), literal))
    if kind == "ilike":
        match = draw(st.sampled_from(["exact", "prefix", "suffix", "contains"]))
        text = draw(literal_text.filter(lambda t: _expressible(match, t)))
        fold = draw(st.booleans())
        matches = _like_reference(match, text, fold)
        build = rql.ilike if fold else rql.like
        return Case(build(key, rql.like_pattern(text, match)), lambda r: matches(r.get(key)))
    if kind in ("in", "out"):
        values = draw(st.lists(st.one_of(st.none(), literal_text), min_size=1, max_size=4))
        build = rql.in_ if kind == "in" else rql.out
        inside = kind == "in"
        return Case(build(key, values), lambda r: (r.get(key) in values) == inside)
    negate = op == "ne"
    if kind == "null":
        return Case(
            rql.ne(key, None) if negate else rql.eq(key, None),
            lambda r: (r.get(key) is None) != negate,
        )
    return Case(
        rql.ne(key, rql.EMPTY) if negate else rql.eq(key, rql.EMPTY),
        lambda r: (r.get(key) in (None, "", [])) != negate,
    )


@st.composite
def leaf(draw: Any) -> Case:
    kind = draw(st.sampled_from(["name", "count", "flag", "at", "tags"]))
    op = draw(st.sampled_from(sorted(COMPARE)))
    if kind == "name":
        return draw(text_leaf("name"))
    if kind == "count":
        number = draw(numbers)
        return Case(BUILD[op]("count", number), lambda r: _compared(op, r.get("count"), number))
    if kind == "flag":
        flag = draw(st.booleans())
        build, negate = (rql.ne, True) if op == "ne" else (rql.eq, False)
        return Case(build("flag", flag), lambda r: (r.get("flag") == flag) != negate)
    if kind == "at":
        moment = draw(moments)
        literal = _truncated(moment)

        def check(r: dict[str, Any]) -> bool:
            stamp = r.get("audit", {}).get("updated", {}).get("at")
            return _compared(op, None if stamp is None else _instant(stamp), literal)

        return Case(BUILD[op]("audit.updated.at", moment), check)
    inner = draw(text_leaf("label"))
    every = draw(st.booleans())

    def quantified(r: dict[str, Any]) -> bool:
        tags = r.get("tags") or []
        return all(map(inner.check, tags)) if every else any(map(inner.check, tags))

    return Case((rql.all_ if every else rql.any_)("tags", inner.expr), quantified)


def _combine(children: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    def group(cases: list[Case], conjunction: bool) -> Case:
        checks = [c.check for c in cases]
        if conjunction:
            return Case(rql.and_(*(c.expr for c in cases)), lambda r: all(f(r) for f in checks))
        return Case(rql.or_(*(c.expr for c in cases)), lambda r: any(f(r) for f in checks))

    return st.one_of(
        st.builds(group, st.lists(children, min_size=1, max_size=3), st.booleans()),
        children.map(lambda c: Case(rql.not_(c.expr), lambda r: not c.check(r))),
    )


conditions = st.recursive(leaf(), _combine, max_leaves=6)


def _stamp(moment: datetime, spelling: int) -> str:
    if spelling == 0:
        return rql.format_datetime(moment)  # how the API stores them
    return moment.isoformat()  # offsets and microseconds: the slow path


@st.composite
def sample_record(draw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if draw(st.booleans()):
        record["name"] = draw(st.one_of(st.none(), adversarial_text, literal_text))
    if draw(st.booleans()):
        record["count"] = draw(st.one_of(st.none(), numbers))
    if draw(st.booleans()):
        record["flag"] = draw(st.one_of(st.none(), st.booleans()))
    if draw(st.booleans()):
        stamp = _stamp(draw(moments), draw(st.integers(0, 1)))
        record["audit"] = {"updated": {"at": stamp}}
    if draw(st.booleans()):
        labels = st.one_of(st.none(), adversarial_text, literal_text)
        record["tags"] = draw(
            st.one_of(st.none(), st.lists(st.builds(lambda v: {"label": v}, labels), max_size=3))
        )
    return record


@given(conditions, st.lists(sample_record(), min_size=1, max_size=6))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_builder_output_filters_like_a_python_reference(
    case: Case, records: list[dict[str, Any]]
) -> None:
    query = rql.build_query_string(case.expr, select=["audit"], limit=20)
    parsed = parse_query(query, PROPERTY_FIELDS)
    assert parsed.predicate is not None
    assert parsed.limit == 20
    for record in records:
        assert parsed.predicate(record) == case.check(record), (query, record)
    # The normalised filter text compiles to the same predicate: it is a faithful cache key.
    again = parse_query(quote(parsed.filter_text, safe="") + "&select=audit", PROPERTY_FIELDS)
    assert again.filter_text == parsed.filter_text
    assert again.predicate is not None
    assert [again.predicate(r) for r in records] == [parsed.predicate(r) for r in records]
