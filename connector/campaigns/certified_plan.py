"""Planning a certified (EviNotice) campaign: every audience row included in a batch or
excluded with a reason, written to ``campaign_plan`` (and its legal name and template
variables to ``campaign_plan_variables``), in one transaction.

The audience gives ``email`` (an email address, or a phone number with its country code for
SMS; a ``phone`` column is used where ``email`` is empty), ``name`` or ``display_name``,
optional ``legal_name``, and any other column is a template variable. The body's
placeholders are checked against those columns before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from connector.campaigns.model import CampaignError, CertifiedCampaign
from connector.campaigns.plan import CampaignPlan
from connector.emails import normalize_email
from connector.evinotice.client import MAX_RECIPIENTS_PER_BATCH
from connector.evinotice.recipients import missing_placeholders, usable_address
from connector.warehouse.audience import load_audience
from connector.warehouse.engine import Warehouse

# Columns that say who the recipient is; every other audience column is a template variable.
ADDRESS_COLUMNS = ("email", "phone")
NAME_COLUMNS = ("display_name", "name")
FIXED_COLUMNS = ("contact_id", *ADDRESS_COLUMNS, *NAME_COLUMNS, "legal_name")
CERTIFIED_EXCLUSION_REASONS = (
    "missing_recipient",
    "unusable_address",
    "missing_display_name",
    "duplicate",
    "crm_do_not_email",
    "crm_unsubscribed",
    "crm_hard_bounced",
    "already_reached",
)


def make_certified_plan(
    warehouse: Warehouse,
    campaign: CertifiedCampaign,
    *,
    source: str,
    now: datetime | None = None,
) -> CampaignPlan:
    """Replace the campaign's plan in one transaction; the audience query runs here."""
    now = now or datetime.now(UTC)
    key = campaign.content_key()
    per_batch = min(campaign.max_contacts_per_batch, MAX_RECIPIENTS_PER_BATCH)
    with warehouse.transaction() as tx:
        columns = load_audience(
            tx, campaign.audience, is_table=campaign.audience_is_table, source=source
        )
        variables = [c for c in columns if c not in FIXED_COLUMNS]
        missing = missing_placeholders(campaign.body, variables)
        if missing:
            raise CampaignError(
                f"{source}: body: placeholder(s) {', '.join('{{' + m + '}}' for m in missing)} "
                f"have no audience column (the audience returns {', '.join(columns)})"
            )
        rows = [dict(r) for r in tx.run("campaigns/select_audience_rows").mappings()]
        tx.run("campaigns/drop_audience_rows")
        flags = {r[0]: r[1:] for r in tx.run("campaigns/select_crm_email_flags").all()}
        reached = set(
            tx.run("campaigns/select_reached_recipients", {"campaign": campaign.name}).scalars()
        )
        plan_rows, extra_rows = judge(rows, variables, flags, reached)
        number_batches(plan_rows, campaign.name, key, per_batch)
        tx.run("campaigns/delete_campaign_plan", {"campaign": campaign.name})
        tx.run("campaigns/delete_campaign_plan_variables", {"campaign": campaign.name})
        constants = {"campaign": campaign.name, "content_key": key, "planned_at": now.isoformat()}
        with tx.stage("campaign_plan") as stage:
            stage.write(plan_rows, constants)
            tx.append(stage)
        with tx.stage("campaign_plan_variables") as stage:
            stage.write(extra_rows, {"campaign": campaign.name})
            tx.append(stage)
    counts: dict[str, int] = {}
    for row in plan_rows:
        reason = row["reason"] or "included"
        counts[reason] = counts.get(reason, 0) + 1
    recipients = counts.pop("included", 0)
    return CampaignPlan(
        campaign=campaign.name,
        content_key=key,
        audience_rows=len(plan_rows),
        recipients=recipients,
        batches=len({r["batch_key"] for r in plan_rows if r["included"]}),
        excluded_by_reason=dict(sorted(counts.items())),
        category_status=None,
        contacts_synced_at=None,
        planned_at=now,
        columns=columns,
    )


def judge(
    rows: Iterable[Mapping[str, Any]],
    variables: list[str],
    crm_flags: Mapping[str, tuple[int, int, int]],
    reached: set[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One plan row per audience row (the first exclusion rule that applies), and its extras."""
    seen: set[str] = set()
    plan: list[dict[str, Any]] = []
    extras: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        address = _text(row.get("email")) or _text(row.get("phone"))
        name = _text(row.get("display_name")) or _text(row.get("name"))
        key = _recipient_key(address) if address else None
        reason: str | None = None
        if address is None:
            reason = "missing_recipient"
        elif usable_address(address) is not None:
            reason = "unusable_address"
        elif name is None:
            reason = "missing_display_name"
        elif key in seen:
            reason = "duplicate"
        else:
            flags = crm_flags.get(key or "", (0, 0, 0))
            if flags[0]:
                reason = "crm_do_not_email"
            elif flags[1]:
                reason = "crm_unsubscribed"
            elif flags[2]:
                reason = "crm_hard_bounced"
            elif key in reached:
                reason = "already_reached"
        if key is not None and reason not in ("missing_recipient", "unusable_address"):
            seen.add(key)
        plan.append(
            {
                "audience_row": number,
                "contact_id": None,
                "email": key if reason != "unusable_address" else address,
                "name": name,
                "included": reason is None,
                "reason": reason,
            }
        )
        extras.append(
            {
                "audience_row": number,
                "legal_name": _text(row.get("legal_name")),
                "variables": {v: "" if row.get(v) is None else str(row[v]) for v in variables},
            }
        )
    return plan, extras


def number_batches(
    plan: list[dict[str, Any]], campaign: str, content_key: str, per_batch: int
) -> None:
    """Give included rows their chunk (by address order) and the chunk's stable key."""
    included = sorted((r for r in plan if r["included"]), key=lambda r: r["email"])
    for start in range(0, len(included), per_batch):
        chunk = included[start : start + per_batch]
        digest = hashlib.md5(
            "|".join([campaign, content_key, ",".join(r["email"] for r in chunk)]).encode(),
            usedforsecurity=False,
        ).hexdigest()
        for row in chunk:
            row["batch_number"] = start // per_batch
            row["batch_key"] = digest
    for row in plan:
        row.setdefault("batch_number", None)
        row.setdefault("batch_key", None)


def _recipient_key(address: str) -> str:
    """Emails case-folded and normalised; phones as +digits."""
    if "@" in address:
        normal, _ = normalize_email(address)
        return normal or address.strip().lower()
    return "".join(ch for ch in address if ch == "+" or ch.isdigit())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
