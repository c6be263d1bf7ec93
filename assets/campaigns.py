"""Campaign assets: campaign file → plan (blocking guard checks, a readable preview) → send
exactly once → refresh of batches and messages → the ``campaign_performance`` report.

Group ``campaigns``. The ``campaign_sensor`` watches ``CAMPAIGN_DIR`` (default
``data/campaigns``): a new or changed file gets a dry-run plan at once (its preview is in the
UI before anything is sent), then one ``send_campaign`` run when its ``send_at`` has come,
keyed by the file's content so the same file never sends twice. ``cancel_campaign`` stops a
version that has not gone out.
"""

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import yaml
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetObservation,
    AssetSelection,
    AssetSpec,
    Config,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    SensorEvaluationContext,
    asset,
    define_asset_job,
    job,
    multi_asset,
    op,
    sensor,
)
from pydantic import Field

from assets.checks import TableChecks, guard_checks, guards_table, non_negative_check, rates_check
from assets.metadata import definition_metadata, markdown_table, run_metadata, table_metadata
from assets.reporting import FOLLOWS_ITS_INPUTS, Report, build_report, evaluate_checks
from assets.resources import EviNoticeResource, MarketplaceResource, WarehouseResource
from assets.runner import run_async
from connector.campaigns import CampaignError, load_campaign, parse_campaign
from connector.campaigns import plan as campaign_plan
from connector.campaigns.model import CampaignBase
from connector.errors import ConnectorError
from connector.pipelines import campaigns as sending
from connector.pipelines import certified_campaigns as certified
from connector.warehouse.audience import AudienceQueryError
from connector.warehouse.engine import Warehouse
from connector.warehouse.tables import table

CAMPAIGN_DIR = "CAMPAIGN_DIR"
DEFAULT_CAMPAIGN_DIR = "data/campaigns"
CAMPAIGN_SUFFIXES = (".yaml", ".yml")
GROUP = "campaigns"


def campaign_dir() -> Path:
    """Where campaign files are dropped (``CAMPAIGN_DIR``)."""
    return Path(os.environ.get(CAMPAIGN_DIR) or DEFAULT_CAMPAIGN_DIR)


