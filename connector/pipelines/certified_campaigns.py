"""Building and scheduling a planned certified campaign on EviNotice, exactly once per batch;
reverting and rescheduling it while it has not started.

The ledger is the Marketplace campaigns' ``campaign_results`` (one row per chunk of the plan)
and ``campaign_batch_recipients``. A certified batch is built in steps — create, body,
attachments, recipients, options, schedule — and its row's ``state`` is the step claimed
next: it is committed *before* that step's request goes out, so a run that stopped part-way
resumes at that step, on the batch it already made.

- ``creating`` left by an earlier run: the create may have landed, so the batch is looked up
  (the list QUERY, by the Description carrying the chunk's key) before any create is sent.
- ``recipients``: the service appends, so the batch's recipient count is read first and only
  the recipients after it are sent (in requests of at most 500, always in the same order); an
  ambiguous request is settled by reading the count again, never by resending the chunk.
- ``scheduling``: a batch no longer in Draft was scheduled already and is not sent again.
- body, attachments and options set target values: sending them again changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from connector.campaigns.model import CampaignBase, CampaignError, CertifiedCampaign
from connector.campaigns.plan import campaign_row, unapproved_reason
from connector.errors import AmbiguousOutcomeError, ApiError, ConnectorError
from connector.evinotice.client import (
    MAX_RECIPIENTS_PER_REQUEST,
    Attachment,
    EviNoticeClient,
    Recipient,
)
from connector.pipelines.campaigns import set_campaign_status
from connector.warehouse.engine import Warehouse

log = logging.getLogger(__name__)

# The steps of a build, in order; a batch's ledger state is the step it is about to send.
STEPS = ("creating", "body", "attachments", "recipients", "options", "scheduling")
DONE = "done"
REVERTED = "reverted"


class CertifiedStepError(ConnectorError):
    """A build step was refused or its outcome could not be settled; the batch waits there."""


@dataclass
class CertifiedSummary:
    """What one build did."""

    campaign: str
    batches: int = 0
    done: int = 0
    batch_ids: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)  # requests sent, by step
    found_by_lookup: int = 0  # creates an earlier run had made, found instead of resent
    recipients_added: int = 0
    stopped: dict[str, str] = field(default_factory=dict)  # batch key -> why it waits
    cancelled: bool = False


@dataclass
class _Batch:
    key: str
    number: int
    recipients: int
    state: str
    batch_id: str | None
    fresh: bool = False  # claimed by this run: no earlier create can exist


def batch_description(campaign: CertifiedCampaign, batch_key: str) -> str:
    """The Description a chunk's batch carries: the campaign's, plus the chunk key a lookup
    finds it by."""
    return f"{campaign.description} [{batch_key}]"


def lookup_key(batch_key: str, recipient_key: str) -> str:
    """A recipient's LookupKey: ``md5(batch_key|recipient_key)``, so evidence joins back in SQL."""
    return hashlib.md5(f"{batch_key}|{recipient_key}".encode(), usedforsecurity=False).hexdigest()


