"""Sending a planned campaign to the Marketplace, exactly once per batch.

The ledger is ``campaign_results`` (one row per batch: a chunk of the audience, with a stable
key from the plan) and ``campaign_batch_recipients`` (who each batch goes to). A batch is
claimed — its row written as ``sending`` and committed — before ``POST /batches`` goes out.

``POST /batches`` is not idempotent and the API has no idempotency key, so after a crash, a
kill, a timeout or a dropped connection the batch may or may not exist. Every batch left
``sending``, ``ambiguous`` or ``retry`` is first looked up on the platform — batches of its
category and subject created since the claim, whose messages are exactly its recipients —
and sent again only when none is found. ``done`` and ``rejected`` are never sent again.

A cancelled campaign version sends nothing more; one whose ``send_at`` is ahead is refused.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.campaigns.model import CampaignBase, CampaignError, MarketplaceCampaign
from connector.campaigns.plan import campaign_row, unapproved_reason
from connector.errors import AmbiguousOutcomeError, ApiError, ConnectorError
from connector.marketplace import rql
from connector.marketplace.client import BatchAttachment, MarketplaceClient
from connector.pipelines.sync import SyncResult, sync_batches, sync_messages
from connector.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

PENDING_STATES = ("sending", "ambiguous", "retry")
# How far before its claim a batch may carry a creation time (clock skew between us and the
# platform); the lookup window starts there.
LOOKUP_MARGIN = timedelta(minutes=10)


class CampaignNotDueError(CampaignError):
    """The campaign's send_at is still ahead."""


@dataclass
class Work:
    """One batch to settle: new (never claimed) or left pending by an earlier send."""

    batch_key: str
    batch_number: int
    recipients: int
    previous_state: str | None = None
    previous_claim: str | None = None
    attempts: int = 1
    content_key: str | None = None
    category_id: str | None = None
    subject: str | None = None
    claimed_at: datetime | None = None


@dataclass
class Outcome:
    state: str
    sent: bool  # a POST went out in this attempt
    batch_id: str | None = None
    resolved_by: str | None = None
    http_status: int | None = None
    problem_title: str | None = None
    problem_detail: str | None = None
    field_errors: dict[str, list[str]] | None = None


@dataclass
class SendSummary:
    """What one send did."""

    campaign: str
    outcomes: Counter[str] = field(default_factory=Counter)
    found_by_lookup: int = 0  # pending batches the platform already had: not sent again
    resent_after_lookup: int = 0  # pending batches the platform did not have: sent
    recipients_sent: int = 0
    claimed_elsewhere: int = 0
    cancelled: bool = False
    batch_ids: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    seconds: float = 0.0

    @property
    def batches(self) -> int:
        return sum(self.outcomes.values())


