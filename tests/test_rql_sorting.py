"""The sandbox's ``order``: nulls, mixed types, timestamps by instant, stable ties."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rql_cases import RECORDS

from sandbox.marketplace.rql import FieldSet, first_records, parse_query, sort_key, sort_records

# --------------------------------------------------------------------------- sorting


def order_ids(order: tuple[tuple[str, bool], ...], records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in sort_records(records, order)]


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
    ascending = [r["v"] for r in sorted(records, key=sort_key("v"))]
    descending = [r["v"] for r in sort_records(records, (("v", True),))]
    assert [reference(v) for v in ascending] == sorted(reference(v) for v in values)
    assert [reference(v) for v in descending] == sorted(
        (reference(v) for v in values), reverse=True
    )


# --------------------------------------------------------------------------- first rows only

# Few distinct values, so most orders tie at the bound; nulls, a missing key, mixed types and
# one instant in three spellings (equal as instants, different as text).
FEW_VALUES: list[Any] = [
    None,
    True,
    False,
    -2,
    0,
    2,
    0.5,
    -0.0,
    float("inf"),
    "",
    "a",
    "b",
    "B",
    "2026-01-01T10:00:00.000Z",
    "2026-01-01T11:00:00+01:00",
    "2026-01-01 10:00:00Z",
    "2026-01-01T09:59:59.999Z",
]
MISSING = object()
ORDER_FIELDS = ("a", "b", "nested.c", "missing")
FIELDS = FieldSet.from_paths(["id", *ORDER_FIELDS, "nested"])
Order = tuple[tuple[str, bool], ...]


def tied_records(seed: int, size: int) -> list[dict[str, Any]]:
    """``size`` records drawn from few values (many built per example: a seed is quicker for
    hypothesis than one draw per value)."""
    rng = random.Random(seed)
    pool = [*FEW_VALUES, MISSING]
    records = []
    for i in range(size):
        record: dict[str, Any] = {"id": f"R{i:03d}"}
        for name in ("a", "b"):
            value = rng.choice(pool)
            if value is not MISSING:
                record[name] = value
        nested = rng.choice(pool)
        record["nested"] = None if nested is MISSING else {"c": nested}
        records.append(record)
    return records


FILTERS = [None, "ne(a,null())", "ne(nested.c,null())", "eq(a,null())", "ne(b,1)"]


@st.composite
def short_reads(draw: st.DrawFn) -> tuple[list[dict[str, Any]], Order, int, str | None]:
    records = tied_records(draw(st.integers(0, 2**32)), draw(st.integers(0, 200)))
    fields = draw(st.lists(st.sampled_from(ORDER_FIELDS), min_size=1, max_size=3, unique=True))
    order = tuple((f, draw(st.booleans())) for f in fields)
    # Mostly short reads (at most 1/16 of the rows select), some longer ones.
    n = draw(st.one_of(st.integers(0, 12), st.integers(0, len(records) + 2)))
    return records, order, n, draw(st.sampled_from(FILTERS))


@given(short_reads())
@settings(max_examples=400, deadline=None)
def test_first_records_are_the_full_sorts_first_records(
    case: tuple[list[dict[str, Any]], Order, int, str | None],
) -> None:
    records, order, n, filter_text = case
    predicate = None if filter_text is None else parse_query(filter_text, FIELDS).predicate
    before = list(records)
    matching = [r for r in records if predicate is None or predicate(r)]
    whole = [r["id"] for r in sort_records(matching, order)]
    total, first = first_records(records, order, n, predicate)
    # The same with the keys of every record handed over, as the sandbox's store does.
    with_keys = first_records(records, order, n, predicate, lambda _, key: [*map(key, records)])
    assert with_keys == (total, first)
    assert total == len(matching)
    assert [r["id"] for r in first][:n] == whole[:n]
    assert len(first) in (min(n, total), total)  # the rows asked for, or all of them
    assert records == before  # the incoming list is left as it was


def test_first_records_keep_incoming_order_among_ties_at_the_bound() -> None:
    values = [1, 3, None, 3, 2, 3, None, 3] * 8  # enough rows for a short read to select
    records = [{"id": f"R{i:02d}", "v": v} for i, v in enumerate(values)]

    def first(order: tuple[tuple[str, bool], ...], n: int) -> list[str]:
        return [r["id"] for r in first_records(records, order, n)[1]][:n]

    assert first((("v", True),), 2) == ["R01", "R03"]
    assert first((("v", False),), 3) == ["R02", "R06", "R10"]
    assert first((("v", True), ("id", True)), 3) == ["R63", "R61", "R59"]
