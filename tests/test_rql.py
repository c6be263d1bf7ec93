"""RQL both ways: the sandbox's parser/evaluator and the connector's query builder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum, IntEnum, StrEnum
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.errors import RqlBuildError
from connector.marketplace import rql
from sandbox.marketplace.rql import (
    FieldSet,
    ParsedQuery,
    RqlSyntaxError,
    parse_query,
    sort_key,
    sort_records,
)

FIELDS = FieldSet.from_paths(
    [
        "id",
        "name",
        "email",
        "status",
        "count",
        "score",
        "flag",
        "blockedReason",
        "user",
        "user.id",
        "audit.created.at",
        "audit.updated.at",
        "category.id",
    ],
    collections={"optOuts": ["id", "name"], "tags": ["label"]},
)

RECORDS: list[dict[str, Any]] = [
    {
        "id": "CTT-0001",
        "name": "Buzz Lightyear",
        "email": "buzz@example.com",
        "status": "Active",
        "count": 5,
        "score": 1.5,
        "flag": True,
        "user": {"id": "USR-1"},
        "audit": {"updated": {"at": "2026-01-31T23:00:00.000Z"}},
        "category": {"id": "NTC-1234-9876"},
        "optOuts": [{"id": "NTC-1", "name": "News"}, {"id": "NTC-2", "name": "Offers"}],
    },
    {
        "id": "CTT-0002",
        "name": "woody",
        "email": "WOODY@Example.COM",
        "status": "Blocked",
        "count": 12,
        "score": -2.0,
        "flag": False,
        "blockedReason": "",
        "user": None,
        "audit": {"updated": {"at": "2026-02-01T09:30:15.250Z"}},
        "optOuts": [],
    },
    {
        "id": "CTT-0003",
        "name": 'Star * "Command" & co, (Ltd)',
        "email": "a&b@example.com",
        "status": "Active",
        "count": None,
        "flag": True,
        "audit": {"updated": {"at": "2026-01-31T22:59:59.999Z"}},
        "optOuts": [{"id": "NTC-1", "name": "News"}],
    },
    {"id": "CTT-0004", "status": "Deleted", "name": "Zurg"},
]


def ids(raw: str, records: list[dict[str, Any]] = RECORDS, fields: FieldSet = FIELDS) -> list[str]:
    """Ids of the records the query's filter keeps, in order."""
    query = parse_query(raw, fields)
    assert query.predicate is not None
    return [r["id"] for r in records if query.predicate(r)]


def syntax_error(raw: str, fields: FieldSet = FIELDS) -> RqlSyntaxError:
    with pytest.raises(RqlSyntaxError) as caught:
        parse_query(raw, fields)
    return caught.value


# --------------------------------------------------------------------------- parser: operators


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("eq(status,Active)", ["CTT-0001", "CTT-0003"]),
        ('eq(status,"Active")', ["CTT-0001", "CTT-0003"]),
        ("eq(status,'Active')", ["CTT-0001", "CTT-0003"]),
        ("eq(status,active)", []),  # eq is case-sensitive
        ("ne(status,Active)", ["CTT-0002", "CTT-0004"]),
        ("eq(count,5)", ["CTT-0001"]),
        ('eq(count,"5")', ["CTT-0001"]),  # quoting does not change the coercion
        ("eq(count,5.0)", ["CTT-0001"]),
        ("gt(count,5)", ["CTT-0002"]),
        ("ge(count,5)", ["CTT-0001", "CTT-0002"]),
        ("lt(count,12)", ["CTT-0001"]),
        ("le(count,12)", ["CTT-0001", "CTT-0002"]),
        ("lt(score,0)", ["CTT-0002"]),
        ("gt(score,1e0)", ["CTT-0001"]),
        ("eq(flag,true)", ["CTT-0001", "CTT-0003"]),
        ("eq(flag,FALSE)", ["CTT-0002"]),
        ("ne(flag,true)", ["CTT-0002", "CTT-0004"]),
        ("eq(flag,yes)", []),  # not a boolean: never equal
        ("eq(count,abc)", []),
        ("gt(name,W)", ["CTT-0002", "CTT-0004"]),  # text by code point: 'w' and 'Z' > 'W'
        ("lt(name,C)", ["CTT-0001"]),
    ],
)
def test_comparison_operators(raw: str, expected: list[str]) -> None:
    assert ids(raw) == expected


