"""Planning a campaign: the audience against the warehouse's contacts, opt-outs, CRM flags,
messages and the send ledger — one ``campaign_plan`` row per audience row, included or
excluded with a reason — and the guards that decide whether the plan may be sent.

The plan is SQL (``sql/campaigns``): a million-row audience is a join, not a Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from connector.campaigns.model import CampaignBase, CampaignError, parse_campaign
from connector.pipelines.reconcile import GuardResult
from connector.pipelines.sync import CONTACTS_SYNCED_AT
from connector.warehouse.audience import load_audience
from connector.warehouse.engine import Warehouse

GUARD_NAMES = (
    "max_recipients",
    "max_excluded_share",
    "category_published",
    "max_snapshot_age",
    "send_at_not_past",
)
EXCLUSION_REASONS = (
    "missing_recipient",
    "unknown_contact_id",
    "invalid_email",
    "duplicate",
    "deleted_contact",
    "blocked_contact",
    "opted_out",
    "crm_do_not_email",
    "crm_unsubscribed",
    "crm_hard_bounced",
    "unknown_email",
    "already_reached",
    "frequency_cap",
)


@dataclass
class CampaignPlan:
    """A plan's figures and what the guards judge."""

    campaign: str
    content_key: str
    audience_rows: int
    recipients: int
    batches: int
    excluded_by_reason: dict[str, int]
    category_status: str | None
    contacts_synced_at: datetime | None
    planned_at: datetime
    columns: list[str] = field(default_factory=list)

    @property
    def excluded(self) -> int:
        return sum(self.excluded_by_reason.values())

    @property
    def excluded_share(self) -> float:
        """Excluded rows as a share of the audience, not counting the rows this campaign already
        reached: a campaign planned again after sending is not a suspicious audience."""
        reached = self.excluded_by_reason.get("already_reached", 0)
        return (self.excluded - reached) / max(1, self.audience_rows)


def make_plan(
    warehouse: Warehouse,
    campaign: CampaignBase,
    *,
    source: str,
    run_id: str,
    now: datetime | None = None,
) -> CampaignPlan:
    """Replace the campaign's plan in one transaction; the audience query runs here."""
    now = now or datetime.now(UTC)
    if campaign.provider == "evinotice":
        # Certified mail has its own rules (addresses EviNotice takes, template variables).
        from connector.campaigns.certified_plan import make_certified_plan
        from connector.campaigns.model import CertifiedCampaign

        assert isinstance(campaign, CertifiedCampaign)
        return make_certified_plan(warehouse, campaign, source=source, now=now)
    category_id = getattr(campaign, "category", None)
    params = {
        "campaign": campaign.name,
        "content_key": campaign.content_key(),
        "category_id": category_id,
        "frequency_cap_days": campaign.exclusions.frequency_cap_days,
        "allow_unknown_emails": campaign.exclusions.allow_unknown_emails,
        "max_per_batch": campaign.max_contacts_per_batch,
        "now": now,
    }
    with warehouse.transaction() as tx:
        columns = load_audience(
            tx, campaign.audience, is_table=campaign.audience_is_table, source=source
        )
        tx.run("campaigns/delete_campaign_plan", params)
        tx.run("campaigns/insert_campaign_plan", params)
        tx.run("campaigns/drop_audience_rows")
        counts = {r: int(n) for r, n in tx.run("campaigns/count_plan_reasons", params).all()}
        batches = int(tx.run("campaigns/count_plan_batches", params).scalar() or 0)
        status = tx.run("campaigns/select_category_status", params).scalar()
        synced = tx.get_state(CONTACTS_SYNCED_AT)
    recipients = counts.pop("included", 0)
    return CampaignPlan(
        campaign=campaign.name,
        content_key=params["content_key"],
        audience_rows=recipients + sum(counts.values()),
        recipients=recipients,
        batches=batches,
        excluded_by_reason=counts,
        category_status=status,
        contacts_synced_at=datetime.fromisoformat(synced) if synced else None,
        planned_at=now,
        columns=columns,
    )


