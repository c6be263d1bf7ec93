"""Reporting assets: the tables analysts query, built from the synced tables by the SQL models
in ``sql/reporting``, with column descriptions, row counts, a preview, charts and checks.

A reporting table is defined in one place, ``sql/schema/create_<table>_table.sql``: its
columns, types and a comment per column (parsed by ``connector.warehouse.tables`` like the synced
tables', and shown in the Dagster UI as the column schema). Its model
``sql/reporting/<table>.sql`` is a plain ``select`` whose output columns have the same names.
A build deletes the rows and inserts the model's in one transaction, so readers see the
previous rows until the new ones are committed, and a failed build leaves them in place.

Charts are PNG files under ``NOTIFSYNC_CHART_DIR`` (default ``data/charts``), one per table
that has one, linked and embedded in the materialisation's metadata.
"""

import base64
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.checks import CountCheck, TableChecks, non_negative_check, rates_check
from assets.metadata import definition_metadata, table_metadata
from assets.resources import WarehouseResource
from connector.pipelines.reconcile import ACTIONS
from connector.warehouse.engine import Transaction, Warehouse
from connector.warehouse.sql_files import read_sql, statements
from connector.warehouse.tables import table

CHART_DIR = "NOTIFSYNC_CHART_DIR"
DEFAULT_CHART_DIR = "data/charts"
GROUP = "reporting"

HEALTH_LABELS = ("deleted", "blocked", "at_risk", "healthy")
RUN_STATUSES = ("applied", "dry_run", "stopped_by_guard", "not_planned", "unfinished")
DELIVERABILITY_METHODS = ("week_difference", "month_difference", "today_window")
PROVIDERS = ("marketplace", "evinotice")

log = logging.getLogger(__name__)


# --- building ------------------------------------------------------------------------------


def build_report(
    warehouse: Warehouse, name: str, *, as_of: datetime | None = None, attempts: int = 3
) -> int:
    """Rebuild one reporting table from its model in one transaction; returns its row count.

    ``as_of`` (default now) is the build time the models that look back from it use."""
    as_of = as_of or datetime.now(UTC)
    # A column added to the DDL after the table was first built: the warehouse adds it, the
    # model fills it.
    warehouse.ensure_tables([name])
    for attempt in range(1, attempts + 1):
        try:
            with warehouse.transaction() as tx:
                return rebuild(tx, name, as_of)
        except sa.exc.IntegrityError:
            # Two builds of one table at once (two syncs finishing together): the later one
            # deleted only the rows it could see, so its insert collides with the rows the
            # other build just committed. A new attempt sees those rows and replaces them.
            if attempt == attempts:
                raise
            log.info("%s: another build committed first; rebuilding (attempt %d)", name, attempt)
    raise AssertionError("unreachable")


def rebuild(tx: Transaction, name: str, as_of: datetime) -> int:
    """The statements of one build, inside the caller's transaction; returns the row count."""
    columns = ", ".join(table(name).column_names)
    (model,) = statements(f"reporting/{name}")
    insert = read_sql("load/insert_model_rows").format(target=name, columns=columns, model=model)
    params = {"as_of": as_of} if ":as_of" in model else {}
    tx.run("load/delete_all_rows", target=name)
    tx.connection.execute(sa.text(insert), params)
    return tx.run("metadata/count_table_rows", target=name).scalar()


# --- charts --------------------------------------------------------------------------------


def chart_dir() -> Path:
    """Where chart PNGs go: ``NOTIFSYNC_CHART_DIR``, else ``data/charts``."""
    return Path(os.environ.get(CHART_DIR) or DEFAULT_CHART_DIR)


def _figure(height: float) -> Any:
    # The object API with the Agg canvas: no pyplot state, no display needed, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, format="png")
    partial.replace(path)  # a reader never opens a half-written image
    return path


OUTCOMES = (
    ("sent", "Sent", "#2e7d32"),
    ("bounced", "Bounced", "#ef6c00"),
    ("complained", "Complained", "#c2185b"),
    ("discarded", "Discarded", "#9e9e9e"),
    ("failed", "Failed", "#c62828"),
)
PENDING = ("pending", "Pending", "#90caf9")
CHART_DAYS = 60
CHART_CATEGORIES = 12
CHART_BATCHES = 15


