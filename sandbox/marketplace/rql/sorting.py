"""Ordering records by a parsed ``order``: null first ascending (last descending); values of
different types never compare with each other: null < bool < number < text < anything else;
timestamps sort by the instant they name, whatever their spelling.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sandbox.marketplace.rql.predicates import getter
from sandbox.marketplace.rql.values import (
    canonical_timestamp,
    datetime_utc,
    looks_canonical,
    record_instant,
)

OrderSpec = Sequence[tuple[str, bool]]

# A sort key is one flat string whose first character ranks the type (null < bool < number <
# text < anything else): measured at 1M contacts (benchmarks/sort_keys.py) it sorts 1.2-4x
# faster than a plain (rank, value) tuple. Descending fields are sorted in a reverse pass of
# their own (Python's sort stays stable with reverse=True), one pass per field, last first:
# that measured no slower than a byte-inverted descending key, and is simpler.
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
        if not looks_canonical(v) and len(v) > 10 and v[10] in "Tt ":
            # An ISO timestamp written differently still sorts by the instant it names.
            instant = record_instant(v)
            if instant is not None:
                return "\x03" + canonical_timestamp(instant)
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
        return "\x03" + canonical_timestamp(datetime_utc(v))
    return "\x04" + repr(v)


def sort_key(path: str) -> Callable[[Any], str]:
    """The ascending key function of one field (dotted ``path``)."""
    get = getter(path)
    return lambda rec: _ascending(get(rec))


def sort_in_place(records: list[Any], order: OrderSpec) -> None:
    """Sort ``records`` by ``order`` ((path, descending), ...); ties keep their incoming order."""
    for path, descending in reversed(order):
        records.sort(key=sort_key(path), reverse=descending)


def sort_records(records: Iterable[Any], order: OrderSpec) -> list[Any]:
    """Records sorted by ``order``, as a new list."""
    rows = list(records)
    sort_in_place(rows, order)
    return rows