def campaign_files(directory: Path) -> list[Path]:
    """Campaign files in the folder, in name order (hidden files skipped)."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in CAMPAIGN_SUFFIXES and not p.name.startswith(".")
    )


class CampaignPlanConfig(Config):
    """Which campaign to plan, and the guard overrides."""

    file: str = Field(default="", description="Campaign YAML file.")
    definition: str = Field(
        default="", description="Or the campaign itself, as YAML text (instead of a file)."
    )
    override_guards: list[str] = Field(
        default=[], description="Guards to let pass anyway (recorded with the reason)."
    )
    override_reason: str = Field(default="", description="Why the guards are overridden.")
    dry_run: bool = Field(default=False, description="Plan only: nothing will be sent.")


def read_campaign(config: CampaignPlanConfig) -> tuple[CampaignBase, str]:
    """The campaign of the run config, validated; errors name the file and the field."""
    if config.file and config.definition:
        raise Failure("give the campaign as file or as definition, not both")
    try:
        if config.file:
            return load_campaign(config.file), config.file
        if config.definition:
            try:
                data = yaml.safe_load(config.definition)
            except yaml.YAMLError as exc:
                raise CampaignError(f"run config definition: not valid YAML ({exc})") from None
            return parse_campaign(data, "run config definition"), "run config"
    except CampaignError as exc:
        raise Failure(description=str(exc)) from None
    raise Failure("no campaign: set file (a campaign YAML) or definition in the run config")


GUARD_CHECKS = [
    AssetCheckSpec(name, asset="campaign_plan", blocking=True, description=description)
    for name, description in (
        ("max_recipients", "No more recipients than the campaign's limit"),
        ("max_excluded_share", "Exclusions stay under a share of the audience"),
        ("category_published", "The category is Published"),
        ("max_snapshot_age", "The plan is made from a recent contacts sync"),
        ("send_at_not_past", "send_at is not long past"),
    )
]


NO_CAMPAIGN = "no campaign to plan"


@multi_asset(
    name="campaign_plan",
    # Skippable: a run without a campaign (e.g. "Materialize all") plans nothing, and the send
    # after it is skipped.
    specs=[
        AssetSpec(
            "campaign_plan",
            group_name=GROUP,
            description=table("campaign_plan").description,
            metadata=definition_metadata("campaign_plan"),
            deps=["contacts", "contact_opt_outs", "categories", "messages", "crm_contacts"],
            kinds={"sql"},
            skippable=True,
        )
    ],
    check_specs=GUARD_CHECKS,
)
def campaign_plan_asset(
    context: AssetExecutionContext, config: CampaignPlanConfig, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult | AssetObservation]:
    """Every audience row included or excluded with its reason; guards block the send."""
    if not config.file and not config.definition:
        context.log.info("%s: no file or definition in the run config", NO_CAMPAIGN)
        yield AssetObservation(asset_key="campaign_plan", metadata={"status": NO_CAMPAIGN})
        # The guard checks are outputs of this step: each says there was nothing to guard.
        for spec in GUARD_CHECKS:
            yield AssetCheckResult(
                asset_key="campaign_plan",
                check_name=spec.name,
                passed=True,
                description=NO_CAMPAIGN,
                metadata={"status": NO_CAMPAIGN},
            )
        return
    if config.override_guards and not config.override_reason.strip():
        raise Failure("override_guards needs an override_reason, which is recorded")
    campaign, source = read_campaign(config)
    store = warehouse.warehouse()
    store.ensure_tables()
    try:
        plan = campaign_plan.make_plan(store, campaign, source=source, run_id=context.run.run_id)
        guards = campaign_plan.evaluate_guards(plan, campaign, config.override_guards)
    except (AudienceQueryError, CampaignError) as exc:
        raise Failure(description=str(exc)) from None
    status = campaign_plan.record_plan(
        store,
        campaign,
        plan,
        guards,
        source=source,
        run_id=context.run.run_id,
        override_reason=config.override_reason,
        dry_run=config.dry_run,
    )
    preview = campaign_plan.plan_preview(store, campaign.name)
    context.log.info(
        "campaign %s: %d recipients, %d excluded, %d batches (%s)",
        campaign.name,
        plan.recipients,
        plan.excluded,
        plan.batches,
        status,
    )
    yield MaterializeResult(
        asset_key="campaign_plan",
        metadata={
            **run_metadata(store, "campaign_plan", None),
            "campaign": campaign.name,
            "status": status,
            "audience_rows": plan.audience_rows,
            "recipients": plan.recipients,
            "batches": plan.batches,
            "excluded_by_reason": MetadataValue.json(plan.excluded_by_reason),
            "subject": getattr(campaign, "subject", ""),
            "body": MetadataValue.md(getattr(campaign, "body", "")),
            "send_at": campaign.send_at_utc.isoformat() if campaign.send_at_utc else "when run",
            "sample": MetadataValue.md(markdown_table(preview)),
            "guards": guards_table(guards),
        },
    )
    yield from guard_checks(guards, config.override_reason, "campaign_plan")


class SendConfig(Config):
    """How the planned campaign is sent."""

    dry_run: bool = Field(default=False, description="Plan only: send nothing.")
    concurrency: int = Field(default=4, description="Batches sent at once.")


@asset(
    name="campaign_results",
    group_name=GROUP,
    description=table("campaign_results").description,
    metadata=definition_metadata("campaign_results"),
    deps=["campaign_plan"],
    kinds={"sql"},
)
def campaign_results_asset(
    context: AssetExecutionContext,
    config: SendConfig,
    marketplace: MarketplaceResource,
    evinotice: EviNoticeResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    """Send each batch of the run's plan exactly once, then sync the batches and messages."""
    store = warehouse.warehouse()
    found = campaign_plan.planned_in_run(store, context.run.run_id)
    if found is None:
        raise Failure("this run planned no campaign: materialise campaign_plan in the same run")
    campaign, _ = found
    row = campaign_plan.campaign_row(store, campaign.name)
    if config.dry_run or (row is not None and row["status"] == "dry_run"):
        return MaterializeResult(metadata={"campaign": campaign.name, "dry_run": True, "sent": 0})
    if certified.is_certified(campaign):
        return build_certified(context, evinotice, store, campaign)

    async def send() -> sending.SendSummary:
        async with marketplace.client() as client:
            summary = await sending.send_campaign(
                client, store, campaign, run_id=context.run.run_id, concurrency=config.concurrency
            )
            if summary.batches and summary.started_at is not None:
                await sending.refresh_after_send(client, store, summary.started_at)
            return summary

    try:
        summary = run_async(send())
    except sending.CampaignNotDueError as exc:
        raise Failure(description=f"{exc}: the campaign sensor sends it when it is due") from None
    except ConnectorError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(
        "campaign %s: %s, found by lookup %d, cancelled %s",
        campaign.name,
        dict(summary.outcomes),
        summary.found_by_lookup,
        summary.cancelled,
    )
    return MaterializeResult(
        metadata={
            **run_metadata(store, "campaign_results", None),
            "campaign": campaign.name,
            "cancelled": summary.cancelled,
            **{f"batches_{state}": n for state, n in summary.outcomes.items()},
            "recipients_sent": summary.recipients_sent,
            "found_by_lookup": summary.found_by_lookup,
            "resent_after_lookup": summary.resent_after_lookup,
            "claimed_by_another_send": summary.claimed_elsewhere,
            "seconds": round(summary.seconds, 2),
        }
    )


