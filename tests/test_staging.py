"""Columns built in bulk reach the stage table with their values, on DuckDB (Arrow) and
PostgreSQL (CSV through COPY): timestamps included, whatever their range and precision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

MOMENTS = [
    datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    None,
]


def test_timestamps_staged_in_bulk_keep_their_instant(
    warehouse_url: str, open_warehouse: Any
) -> None:
    warehouse = open_warehouse(warehouse_url)
    ids = [f"CTT-{i}" for i in range(len(MOMENTS))]
    data = pa.table(
        {
            "id": ids,
            # Zoned otherwise than the table's UTC: the stage converts, the instant stays.
            "created_at": pa.array(MOMENTS, pa.timestamp("us", tz="Europe/Paris")),
            "updated_at": pa.array(MOMENTS, pa.timestamp("us", tz="UTC")),
        }
    )
    with warehouse.transaction() as tx, tx.stage("contacts") as stage:
        stage.write_arrow(data, {"synced_at": "2026-11-18T15:30:00.000001Z"})
        got = tx.connection.execute(
            sa.text(f"select id, created_at, updated_at, synced_at from {stage.name} order by id")
        ).all()
    synced = datetime(2026, 11, 18, 15, 30, 0, 1, tzinfo=UTC)
    assert [tuple(row) for row in got] == [
        (i, m, m, synced) for i, m in zip(ids, MOMENTS, strict=True)
    ]


@pytest.mark.parametrize(
    ("chunks", "ascending"),
    [
        ([["CTT-1", "CTT-2"], ["CTT-3"], ["CTT-4", "CTT-5"]], True),
        ([["CTT-1", "CTT-3"], ["CTT-3", "CTT-4"]], False),  # repeated across chunks
        ([["CTT-1", "CTT-1"]], False),  # repeated within one
        ([["CTT-2", "CTT-1"]], False),  # out of order within one
        ([["CTT-5"], ["CTT-4"]], False),  # out of order across chunks
        ([["CTT-1", None]], False),
    ],
)
def test_a_stage_knows_whether_its_keys_came_in_increasing_order(
    chunks: list[list[str | None]], ascending: bool, warehouse_url: str, open_warehouse: Any
) -> None:
    # In increasing order no key repeats: a load written straight in skips counting them.
    warehouse = open_warehouse(warehouse_url)
    with warehouse.transaction() as tx, tx.stage("batches") as stage:
        for ids in chunks:
            stage.write_arrow(pa.table({"id": pa.array(ids, pa.string())}))
        assert stage.keys_ascending is ascending