def test_null_is_never_ordered_but_is_ne_anything() -> None:
    assert ids("gt(count,0)") == ["CTT-0001", "CTT-0002"]
    assert ids("lt(count,1000)") == ["CTT-0001", "CTT-0002"]
    assert ids("ne(count,5)") == ["CTT-0002", "CTT-0003", "CTT-0004"]


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ('"2026-01-31T23:00:00.000Z"', ["CTT-0002"]),
        ("2026-01-31T23:00:00Z", ["CTT-0002"]),  # without millis, bare
        ('"2026-02-01T00:00:00.000+01:00"', ["CTT-0002"]),  # an offset is the same instant
        ('"2026-01-31T22:59:59.9995Z"', ["CTT-0001", "CTT-0002"]),  # sub-millisecond literal
        ('"2026-02-01"', ["CTT-0002"]),  # a date is midnight UTC
    ],
)
def test_timestamps_compare_as_instants(literal: str, expected: list[str]) -> None:
    assert ids(f"gt(audit.updated.at,{literal})&select=audit") == expected


def test_timestamp_equality_and_non_canonical_record_values() -> None:
    assert ids('eq(audit.updated.at,"2026-01-31T23:00:00Z")&select=audit') == ["CTT-0001"]
    assert ids("ne(audit.updated.at,2026-02-01T10:30:15.25%2B01:00)&select=audit") == [
        "CTT-0001",
        "CTT-0003",
        "CTT-0004",
    ]
    odd = [
        {"id": "a", "audit": {"updated": {"at": "2026-01-31T23:00:00+00:00"}}},
        {"id": "b", "audit": {"updated": {"at": "2026-02-01T01:00:00.5+02:00"}}},
        {"id": "c", "audit": {"updated": {"at": "2026-01-31T23:59:59.123456Z"}}},
        {"id": "d", "audit": {"updated": {"at": datetime(2026, 2, 1, tzinfo=UTC)}}},
        {"id": "e", "audit": {"updated": {"at": "not a timestamp"}}},
    ]
    assert ids('ge(audit.updated.at,"2026-01-31T23:00:00.000Z")&select=audit', odd) == [
        "a",
        "b",
        "c",
        "d",
        "e",  # not a timestamp: compared as text, and "n" > "2"
    ]
    assert ids('lt(audit.updated.at,"2026-01-31T23:00:00.500Z")&select=audit', odd) == ["a"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*EXAMPLE.COM", ["CTT-0001", "CTT-0002", "CTT-0003"]),
        ("buzz*", ["CTT-0001"]),
        ("*@*.com", ["CTT-0001", "CTT-0002", "CTT-0003"]),
        ("w*y@*", ["CTT-0002"]),
        ("woody@example.com", ["CTT-0002"]),  # no wildcard: whole value, any case
        ("woody", []),  # whole-value match, not substring
        ("*", ["CTT-0001", "CTT-0002", "CTT-0003"]),  # null never matches
        ("**b**", ["CTT-0001", "CTT-0003"]),
        ('"*%26*"', ["CTT-0003"]),
    ],
)
def test_ilike_wildcards(pattern: str, expected: list[str]) -> None:
    assert ids(f"ilike(email,{pattern})") == expected


def test_ilike_escaped_star_is_literal() -> None:
    records = [{"id": "star", "name": "The*Best"}, {"id": "plain", "name": "TheBest"}]
    assert ids(r'ilike(name,"the\**")', records) == ["star"]
    assert ids(r"ilike(name,the\**)", records) == ["star"]  # bare values escape too
    assert ids('ilike(name,"the*")', records) == ["star", "plain"]
    assert ids(
        r'ilike(name,"*\\*")', [{"id": "bs", "name": "a\\b"}, {"id": "n", "name": "ab"}]
    ) == ["bs"]


