"""The one metadata builder: column schema from the DDL; row count, a preview and per-run
counts after a load or a build."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema

from connector.pipelines.sync import SyncResult
from connector.warehouse.engine import Warehouse
from connector.warehouse.tables import table

# Internal or bulky columns that make a preview harder to read.
_NOT_PREVIEWED = {"raw", "row_hash"}


def column_schema(name: str) -> TableSchema:
    """The table's columns with types and descriptions, for the UI."""
    return TableSchema(
        columns=[
            TableColumn(c.name, c.type, description=c.description) for c in table(name).columns
        ]
    )


def definition_metadata(name: str) -> dict[str, Any]:
    """Static metadata of a table asset."""
    return {"dagster/column_schema": column_schema(name), "dagster/table_name": name}


def table_metadata(
    warehouse: Warehouse,
    name: str,
    *,
    preview_columns: Sequence[str] = (),
    preview_order: str = "",
) -> dict[str, Any]:
    """The table's row count, a preview of its top rows by ``preview_order`` and the warehouse.

    Default preview: every column but the bulky ones, latest ``synced_at`` first."""
    columns = list(preview_columns) or [
        c.name for c in table(name).columns if c.name not in _NOT_PREVIEWED
    ]
    order_column = preview_order or ("synced_at" if "synced_at" in columns else columns[0])
    with warehouse.transaction() as tx:
        rows = tx.run(
            "metadata/select_preview",
            target=name,
            columns=", ".join(columns),
            order_column=order_column,
        ).all()
        total = tx.run("metadata/count_table_rows", target=name).scalar()
    return {
        "dagster/row_count": total,
        "preview": MetadataValue.md(
            markdown_table(
                [{c: _readable(v) for c, v in zip(columns, row, strict=True)} for row in rows],
                columns,
            )
        ),
        "warehouse": warehouse.url,
    }


def _readable(value: Any) -> Any:
    # Rates and percentages to four significant digits, not seventeen.
    return f"{value:.4g}" if isinstance(value, float) else value


def run_metadata(warehouse: Warehouse, name: str, result: SyncResult | None) -> dict[str, Any]:
    """Counts of this run, the table's row count and a preview of the latest rows."""
    metadata = table_metadata(warehouse, name)
    if result is not None:
        metadata["sync_mode"] = result.mode
        counts = result.counts.get(name)
        if counts is not None:
            metadata.update(
                rows_inserted=counts.inserted,
                rows_updated=counts.updated,
                rows_deleted=counts.deleted,
                rows_unchanged=max(0, counts.unchanged),
            )
        if result.read is not None:
            metadata["read"] = MetadataValue.json(
                {
                    "mode": result.read.mode,
                    "rows": result.read.rows,
                    "duplicates_dropped": result.read.duplicates_dropped,
                    "gaps_repaired": result.read.gaps_repaired,
                }
            )
        if result.notes:
            metadata["notes"] = MetadataValue.md("\n".join(f"- {n}" for n in result.notes))
    return metadata


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A small markdown table (cells cut to 60 characters) for the Dagster UI."""
    columns = columns or (list(rows[0]) if rows else [])
    if not columns:
        return "_(empty)_"

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")[:60]

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