def evaluate_guards(
    plan: CampaignPlan, campaign: CampaignBase, overrides: Sequence[str] = ()
) -> list[GuardResult]:
    """Judge the plan against each guard; an overridden guard still reports its figure."""
    unknown = set(overrides) - set(GUARD_NAMES)
    if unknown:
        raise CampaignError(
            f"unknown guard(s) to override: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(GUARD_NAMES)}"
        )
    limits = campaign.guards
    age = None if plan.contacts_synced_at is None else plan.planned_at - plan.contacts_synced_at
    max_age = timedelta(hours=limits.max_snapshot_age_hours)
    send_at = campaign.send_at_utc
    late = None if send_at is None else plan.planned_at - send_at
    max_delay = timedelta(minutes=limits.max_send_delay_minutes)
    # Certified mail has no category and does not read the synced contacts.
    certified = campaign.provider == "evinotice"
    results = [
        (
            "max_recipients",
            plan.recipients <= limits.max_recipients,
            str(plan.recipients),
            str(limits.max_recipients),
            f"{plan.recipients} recipients planned (limit {limits.max_recipients})",
        ),
        (
            "max_excluded_share",
            plan.excluded_share <= limits.max_excluded_share,
            f"{plan.excluded_share:.2%}",
            f"{limits.max_excluded_share:.2%}",
            f"{plan.excluded_share:.2%} of the audience excluded, not counting rows already "
            f"reached (limit {limits.max_excluded_share:.2%})",
        ),
        (
            "category_published",
            certified or plan.category_status == "Published",
            "n/a" if certified else plan.category_status or "unknown",
            "Published",
            "certified mail has no category"
            if certified
            else f"category {getattr(campaign, 'category', '?')} is "
            + (plan.category_status or "not in the synced categories"),
        ),
        (
            "max_snapshot_age",
            certified or (age is not None and age <= max_age),
            "n/a" if certified else "never synced" if age is None else _duration(age),
            _duration(max_age),
            "certified mail does not read the synced contacts"
            if certified
            else "contacts were never synced"
            if age is None
            else f"contacts snapshot is {_duration(age)} old (limit {_duration(max_age)})",
        ),
        (
            "send_at_not_past",
            late is None or late <= max_delay,
            "no send_at" if late is None else _duration(late),
            _duration(max_delay),
            "no send_at: sent when run"
            if late is None or send_at is None
            else f"send_at {send_at.isoformat()} is {_duration(late)} ago "
            f"(limit {_duration(max_delay)})"
            if late > timedelta(0)
            else f"send_at {send_at.isoformat()} is ahead",
        ),
    ]
    return [
        GuardResult(name, passed, name in overrides and not passed, figure, limit, message)
        for name, passed, figure, limit, message in results
    ]


def _duration(value: timedelta) -> str:
    return str(value).split(".")[0]


def record_plan(
    warehouse: Warehouse,
    campaign: CampaignBase,
    plan: CampaignPlan,
    guards: Sequence[GuardResult],
    *,
    source: str,
    run_id: str,
    override_reason: str | None,
    dry_run: bool = False,
) -> str:
    """Write the campaign's row (figures, guard verdict); returns its status."""
    tripped = {g.name: g.message for g in guards if not g.passed}
    overridden = [g.name for g in guards if g.overridden]
    blocked = any(not g.allows_apply for g in guards)
    send_at = campaign.send_at_utc
    if blocked:
        status = "stopped_by_guard"
    elif dry_run:
        status = "dry_run"
    elif send_at is not None and send_at > plan.planned_at:
        status = "waiting"
    else:
        status = "planned"
    with warehouse.transaction() as tx:
        tx.run(
            "campaigns/upsert_campaign_plan",
            {
                "name": campaign.name,
                "provider": campaign.provider,
                "content_key": plan.content_key,
                "source": source,
                "category_id": getattr(campaign, "category", None),
                "subject": getattr(campaign, "subject", None),
                "body": getattr(campaign, "body", None),
                "definition": campaign.model_dump_json(),
                "send_at": send_at,
                "status": status,
                "audience_rows": plan.audience_rows,
                "recipients": plan.recipients,
                "excluded": plan.excluded,
                "excluded_by_reason": orjson.dumps(plan.excluded_by_reason).decode(),
                "batches_planned": plan.batches,
                "guards_tripped": orjson.dumps(tripped).decode(),
                "overrides": orjson.dumps(overridden).decode(),
                "override_reason": override_reason if overridden else None,
                "planned_at": plan.planned_at,
                "run_id": run_id,
            },
        )
        row = tx.run("campaigns/select_campaign", {"name": campaign.name}).mappings().one()
    return str(row["status"])