def test_ilike_folds_case_by_unicode_rules() -> None:
    records = [{"id": "1", "name": "Straße"}, {"id": "2", "name": "ÉCOLE"}]
    assert ids("ilike(name,STRASSE)", records) == ["1"]
    assert ids("ilike(name,%C3%A9cole)", records) == ["2"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("in(status,(Active,Deleted))", ["CTT-0001", "CTT-0003", "CTT-0004"]),
        ("out(status,(Active,Deleted))", ["CTT-0002"]),
        ("in(status,(Active))", ["CTT-0001", "CTT-0003"]),
        ("in(count,(12,7,5))", ["CTT-0001", "CTT-0002"]),
        ("in(count,(null(),12))", ["CTT-0002", "CTT-0003", "CTT-0004"]),
        ("out(count,(null()))", ["CTT-0001", "CTT-0002"]),
        ("in(flag,(false))", ["CTT-0002"]),
        ("in(blockedReason,(empty()))", ["CTT-0001", "CTT-0002", "CTT-0003", "CTT-0004"]),
        ('in(audit.updated.at,("2026-02-01T10:30:15.25+01:00",x))&select=audit', ["CTT-0002"]),
        ("in(status,())", []),
        ("out(status,())", ["CTT-0001", "CTT-0002", "CTT-0003", "CTT-0004"]),
    ],
)
def test_in_and_out(raw: str, expected: list[str]) -> None:
    assert ids(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("and(eq(status,Active),gt(count,1))", ["CTT-0001"]),
        ("or(eq(status,Deleted),lt(count,6))", ["CTT-0001", "CTT-0004"]),
        ("not(eq(status,Active))", ["CTT-0002", "CTT-0004"]),
        ("and(eq(status,Active),eq(flag,true),ilike(name,*A*))", ["CTT-0001", "CTT-0003"]),
        ("or(and(eq(status,Active),not(eq(count,5))),eq(name,Zurg))", ["CTT-0003", "CTT-0004"]),
        ("AND(EQ(status,Active),Not(eq(count,5)))", ["CTT-0003"]),  # operator names: any case
        ("and(eq(status,Active))", ["CTT-0001", "CTT-0003"]),
    ],
)
def test_logical_operators(raw: str, expected: list[str]) -> None:
    assert ids(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("any(optOuts,eq(id,NTC-1))", ["CTT-0001", "CTT-0003"]),
        ("any(optOuts,eq(name,Offers))", ["CTT-0001"]),
        ("all(optOuts,eq(id,NTC-1))", ["CTT-0002", "CTT-0003", "CTT-0004"]),  # vacuous truth
        ("any(optOuts,ne(id,NTC-9))", ["CTT-0001", "CTT-0003"]),  # empty/absent: false
        ("not(any(optOuts,id=NTC-2))", ["CTT-0002", "CTT-0003", "CTT-0004"]),
        ("any(optOuts,and(eq(id,NTC-1),ilike(name,new*)))", ["CTT-0001", "CTT-0003"]),
    ],
)
def test_any_and_all_evaluate_relative_to_each_element(raw: str, expected: list[str]) -> None:
    assert ids(raw) == expected


def test_any_tolerates_elements_that_are_not_objects() -> None:
    records = [{"id": "x", "tags": ["plain", None, {"label": "a"}]}, {"id": "y", "tags": "oops"}]
    assert ids("any(tags,eq(label,a))", records) == ["x"]
    assert ids("all(tags,eq(label,a))", records) == ["y"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("eq(count,null())", ["CTT-0003", "CTT-0004"]),  # null and missing key
        ("ne(count,null())", ["CTT-0001", "CTT-0002"]),
        ("eq(blockedReason,empty())", ["CTT-0001", "CTT-0002", "CTT-0003", "CTT-0004"]),
        ("eq(optOuts,empty())", ["CTT-0002", "CTT-0004"]),  # empty list or missing
        ("ne(optOuts,empty())", ["CTT-0001", "CTT-0003"]),
        ("eq(user,null())", ["CTT-0002", "CTT-0003", "CTT-0004"]),
        ("eq(user.id,null())", ["CTT-0002", "CTT-0003", "CTT-0004"]),  # null parent: null child
        ("optOuts=empty()", ["CTT-0002", "CTT-0004"]),
        ("eq(category.id,%22NTC-1234-9876%22)", ["CTT-0001"]),
        ("eq(count,NULL())", ["CTT-0003", "CTT-0004"]),
        ('eq(name,"null")', []),  # quoted text is text, not the constant
    ],
)
def test_null_empty_and_dotted_paths(raw: str, expected: list[str]) -> None:
    assert ids(raw) == expected


