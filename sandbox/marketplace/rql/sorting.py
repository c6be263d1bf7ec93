"""Ordering records by a parsed ``order``: null first ascending (last descending); values of
different types never compare with each other: null < bool < number < text < anything else;
timestamps sort by the instant they name, whatever their spelling.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import compress
from operator import itemgetter
from typing import Any

from sandbox.marketplace.rql.predicates import Predicate, getter, not_null_path
from sandbox.marketplace.rql.values import (
    canonical_timestamp,
    datetime_utc,
    looks_canonical,
    record_instant,
)

OrderSpec = Sequence[tuple[str, bool]]
# (path, its sort key function) -> that key of every record, in the records' order.
Column = Callable[[str, Callable[[Any], str]], list[str]]

# A read needing at most 1/16 of the matching records (offset + limit) takes only those instead
# of sorting them all: picking n of N is one pass over the keys, while a sort of all N costs
# more than that once n nears N/16 (measured at 100k).
_SELECT_FRACTION = 16
_NULL_KEY = "\x00"

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
        return _NULL_KEY
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

    def key(rec: Any) -> str:
        v = get(rec)
        # _ascending's answer for the common text, inline: text that cannot be a timestamp
        # (no date/time separator at [10]) or is one in the API's own spelling keys as itself.
        if v.__class__ is str and (
            len(v) <= 10
            or v[10] not in "Tt "
            or (len(v) == 24 and v[23] == "Z" and v[10] == "T" and v[19] == "." and v[4] == "-")
        ):
            return "\x03" + v
        return _ascending(v)

    return key


def sort_in_place(records: list[Any], order: OrderSpec) -> None:
    """Sort ``records`` by ``order`` ((path, descending), ...); ties keep their incoming order."""
    for path, descending in reversed(order):
        records.sort(key=sort_key(path), reverse=descending)


def sort_records(records: Iterable[Any], order: OrderSpec) -> list[Any]:
    """Records sorted by ``order``, as a new list."""
    rows = list(records)
    sort_in_place(rows, order)
    return rows


def first_records(
    records: list[Any],
    order: OrderSpec,
    n: int | None,
    predicate: Predicate | None = None,
    column: Column | None = None,
) -> tuple[int, list[Any]]:
    """How many ``records`` match ``predicate``, and the first ``n`` of them (None: all) as the
    full sort orders them; all of them, sorted, when that costs about as much.

    ``column(path, key)``, when given, answers ``key`` of every record, in the records' order,
    from a cache. The n-th best key of the first field bounds the answer: a record whose key is
    worse has at least n records before it. The records whose key is at least as good (the ties
    at the bound included) are sorted exactly as the full sort would, in their incoming order,
    so the answer is the full sort's, ties and nulls included.
    """
    if n == 0:  # a count
        return len(records) if predicate is None else len(list(filter(predicate, records))), []
    if not order:  # every match, in id order: filtering is the whole cost, once per version
        rows = records if predicate is None else list(filter(predicate, records))
        return len(rows), rows
    path, descending = order[0]
    key = sort_key(path)
    every = column(path, key) if column is not None else None
    keys: list[str] | None = every
    rows = records
    if predicate is not None and not_null_path(predicate) == path:
        # ne(path,null()) keeps exactly the records whose key is not the null key: the keys
        # answer the filter too (the newest-change query).
        if every is None:
            every = list(map(key, records))
        mask = list(map(_NULL_KEY.__ne__, every))
        rows, keys = list(compress(records, mask)), list(compress(every, mask))
    elif predicate is not None and every is not None:
        mask = list(map(predicate, records))
        rows, keys = list(compress(records, mask)), list(compress(every, mask))
    elif predicate is not None:
        rows = list(filter(predicate, records))
    total = len(rows)
    short = n is not None and n * _SELECT_FRACTION <= total
    if keys is None:
        if not short:
            rows = list(rows)
            sort_in_place(rows, order)
            return total, rows
        keys = list(map(key, rows))
    if not short:
        pairs = list(zip(keys, rows, strict=True))
    else:
        assert n is not None
        if n == 1:
            bound = max(keys) if descending else min(keys)
        else:
            bound = (heapq.nlargest if descending else heapq.nsmallest)(n, keys)[-1]
        mask = list(map(bound.__le__ if descending else bound.__ge__, keys))
        pairs = list(zip(compress(keys, mask), compress(rows, mask), strict=True))
    # The full sort's passes, last field first, the first field's keys already computed.
    for later, later_descending in reversed(order[1:]):
        later_key = sort_key(later)
        pairs.sort(key=lambda pair: later_key(pair[1]), reverse=later_descending)
    pairs.sort(key=itemgetter(0), reverse=descending)
    return total, [r for _, r in (pairs[:n] if short else pairs)]
