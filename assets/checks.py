"""Asset checks on every synced table, evaluated in the same step as the load they judge.

Declared next to the tables as data (``TableChecks``): unique key, required columns,
accepted values, the row count against the API's own count (``limit=0``) taken at sync time,
and table-specific rules. Freshness is a policy on each asset (see ``assets.ingest``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
)

from connector.pipelines.sync import SyncResult
from connector.warehouse.engine import Warehouse

MESSAGE_STATUSES = ("Queued", "Sent", "Failed", "Bounced", "Complained", "Discarded")
CONTACT_STATUSES = ("Active", "Blocked")
# The states the vendor's pages use. The service may add states: an unknown one is stored as it
# comes, and its check only warns (``unaccepted_severity``), never fails the sync.
EVINOTICE_STATES = (
    "Draft",
    "Scheduled",
    "Submitted",
    "Processing",
    "Processed",
    "Sent",
    "Completed",
)


@dataclass(frozen=True)
class TableChecks:
    """The checks one table gets."""

    table: str
    key: tuple[str, ...]
    required: tuple[str, ...]
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)
    matches_api_count: bool = True
    unaccepted_severity: AssetCheckSeverity = AssetCheckSeverity.ERROR

    def specs(self) -> list[AssetCheckSpec]:
        specs = [
            AssetCheckSpec("unique_key", asset=self.table, description=f"{self.key} is unique"),
            AssetCheckSpec(
                "required_columns",
                asset=self.table,
                description=f"{', '.join(self.required)} are never null",
            ),
        ]
        if self.accepted:
            specs.append(
                AssetCheckSpec(
                    "accepted_values",
                    asset=self.table,
                    description="; ".join(f"{c} in {v}" for c, v in self.accepted.items()),
                )
            )
        if self.matches_api_count:
            specs.append(
                AssetCheckSpec(
                    "row_count_matches_api",
                    asset=self.table,
                    description="Rows in the table equal the API's own count at sync time",
                )
            )
        return specs

    def evaluate(self, warehouse: Warehouse, result: SyncResult | None) -> list[AssetCheckResult]:
        """Run every check of this table against the warehouse as it is now."""
        with warehouse.transaction() as tx:
            duplicates = tx.run(
                "checks/count_duplicate_keys", target=self.table, columns=", ".join(self.key)
            ).scalar()
            nulls = {
                column: tx.run(
                    "checks/count_null_values", target=self.table, column=column
                ).scalar()
                for column in self.required
            }
            unaccepted = {
                column: tx.run(
                    "checks/count_unaccepted_values",
                    {"accepted": list(values)},
                    target=self.table,
                    column=column,
                ).scalar()
                for column, values in self.accepted.items()
            }
        checks = [
            AssetCheckResult(
                asset_key=self.table,
                check_name="unique_key",
                passed=duplicates == 0,
                metadata={"duplicated_keys": duplicates},
            ),
            AssetCheckResult(
                asset_key=self.table,
                check_name="required_columns",
                passed=not any(nulls.values()),
                metadata={f"nulls_in_{c}": n for c, n in nulls.items()},
            ),
        ]
        if self.accepted:
            checks.append(
                AssetCheckResult(
                    asset_key=self.table,
                    check_name="accepted_values",
                    passed=not any(unaccepted.values()),
                    severity=self.unaccepted_severity,
                    metadata={f"unaccepted_{c}": n for c, n in unaccepted.items()},
                )
            )
        if self.matches_api_count:
            api = result.api_count if result else None
            rows = result.table_count if result else None
            checks.append(
                AssetCheckResult(
                    asset_key=self.table,
                    check_name="row_count_matches_api",
                    passed=api is not None and api == rows,
                    severity=AssetCheckSeverity.WARN,
                    metadata={"api_count": api if api is not None else -1, "table_rows": rows or 0},
                )
            )
        return checks


TABLE_CHECKS = {
    "contacts": TableChecks(
        "contacts", ("id",), ("id", "email", "status"), {"status": CONTACT_STATUSES}
    ),
    "contact_opt_outs": TableChecks(
        "contact_opt_outs",
        ("contact_id", "category_id"),
        ("contact_id", "category_id"),
        matches_api_count=False,
    ),
    "categories": TableChecks("categories", ("id",), ("id", "name", "status")),
    "category_statistics_snapshots": TableChecks(
        "category_statistics_snapshots",
        ("snapshot_at", "category_id", "statistics_window"),
        ("snapshot_at", "category_id", "statistics_window", "total"),
        {"statistics_window": ("today", "week", "month")},
        matches_api_count=False,
    ),
    "batches": TableChecks("batches", ("id",), ("id", "category_id", "created_at")),
    "messages": TableChecks(
        "messages",
        ("id",),
        ("id", "batch_id", "contact_id", "status", "created_at"),
        {"status": MESSAGE_STATUSES},
    ),
    "evinotice_batches": TableChecks(
        "evinotice_batches",
        ("id",),
        ("id", "state"),
        {"state": EVINOTICE_STATES},
        unaccepted_severity=AssetCheckSeverity.WARN,
    ),
}

EXTRA_SPECS = {
    "contact_opt_outs": [
        AssetCheckSpec(
            "no_orphans",
            asset="contact_opt_outs",
            description="Every opt-out belongs to a contact in contacts",
        )
    ],
    "category_statistics_snapshots": [
        AssetCheckSpec(
            "total_is_sum_of_parts",
            asset="category_statistics_snapshots",
            description="total = sent + bounced + complained + discarded + failed",
        )
    ],
}


def specs_for(tables: Iterable[str]) -> list[AssetCheckSpec]:
    """Check specs of several tables (for a multi-asset)."""
    return [s for t in tables for s in (*TABLE_CHECKS[t].specs(), *EXTRA_SPECS.get(t, []))]


def orphan_opt_outs(warehouse: Warehouse) -> AssetCheckResult:
    """Opt-outs must belong to a known contact."""
    with warehouse.transaction() as tx:
        orphans = tx.run("checks/count_orphan_opt_outs").scalar()
    return AssetCheckResult(
        asset_key="contact_opt_outs",
        check_name="no_orphans",
        passed=orphans == 0,
        metadata={"orphans": orphans},
    )


def statistics_add_up(warehouse: Warehouse, result: SyncResult) -> AssetCheckResult:
    """The snapshot just taken: every total equals the sum of its parts."""
    with warehouse.transaction() as tx:
        mismatches = tx.run(
            "checks/count_statistics_mismatches", {"snapshot_at": result.synced_at}
        ).scalar()
    snapshot_rows = result.counts["category_statistics_snapshots"].inserted
    return AssetCheckResult(
        asset_key="category_statistics_snapshots",
        check_name="total_is_sum_of_parts",
        passed=mismatches == 0 and snapshot_rows > 0,
        metadata={"mismatched_rows": mismatches, "snapshot_rows": snapshot_rows},
    )