# --------------------------------------------------------------------------- parser: quoting


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (r'"say \"hi\""', 'say "hi"'),
        (r"'O\'Brien'", "O'Brien"),
        ("'say \"hi\"'", 'say "hi"'),
        ('"it\'s"', "it's"),
        (r'"back\\slash"', "back\\slash"),
        ('"a,b(c)d=e"', "a,b(c)d=e"),
        ('"two  spaces "', "two  spaces "),
        (r"bare\,comma", "bare,comma"),
        ('""', ""),
        ('"%26%23%25%2B"', "&#%+"),
        ('"caf%C3%A9 %E2%82%AC"', "café €"),
    ],
)
def test_quoting_and_escapes(value: str, stored: str) -> None:
    records = [{"id": "hit", "name": stored}, {"id": "miss", "name": stored + "x"}]
    assert ids(f"eq(name,{value})", records) == ["hit"]


def test_encoded_ampersand_stays_inside_its_value() -> None:
    query = parse_query("eq(email,%22a%26b@example.com%22)&limit=5", FIELDS)
    assert query.filter_text == 'eq(email,"a&b@example.com")'
    assert query.limit == 5
    assert ids("eq(email,%22a%26b@example.com%22)") == ["CTT-0003"]


def test_plus_is_not_a_space_in_values() -> None:
    assert ids('eq(name,"a+b")', [{"id": "1", "name": "a+b"}, {"id": "2", "name": "a b"}]) == ["1"]


def test_shortcut_means_eq_at_top_level_and_inside_expressions() -> None:
    assert ids("status=Active") == ["CTT-0001", "CTT-0003"]
    assert ids("status=Active&count=5") == ["CTT-0001"]
    assert ids('name="Buzz Lightyear"') == ["CTT-0001"]
    assert ids("count=null()") == ["CTT-0003", "CTT-0004"]
    assert ids("and(status=Active,flag=true)") == ["CTT-0001", "CTT-0003"]
    assert ids("any(optOuts,id=NTC-2)") == ["CTT-0001"]
    assert parse_query("status=Active", FIELDS).filter_text == 'eq(status,"Active")'


def test_several_filter_parts_are_anded_and_normalised() -> None:
    query = parse_query("eq(status,Active)&limit=3&gt(count,1)", FIELDS)
    assert query.filter_text == 'and(eq(status,"Active"),gt(count,"1"))'
    assert [r["id"] for r in RECORDS if query.predicate and query.predicate(r)] == ["CTT-0001"]


def test_filter_text_is_the_same_for_equivalent_spellings() -> None:
    spellings = [
        "eq(status,Active)",
        'eq(status,"Active")',
        "eq(status,'Active')",
        "EQ(status,%22Active%22)",
        "status=Active",
        "eq%28status%2CActive%29",
    ]
    assert {parse_query(s, FIELDS).filter_text for s in spellings} == {'eq(status,"Active")'}
    # The normalised text parses back to the same text: usable as a cache key.
    text = parse_query(r'ilike(name,"a\*b*\"c\\")', FIELDS).filter_text
    assert text == r'ilike(name,"a\*b*\"c\\")'
    assert parse_query(text, FIELDS).filter_text == text


def test_no_filter() -> None:
    query = parse_query("", FIELDS)
    assert query == ParsedQuery(filter_text="", predicate=None, limit=10, offset=0)
    assert parse_query("?&&limit=2&", FIELDS).predicate is None


# --------------------------------------------------------------------------- parser: parameters


