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
    get = getter(path)
    if descending:
        return lambda rec: _inverted(_ascending(get(rec)))
    return lambda rec: _ascending(get(rec))


def sort_records(records: Iterable[Any], order: OrderSpec) -> list[Any]:
    """Records sorted by ``order``; a stable sort, so ties keep their incoming order."""
    return sorted(records, key=sort_key(order))
