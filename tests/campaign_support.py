"""Helpers for the campaign tests: small hand-made warehouses and campaign files."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conftest import fresh_postgres_database

from connector.campaigns import parse_campaign
from connector.campaigns.model import CampaignBase
from connector.warehouse.engine import Warehouse

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
CATEGORY = "NTC-0000-0001"


def open_warehouse(kind: str, tmp_path: Path) -> Iterator[Warehouse]:
    """A fresh DuckDB file or PostgreSQL database with every table."""
    if kind == "duckdb":
        warehouse = Warehouse(f"duckdb:///{tmp_path / 'campaigns.duckdb'}")
        warehouse.ensure_tables()
        yield warehouse
        warehouse.dispose()
        return
    with fresh_postgres_database() as url:
        warehouse = Warehouse(url)
        warehouse.ensure_tables()
        yield warehouse
        warehouse.dispose()


def contact(identifier: str, email: str, status: str = "Active", **extra: Any) -> dict[str, Any]:
    return {
        "id": identifier,
        "email": email,
        "email_key": email.strip().casefold(),
        "name": identifier,
        "status": status,
        **extra,
    }


def seed(
    warehouse: Warehouse,
    *,
    contacts: Sequence[dict[str, Any]] = (),
    opt_outs: Sequence[tuple[str, str]] = (),
    crm: Sequence[dict[str, Any]] = (),
    messages: Sequence[dict[str, Any]] = (),
    categories: Sequence[tuple[str, str]] = ((CATEGORY, "Published"),),
    synced_at: datetime | None = NOW,
) -> None:
    """Write hand-made rows through the warehouse's staging, as the sync would."""
    with warehouse.transaction() as tx:
        for name, rows in (
            ("contacts", list(contacts)),
            ("contact_opt_outs", [{"contact_id": c, "category_id": k} for c, k in opt_outs]),
            (
                "crm_contacts",
                [
                    {"run_id": "r", "source_file": "crm.csv", "line": n + 2, **row}
                    for n, row in enumerate(crm)
                ],
            ),
            ("messages", list(messages)),
            ("categories", [{"id": i, "name": i, "status": s} for i, s in categories]),
        ):
            with tx.stage(name) as stage:
                stage.write([_texts(row) for row in rows])
                tx.append(stage)
        if synced_at is not None:
            tx.set_state("contacts.synced_at", synced_at.isoformat(), synced_at)


def _texts(row: dict[str, Any]) -> dict[str, Any]:
    # Staging takes timestamps as ISO text, as the API gives them.
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def make_campaign(**fields: Any) -> CampaignBase:
    data = {
        "name": "spring",
        "audience": "select contact_id from audience_table",
        "category": CATEGORY,
        "subject": "Spring news",
        "body": "Hello!",
        **fields,
    }
    return parse_campaign(data, "test.yaml")


def make_audience(warehouse: Warehouse, rows: Sequence[tuple[Any, ...]], columns: str) -> None:
    """A user table the audience selects from (the user's own SQL, so plain text here)."""
    names = [c.strip() for c in columns.split(",")]
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql(
            f"create table audience_table ({', '.join(n + ' text' for n in names)})"
        )
        for row in rows:
            values = ", ".join("null" if v is None else "'" + v + "'" for v in row)
            tx.connection.exec_driver_sql(f"insert into audience_table values ({values})")
