"""The sandbox's RQL engine reads filters as the platform's engine does (mpt-rql-net): operators
in any case, like/ilike wildcard rules, quotes without escapes, ``|``/``;`` for or, ``,``/``&``
for and, bare groups, and named parameters; malformed queries say what and where."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rql_cases import FIELDS, RECORDS, ids, syntax_error

from sandbox.marketplace.rql import FieldSet, ParsedQuery, parse_query

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
        ("*EXAMPLE.COM", ["CTT-0001", "CTT-0002", "CTT-0003"]),  # leading *: ends with
        ("buzz*", ["CTT-0001"]),  # trailing *: starts with
        ("*OOD*", ["CTT-0002"]),  # both: contains
        ("woody@example.com", ["CTT-0002"]),  # no wildcard: whole value, any case
        ("woody", []),  # whole-value match, not substring
        ("*", ["CTT-0001", "CTT-0002", "CTT-0003"]),  # null never matches
        ("**", ["CTT-0001", "CTT-0002", "CTT-0003"]),  # contains the empty text
        ("*@*.com", []),  # a middle star is a literal star: nothing ends with "@*.com"
        ("w*y@*", []),  # starts with the literal "w*y@"
        ('"*%26*"', ["CTT-0003"]),
        ("'*&b@*'", ["CTT-0003"]),  # a raw & inside quotes is part of the value
    ],
)
def test_ilike_wildcards(pattern: str, expected: list[str]) -> None:
    assert ids(f"ilike(email,{pattern})") == expected


def test_a_middle_star_is_literal_and_an_escaped_star_counts_only_at_the_ends() -> None:
    records = [
        {"id": "star", "name": "The*Best"},
        {"id": "plain", "name": "TheBest"},
        {"id": "lead", "name": "*Best"},
        {"id": "trail", "name": "Best*"},
        {"id": "slash", "name": "a\\b"},
    ]
    assert ids("ilike(name,the*best)", records) == ["star"]
    assert ids("ilike(name,the*)", records) == ["star", "plain"]
    assert ids(r"ilike(name,\*best)", records) == ["lead"]  # escaped at the start: exact
    assert ids(r"ilike(name,best\*)", records) == ["trail"]  # escaped at the end: exact
    assert ids(r"ilike(name,*\*)", records) == ["trail"]  # ends with a star
    assert ids(r"ilike(name,\**)", records) == ["lead"]  # starts with a star
    assert ids(r"ilike(name,a\b)", records) == ["slash"]  # a backslash elsewhere: literal
    assert ids(r"ilike(name,*\b*)", records) == ["slash"]  # contains a backslash


def test_like_is_case_sensitive_ilike_is_not() -> None:
    assert ids("like(email,WOODY*)") == ["CTT-0002"]
    assert ids("like(email,woody*)") == []
    assert ids("ilike(email,woody*)") == ["CTT-0002"]
    assert ids("LIKE(email,*Example.COM)") == ["CTT-0002"]


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
        ("'say \"hi\"'", 'say "hi"'),
        ('"it\'s"', "it's"),
        ('"back\\slash"', "back\\slash"),  # no escapes: the backslash is kept
        ("back\\slash", "back\\slash"),
        ('"ends with \\"', "ends with \\"),  # a backslash cannot escape the closing quote
        ('"a,b(c)d=e|f;g"', "a,b(c)d=e|f;g"),
        ("'a & b'", "a & b"),
        ('"two  spaces "', "two  spaces "),
        ('""', ""),
        ('"%26%23%25%2B"', "&#%+"),
        ('"caf%C3%A9 %E2%82%AC"', "café €"),
    ],
)
def test_quoted_values_end_at_the_next_quote_of_their_kind(value: str, stored: str) -> None:
    records = [{"id": "hit", "name": stored}, {"id": "miss", "name": stored + "x"}]
    assert ids(f"eq(name,{value})", records) == ["hit"]


def test_a_quote_of_the_same_kind_ends_the_value() -> None:
    # "say \"hi\"" is the value `say \` followed by stray text: a 400, as on the platform.
    assert "expected ')' in eq()" in str(syntax_error('eq(name,"say \\"hi\\"")'))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("status=Active|status=Deleted", ["CTT-0001", "CTT-0003", "CTT-0004"]),
        ("status=Active;status=Deleted", ["CTT-0001", "CTT-0003", "CTT-0004"]),
        ("status=Active,count=5", ["CTT-0001"]),
        ("status=Active&count=5", ["CTT-0001"]),
        # and binds tighter than or: (Active and 5) or Zurg
        ("status=Active&count=5|name=Zurg", ["CTT-0001", "CTT-0004"]),
        ("name=Zurg|status=Active&count=5", ["CTT-0001", "CTT-0004"]),
        ("(status=Active|name=Zurg)&flag=true", ["CTT-0001", "CTT-0003"]),
        ("((status=Active|name=Zurg))", ["CTT-0001", "CTT-0003", "CTT-0004"]),
        ("and(status=Active|name=Zurg,eq(flag,true))", ["CTT-0001", "CTT-0003"]),
        ("or(eq(count,5),(status=Blocked&flag=false))", ["CTT-0001", "CTT-0002"]),
        ("status=Active&limit=5&count=5|name=Zurg", ["CTT-0001", "CTT-0004"]),
    ],
)
def test_grouping_operators_and_precedence(raw: str, expected: list[str]) -> None:
    assert ids(raw) == expected


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
    text = parse_query("ilike(name,'a\\*b*\"c\\')", FIELDS).filter_text
    assert text == "ilike(name,'a\\*b*\"c\\')"
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
        ("eq(name,abc\\", "filter", "missing ')' to close eq()", 12, None),
        ("status=Active|", "filter", "expected an expression", 14, None),
        ("(status=Active", "filter", "missing ')' to close the group", 14, None),
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