def build_certified(
    context: AssetExecutionContext,
    evinotice: EviNoticeResource,
    store: Warehouse,
    campaign: CampaignBase,
) -> MaterializeResult:
    """The certified (EviNotice) branch of the send: build and schedule each batch once."""
    assert isinstance(campaign, certified.CertifiedCampaign)

    async def build() -> certified.CertifiedSummary:
        async with evinotice.client() as client:
            return await certified.build_certified_campaign(
                client, store, campaign, run_id=context.run.run_id
            )

    try:
        summary = run_async(build())
    except ConnectorError as exc:
        raise Failure(description=str(exc)) from None
    if summary.stopped:
        raise Failure(
            description=f"{campaign.name}: {len(summary.stopped)} batch(es) wait at a step: "
            + "; ".join(summary.stopped.values())
            + " (the next run resumes them on the same batches)"
        )
    return MaterializeResult(
        metadata={
            **run_metadata(store, "campaign_results", None),
            "campaign": campaign.name,
            "provider": "evinotice",
            "cancelled": summary.cancelled,
            "batches_scheduled": summary.done,
            "batch_ids": ", ".join(summary.batch_ids),
            "recipients_added": summary.recipients_added,
            "found_by_lookup": summary.found_by_lookup,
        }
    )


# Tables the campaign steps write along the way, declared for lineage and column docs.
CAMPAIGN_BY_PRODUCTS = [
    AssetSpec(
        name,
        group_name=GROUP,
        description=f"{table(name).description} (written by the {writer} step)",
        metadata=definition_metadata(name),
        deps=[writer],
        kinds={"sql"},
    )
    for name, writer in (
        ("campaigns", "campaign_plan"),
        ("campaign_batch_recipients", "campaign_results"),
    )
]


