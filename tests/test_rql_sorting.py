"""The sandbox's ``order``: nulls, mixed types, timestamps by instant, stable ties."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rql_cases import RECORDS

from sandbox.marketplace.rql import sort_key, sort_records

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