def plan_preview(warehouse: Warehouse, campaign: str, per_reason: int = 10) -> list[dict[str, Any]]:
    """The first recipients and the first rows of each exclusion, for people to read."""
    with warehouse.transaction() as tx:
        rows = tx.run(
            "campaigns/select_plan_preview", {"campaign": campaign, "per_reason": per_reason}
        ).mappings()
        return [dict(r) for r in rows]


def campaign_row(warehouse: Warehouse, name: str) -> dict[str, Any] | None:
    """The campaign's row in ``campaigns``, if it was ever planned or cancelled."""
    with warehouse.transaction() as tx:
        row = tx.run("campaigns/select_campaign", {"name": name}).mappings().first()
    if row is None:
        return None
    return {k: _json_value(v) if k in _JSON_COLUMNS else v for k, v in dict(row).items()}


_JSON_COLUMNS = ("excluded_by_reason", "guards_tripped", "overrides", "definition")


def planned_in_run(warehouse: Warehouse, run_id: str) -> tuple[CampaignBase, str] | None:
    """The campaign a run planned, as validated then, and its source; None if none."""
    with warehouse.transaction() as tx:
        row = tx.run("campaigns/select_campaign_by_run", {"run_id": run_id}).first()
    if row is None:
        return None
    source = row[2] or "campaign"
    return parse_campaign(_json_value(row[1]), source), source


def unapproved_reason(warehouse: Warehouse, campaign: CampaignBase) -> str | None:
    """Why this campaign version must not be sent now, or None when it may be."""
    row = campaign_row(warehouse, campaign.name)
    key = campaign.content_key()
    if row is not None and row["cancelled_content_key"] == key:
        return f"campaign {campaign.name} was cancelled ({row['cancel_reason'] or 'no reason'})"
    if row is None or row["content_key"] != key or row["planned_at"] is None:
        return f"campaign {campaign.name} has no plan for this version: plan it first"
    tripped = row["guards_tripped"] or {}
    overridden = set(row["overrides"] or [])
    blocking = sorted(set(tripped) - overridden)
    if blocking:
        return "guards tripped and not overridden: " + "; ".join(
            f"{g} ({tripped[g]})" for g in blocking
        )
    return None


def cancel_campaign(
    warehouse: Warehouse,
    campaign: CampaignBase | str,
    *,
    reason: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Cancel a campaign version (the stored one when given a name): nothing more is sent."""
    if not reason.strip():
        raise CampaignError("a cancel needs a reason, which is recorded")
    if isinstance(campaign, str):
        row = campaign_row(warehouse, campaign)
        if row is None:
            raise CampaignError(f"no campaign named {campaign!r}: cancel it by its file instead")
        name, provider, key, source = campaign, row["provider"], row["content_key"], row["source"]
    else:
        name, provider, key = campaign.name, campaign.provider, campaign.content_key()
        source = None
    with warehouse.transaction() as tx:
        tx.run(
            "campaigns/upsert_campaign_cancel",
            {
                "name": name,
                "provider": provider,
                "content_key": key,
                "source": source,
                "now": now or datetime.now(UTC),
                "reason": reason,
            },
        )
    return campaign_status(warehouse, name)


def campaign_status(warehouse: Warehouse, name: str) -> dict[str, Any]:
    """The campaign's row and its batches by state."""
    row = campaign_row(warehouse, name)
    if row is None:
        raise CampaignError(f"no campaign named {name!r} has been planned")
    with warehouse.transaction() as tx:
        states = tx.run("campaigns/count_results_by_state", {"campaign": name}).all()
    row["batches_by_state"] = {s: int(n) for s, n, _ in states}
    row["recipients_by_state"] = {s: int(r or 0) for s, _, r in states}
    return row


def campaign_performance(warehouse: Warehouse, name: str) -> dict[str, Any] | None:
    """The campaign's row of the ``campaign_performance`` report, if it was built."""
    with warehouse.transaction() as tx:
        row = tx.run("campaigns/select_campaign_performance", {"campaign": name}).mappings()
        first = row.first()
    return dict(first) if first is not None else None


def _json_value(value: Any) -> Any:
    # DuckDB hands JSON back as text, PostgreSQL as Python values.
    return orjson.loads(value) if isinstance(value, str | bytes) else value
