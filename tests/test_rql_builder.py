"""The connector's RQL builder writes every value so the platform's engine reads exactly it:
quotes without escapes (a value with both kinds is refused), like patterns, query strings."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum, IntEnum, StrEnum
from typing import Any

import httpx
import pytest
from rql_cases import FIELDS

from connector.errors import RqlBuildError
from connector.marketplace import rql
from sandbox.marketplace.rql import like_pattern, parse_query

# --------------------------------------------------------------------------- builder: values


class Colour(StrEnum):
    RED = "Red"


class Level(IntEnum):
    HIGH = 3


class Mixed(Enum):
    WHEN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Active", '"Active"'),
        ('say "hi" \\ there', "'say \"hi\" \\ there'"),  # no escapes: the other quote kind
        ("it's \\", '"it\'s \\"'),
        ("", '""'),
        ("it's (a,b) & c=d", '"it\'s (a,b) & c=d"'),
        ("*", '"*"'),  # not a wildcard outside ilike
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-12345678901234567890, "-12345678901234567890"),
        (2.5, "2.5"),
        (1e-7, "1e-07"),
        (None, "null()"),
        (rql.NULL, "null()"),
        (rql.EMPTY, "empty()"),
        (Colour.RED, '"Red"'),
        (Level.HIGH, "3"),
        (Mixed.WHEN, '"2026-01-01T00:00:00.000Z"'),
    ],
)
def test_builder_writes_values(value: Any, text: str) -> None:
    assert str(rql.eq("name", value)) == f"eq(name,{text})"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 31, 23, 0, tzinfo=UTC), "2026-01-31T23:00:00.000Z"),
        (datetime(2026, 2, 1, 0, 30, 5, 123999, tzinfo=UTC), "2026-02-01T00:30:05.123Z"),
        (
            datetime(2026, 2, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-31T23:00:00.000Z",
        ),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05.000Z"),
    ],
)
def test_builder_formats_datetimes_in_utc_with_milliseconds(moment: datetime, text: str) -> None:
    assert rql.format_datetime(moment) == text
    assert str(rql.gt("audit.updated.at", moment)) == f'gt(audit.updated.at,"{text}")'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (datetime(2026, 1, 1), "naive datetime"),
        (date(2026, 1, 1), "not the date 2026-01-01"),
        (float("nan"), "cannot be compared"),
        (float("inf"), "cannot be compared"),
        (b"bytes", "cannot write a bytes value"),
        (["a"], "cannot write a list value"),
        (rql.eq("id", 1), "cannot write a Rql value"),
        ("\ud800", "lone surrogate"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "out of range"),
    ],
)
def test_builder_rejects_values_it_cannot_write_safely(value: Any, message: str) -> None:
    with pytest.raises(RqlBuildError, match=re.escape(message)):
        rql.eq("name", value)


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a)", "a,b", "1abc", "a..b", "a.", ".a", "a\n", "naïve", "a-b", 'a"', None, 3],
)
def test_builder_rejects_bad_field_names(name: Any) -> None:
    with pytest.raises(RqlBuildError, match="not a field name"):
        rql.eq(name, "x")
    with pytest.raises(RqlBuildError, match="not a field name"):
        rql.any_(name, rql.eq("id", 1))
    with pytest.raises(RqlBuildError, match="not a field name"):
        rql.build_query_string(order=[name])


@pytest.mark.parametrize("op", [rql.gt, rql.ge, rql.lt, rql.le])
def test_builder_refuses_ordering_against_null(op: Any) -> None:
    with pytest.raises(RqlBuildError, match="needs a value to compare with"):
        op("count", None)
    with pytest.raises(RqlBuildError, match=re.escape("not empty()")):
        op("count", rql.EMPTY)


def test_builder_like_patterns_are_written_as_given() -> None:
    assert str(rql.ilike("name", "buzz*")) == 'ilike(name,"buzz*")'
    assert str(rql.like("name", "*Best")) == 'like(name,"*Best")'
    assert str(rql.ilike("name", 'a"b*')) == "ilike(name,'a\"b*')"
    with pytest.raises(RqlBuildError, match="text pattern"):
        rql.ilike("name", None)  # type: ignore[arg-type]
    with pytest.raises(RqlBuildError, match="both kinds of quote"):
        rql.ilike("name", 'it\'s "x"*')


@pytest.mark.parametrize(
    ("text", "match", "written"),
    [
        ("5*6", "exact", "5*6"),  # a middle star is already literal
        ("*", "exact", "\\*"),
        ("**", "exact", "\\*\\*"),
        ("a*", "exact", "a\\*"),
        ("*a", "exact", "\\*a"),
        ("a\\", "exact", "a\\"),
        ("a*", "prefix", "a**"),
        ("*a", "prefix", "\\*a*"),
        ("a*", "suffix", "*a\\*"),
        ("*a", "suffix", "**a"),
        ("a*b", "contains", "*a*b*"),
        ("", "contains", "**"),
    ],
)
def test_pattern_matches_text_literally(text: str, match: Any, written: str) -> None:
    assert rql.like_pattern(text, match) == written
    kind = {"equals": "exact", "startswith": "prefix", "endswith": "suffix"}
    engine_kind, literal = like_pattern(written)
    assert (kind.get(engine_kind, engine_kind), literal) == (match, text)


@pytest.mark.parametrize(
    ("text", "match"),
    [("\\*a", "exact"), ("\\*", "prefix"), ("a\\", "prefix"), ("a\\", "contains")],
)
def test_pattern_refuses_what_the_engine_cannot_read_literally(text: str, match: Any) -> None:
    with pytest.raises(RqlBuildError, match="no like pattern matches"):
        rql.like_pattern(text, match)


def test_escape_wildcards_is_the_exact_pattern() -> None:
    assert rql.escape_wildcards("a*b*") == rql.like_pattern("a*b*", "exact") == "a*b\\*"


def test_builder_lists_groups_and_quantifiers() -> None:
    assert str(rql.in_("status", ["Active", "Blocked"])) == 'in(status,("Active","Blocked"))'
    assert str(rql.out("count", (n for n in (1, 2)))) == "out(count,(1,2))"
    assert str(rql.in_("id", [None, "x"])) == 'in(id,(null(),"x"))'
    expr = rql.and_(rql.eq("a", 1), rql.or_(rql.eq("b", 2), rql.not_(rql.eq("c", 3))))
    assert str(expr) == "and(eq(a,1),or(eq(b,2),not(eq(c,3))))"
    assert expr.fields == ("a", "b", "c")
    single = rql.eq("a", 1)
    assert rql.and_(single) is single
    assert rql.or_(single) is single
    assert str(rql.any_("optOuts", rql.eq("id", "NTC-1"))) == 'any(optOuts,eq(id,"NTC-1"))'
    assert str(rql.all_("optOuts", rql.ne("id", "x"))) == 'all(optOuts,ne(id,"x"))'
    assert rql.any_("optOuts", rql.eq("audit.x", 1)).fields == ("optOuts",)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rql.in_("status", []), "at least one value"),
        (lambda: rql.in_("status", "Active"), "needs a list of values, got str"),
        (lambda: rql.out("status", {"a": 1}), "needs a list of values, got dict"),
        (lambda: rql.in_("status", 5), "needs a list of values, got int"),
        (lambda: rql.and_(), "and_() needs at least one expression"),
        (lambda: rql.or_(rql.eq("a", 1), "eq(b,2)"), "or_() needs RQL expressions, got str"),
        (lambda: rql.not_("eq(a,1)"), "not_() needs RQL expressions"),
        (lambda: rql.any_("tags", None), "any_() needs RQL expressions"),
    ],
)
def test_builder_rejects_misuse(call: Any, message: str) -> None:
    with pytest.raises(RqlBuildError, match=re.escape(message)):
        call()


def test_raw_accepts_one_self_contained_expression() -> None:
    assert str(rql.raw('and(eq(status,Active),eq(name,"a)b,c"))')) == (
        'and(eq(status,Active),eq(name,"a)b,c"))'
    )
    assert parse_query(rql.build_query_string(rql.raw("status=Active")), FIELDS).filter_text == (
        'eq(status,"Active")'
    )
    grouped = rql.raw("(status=Active|name=Zurg)")
    query = rql.build_query_string(grouped, limit=5)
    assert parse_query(query, FIELDS).filter_text == 'or(eq(status,"Active"),eq(name,"Zurg"))'
    assert str(rql.raw('eq(name,"back\\")')) == 'eq(name,"back\\")'  # no escapes in quotes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot be empty"),
        ("  ", "cannot be empty"),
        ("eq(a,1))", "unbalanced ')'"),
        ("and(eq(a,1)", "1 '(' never closed"),
        ('eq(a,"x)', 'unterminated " string'),
        ("eq(a,1),eq(b,2)", "give one expression"),
        ("eq(a,1)&limit=1000", "give one expression"),
        ("eq(a,1)|eq(b,2)", "give one expression"),
        ("eq(a,1);eq(b,2)", "give one expression"),
    ],
)
def test_raw_rejects_text_that_would_spill_out(text: str, message: str) -> None:
    with pytest.raises(RqlBuildError, match=re.escape(message)):
        rql.raw(text)


# --------------------------------------------------------------------------- builder: query string


def test_query_string_encodes_everything_that_could_break_it() -> None:
    value = 'a&b=c#d%e+f g"h\\i;j|k/é€😀\n'
    query = rql.build_query_string(rql.eq("name", value))
    assert query == (
        "eq(name,'a%26b%3Dc%23d%25e%2Bf%20g%22h%5Ci%3Bj%7Ck%2F%C3%A9%E2%82%AC%F0%9F%98%80%0A')"
    )
    assert re.fullmatch(r"[A-Za-z0-9%()*,.:'!_~-]*", query)
    parsed = parse_query(query, FIELDS)
    assert parsed.predicate is not None
    assert parsed.predicate({"name": value})
    assert not parsed.predicate({"name": "a"})


def test_a_value_holding_both_quote_kinds_is_refused_not_escaped() -> None:
    with pytest.raises(RqlBuildError, match="both kinds of quote"):
        rql.eq("name", 'it\'s "x"')
    with pytest.raises(RqlBuildError, match="both kinds of quote"):
        rql.in_("name", ["fine", 'it\'s "x"'])


def test_query_string_parts_and_readable_structure() -> None:
    moment = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    query = rql.build_query_string(
        rql.and_(rql.eq("status", "Active"), rql.gt("audit.updated.at", moment)),
        select=["+audit", "-email"],
        order=["-audit.updated.at", "+id"],
        limit=100,
        offset=0,
    )
    assert query == (
        "and(eq(status,%22Active%22),gt(audit.updated.at,%222026-01-31T23:00:00.000Z%22))"
        "&select=audit,-email&order=-audit.updated.at,id&limit=100&offset=0"
    )
    parsed = parse_query(query, FIELDS)
    assert parsed.filter_text == (
        'and(eq(status,"Active"),gt(audit.updated.at,"2026-01-31T23:00:00.000Z"))'
    )
    assert parsed.order == (("audit.updated.at", True), ("id", False))
    assert (parsed.select_add, parsed.select_remove) == (("audit",), ("email",))
    assert (parsed.limit, parsed.offset) == (100, 0)
    assert rql.build_query_string() == ""
    assert rql.build_query_string(limit=0) == "limit=0"


def test_query_string_survives_httpx_unchanged() -> None:
    query = rql.build_query_string(rql.ilike("email", rql.like_pattern("a&b*+c", "contains")))
    request = httpx.Request("GET", "http://sandbox.local/contacts?" + query)
    assert request.url.query.decode() == query
    parsed = parse_query(request.url.query.decode(), FIELDS)
    assert parsed.predicate is not None
    assert parsed.predicate({"email": "xA&B*+Cy"})
    assert not parsed.predicate({"email": "xA&B+Cy"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": -1}, "limit must be a non-negative int"),
        ({"limit": True}, "limit must be a non-negative int"),
        ({"offset": 1.0}, "offset must be a non-negative int"),
        ({"select": "audit"}, "select takes a sequence of fields, not the string 'audit'"),
        ({"order": "id"}, "order takes a sequence of fields"),
        ({"order": [3]}, "order: not a field name: 3"),
        ({"order": ["-audit.created.at"]}, "'audit.created.at' needs 'audit' in select"),
        (
            {"filter": rql.lt("audit.updated.at", 1), "select": ["-audit"]},
            "'audit.updated.at' needs 'audit' in select",
        ),
        ({"filter": "eq(a,1)"}, "build_query_string() needs RQL expressions, got str"),
    ],
)
def test_query_string_rejects_bad_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RqlBuildError, match=re.escape(message)):
        rql.build_query_string(**kwargs)


def test_query_string_audit_rule_is_satisfied_by_selecting_audit() -> None:
    query = rql.build_query_string(rql.gt("audit.updated.at", 5), select=["audit.updated"])
    assert query == "gt(audit.updated.at,5)&select=audit.updated"
    assert parse_query(query, FIELDS).predicate is not None