def test_select_order_limit_offset() -> None:
    query = parse_query(
        "select=audit,-email,%2Bname&select=user&order=-audit.updated.at,%2Bid,name"
        "&limit=50&offset=200",
        FIELDS,
    )
    assert query.select_add == ("audit", "name", "user")
    assert query.select_remove == ("email",)
    assert query.order == (("audit.updated.at", True), ("id", False), ("name", False))
    assert (query.limit, query.offset) == (50, 200)


def test_order_accepts_a_literal_plus_and_a_form_encoded_one() -> None:
    assert parse_query("order=+name", FIELDS).order == (("name", False),)
    assert parse_query("order=%20name,-id", FIELDS).order == (("name", False), ("id", True))


def test_limit_is_capped_and_defaulted() -> None:
    assert parse_query("limit=1000", FIELDS).limit == 100
    assert parse_query("limit=1000", FIELDS, max_limit=None).limit == 1000
    assert parse_query("limit=0", FIELDS).limit == 0
    assert parse_query("", FIELDS).limit == 10
    assert parse_query("", FIELDS, default_limit=None).limit is None
    assert parse_query("offset=7", FIELDS, default_limit=25).limit == 25
    assert parse_query("limit=100", FIELDS, max_limit=20).limit == 20


def test_audit_selected_allows_filtering_and_ordering() -> None:
    assert parse_query("order=audit.updated.at&select=audit", FIELDS).order
    assert parse_query("select=audit.updated&gt(audit.updated.at,1)", FIELDS).predicate
    assert parse_query("select=%2Baudit&eq(audit,null())", FIELDS).predicate


# --------------------------------------------------------------------------- parser: errors


@pytest.mark.parametrize(
    ("raw", "parameter", "message", "position", "field"),
    [
        ("eq(nope,1)", "filter", "unknown field 'nope'", 3, "nope"),
        ("and(eq(status,A),lt(cnt,1))", "filter", "unknown field 'cnt'", 20, "cnt"),
        ("any(optOuts,eq(email,x))", "filter", "unknown field 'email'", 15, "email"),
        ("nope=1", "filter", "unknown field 'nope'", 0, "nope"),
        ("order=nope", "order", "unknown field 'nope' in order", None, "nope"),
        ("select=-nope", "select", "unknown field 'nope' in select", None, "nope"),
        ("eq(status,Active", "filter", "unbalanced parentheses: missing ')'", 16, None),
        ("and(eq(status,Active)", "filter", "missing ')' to close and()", 21, None),
        ("in(status,(a,b)", "filter", "missing ')' to close in()", 15, None),
        ("eq(status,Active))", "filter", "unbalanced parentheses: unexpected ')'", 17, None),
        ("eq(status,Active),eq(id,1)", "filter", "after the end of the expression", 17, None),
        ("eq(status)", "filter", "expected ','", 9, None),
        ("eq(status,a,b)", "filter", "expected ')'", 11, None),
        ("eq(status,)", "filter", "expected a value", 10, None),
        ("frob(status,a)", "filter", "unknown operator 'frob'", 0, None),
        ("status", "filter", "expected an expression like eq(field,value)", 0, None),
        ("and(status,eq(id,1))", "filter", "found 'status'", 4, None),
        ("and()", "filter", "expected an expression", 4, None),
        ("null()", "filter", "null() is a value, not a condition", 0, None),
        ("eq(status,eq(id,1))", "filter", "found the operator 'eq'", 10, None),
        ("eq(name,Buzz Lightyear)", "filter", "whitespace (quote values", 12, None),
        ("eq( name,x)", "filter", "expected a field name", 3, None),
        ('eq(name,"Buzz)', "filter", 'unterminated string: the " opened here', 8, None),
        ("eq(name,'Buzz)", "filter", "unterminated string: the ' opened here", 8, None),
        ('eq(name,ab"c")', "filter", "a quote inside an unquoted value", 10, None),
        ("eq(name,abc\\", "filter", "a backslash at the end of a value", 11, None),
        ("not(eq(id,1),eq(id,2))", "filter", "not() takes exactly one condition", 12, None),
        ("in(status,Active)", "filter", "in() needs a list in parentheses", 10, None),
        ("gt(count,null())", "filter", "gt() needs a value to compare with, not null()", 0, None),
        ("ilike(name,empty())", "filter", "ilike() needs a pattern, not empty()", 0, None),
        ("eq(user,x)", "filter", "'user' is an object", 0, "user"),
        ("in(optOuts,(a))", "filter", "'optOuts' is a collection", 0, "optOuts"),
        ("and(user=x)", "filter", "'user' is an object", 4, "user"),
        ("any(status,eq(id,1))", "filter", "'status' is not one", 4, "status"),
        ("eq(na-me,1)", "filter", "'na-me' is not a field name", 3, "na-me"),
        ("gt(audit.updated.at,1)", "filter", "needs 'audit' in select", None, "audit.updated.at"),
        ("order=-audit.updated.at", "order", "ordering on 'audit.updated.at' needs", None, None),
        ("select=audit,-audit&gt(audit.created.at,1)", "filter", "select=audit", None, None),
        ("order=user", "order", "cannot order by 'user': it is an object", None, "user"),
        ("order=optOuts", "order", "it is a collection", None, "optOuts"),
        ("order=id,", "order", "order has an empty item", None, None),
        ("order=id&order=name", "order", "order is given more than once", None, None),
        ("select=", "select", "select has an empty item", None, None),
        ("limit=-1", "limit", "limit must be a non-negative integer, got '-1'", None, None),
        ("limit=ten", "limit", "got 'ten'", None, None),
        ("limit=1.5", "limit", "got '1.5'", None, None),
        ("limit=", "limit", "got ''", None, None),
        ("limit=%EF%BC%95", "limit", "non-negative integer", None, None),  # fullwidth five
        ("limit=1&limit=2", "limit", "limit is given more than once", None, None),
        ("offset=-5", "offset", "offset must be a non-negative integer", None, None),
        ("offset=1&offset=1", "offset", "offset is given more than once", None, None),
        ("eq(name,%FF)", "filter", "not valid percent-encoded UTF-8", None, None),
    ],
)
def test_errors_say_what_and_where(
    raw: str, parameter: str, message: str, position: int | None, field: str | None
) -> None:
    error = syntax_error(raw)
    assert message in str(error)
    assert error.parameter == parameter
    if position is not None:
        assert error.position == position
        assert f"at character {position + 1} of " in str(error)
    if field is not None:
        assert error.field == field
    assert isinstance(error, ValueError)