async def send_campaign(
    client: MarketplaceClient,
    warehouse: Warehouse,
    campaign: CampaignBase,
    *,
    run_id: str,
    concurrency: int = 4,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SendSummary:
    """Settle every batch of the campaign's plan: look up the pending ones, send the rest.

    Refuses (``CampaignError``) a plan that is missing, stale or stopped by a guard, and a
    ``send_at`` still ahead; a cancelled version returns with ``cancelled`` and sends nothing.
    """
    if not isinstance(campaign, MarketplaceCampaign):
        raise CampaignError(f"{campaign.provider} campaigns cannot be sent by this pipeline")
    summary = SendSummary(campaign.name, started_at=clock())
    if _is_cancelled(warehouse, campaign):
        summary.cancelled = True
        return summary
    refusal = unapproved_reason(warehouse, campaign)
    if refusal:
        raise CampaignError(f"not sending {campaign.name}: {refusal}")
    send_at = campaign.send_at_utc
    if send_at is not None and send_at > clock():
        raise CampaignNotDueError(f"{campaign.name} is not due until {send_at.isoformat()}")
    with warehouse.exclusive(f"campaign:{campaign.name}"):
        started = asyncio.get_running_loop().time()
        await _send(client, warehouse, campaign, run_id, max(1, concurrency), clock, summary)
        summary.seconds = asyncio.get_running_loop().time() - started
    return summary


async def _send(
    client: MarketplaceClient,
    warehouse: Warehouse,
    campaign: MarketplaceCampaign,
    run_id: str,
    concurrency: int,
    clock: Callable[[], datetime],
    summary: SendSummary,
) -> None:
    key = campaign.content_key()
    set_campaign_status(warehouse, campaign.name, key, "sending", started=clock())
    work = _pending_work(warehouse, campaign.name) + _new_work(warehouse, campaign.name)
    claim = uuid.uuid4().hex
    # Claims go to the ledger a group at a time (few transactions per group); within a group
    # at most ``concurrency`` creates are in flight.
    group_size = concurrency * 4
    gate = asyncio.Semaphore(concurrency)

    async def settle(item: Work, recipients: list[dict[str, Any]], now: datetime) -> Outcome:
        async with gate:
            return await _settle(client, campaign, item, recipients, now)

    for start in range(0, len(work), group_size):
        if _is_cancelled(warehouse, campaign):
            summary.cancelled = True
            break
        group = work[start : start + group_size]
        now = clock()
        with warehouse.transaction() as tx:
            _claim(tx, campaign, key, group, run_id, claim, now)
        keys = [item.batch_key for item in group]
        recipients: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
        with warehouse.transaction() as tx:
            held = set(tx.run("campaigns/select_claims", {"claim": claim}).scalars())
            rows = tx.run("campaigns/select_batch_recipients", {"batch_keys": keys}).mappings()
            for row in rows:
                recipients[row["batch_key"]].append(dict(row))
        summary.claimed_elsewhere += sum(item.batch_key not in held for item in group)
        group = [item for item in group if item.batch_key in held]
        log.debug("claimed %d batches of %s", len(group), campaign.name)
        outcomes = await asyncio.gather(
            *(settle(item, recipients[item.batch_key], now) for item in group)
        )
        now = clock()
        with warehouse.transaction() as tx, tx.stage("campaign_results") as stage:
            stage.write(
                [
                    _outcome_row(campaign, key, item, outcome, now)
                    for item, outcome in zip(group, outcomes, strict=True)
                ]
            )
            tx.run("campaigns/update_staged_outcomes", stage=stage.name)
        log.debug("recorded %d outcomes of %s", len(group), campaign.name)
        for item, outcome in zip(group, outcomes, strict=True):
            summary.outcomes[outcome.state] += 1
            if outcome.state == "done":
                summary.recipients_sent += item.recipients
                if outcome.batch_id:
                    summary.batch_ids.append(outcome.batch_id)
            if item.previous_state is not None:
                if outcome.resolved_by == "lookup":
                    summary.found_by_lookup += 1
                elif outcome.sent:
                    summary.resent_after_lookup += 1
    unsettled = _pending_work(warehouse, campaign.name)
    status = "cancelled" if summary.cancelled else ("sending" if unsettled else "sent")
    set_campaign_status(warehouse, campaign.name, key, status, finished=clock())


def _claim(
    tx: Any,
    campaign: MarketplaceCampaign,
    key: str,
    group: Sequence[Work],
    run_id: str,
    claim: str,
    now: datetime,
) -> None:
    """Write the group's claims (and the new batches' recipients) in the caller's transaction."""
    fresh = [item for item in group if item.previous_state is None]
    if fresh:
        # Staged and inserted in one statement: a row at a time is slow on DuckDB.
        at = now.isoformat()
        with tx.stage("campaign_results") as stage:
            stage.write(
                [
                    {
                        "batch_key": item.batch_key,
                        "batch_number": item.batch_number,
                        "recipients": item.recipients,
                    }
                    for item in fresh
                ],
                {
                    "campaign": campaign.name,
                    "provider": campaign.provider,
                    "content_key": key,
                    "category_id": campaign.category,
                    "subject": campaign.subject,
                    "run_id": run_id,
                    "claim": claim,
                    "state": "sending",
                    "attempts": 1,
                    "claimed_at": at,
                    "last_attempt_at": at,
                },
            )
            tx.run("campaigns/insert_staged_claims", stage=stage.name)
        tx.run(
            "campaigns/insert_batch_recipients",
            {
                "campaign": campaign.name,
                "claim": claim,
                "batch_keys": [item.batch_key for item in fresh],
            },
        )
    tx.run_many(
        "campaigns/update_batch_reclaim",
        [
            {
                "batch_key": item.batch_key,
                "run_id": run_id,
                "claim": claim,
                "previous_claim": item.previous_claim,
                "now": now,
            }
            for item in group
            if item.previous_state is not None
        ],
    )


async def _settle(
    client: MarketplaceClient,
    campaign: MarketplaceCampaign,
    item: Work,
    recipients: Sequence[dict[str, Any]],
    now: datetime,
) -> Outcome:
    """Look a pending batch up, then send it if the platform does not have it."""
    if not recipients:
        return Outcome("rejected", sent=False, problem_title="The ledger holds no recipients")
    if item.previous_state is not None:
        try:
            found = await find_batch(
                client,
                category_id=item.category_id or campaign.category,
                subject=item.subject or campaign.subject,
                since=(item.claimed_at or now) - LOOKUP_MARGIN,
                recipients=recipients,
            )
        except ConnectorError as exc:
            # Cannot tell whether it landed: never send blind; try again next time.
            return Outcome(
                item.previous_state,
                sent=False,
                problem_title="Lookup failed",
                problem_detail=str(exc),
            )
        if found is not None:
            return Outcome("done", sent=False, batch_id=found, resolved_by="lookup")
    return await _create(client, campaign, recipients, since=now - LOOKUP_MARGIN)


async def _create(
    client: MarketplaceClient,
    campaign: MarketplaceCampaign,
    recipients: Sequence[dict[str, Any]],
    *,
    since: datetime,
) -> Outcome:
    contacts = [
        {"id": r["contact_id"]} if r["contact_id"] else {"email": r["email"]} for r in recipients
    ]
    fields = campaign.batch_fields()
    try:
        batch = await client.create_batch(
            campaign.category,
            campaign.subject,
            campaign.body,
            contacts,
            account=fields.get("account"),
            buyer=fields.get("buyer"),
            attachments=_attachments(campaign),
        )
    except ApiError as exc:
        problem = exc.problem
        return Outcome(
            "retry" if exc.retryable else "rejected",
            sent=True,
            http_status=problem.status,
            problem_title=problem.title,
            problem_detail=problem.detail,
            field_errors=problem.field_errors or None,
        )
    except AmbiguousOutcomeError as exc:
        # It may have landed: look at once; if it is not there yet, the next send looks again.
        try:
            found = await find_batch(
                client,
                category_id=campaign.category,
                subject=campaign.subject,
                since=since,
                recipients=recipients,
            )
        except ConnectorError:
            found = None
        if found is not None:
            return Outcome("done", sent=True, batch_id=found, resolved_by="lookup")
        return Outcome(
            "ambiguous",
            sent=True,
            problem_title="Outcome unknown; looked up before any resend",
            problem_detail=str(exc),
        )
    except ConnectorError as exc:  # transport failures after every retry
        return Outcome(
            "retry", sent=True, problem_title=type(exc).__name__, problem_detail=str(exc)
        )
    return Outcome("done", sent=True, batch_id=batch.get("id"), resolved_by="answer")


async def find_batch(
    client: MarketplaceClient,
    *,
    category_id: str,
    subject: str,
    since: datetime,
    recipients: Sequence[dict[str, Any]],
) -> str | None:
    """The id of a platform batch of this category and subject, created since ``since``,
    whose messages go to exactly these recipients; None when there is none."""
    query = rql.and_(
        rql.eq("category.id", category_id),
        rql.eq("subject", subject),
        rql.ge("audit.created.at", since),
    )
    candidates: list[str] = []
    async for chunk in client.read("batches", filter=query, select=("audit",)):
        candidates.extend(b["id"] for b in chunk)
    ids = {r["contact_id"] for r in recipients if r["contact_id"]}
    emails = {r["email"].casefold() for r in recipients if not r["contact_id"] and r["email"]}
    for batch_id in reversed(candidates):  # newest first
        messages: list[dict[str, Any]] = []
        async for chunk in client.read(
            "messages", filter=rql.eq("batch.id", batch_id), select=("audit", "-body")
        ):
            messages.extend(chunk)
        if len(messages) != len(recipients):
            continue
        seen_ids = {(m.get("contact") or {}).get("id") for m in messages}
        seen_emails = {((m.get("contact") or {}).get("email") or "").casefold() for m in messages}
        if ids <= seen_ids and emails <= seen_emails:
            return batch_id
    return None


async def refresh_after_send(
    client: MarketplaceClient, warehouse: Warehouse, since: datetime, now: datetime | None = None
) -> list[SyncResult]:
    """Sync ``batches`` and the messages created since ``since`` (whole UTC days), so the
    warehouse shows what the send created."""
    now = now or datetime.now(UTC)
    start = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # Messages of a big batch carry creation times a little after the batch's: a day ahead.
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
    return [
        await sync_batches(client, warehouse, now=now),
        await sync_messages(client, warehouse, start, end, now=now),
    ]


def _pending_work(warehouse: Warehouse, campaign: str) -> list[Work]:
    with warehouse.transaction() as tx:
        rows = tx.run("campaigns/select_pending_batches", {"campaign": campaign}).mappings().all()
    return [
        Work(
            batch_key=r["batch_key"],
            batch_number=int(r["batch_number"] or 0),
            recipients=int(r["recipients"] or 0),
            previous_state=r["state"],
            previous_claim=r["claim"],
            attempts=int(r["attempts"] or 0),
            content_key=r["content_key"],
            category_id=r["category_id"],
            subject=r["subject"],
            claimed_at=_aware(r["claimed_at"]),
        )
        for r in rows
    ]


def _new_work(warehouse: Warehouse, campaign: str) -> list[Work]:
    with warehouse.transaction() as tx:
        rows = tx.run("campaigns/select_unclaimed_batches", {"campaign": campaign}).mappings()
        return [Work(r["batch_key"], int(r["batch_number"]), int(r["recipients"])) for r in rows]


def _outcome_row(
    campaign: MarketplaceCampaign, key: str, item: Work, outcome: Outcome, now: datetime
) -> dict[str, Any]:
    resent = outcome.sent and item.previous_state is not None
    return {
        "batch_key": item.batch_key,
        "state": outcome.state,
        "attempts": item.attempts + (1 if resent else 0),
        # A pending batch of an older version that was sent again went out as this version.
        "content_key": key if resent or item.content_key is None else item.content_key,
        "subject": campaign.subject if resent or item.subject is None else item.subject,
        "batch_id": outcome.batch_id,
        "resolved_by": outcome.resolved_by,
        "http_status": outcome.http_status,
        "problem_title": outcome.problem_title,
        "problem_detail": outcome.problem_detail,
        "field_errors": outcome.field_errors,
        "last_attempt_at": now.isoformat(),
        "done_at": now.isoformat() if outcome.state == "done" else None,
    }


def _is_cancelled(warehouse: Warehouse, campaign: CampaignBase) -> bool:
    row = campaign_row(warehouse, campaign.name)
    return row is not None and row["cancelled_content_key"] == campaign.content_key()


def set_campaign_status(
    warehouse: Warehouse,
    name: str,
    key: str,
    status: str,
    *,
    started: datetime | None = None,
    finished: datetime | None = None,
) -> None:
    """Record a campaign version's sending status (both providers)."""
    with warehouse.transaction() as tx:
        tx.run(
            "campaigns/update_campaign_status",
            {
                "name": name,
                "content_key": key,
                "status": status,
                "send_started_at": started,
                "send_finished_at": finished,
            },
        )


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _attachments(campaign: MarketplaceCampaign) -> list[BatchAttachment]:
    """The campaign's files as Create Batch parts (sent as multipart, as the official SDK does)."""
    return [
        BatchAttachment(
            filename=attachment.name or attachment.path.name,
            data=attachment.path.read_bytes(),
            content_type=mimetypes.guess_type(attachment.path.name)[0]
            or "application/octet-stream",
        )
        for attachment in campaign.attachments
    ]