CAMPAIGN_STATUSES = (
    "planned",
    "dry_run",
    "stopped_by_guard",
    "waiting",
    "sending",
    "sent",
    "cancelled",
    "scheduled",  # certified: every batch scheduled (or submitted) on EviNotice
    "reverted",  # certified: put back to Draft
)
CAMPAIGN_PERFORMANCE = Report(
    "campaign_performance",
    deps=(
        "campaigns",
        "campaign_results",
        "messages",
        "evinotice_batches",
        "campaign_batch_recipients",
        "evinotice_evidence",
    ),
    key_checks=TableChecks(
        "campaign_performance",
        ("campaign",),
        ("campaign", "status"),
        {"status": CAMPAIGN_STATUSES},
        matches_api_count=False,
    ),
    count_checks=(
        rates_check("sent_rate", "bounce_rate", "complaint_rate", "failure_rate"),
        non_negative_check("recipients_sent", "messages", "pending", "not_synced"),
    ),
    preview_order="planned_at",
    preview_columns=(
        "campaign",
        "status",
        "audience_rows",
        "planned_recipients",
        "excluded",
        "batches_done",
        "recipients_sent",
        "messages",
        "sent",
        "bounced",
        "complained",
        "failed",
        "discarded",
        "pending",
        "sent_rate",
        "bounce_rate",
    ),
)


