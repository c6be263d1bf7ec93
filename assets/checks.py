"""The one table-check framework: asset checks on every synced and reporting table,
evaluated in the same step as the load or build they judge.

Declared next to the tables as data (``TableChecks``): unique key, required columns,
accepted values, the row count against the API's own count (``limit=0``) taken at sync time,
and table-specific rules as ``CountCheck``s (a statement in ``sql/checks`` that counts
offending rows). Freshness is a policy on each asset (see ``assets.ingest``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
)

from assets.metadata import markdown_table
from connector.pipelines.sync import SyncResult
from connector.warehouse.engine import Transaction, Warehouse

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
class CountCheck:
    """A check that passes when a statement in ``sql/checks`` counts no offending rows;
    with ``columns``, the statement runs once per column."""

    name: str
    description: str
    statement: str
    columns: tuple[str, ...] = ()
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR

    def spec(self, asset_name: str) -> AssetCheckSpec:
        """The check's spec on one asset."""
        return AssetCheckSpec(self.name, asset=asset_name, description=self.description)

    def evaluate(self, tx: Transaction, asset_name: str) -> AssetCheckResult:
        """Count the offending rows of the table as it is now."""
        if self.columns:
            counts = {
                column: tx.run(self.statement, target=asset_name, column=column).scalar()
                for column in self.columns
            }
        else:
            counts = {"rows": tx.run(self.statement, target=asset_name).scalar()}
        return AssetCheckResult(
            asset_key=asset_name,
            check_name=self.name,
            passed=not any(counts.values()),
            severity=self.severity,
            metadata={f"offending_{k}": int(v) for k, v in counts.items()},
        )


def non_negative_check(*columns: str) -> CountCheck:
    """No value of these count columns is negative."""
    return CountCheck(
        "counts_not_negative",
        f"No count is negative ({len(columns)} count columns)",
        "checks/count_negative_values",
        columns,
    )


def rates_check(*columns: str) -> CountCheck:
    """Every value of these rate columns lies between 0 and 1."""
    return CountCheck(
        "rates_between_0_and_1",
        f"{', '.join(columns)} lie between 0 and 1",
        "checks/count_values_outside_unit_interval",
        columns,
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
    counts: tuple[CountCheck, ...] = ()

    def specs(self) -> list[AssetCheckSpec]:
        """Every check's spec, in the order ``evaluate`` reports them."""
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
        return specs + [check.spec(self.table) for check in self.counts]

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
            counted = [check.evaluate(tx, self.table) for check in self.counts]
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
        return checks + counted


TABLE_CHECKS = {
    "contacts": TableChecks(
        "contacts", ("id",), ("id", "email", "status"), {"status": CONTACT_STATUSES}
    ),
    "contact_opt_outs": TableChecks(
        "contact_opt_outs",
        ("contact_id", "category_id"),
        ("contact_id", "category_id"),
        matches_api_count=False,
        counts=(
            CountCheck(
                "no_orphans",
                "Every opt-out belongs to a contact in contacts",
                "checks/count_orphan_opt_outs",
            ),
        ),
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

# Checks that judge one sync's result rather than the table alone.
EXTRA_SPECS = {
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
    return [
        spec
        for name in tables
        for spec in (
            *TABLE_CHECKS[name].specs(),
            *EXTRA_SPECS.get(name, []),
            *([emptied_spec(name)] if name in EMPTIED_WATCHED else []),
        )
    ]


# Collections whose whole content one sync reads: when one that had rows comes back empty, a
# setting probably points at the wrong account or site (the API answers 200 with no rows).
EMPTIED_WATCHED = ("contacts", "categories", "batches", "evinotice_batches")
EMPTIED = "api_still_returns_rows"


def emptied_spec(name: str) -> AssetCheckSpec:
    """The warning spec for a collection that had rows and now returns none."""
    return AssetCheckSpec(
        EMPTIED,
        asset=name,
        description="The API still returns rows for a collection that had rows (a warning: a "
        "wrong token scope or site id returns none, silently)",
    )


def emptied_check(name: str, rows_before: int, result: SyncResult) -> AssetCheckResult:
    """WARN when the table had rows before this sync and the API now returned none."""
    emptied = rows_before > 0 and result.api_count == 0
    return AssetCheckResult(
        asset_key=name,
        check_name=EMPTIED,
        passed=not emptied,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"the API returned no {name} although the table had {rows_before} rows; check "
            "the token's account and EVINOTICE_SITE_ID"
            if emptied
            else None
        ),
        metadata={"rows_before": rows_before, "api_count": result.api_count or 0},
    )


def check_keys(tables: Iterable[str]) -> set[AssetCheckKey]:
    """The keys of every check of these tables."""
    return {spec.key for spec in specs_for(tables)}


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


class Guard(Protocol):
    """A guard's verdict on a plan (push-back plans and campaign plans alike)."""

    name: str
    figure: Any
    limit: Any
    passed: bool
    overridden: bool
    allows_apply: bool
    message: str


def guards_table(guards: Iterable[Guard]) -> MetadataValue:
    """The guards of a plan as a table for the UI: figure, limit, and ok / overridden / STOP."""
    rows = [
        {
            "guard": g.name,
            "figure": g.figure,
            "limit": g.limit,
            "result": "overridden" if g.overridden else ("ok" if g.passed else "STOP"),
        }
        for g in guards
    ]
    return MetadataValue.md(markdown_table(rows))


def guard_checks(
    guards: Iterable[Guard], override_reason: str, asset_key: str | None = None
) -> Iterator[AssetCheckResult]:
    """One blocking check result per guard; an overridden one carries the recorded reason."""
    for guard in guards:
        yield AssetCheckResult(
            asset_key=asset_key,
            check_name=guard.name,
            passed=guard.allows_apply,
            severity=AssetCheckSeverity.ERROR,
            description=guard.message,
            metadata={
                "figure": guard.figure,
                "limit": guard.limit,
                "overridden": guard.overridden,
                **({"override_reason": override_reason} if guard.overridden else {}),
            },
        )