def deliverability_chart(warehouse: Warehouse, directory: Path) -> Path:
    """One panel per category: each day's messages stacked by outcome, rates in the title."""
    with warehouse.transaction() as tx:
        rows = tx.run("charts/select_deliverability_per_day").all()
    # The statistics' figures where a snapshot covers the day, else the synced messages.
    days: dict[str, dict[date, list[int]]] = {}
    for row in rows:
        figures = row[3:8] if row.total is not None else row[8:13]
        if any(value is not None for value in figures):
            counts = [int(value or 0) for value in figures]
            days.setdefault(row.category, {})[row.day] = counts
    if days:
        last = max(day for per_day in days.values() for day in per_day)
        first = last - timedelta(days=CHART_DAYS - 1)
        days = {
            category: {d: c for d, c in per_day.items() if d >= first}
            for category, per_day in days.items()
        }
    busiest = sorted(
        (c for c in days if sum(map(sum, days[c].values()))),
        key=lambda c: -sum(map(sum, days[c].values())),
    )[:CHART_CATEGORIES]
    columns = 2
    panels = max(1, len(busiest))
    grid = (panels + columns - 1) // columns
    figure = _figure(max(3.0, 2.2 * grid + 1.0))
    axes = figure.subplots(grid, columns, sharex=True, squeeze=False).ravel()
    for ax, category in zip(axes, sorted(busiest), strict=False):
        per_day = sorted(days[category].items())
        x = [d for d, _ in per_day]
        bottom = [0] * len(per_day)
        for index, (_, label, color) in enumerate(OUTCOMES):
            values = [counts[index] for _, counts in per_day]
            ax.bar(x, values, bottom=bottom, color=color, label=label, width=0.8)
            bottom = [a + b for a, b in zip(bottom, values, strict=True)]
        total = sum(bottom)
        bounced = sum(counts[1] for _, counts in per_day)
        complained = sum(counts[2] for _, counts in per_day)
        ax.set_title(
            f"{category}: {total} messages, bounce {bounced / total:.1%}, "
            f"complaints {complained / total:.1%}",
            loc="left",
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[len(busiest) :]:
        ax.set_axis_off()
    if busiest:
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=8)
    else:
        axes[0].text(0.5, 0.5, "No deliveries yet", ha="center", va="center", fontsize=12)
    figure.suptitle(
        f"Deliveries per category and day, by outcome (last {CHART_DAYS} days; statistics "
        "snapshots, synced messages on days without one)",
        fontsize=10,
    )
    for ax in axes:
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    return _save(figure, directory / "category_deliverability_daily.png")


def batch_outcomes_chart(warehouse: Warehouse, directory: Path) -> Path:
    """The most recent batches of each provider: the share of each outcome, total alongside."""
    outcomes = [*OUTCOMES, PENDING]
    with warehouse.transaction() as tx:
        rows = tx.run("charts/select_batch_outcomes").all()
    providers = (("marketplace", "Marketplace batches"), ("evinotice", "EviNotice batches"))
    figure = _figure(0.32 * CHART_BATCHES + 2.0)
    axes = figure.subplots(1, 2, squeeze=False).ravel()
    for ax, (provider, title) in zip(axes, providers, strict=True):
        # Newest at the top.
        batches = [r for r in rows if r.provider == provider][:CHART_BATCHES][::-1]
        left = [0.0] * len(batches)
        for index, (_, label, color) in enumerate(outcomes):
            shares = [
                float(b[4 + index] or 0) / b.total_count if b.total_count else 0.0 for b in batches
            ]
            ax.barh(range(len(batches)), shares, left=left, color=color, label=label)
            left = [a + b for a, b in zip(left, shares, strict=True)]
        ax.set_yticks(
            range(len(batches)), [(b.name or b.batch_id)[:34] for b in batches], fontsize=8
        )
        for position, batch in enumerate(batches):
            ax.text(1.01, position, f"{batch.total_count or 0}", va="center", fontsize=7)
        ax.set_xlim(0, 1.12)
        ax.xaxis.set_major_formatter(_percent_formatter())
        ax.set_title(f"{title} (latest {len(batches)}; total at right)", loc="left", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        if not batches:
            ax.text(0.5, 0.5, "No batches yet", ha="center", va="center", transform=ax.transAxes)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=6, fontsize=8)
    figure.suptitle("Batch outcomes: share of messages / recipients by outcome", fontsize=10)
    return _save(figure, directory / "batch_statistics.png")


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0)


