"""The sandbox's sort key against a plain one, at 1M contacts (issue 8: keep the simpler one
unless the figure says otherwise).

Both order the same records the same way; the figure is the time of each over the orders a
client sends (``id``, ``-audit.updated.at``, ``status,-audit.updated.at``, ``name``).

    python -m benchmarks.sort_keys [--contacts 1000000]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.clock import format_timestamp
from sandbox.marketplace.data import FIRST_NAMES, LAST_NAMES, contact_id
from sandbox.marketplace.rql import sort_in_place
from sandbox.marketplace.rql.predicates import getter

ORDERS: tuple[tuple[tuple[str, bool], ...], ...] = (
    (("id", True),),
    (("audit.updated.at", True),),
    (("status", False), ("audit.updated.at", True)),
    (("name", False),),
)


def contacts(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Contacts with the fields these orders read (cheaper to build than the full generator)."""
    rng = random.Random(seed)
    anchor = datetime(2026, 11, 18, tzinfo=UTC)
    rows = []
    for i in range(1, n + 1):
        created = anchor - timedelta(seconds=rng.randint(3600, 365 * 86400))
        audit: dict[str, Any] = {"created": {"at": format_timestamp(created)}}
        if rng.random() < 0.7:  # never-updated contacts have no audit.updated
            audit["updated"] = {"at": format_timestamp(created + timedelta(hours=1))}
        rows.append(
            {
                "id": contact_id(i),
                "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                "status": "Blocked" if rng.random() < 0.08 else "Active",
                "audit": audit,
            }
        )
    return rows


def _plain(v: Any) -> tuple[int, Any]:
    """The simpler alternative: a (type rank, value) tuple per field."""
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, (int, float)):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    return (4, repr(v))


def plain_sort(rows: list[dict[str, Any]], order: tuple[tuple[str, bool], ...]) -> None:
    """Sort by ``order`` with plain tuple keys, one stable pass per field."""
    for path, descending in reversed(order):
        get = getter(path)
        rows.sort(key=lambda r: _plain(get(r)), reverse=descending)


def _timed(
    sort: Callable[[list[Any], Any], None], rows: list[Any], order: Any
) -> tuple[float, list]:
    copy = list(rows)
    started = time.perf_counter()
    sort(copy, order)
    return time.perf_counter() - started, copy


def sort_key_benchmark(n: int) -> None:
    """Print the seconds each key takes per order, side by side."""
    print(f"\n== sandbox sort keys: {n:,} contacts ==")
    rows = contacts(n)
    for order in ORDERS:
        text = ",".join(("-" if d else "") + p for p, d in order)
        flat, by_flat = _timed(sort_in_place, rows, order)
        plain, by_plain = _timed(plain_sort, rows, order)
        assert [r["id"] for r in by_flat] == [r["id"] for r in by_plain]
        print(
            f"order={text:<28} flat text key {flat:6.2f} s  plain tuple key {plain:6.2f} s"
            f"  plain/flat {plain / flat:4.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    sort_key_benchmark(parser.parse_args().contacts)


if __name__ == "__main__":
    main()
