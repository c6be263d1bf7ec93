"""Reporting test support: a DuckDB file and a PostgreSQL database (Tokyo sessions) shared by
one module's tests, filled by hand with the rows a report reads.

The report tests import ``warehouse`` and ``warehouses`` from here, which replaces the per-test
empty ``warehouse`` of conftest.py for those modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database

# Sessions in Tokyo time: a model that took dates in the session time zone instead of UTC puts
# late-evening rows on the wrong day.
TOKYO_SESSION = "options=-c%20timezone%3DAsia/Tokyo"
PARTS = ("sent", "bounced", "complained", "discarded", "failed")


def _report_sources() -> tuple[str, ...]:
    from assets.reporting import REPORTS

    return tuple(dict.fromkeys(name for report in REPORTS for name in report.deps))


# Every table a report reads.
SOURCES = _report_sources()


def at(text: str) -> datetime:
    """A UTC timestamp from a short ISO form, e.g. ``2026-11-18T22:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A DuckDB file and a PostgreSQL database (Tokyo sessions) for one module's tests."""
    from connector.warehouse.engine import Warehouse

    with fresh_postgres_database(query=TOKYO_SESSION) as postgres:
        duck = tmp_path_factory.mktemp("reporting") / "warehouse.duckdb"
        opened = {"duckdb": Warehouse(f"duckdb:///{duck}"), "postgresql": Warehouse(postgres)}
        for warehouse in opened.values():
            warehouse.ensure_tables()
        yield opened
        for warehouse in opened.values():
            warehouse.dispose()


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request: pytest.FixtureRequest, warehouses: dict[str, Any]) -> Any:
    """Each of ``warehouses`` in turn."""
    return warehouses[request.param]


def load(warehouse: Any, **tables: list[dict[str, Any]]) -> None:
    """Empty every report source table, then insert the given rows (missing columns null)."""
    with warehouse.transaction() as tx:
        for name in SOURCES:
            tx.run("load/delete_all_rows", target=name)
        for name, rows in tables.items():
            columns = sorted({key for row in rows for key in row})
            statement = sa.text(
                f"insert into {name} ({', '.join(columns)}) "
                f"values ({', '.join(':' + c for c in columns)})"
            )
            tx.connection.execute(statement, [{c: row.get(c) for c in columns} for row in rows])


def read(warehouse: Any, name: str, *key: str) -> dict[tuple, dict[str, Any]]:
    """A table's rows keyed by the given columns."""
    result = {}
    for row in warehouse.query(f"select * from {name}"):
        values = dict(row._mapping)
        result[tuple(values[k] for k in key)] = values
    return result


def approx(value: float | None) -> Any:
    """pytest.approx, None kept."""
    return None if value is None else pytest.approx(value)