def test_deep_nesting_is_refused_cleanly() -> None:
    raw = "not(" * 200 + "eq(id,1)" + ")" * 200
    assert "nested more than" in str(syntax_error(raw))
    fine = "not(" * 21 + "eq(id,1)" + ")" * 21  # an odd number: not(eq(id,1))
    assert ids(fine) == ["CTT-0001", "CTT-0002", "CTT-0003", "CTT-0004"]


def test_long_inputs_are_shortened_in_messages() -> None:
    raw = "eq(name," + "x" * 500 + " y)"
    message = str(syntax_error(raw))
    assert len(message) < 300
    assert "..." in message


# --------------------------------------------------------------------------- field sets


def test_field_set_kinds() -> None:
    assert FIELDS.kind("user.id") == "value"
    assert FIELDS.kind("user") == "object"  # listed, but has fields under it
    assert FIELDS.kind("audit") == "object"
    assert FIELDS.kind("audit.updated") == "object"
    assert FIELDS.kind("optOuts") == "collection"
    assert FIELDS.element("optOuts").kind("name") == "value"
    assert FIELDS.kind("optOuts.id") is None
    assert FIELDS.kind("nope") is None
    with pytest.raises(ValueError, match="not a dotted field path"):
        FieldSet.from_paths(["a..b"])


def test_field_set_from_example() -> None:
    fields = FieldSet.from_example(RECORDS[0])
    assert fields.kind("category.id") == "value"
    assert fields.kind("audit.updated.at") == "value"
    assert fields.kind("optOuts") == "collection"
    assert fields.element("optOuts").kind("name") == "value"
    assert fields.select_required == frozenset({"audit"})
    assert fields == FieldSet.from_example(dict(RECORDS[0]))  # hashable, comparable value