def chart_metadata(path: Path, title: str) -> dict[str, Any]:
    """The chart as a file path and as an image embedded in markdown (shows in the UI)."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return {
        "chart_path": MetadataValue.path(str(path.resolve())),
        "chart": MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})"),
    }


# --- the reports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """One reporting table: what it reads, its grain and checks, how it is previewed and drawn."""

    name: str
    deps: tuple[str, ...]  # exactly the tables its model reads
    key_checks: TableChecks
    count_checks: tuple[CountCheck, ...] = ()
    preview_order: str = ""
    preview_columns: tuple[str, ...] = ()  # default: every column
    chart: Callable[[Warehouse, Path], Path] | None = None
    chart_title: str = ""

    @property
    def checks(self) -> TableChecks:
        """Every check of the table: its key, columns and values, and its counted rules."""
        return replace(self.key_checks, counts=self.count_checks)


def _checks(
    name: str, key: tuple[str, ...], required: tuple[str, ...], **accepted: Any
) -> TableChecks:
    return TableChecks(name, key, required, dict(accepted), matches_api_count=False)


REPORTS = (
    Report(
        "category_deliverability_daily",
        deps=("category_statistics_snapshots", "categories", "messages"),
        key_checks=_checks(
            "category_deliverability_daily",
            ("day", "category_id"),
            ("day", "category_id"),
            method=DELIVERABILITY_METHODS,
        ),
        count_checks=(
            rates_check("bounce_rate", "complaint_rate"),
            CountCheck(
                "agrees_with_messages",
                "The statistics' total equals the synced messages of the day (a warning: "
                "late status changes and unsynced days explain some differences)",
                "checks/count_days_disagreeing_with_messages",
                severity=AssetCheckSeverity.WARN,
            ),
        ),
        preview_order="day",
        chart=deliverability_chart,
        chart_title="Deliverability per category over time",
    ),
    Report(
        "batch_statistics",
        deps=("batches", "messages", "evinotice_batches"),
        key_checks=_checks(
            "batch_statistics",
            ("provider", "batch_id"),
            ("provider", "batch_id", "total_count"),
            provider=PROVIDERS,
        ),
        count_checks=(
            rates_check("sent_rate", "failure_rate", "bounce_rate", "complaint_rate"),
            CountCheck(
                "counts_add_up",
                "sent + failed + bounced + complained + discarded + pending = total, none negative",
                "checks/count_batch_counts_not_adding_up",
            ),
        ),
        preview_order="created_at",
        chart=batch_outcomes_chart,
        chart_title="Batch outcomes",
    ),
    Report(
        "contact_health",
        deps=("contacts", "messages", "crm_contacts"),
        key_checks=_checks(
            "contact_health",
            ("contact_id",),
            ("contact_id", "health", "as_of"),
            health=HEALTH_LABELS,
        ),
        preview_order="messages_30d_total",
    ),
    Report(
        "opt_outs_by_category",
        deps=("categories", "contact_opt_outs", "contacts"),
        key_checks=_checks(
            "opt_outs_by_category", ("category_id",), ("category_id", "opted_out_contacts")
        ),
        count_checks=(rates_check("opt_out_share"),),
        preview_order="opted_out_contacts",
    ),
    Report(
        "reconciliation_history",
        deps=("reconciliation_runs", "pushback_results", "reconciliation_plan"),
        key_checks=_checks(
            "reconciliation_history",
            ("run_id",),
            ("run_id", "status", "started_at"),
            status=RUN_STATUSES,
        ),
        count_checks=(
            non_negative_check(
                "crm_rows",
                "rejected_rows",
                "conflicts",
                "missing_from_crm",
                "planned_total",
                *(
                    f"{outcome}_{action}"
                    for outcome in ("planned", "done", "rejected", "retry", "skipped")
                    for action in ACTIONS
                ),
                "applied_done",
                "applied_rejected",
                "applied_retry",
                "skipped",
            ),
        ),
        preview_order="started_at",
        # A row has 40 columns; the preview keeps what a person scans a run for.
        preview_columns=(
            "started_at",
            "status",
            "export_files",
            "crm_rows",
            "rejected_rows",
            "conflicts",
            "planned_total",
            "applied_done",
            "applied_rejected",
            "applied_retry",
            "skipped",
            "guards_tripped",
            "guards_overridden",
            "override_reason",
            "run_id",
        ),
    ),
)
REPORT_NAMES = tuple(report.name for report in REPORTS)


def evaluate_checks(warehouse: Warehouse, report: Report) -> list[AssetCheckResult]:
    """Every check of a report against the table as it is now."""
    return report.checks.evaluate(warehouse, None)


# Rebuilt once after any materialisation of an input, whoever launched it (a job, the UI, a
# backfill, a schedule): unlike ``eager()``, an input never materialised (no CRM export read
# yet) does not hold a report back, since every input table exists, empty, from the start.
# Waiting while an input is in progress makes a multi-run backfill one rebuild, at its end.
FOLLOWS_ITS_INPUTS = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after_any_input_updates")


def _report_asset(report: Report) -> AssetsDefinition:
    definition = table(report.name)

    @asset(
        name=report.name,
        group_name=GROUP,
        deps=list(report.deps),
        description=definition.description,
        metadata=definition_metadata(report.name),
        check_specs=report.checks.specs(),
        kinds={"sql"},
        automation_condition=FOLLOWS_ITS_INPUTS,
    )
    def build(
        context: AssetExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        store = warehouse.warehouse()
        rows = build_report(store, report.name)
        context.log.info("%s: %d rows", report.name, rows)
        metadata = table_metadata(
            store,
            report.name,
            preview_columns=report.preview_columns,
            preview_order=report.preview_order,
        )
        if report.chart is not None:
            path = report.chart(store, chart_dir())
            metadata.update(chart_metadata(path, report.chart_title))
        yield MaterializeResult(metadata=metadata)
        yield from evaluate_checks(store, report)

    return build


REPORTING = [_report_asset(report) for report in REPORTS]