@asset(
    name="campaign_performance",
    group_name="reporting",
    deps=list(CAMPAIGN_PERFORMANCE.deps),
    description=table("campaign_performance").description,
    metadata=definition_metadata("campaign_performance"),
    check_specs=CAMPAIGN_PERFORMANCE.checks.specs(),
    # Rebuilt by send_campaign and, as delivery outcomes are synced, whenever messages change.
    automation_condition=FOLLOWS_ITS_INPUTS,
    kinds={"sql"},
)
def campaign_performance(
    context: AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """One row per campaign: audience, exclusions by reason, batches, delivery and rates."""
    store = warehouse.warehouse()
    rows = build_report(store, CAMPAIGN_PERFORMANCE.name)
    context.log.info("campaign_performance: %d rows", rows)
    metadata = table_metadata(
        store,
        CAMPAIGN_PERFORMANCE.name,
        preview_columns=CAMPAIGN_PERFORMANCE.preview_columns,
        preview_order=CAMPAIGN_PERFORMANCE.preview_order,
    )
    yield MaterializeResult(metadata=metadata)
    yield from evaluate_checks(store, CAMPAIGN_PERFORMANCE)


send_campaign_job = define_asset_job(
    "send_campaign",
    selection=AssetSelection.assets(
        campaign_plan_asset, campaign_results_asset, campaign_performance
    ),
    description="Campaign file → plan (guards block unusual plans) → send exactly once → "
    "refresh batches and messages → campaign_performance.",
)


class CancelConfig(Config):
    """Which campaign to cancel, and why."""

    campaign: str = Field(description="Campaign name, or its YAML file.")
    reason: str = Field(description="Why it is cancelled (recorded).")


@op
def cancel_campaign_op(
    context: OpExecutionContext, config: CancelConfig, warehouse: WarehouseResource
) -> None:
    """Cancel a campaign version that has not gone out: nothing more of it is sent."""
    store = warehouse.warehouse()
    store.ensure_tables()
    try:
        target: CampaignBase | str = (
            load_campaign(config.campaign)
            if config.campaign.endswith(CAMPAIGN_SUFFIXES)
            else config.campaign
        )
        status = campaign_plan.cancel_campaign(store, target, reason=config.reason)
    except CampaignError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(
        "cancelled %s; batches already settled: %s", status["name"], status["batches_by_state"]
    )


@job(name="cancel_campaign", description="Cancel a campaign before its send_at (recorded).")
def cancel_campaign_job() -> None:
    cancel_campaign_op()


class CertifiedChangeConfig(Config):
    """Revert a certified campaign's batches to Draft, or move their date."""

    campaign: str = Field(description="Campaign name.")
    action: str = Field(default="revert", description="revert or reschedule.")
    at: str | None = Field(
        default=None, description="New date with a time zone (reschedule), e.g. 2026-12-01T09:00Z"
    )


@op
def change_certified_campaign_op(
    context: OpExecutionContext,
    config: CertifiedChangeConfig,
    evinotice: EviNoticeResource,
    warehouse: WarehouseResource,
) -> None:
    """Revert or reschedule every scheduled batch of a certified campaign that has not started;
    a batch already processing is refused by the service, recorded, and fails the run."""
    store = warehouse.warehouse()
    store.ensure_tables()
    try:
        at = parse_moment(config.at) if config.action == "reschedule" else None
        if config.action not in ("revert", "reschedule"):
            raise CampaignError(f"action: {config.action!r}; use revert or reschedule")

        async def change() -> certified.ChangeSummary:
            async with evinotice.client() as client:
                if at is None:
                    return await certified.revert_certified_campaign(client, store, config.campaign)
                return await certified.reschedule_certified_campaign(
                    client, store, config.campaign, at
                )

        summary = run_async(change())
    except ConnectorError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info("%s %s: changed %s", config.action, config.campaign, summary.changed)
    if summary.refused:
        raise Failure(description=refusal_text(summary))


def parse_moment(value: str | None) -> datetime:
    """A date with a time zone, for a reschedule; a clear error otherwise."""
    if not value:
        raise CampaignError("reschedule needs a date (at / --at)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CampaignError(f"at: {value!r} is not an ISO date and time") from None
    if moment.tzinfo is None:
        raise CampaignError(f"at: {value!r} has no time zone (add Z or +01:00)")
    return moment


def refusal_text(summary: certified.ChangeSummary) -> str:
    """One line per batch the service refused to change."""
    return f"{summary.action} of {summary.campaign} refused for " + "; ".join(
        f"batch {batch_id}: {why}" for batch_id, why in summary.refused.items()
    )


@job(
    name="change_certified_campaign",
    description="Revert a certified campaign to Draft or reschedule it, before it starts.",
)
def change_certified_campaign_job() -> None:
    change_certified_campaign_op()


def file_key(path: Path) -> str:
    """A file's name and a hash of its content."""
    return f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()[:20]}"


@sensor(
    name="campaign_sensor",
    job=send_campaign_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="A dry-run plan per new or changed file in CAMPAIGN_DIR, then one send when due.",
)
def campaign_sensor(context: SensorEvaluationContext) -> Iterator[RunRequest]:
    """Dagster skips a run key it has seen, so the same content never sends twice."""
    now = datetime.now(UTC)
    waiting = []
    for path in campaign_files(campaign_dir()):
        key = file_key(path)
        plan_config = {"file": str(path.resolve())}
        try:
            loaded = load_campaign(path)
            # A certified campaign is scheduled on EviNotice itself: it is built at once.
            send_at = None if certified.is_certified(loaded) else loaded.send_at_utc
        except CampaignError:
            # Its run fails at the plan step with the file and field named: visible in the UI.
            send_at = None
        due = send_at is None or send_at <= now
        if not due:
            waiting.append(f"{path.name} at {send_at.isoformat() if send_at else ''}")
            yield RunRequest(
                run_key=f"preview:{key}",
                run_config={
                    "ops": {
                        "campaign_plan": {"config": {**plan_config, "dry_run": True}},
                        "campaign_results": {"config": {"dry_run": True}},
                    }
                },
                tags={"campaign_file": path.name, "campaign_step": "preview"},
            )
            continue
        yield RunRequest(
            run_key=f"send:{key}",
            run_config={"ops": {"campaign_plan": {"config": plan_config}}},
            tags={"campaign_file": path.name, "campaign_step": "send"},
        )
    if waiting:
        context.log.info("waiting for send_at: %s", "; ".join(waiting))


# What the code location registers (assets/definitions.py adds these to its lists).
CAMPAIGN_ASSETS = [
    campaign_plan_asset,
    campaign_results_asset,
    *CAMPAIGN_BY_PRODUCTS,
    campaign_performance,
]
CAMPAIGN_JOBS = [send_campaign_job, cancel_campaign_job, change_certified_campaign_job]