async def build_certified_campaign(
    client: EviNoticeClient,
    warehouse: Warehouse,
    campaign: CertifiedCampaign,
    *,
    run_id: str,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CertifiedSummary:
    """Build, configure and schedule (at ``send_at``, or now) every batch of the plan, once."""
    summary = CertifiedSummary(campaign.name)
    row = campaign_row(warehouse, campaign.name)
    key = campaign.content_key()
    if row is not None and row["cancelled_content_key"] == key:
        summary.cancelled = True
        return summary
    refusal = unapproved_reason(warehouse, campaign)
    if refusal:
        raise CampaignError(f"not sending {campaign.name}: {refusal}")
    with warehouse.exclusive(f"campaign:{campaign.name}"):
        if any(b.state == REVERTED for b in _ledger(warehouse, campaign.name)):
            # A person put it back to Draft: only a reschedule sends it now.
            raise CampaignError(
                f"{campaign.name} was reverted to Draft: reschedule it "
                "(notifsync campaign reschedule) or cancel it"
            )
        set_campaign_status(warehouse, campaign.name, key, "sending", started=clock())
        claim = _claim_new(warehouse, campaign, key, run_id, clock())
        batches = _ledger(warehouse, campaign.name)
        for batch in batches:
            batch.fresh = batch.key in claim
        summary.batches = len(batches)
        for batch in batches:
            if batch.state in (DONE, REVERTED, "rejected"):
                summary.done += batch.state == DONE
                if batch.batch_id:
                    summary.batch_ids.append(batch.batch_id)
                continue
            try:
                await _build(client, warehouse, campaign, batch, clock, summary)
            except CertifiedStepError as exc:
                summary.stopped[batch.key] = str(exc)
                continue
            summary.done += 1
            if batch.batch_id:
                summary.batch_ids.append(batch.batch_id)
        status = "scheduled" if summary.done == summary.batches else "sending"
        set_campaign_status(warehouse, campaign.name, key, status, finished=clock())
    return summary


def _claim_new(
    warehouse: Warehouse, campaign: CertifiedCampaign, key: str, run_id: str, now: datetime
) -> set[str]:
    """Claim the plan's chunks the ledger has never seen (with their recipients), at
    ``creating``; returns their keys."""
    claim = uuid.uuid4().hex
    with warehouse.transaction() as tx:
        fresh = tx.run("campaigns/select_unclaimed_batches", {"campaign": campaign.name}).all()
        if not fresh:
            return set()
        at = now.isoformat()
        with tx.stage("campaign_results") as stage:
            stage.write(
                [
                    {"batch_key": k, "batch_number": int(n), "recipients": int(r)}
                    for k, n, r in fresh
                ],
                {
                    "campaign": campaign.name,
                    "provider": campaign.provider,
                    "content_key": key,
                    "subject": campaign.subject,
                    "run_id": run_id,
                    "claim": claim,
                    "state": "creating",
                    "attempts": 0,
                    "claimed_at": at,
                    "last_attempt_at": at,
                },
            )
            tx.run("campaigns/insert_staged_claims", stage=stage.name)
        keys = [k for k, _, _ in fresh]
        tx.run(
            "campaigns/insert_batch_recipients",
            {"campaign": campaign.name, "claim": claim, "batch_keys": keys},
        )
    log.debug("claimed %d batches of %s", len(keys), campaign.name)
    return set(keys)


def _ledger(warehouse: Warehouse, campaign: str) -> list[_Batch]:
    with warehouse.transaction() as tx:
        rows = tx.run("campaigns/select_certified_batches", {"campaign": campaign}).mappings()
        return [
            _Batch(
                r["batch_key"],
                int(r["batch_number"] or 0),
                int(r["recipients"] or 0),
                str(r["state"]),
                r["batch_id"],
            )
            for r in rows
        ]


async def _build(
    client: EviNoticeClient,
    warehouse: Warehouse,
    campaign: CertifiedCampaign,
    batch: _Batch,
    clock: Callable[[], datetime],
    summary: CertifiedSummary,
) -> None:
    """Take one batch from the step its ledger row stands at to ``done``."""
    while batch.state != DONE:
        step = batch.state
        if step not in STEPS:
            raise CertifiedStepError(f"unknown ledger state {step!r}")
        if step == "creating":
            await _create(client, warehouse, campaign, batch, clock, summary)
        else:
            assert batch.batch_id is not None
            await _step(client, warehouse, campaign, batch, step, clock, summary)
        following = STEPS[STEPS.index(step) + 1] if step != STEPS[-1] else DONE
        _record(warehouse, batch, following, clock(), sent=step == "creating")
        log.debug("batch %s of %s: %s done", batch.number, campaign.name, step)


async def _create(
    client: EviNoticeClient,
    warehouse: Warehouse,
    campaign: CertifiedCampaign,
    batch: _Batch,
    clock: Callable[[], datetime],
    summary: CertifiedSummary,
) -> None:
    description = batch_description(campaign, batch.key)
    if not batch.fresh:
        # An earlier run claimed it: its create may have landed. Look before sending.
        found = await _find(client, description, batch)
        if found is not None:
            batch.batch_id = found
            summary.found_by_lookup += 1
            _record(warehouse, batch, "creating", clock(), resolved_by="lookup")
            return
    summary.requests["creating"] += 1
    try:
        batch.batch_id = await client.create_batch(
            description=description, subject=campaign.subject, issuer_name=campaign.issuer_name
        )
    except AmbiguousOutcomeError as exc:
        found = await _find(client, description, batch)
        if found is None:
            _problem(warehouse, batch, clock(), "Create outcome unknown; looked up first", exc)
            raise CertifiedStepError(f"create of batch {batch.number}: outcome unknown") from None
        batch.batch_id = found
        summary.found_by_lookup += 1
        _record(warehouse, batch, "creating", clock(), resolved_by="lookup")
        return
    except ApiError as exc:
        state = "creating" if exc.retryable else "rejected"
        _problem(warehouse, batch, clock(), "Create refused", exc, state=state)
        raise CertifiedStepError(f"create of batch {batch.number} refused: {exc}") from None
    except ConnectorError as exc:
        _problem(warehouse, batch, clock(), "Create failed", exc)
        raise CertifiedStepError(f"create of batch {batch.number} failed: {exc}") from None
    _record(warehouse, batch, "creating", clock(), resolved_by="answer")


async def _find(client: EviNoticeClient, description: str, batch: _Batch) -> str | None:
    """The id of the service's batch carrying this Description, if any (newest first)."""
    try:
        async for page in client.iter_batches(descending=True):
            for row in page:
                if row.get("Description") == description:
                    return str(row["Id"])
    except ConnectorError as exc:
        raise CertifiedStepError(f"looking up batch {batch.number} failed: {exc}") from None
    return None


async def _step(
    client: EviNoticeClient,
    warehouse: Warehouse,
    campaign: CertifiedCampaign,
    batch: _Batch,
    step: str,
    clock: Callable[[], datetime],
    summary: CertifiedSummary,
) -> None:
    batch_id = batch.batch_id
    assert batch_id is not None
    try:
        if step == "body":
            summary.requests[step] += 1
            await client.set_body(batch_id, campaign.body)
        elif step == "attachments" and campaign.attachments:
            summary.requests[step] += 1
            await client.set_attachments(
                batch_id,
                [
                    Attachment(file_name=a.name or a.path.name, content=a.path.read_bytes())
                    for a in campaign.attachments
                ],
            )
        elif step == "recipients":
            await _recipients(client, warehouse, batch, summary)
        elif step == "options" and campaign.options:
            summary.requests[step] += 1
            await client.configure(batch_id, **campaign.wire_options())
        elif step == "scheduling":
            current = await client.get_batch(batch_id, include_recipients_count=False)
            if current.get("State") != "Draft":
                return  # scheduled by an earlier run whose answer was not recorded
            summary.requests[step] += 1
            send_at = campaign.send_at_utc
            if send_at is not None and send_at > clock():
                await client.schedule(batch_id, send_at)
            else:
                await client.submit_now(batch_id)
    except ApiError as exc:
        _problem(warehouse, batch, clock(), f"Step {step} refused", exc)
        raise CertifiedStepError(f"batch {batch.number}: {step} refused: {exc}") from None
    except ConnectorError as exc:
        _problem(warehouse, batch, clock(), f"Step {step} failed", exc)
        raise CertifiedStepError(f"batch {batch.number}: {step} failed: {exc}") from None


async def _recipients(
    client: EviNoticeClient, warehouse: Warehouse, batch: _Batch, summary: CertifiedSummary
) -> None:
    """Append the recipients the batch does not hold yet, settling by its recipient count."""
    batch_id = batch.batch_id
    assert batch_id is not None
    with warehouse.transaction() as tx:
        rows = tx.run("campaigns/select_certified_recipients", {"batch_key": batch.key})
        recipients = [_recipient(batch.key, dict(r)) for r in rows.mappings()]
    if len(recipients) != batch.recipients:
        raise CertifiedStepError(
            f"batch {batch.number}: the plan no longer holds its {batch.recipients} recipients "
            "(planned again with other content?)"
        )
    while True:
        held = await client.recipients_count(batch_id)
        if held > len(recipients):
            raise CertifiedStepError(
                f"batch {batch.number} ({batch_id}) holds {held} recipients, more than its "
                f"{len(recipients)}: left for a person to check"
            )
        if held == len(recipients):
            return
        chunk = recipients[held : held + MAX_RECIPIENTS_PER_REQUEST]
        summary.requests["recipients"] += 1
        try:
            await client.add_recipients(batch_id, chunk, already=held)
        except AmbiguousOutcomeError:
            # The service appends: the count read next says whether this chunk landed.
            continue
        summary.recipients_added += len(chunk)
        log.debug("batch %s: %d recipients added", batch.number, held + len(chunk))


def _recipient(batch_key: str, row: dict[str, Any]) -> Recipient:
    variables = row["variables"]
    if isinstance(variables, str | bytes):
        variables = orjson.loads(variables)
    return Recipient(
        address=row["recipient_key"],
        display_name=row["display_name"] or "",
        legal_name=row["legal_name"],
        lookup_key=lookup_key(batch_key, row["recipient_key"]),
        variables=variables or {},
    )


# -- revert and reschedule ----------------------------------------------------------------------


@dataclass
class ChangeSummary:
    """What a revert or reschedule did, per batch."""

    campaign: str
    action: str
    changed: list[str] = field(default_factory=list)  # batch ids
    refused: dict[str, str] = field(default_factory=dict)  # batch id -> the service's reason


async def revert_certified_campaign(
    client: EviNoticeClient, warehouse: Warehouse, name: str
) -> ChangeSummary:
    """Put every scheduled batch of the campaign back to Draft; a batch that started is a
    refusal, recorded on its ledger row."""
    return await _change(client, warehouse, name, "revert", None)


async def reschedule_certified_campaign(
    client: EviNoticeClient, warehouse: Warehouse, name: str, at: datetime
) -> ChangeSummary:
    """Move the date of every scheduled (or reverted) batch of the campaign to ``at``."""
    if at.tzinfo is None:
        raise CampaignError("reschedule: --at needs a time zone (for example 2026-12-01T09:00Z)")
    return await _change(client, warehouse, name, "reschedule", at)


async def _change(
    client: EviNoticeClient,
    warehouse: Warehouse,
    name: str,
    action: str,
    at: datetime | None,
) -> ChangeSummary:
    row = campaign_row(warehouse, name)
    if row is None or row["provider"] != "evinotice":
        raise CampaignError(f"no certified (evinotice) campaign named {name!r}")
    summary = ChangeSummary(name, action)
    with warehouse.exclusive(f"campaign:{name}"):
        wanted = (DONE,) if action == "revert" else (DONE, REVERTED)
        batches = [b for b in _ledger(warehouse, name) if b.state in wanted and b.batch_id]
        if not batches:
            raise CampaignError(f"{name}: no scheduled batch to {action}")
        for batch in batches:
            assert batch.batch_id is not None
            now = datetime.now(UTC)
            try:
                if at is None:
                    await client.revert(batch.batch_id)
                else:
                    await client.reschedule(batch.batch_id, at)
            except ApiError as exc:
                _problem(warehouse, batch, now, f"{action.capitalize()} refused", exc)
                summary.refused[batch.batch_id] = exc.problem.detail or str(exc)
                continue
            _record(warehouse, batch, REVERTED if at is None else DONE, now)
            summary.changed.append(batch.batch_id)
        status = REVERTED if action == "revert" and not summary.refused else "scheduled"
        set_campaign_status(warehouse, name, row["content_key"], status)
    return summary


# -- ledger writes ------------------------------------------------------------------------------


def _record(
    warehouse: Warehouse,
    batch: _Batch,
    state: str,
    now: datetime,
    *,
    sent: bool = False,
    resolved_by: str | None = None,
) -> None:
    batch.state = state
    with warehouse.transaction() as tx:
        tx.run(
            "campaigns/update_certified_step",
            {
                "batch_key": batch.key,
                "state": state,
                "batch_id": batch.batch_id,
                "sent": int(sent),
                "resolved_by": resolved_by,
                "http_status": None,
                "problem_title": None,
                "problem_detail": None,
                "now": now,
            },
        )


def _problem(
    warehouse: Warehouse,
    batch: _Batch,
    now: datetime,
    title: str,
    exc: Exception,
    *,
    state: str | None = None,
) -> None:
    status = exc.problem.status if isinstance(exc, ApiError) else None
    detail = (exc.problem.detail or exc.problem.title) if isinstance(exc, ApiError) else str(exc)
    with warehouse.transaction() as tx:
        tx.run(
            "campaigns/update_certified_step",
            {
                "batch_key": batch.key,
                "state": state or batch.state,
                "batch_id": batch.batch_id,
                "sent": 0,
                "resolved_by": None,
                "http_status": status,
                "problem_title": title,
                "problem_detail": detail,
                "now": now,
            },
        )


def is_certified(campaign: CampaignBase) -> bool:
    """True for a campaign this pipeline builds (``provider: evinotice``)."""
    return isinstance(campaign, CertifiedCampaign)


def campaign_lookup_keys(warehouse: Warehouse, name: str) -> list[str]:
    """The LookupKeys of a certified campaign's scheduled recipients, to sync their evidence."""
    with warehouse.transaction() as tx:
        return list(tx.run("campaigns/select_certified_lookup_keys", {"campaign": name}).scalars())
