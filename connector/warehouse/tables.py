"""The warehouse tables the sync writes: their columns, types and descriptions, read from the
``create_<table>_table.sql`` files so the DDL is the one place a column is defined."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from connector.warehouse.sql_files import read_sql

_COLUMN = re.compile(
    r"^\s*(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>[a-z ]+?)(?:\s+not null)?(?:\s+primary key)?"
    r"\s*,?\s*(?:--\s*(?P<description>.*))?$"
)
_TABLE_COMMENT = re.compile(r"^--\s?(.*)$")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as written in the DDL: text, bigint, boolean, timestamptz, json, double precision
    description: str


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: str | None  # single-column primary key, if any

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@functools.cache
def table(name: str) -> Table:
    """The definition of one table, parsed from its DDL file."""
    text = read_sql(f"schema/create_{name}_table")
    description: list[str] = []
    columns: list[Column] = []
    key = None
    inside = False
    for line in text.splitlines():
        if not inside:
            comment = _TABLE_COMMENT.match(line)
            if comment:
                description.append(comment.group(1).strip())
            inside = line.lower().startswith("create table")
            continue
        stripped = line.strip()
        if stripped.startswith(")") or stripped.startswith("primary key"):
            continue
        match = _COLUMN.match(line)
        if match is None:
            raise ValueError(f"cannot read column definition in {name}: {line!r}")
        columns.append(
            Column(match["name"], match["type"].strip(), (match["description"] or "").strip())
        )
        if "primary key" in line.split("--")[0]:
            key = match["name"]
    return Table(name, " ".join(description), tuple(columns), key)


TABLE_NAMES = (
    "contacts",
    "contact_opt_outs",
    "categories",
    "category_statistics_snapshots",
    "batches",
    "messages",
    "evinotice_batches",
    "sync_state",
)
RECONCILE_TABLE_NAMES = (
    "crm_contacts",
    "crm_rejected_rows",
    "crm_conflicts",
    "reconciliation_plan",
    "platform_contacts_missing_from_crm",
    "pushback_results",
    "reconciliation_runs",
)
# Per-recipient evidence of certified mail (connector.pipelines.evidence_sync).
EVIDENCE_TABLE_NAMES = ("evinotice_evidence",)
CAMPAIGN_TABLE_NAMES = (
    "campaigns",
    "campaign_plan",
    "campaign_results",
    "campaign_batch_recipients",
    "campaign_plan_variables",
)
ALL_TABLE_NAMES = TABLE_NAMES + RECONCILE_TABLE_NAMES + EVIDENCE_TABLE_NAMES + CAMPAIGN_TABLE_NAMES
