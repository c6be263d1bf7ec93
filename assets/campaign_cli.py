"""``notifsync campaign plan | send | status | cancel | revert | reschedule``: campaigns from
the command line, with the same plan, guards, ledger and report as the ``send_campaign`` job.

Settings come from the environment as everywhere: ``WAREHOUSE_URL`` (default the embedded
DuckDB file) and, to send, ``MPT_API_BASE_URL`` / ``MPT_API_TOKEN`` (Marketplace campaigns)
or ``EVINOTICE_*`` (certified campaigns, ``provider: evinotice``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

# The rest loads when a command runs, so `notifsync --help` stays instant.
if TYPE_CHECKING:
    from connector.campaigns.model import CampaignBase
    from connector.pipelines import campaigns as sending
    from connector.settings import MarketplaceSettings
    from connector.warehouse.engine import Warehouse


def _warehouse() -> Warehouse:
    from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL, WAREHOUSE_URL, Warehouse

    warehouse = Warehouse(os.environ.get(WAREHOUSE_URL) or DEFAULT_WAREHOUSE_URL)
    warehouse.ensure_tables()
    return warehouse


def _load(path: str) -> CampaignBase:
    from connector.campaigns import CampaignError, load_campaign

    try:
        return load_campaign(path)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None


def _plan(
    warehouse: Warehouse,
    campaign: CampaignBase,
    source: str,
    overrides: tuple[str, ...],
    reason: str,
    *,
    dry_run: bool,
) -> tuple[str, bool]:
    """Plan and judge; prints the figures. Returns (status, may send)."""
    from connector.campaigns import plan as campaign_plan
    from connector.errors import ConnectorError

    if overrides and not reason.strip():
        raise click.ClickException("--override needs --reason, which is recorded")
    run_id = f"cli-{uuid.uuid4().hex[:12]}"
    try:
        plan = campaign_plan.make_plan(warehouse, campaign, source=source, run_id=run_id)
        guards = campaign_plan.evaluate_guards(plan, campaign, overrides)
    except ConnectorError as exc:
        raise click.ClickException(str(exc)) from None
    status = campaign_plan.record_plan(
        warehouse,
        campaign,
        plan,
        guards,
        source=source,
        run_id=run_id,
        override_reason=reason,
        dry_run=dry_run,
    )
    click.echo(
        f"Campaign {campaign.name}: {plan.audience_rows} audience rows, "
        f"{plan.recipients} recipients in {plan.batches} batches, {plan.excluded} excluded"
    )
    for why, count in sorted(plan.excluded_by_reason.items()):
        click.echo(f"  excluded {why:<22}{count:>8}")
    for guard in guards:
        verdict = "overridden" if guard.overridden else ("ok" if guard.passed else "STOP")
        click.echo(f"  guard {guard.name:<20}{verdict:<11}{guard.message}")
    click.echo(f"Status: {status}")
    return status, all(g.allows_apply for g in guards)


@click.group("campaign")
def campaign() -> None:
    """Plan, send, follow and cancel campaigns (see the README's Campaigns section)."""


@campaign.command("plan")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--override", "overrides", multiple=True, help="A guard to let pass (repeat).")
@click.option("--reason", default="", help="Why the guards are overridden (recorded).")
@click.option("--sample", default=5, show_default=True, help="Rows of each reason to show.")
def plan_command(file: str, overrides: tuple[str, ...], reason: str, sample: int) -> None:
    """Plan a campaign file and show who is included, who is not and why; sends nothing."""
    from connector.campaigns import plan as campaign_plan

    warehouse = _warehouse()
    loaded = _load(file)
    _plan(warehouse, loaded, file, overrides, reason, dry_run=True)
    for row in campaign_plan.plan_preview(warehouse, loaded.name, per_reason=sample):
        click.echo(f"  {row['reason']:<22}{row['contact_id'] or '-':<22}{row['email'] or '-'}")


@campaign.command("send")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--override", "overrides", multiple=True, help="A guard to let pass (repeat).")
@click.option("--reason", default="", help="Why the guards are overridden (recorded).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1))
def send_command(file: str, overrides: tuple[str, ...], reason: str, concurrency: int) -> None:
    """Plan, check the guards and send each batch exactly once; then sync what it created."""
    from assets.reporting import build_report
    from connector.errors import ConnectorError
    from connector.pipelines import certified_campaigns as certified
    from connector.settings import MarketplaceSettings

    warehouse = _warehouse()
    loaded = _load(file)
    _, allowed = _plan(warehouse, loaded, file, overrides, reason, dry_run=False)
    if not allowed:
        raise click.ClickException("not sent: a guard stopped the plan (see above)")
    if certified.is_certified(loaded):
        _send_certified(warehouse, loaded)
        return
    try:
        settings = MarketplaceSettings.from_env()
        summary = asyncio.run(_send(settings, warehouse, loaded, concurrency))
    except ConnectorError as exc:
        raise click.ClickException(str(exc)) from None
    build_report(warehouse, "campaign_performance")
    if summary.cancelled:
        click.echo("Cancelled: nothing more was sent.")
    click.echo(
        f"Sent: {dict(summary.outcomes) or 'nothing new'}; {summary.recipients_sent} recipients, "
        f"{summary.found_by_lookup} earlier batches found on the platform"
    )


async def _send(
    settings: MarketplaceSettings, warehouse: Warehouse, campaign: CampaignBase, concurrency: int
) -> sending.SendSummary:
    from connector.marketplace.client import MarketplaceClient
    from connector.pipelines import campaigns as sending

    async with MarketplaceClient(settings) as client:
        summary = await sending.send_campaign(
            client,
            warehouse,
            campaign,
            run_id=f"cli-{uuid.uuid4().hex[:12]}",
            concurrency=concurrency,
        )
        if summary.batches and summary.started_at is not None:
            await sending.refresh_after_send(client, warehouse, summary.started_at)
        return summary


def _send_certified(warehouse: Warehouse, loaded: CampaignBase) -> None:
    """The certified branch of ``send``: build and schedule each batch on EviNotice once."""
    from assets.reporting import build_report
    from connector.errors import ConnectorError
    from connector.evinotice.client import EviNoticeClient
    from connector.pipelines import certified_campaigns as certified
    from connector.settings import EviNoticeSettings

    assert isinstance(loaded, certified.CertifiedCampaign)

    async def build() -> certified.CertifiedSummary:
        async with EviNoticeClient(EviNoticeSettings.from_env()) as client:
            return await certified.build_certified_campaign(
                client, warehouse, loaded, run_id=f"cli-{uuid.uuid4().hex[:12]}"
            )

    try:
        summary = asyncio.run(build())
    except ConnectorError as exc:
        raise click.ClickException(str(exc)) from None
    build_report(warehouse, "campaign_performance")
    if summary.cancelled:
        click.echo("Cancelled: nothing more was sent.")
        return
    when = loaded.send_at_utc.isoformat() if loaded.send_at_utc else "now"
    click.echo(
        f"Certified: {summary.done} of {summary.batches} batches scheduled ({when}) on EviNotice; "
        f"{summary.recipients_added} recipients added, {summary.found_by_lookup} earlier "
        "creates found by lookup"
    )
    if summary.stopped:
        raise click.ClickException(
            "; ".join(summary.stopped.values()) + " (send again: it resumes on the same batches)"
        )


def _change_certified(name: str, at: str | None) -> None:
    from assets.campaigns import parse_moment, refusal_text
    from connector.errors import ConnectorError
    from connector.evinotice.client import EviNoticeClient
    from connector.pipelines import certified_campaigns as certified
    from connector.settings import EviNoticeSettings

    warehouse = _warehouse()

    async def change() -> certified.ChangeSummary:
        async with EviNoticeClient(EviNoticeSettings.from_env()) as client:
            if at is None:
                return await certified.revert_certified_campaign(client, warehouse, name)
            moment = parse_moment(at)
            return await certified.reschedule_certified_campaign(client, warehouse, name, moment)

    try:
        summary = asyncio.run(change())
    except ConnectorError as exc:
        raise click.ClickException(str(exc)) from None
    for batch_id in summary.changed:
        click.echo(f"  {summary.action}d batch {batch_id}")
    if summary.refused:
        raise click.ClickException(refusal_text(summary))


@campaign.command("revert")
@click.argument("name")
def revert_command(name: str) -> None:
    """Put a certified campaign's scheduled batches back to Draft, before they start."""
    _change_certified(name, None)


@campaign.command("reschedule")
@click.argument("name")
@click.option("--at", "at", required=True, help="New date with a time zone (2026-12-01T09:00Z).")
def reschedule_command(name: str, at: str) -> None:
    """Move the date of a certified campaign's batches, before they start."""
    _change_certified(name, at)


@campaign.command("status")
@click.argument("name")
def status_command(name: str) -> None:
    """Where a campaign stands: its plan, its batches by state, and its delivery so far."""
    from assets.reporting import build_report
    from connector.campaigns import CampaignError
    from connector.campaigns import plan as campaign_plan

    warehouse = _warehouse()
    try:
        row = campaign_plan.campaign_status(warehouse, name)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    build_report(warehouse, "campaign_performance")
    performance = campaign_plan.campaign_performance(warehouse, name)
    shown: dict[str, Any] = {
        k: row[k]
        for k in ("status", "send_at", "audience_rows", "recipients", "excluded_by_reason")
    }
    shown["batches"] = row["batches_by_state"]
    if row["cancelled_at"] is not None:
        shown["cancelled"] = f"{row['cancelled_at']} ({row['cancel_reason']})"
    if performance and row["provider"] == "evinotice":
        shown["evidence"] = {
            k.removeprefix("evidence_"): performance[k]
            for k in (
                "evidence_delivered",
                "evidence_read",
                "evidence_accepted",
                "evidence_rejected",
                "evidence_refused",
                "evidence_failed",
                "evidence_pending",
            )
        }
    elif performance:
        shown["messages"] = {
            k: performance[k]
            for k in ("sent", "bounced", "complained", "failed", "discarded", "pending")
        }
    click.echo(f"Campaign {name}")
    for key, value in shown.items():
        click.echo(f"  {key:<20}{value}")


@campaign.command("cancel")
@click.argument("campaign_ref", metavar="NAME_OR_FILE")
@click.option("--reason", required=True, help="Why it is cancelled (recorded).")
def cancel_command(campaign_ref: str, reason: str) -> None:
    """Cancel a campaign before it goes out: no batch of it not yet claimed is sent."""
    from connector.campaigns import CampaignError
    from connector.campaigns import plan as campaign_plan

    warehouse = _warehouse()
    target: CampaignBase | str = (
        _load(campaign_ref) if Path(campaign_ref).is_file() else campaign_ref
    )
    try:
        row = campaign_plan.cancel_campaign(warehouse, target, reason=reason)
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    done = row["batches_by_state"].get("done", 0)
    click.echo(
        f"Cancelled {row['name']}" + (f" ({done} batches had already gone out)" if done else "")
    )


SAMPLE_CAMPAIGN = """\
# A sample campaign for the sandbox: the first active contacts, in the Marketing category.
name: sandbox-welcome
audience: |
  select id as contact_id, name
  from contacts
  where status = 'Active' and deleted_at is null
  order by id
  limit 60
category: NTC-0000-0005
subject: Welcome to the sandbox
body: This message was planned, guarded and sent exactly once by notifsync.
max_contacts_per_batch: 25
exclusions:
  frequency_cap_days: 7
guards:
  max_excluded_share: 0.9
"""


def write_sample_campaign() -> Path:
    """Write the demo's sample campaign under CAMPAIGN_DIR; returns its path."""
    from assets.campaigns import campaign_dir

    path = campaign_dir() / "sandbox-welcome.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SAMPLE_CAMPAIGN, encoding="utf-8")
    return path


SAMPLE_CERTIFIED_CAMPAIGN = """\
# A sample certified campaign for the sandbox: EviNotice certified email to a few contacts.
name: sandbox-certified
provider: evinotice
audience: |
  select email, name, id as contact_ref
  from contacts
  where status = 'Active' and deleted_at is null
  order by id
  limit 8
description: Sandbox certified notice
subject: Your certified notice
issuer_name: Sandbox legal
body: Dear {{DisplayName}}, this certified notice concerns your account {{contact_ref}}.
max_contacts_per_batch: 5
options:
  language: en
  commitment_options: AcceptOrReject
"""


def write_sample_certified_campaign() -> Path:
    """Write the demo's sample certified campaign under CAMPAIGN_DIR; returns its path."""
    from assets.campaigns import campaign_dir

    path = campaign_dir() / "sandbox-certified.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SAMPLE_CERTIFIED_CAMPAIGN, encoding="utf-8")
    return path


def sample_certified_summary(warehouse: Warehouse) -> str | None:
    """One line on the demo's sample certified campaign, from ``campaign_performance``."""
    from connector.campaigns import plan as campaign_plan

    row = campaign_plan.campaign_performance(warehouse, "sandbox-certified")
    if row is None:
        return None
    return (
        f"Certified campaign {row['campaign']}: {row['planned_recipients']} recipients in "
        f"{row['batches_done']} EviNotice batches ({row['status']}); evidence so far: "
        f"{row['evidence_records'] or 0} records, {row['evidence_pending'] or 0} pending"
    )


def sample_campaign_summary(warehouse: Warehouse) -> str | None:
    """One line on the demo's sample campaign, from ``campaign_performance``."""
    from connector.campaigns import plan as campaign_plan

    row = campaign_plan.campaign_performance(warehouse, "sandbox-welcome")
    if row is None:
        return None
    return (
        f"Campaign {row['campaign']}: {row['audience_rows']} audience rows, "
        f"{row['excluded']} excluded, {row['recipients_sent']} recipients in "
        f"{row['batches_done']} batches ({row['status']}); messages: {row['sent']} sent, "
        f"{row['pending']} queued, {row['bounced']} bounced"
    )