# --------------------------------------------------------------------------- sorting


def order_ids(order: tuple[tuple[str, bool], ...], records: list[dict[str, Any]]) -> list[str]:
    by_key = [r["id"] for r in sorted(records, key=sort_key(order))]
    assert by_key == [r["id"] for r in sort_records(records, order)]
    return by_key


def test_sort_nulls_first_ascending_last_descending() -> None:
    assert order_ids((("count", False),), RECORDS) == [
        "CTT-0003",
        "CTT-0004",
        "CTT-0001",
        "CTT-0002",
    ]
    assert order_ids((("count", True),), RECORDS) == [
        "CTT-0002",
        "CTT-0001",
        "CTT-0003",
        "CTT-0004",
    ]


def test_sort_by_several_fields_and_nested_paths() -> None:
    order = (("status", False), ("audit.updated.at", True))
    assert order_ids(order, RECORDS) == ["CTT-0001", "CTT-0003", "CTT-0002", "CTT-0004"]
    order = (("flag", True), ("name", False), ("id", True))
    assert order_ids(order, RECORDS) == ["CTT-0001", "CTT-0003", "CTT-0002", "CTT-0004"]


def test_sort_mixed_types_by_rank_without_crashing() -> None:
    values: list[Any] = ["b", 3, None, True, 2.5, {"x": 1}, "a", False, [1], -7, ""]
    records = [{"id": str(i), "v": v} for i, v in enumerate(values)]
    ascending = [values[int(i)] for i in order_ids((("v", False),), records)]
    assert ascending == [None, False, True, -7, 2.5, 3, "", "a", "b", [1], {"x": 1}]
    descending = [values[int(i)] for i in order_ids((("v", True),), records)]
    assert descending == list(reversed(ascending))


def test_sort_timestamps_by_instant_whatever_their_spelling() -> None:
    records = [
        {"id": "late", "at": "2026-01-01T10:00:00.000Z"},
        {"id": "offset", "at": "2026-01-01T10:30:00+01:00"},  # 09:30 UTC
        {"id": "early", "at": "2026-01-01T09:00:00.000Z"},
        {"id": "aware", "at": datetime(2026, 1, 1, 9, 45, tzinfo=UTC)},
    ]
    assert order_ids((("at", False),), records) == ["early", "offset", "aware", "late"]


def test_sort_ties_keep_incoming_order() -> None:
    records = [{"id": str(i), "s": "same"} for i in range(5)]
    assert order_ids((("s", True),), records) == ["0", "1", "2", "3", "4"]


@given(
    st.lists(st.one_of(st.none(), st.text(max_size=6), st.integers(), st.floats(allow_nan=False)))
)
@settings(max_examples=150, deadline=None)
def test_sort_matches_a_reference_order(values: list[Any]) -> None:
    def reference(v: Any) -> tuple[Any, ...]:
        if v is None:
            return (0, 0)
        if isinstance(v, str):
            return (2, v)
        return (1, v)

    records = [{"v": v} for v in values]
    ascending = [r["v"] for r in sorted(records, key=sort_key((("v", False),)))]
    descending = [r["v"] for r in sorted(records, key=sort_key((("v", True),)))]
    assert [reference(v) for v in ascending] == sorted(reference(v) for v in values)
    assert [reference(v) for v in descending] == sorted(
        (reference(v) for v in values), reverse=True
    )


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
        ('say "hi" \\ there', r'"say \"hi\" \\ there"'),
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


def test_builder_ilike_and_escape_wildcards() -> None:
    assert str(rql.ilike("name", "buzz*")) == 'ilike(name,"buzz*")'
    assert str(rql.ilike("name", r"The\**")) == r'ilike(name,"The\**")'
    assert rql.escape_wildcards(r"5* \ 6") == r"5\* \\ 6"
    assert str(rql.ilike("name", "*" + rql.escape_wildcards('a*"b\\') + "*")) == (
        r'ilike(name,"*a\*\"b\\*")'
    )
    assert str(rql.ilike("name", "a\\b")) == r'ilike(name,"a\\b")'  # a lone backslash is literal
    with pytest.raises(RqlBuildError, match="text pattern"):
        rql.ilike("name", None)  # type: ignore[arg-type]


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
    ],
)
def test_raw_rejects_text_that_would_spill_out(text: str, message: str) -> None:
    with pytest.raises(RqlBuildError, match=re.escape(message)):
        rql.raw(text)


# --------------------------------------------------------------------------- builder: query string


def test_query_string_encodes_everything_that_could_break_it() -> None:
    expr = rql.eq("name", 'a&b=c#d%e+f g"h\\i;j/é€😀\n')
    query = rql.build_query_string(expr)
    assert query == (
        "eq(name,%22a%26b%3Dc%23d%25e%2Bf%20g%5C%22h%5C%5Ci%3Bj%2F%C3%A9%E2%82%AC%F0%9F%98%80%0A%22)"
    )
    assert re.fullmatch(r"[A-Za-z0-9%()*,.:'!_~-]*", query)
    parsed = parse_query(query, FIELDS)
    assert parsed.predicate is not None
    assert parsed.predicate({"name": 'a&b=c#d%e+f g"h\\i;j/é€😀\n'})
    assert not parsed.predicate({"name": "a"})


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
    query = rql.build_query_string(rql.ilike("email", "*" + rql.escape_wildcards("a&b*+c") + "*"))
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


# --------------------------------------------------------------------------- round-trip property

# Builder output for adversarial values, parsed by the sandbox, must filter exactly like a
# plain Python evaluation of the same condition.

PROPERTY_FIELDS = FieldSet.from_paths(
    ["name", "count", "flag", "audit.updated.at"], collections={"tags": ["label"]}
)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
WILD = object()

adversarial_text = st.text(
    alphabet=st.one_of(
        # Case-folding traps: sharp s, the three sigmas, dotted capital I.
        st.sampled_from(list("aAbBßSs\u03a3\u03c3\u03c2*\\\"'(),&=+#%; \t\n|\x00é😀İi")),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=8,
)
# A literal shaped like a timestamp would (by design) compare as an instant: keep them apart.
literal_text = adversarial_text.filter(lambda s: not re.match(r"[0-9]{4}-", s))
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


def _ilike_reference(parts: list[Any]) -> Any:
    regex = re.compile(
        "".join(".*" if p is WILD else re.escape(p.casefold()) for p in parts), re.DOTALL
    )
    return lambda v: isinstance(v, str) and regex.fullmatch(v.casefold()) is not None


@st.composite
def text_leaf(draw: Any, key: str) -> Case:
    op = draw(st.sampled_from(sorted(COMPARE)))
    kind = draw(st.sampled_from(["compare", "ilike", "in", "out", "null", "empty"]))
    if kind == "compare":
        literal = draw(literal_text)
        return Case(BUILD[op](key, literal), lambda r: _compared(op, r.get(key), literal))
    if kind == "ilike":
        parts = draw(st.lists(st.one_of(st.just(WILD), literal_text), max_size=4))
        pattern = "".join("*" if p is WILD else rql.escape_wildcards(p) for p in parts)
        matches = _ilike_reference(parts)
        return Case(rql.ilike(key, pattern), lambda r: matches(r.get(key)))
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


def test_a_value_with_double_quotes_goes_in_single_quotes_the_platform_reads_too() -> None:
    # The platform's RQL has no escapes: "say \"hi\"" would end at the first inner quote.
    expression = rql.eq("name", 'say "hi"')
    assert str(expression) == "eq(name,'say \"hi\"')"
    parsed = parse_query(rql.build_query_string(expression), FieldSet.from_paths(["name"]))
    assert parsed.predicate is not None
    assert parsed.predicate({"name": 'say "hi"'})
    assert not parsed.predicate({"name": "say hi"})
    # Both kinds of quote (or a backslash) cannot be written without escapes.
    assert str(rql.eq("name", 'it\'s "x"')) == 'eq(name,"it\'s \\"x\\"")'
