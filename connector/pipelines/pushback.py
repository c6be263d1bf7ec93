"""Applying a reconciliation plan to the platform, exactly once.

The ledger is ``pushback_results``: every action has a stable key from the plan. Before a
batch of actions is sent, their ledger rows are written as ``sending`` and committed; each
action's outcome is committed on its own the moment its answer is in (a kill loses at most
the answers in flight). So after a crash, a kill or a retried run:

- ``done`` and ``rejected`` (a permanent 4xx) are never sent again;
- ``sending``, ``ambiguous`` and ``retry`` mean an earlier attempt may have landed: a create
  first looks the email up and only sends if no contact has it; a block or unblock first reads
  the contact and is sent only if it is not in that state yet (when it is, the state read is
  recorded as the connector's own, so its block can be lifted later).

A refused token (401/403) is not the action's fault: the apply stops with an error naming
``MPT_API_TOKEN`` and the actions stay pending.

Only one apply runs per warehouse at a time (``Warehouse.exclusive``), and an action is sent
only by the apply whose claim on its ledger row held. A create is also looked up first when
an older export's create of the same email may have landed; an unblock is sent only when the
contact is still exactly as this connector's block left it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from connector.errors import (
    AmbiguousOutcomeError,
    ApiError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    ConnectorError,
)
from connector.marketplace.client import MarketplaceClient
from connector.pipelines.ledger_writer import LedgerWriter
from connector.settings import MPT_API_TOKEN
from connector.warehouse.engine import Transaction, Warehouse

log = logging.getLogger(__name__)

PENDING_STATES = ("sending", "ambiguous", "retry")
FINAL_STATES = ("done", "rejected")


@dataclass
class Action:
    action_key: str
    action: str
    email: str | None
    contact_id: str | None
    name: str | None
    previous_state: str | None
    attempts: int
    create_may_have_landed: bool = False  # another export's create of this email is pending
    blocked_at_updated_at: Any = None  # the contact as our own block left it (for unblocks)
    blocked_with_reason: str | None = None


@dataclass
class Outcome:
    state: str
    contact_id: str | None = None
    contact: dict[str, Any] | None = None  # the contact as the API answered a done action
    http_status: int | None = None
    problem_title: str | None = None
    problem_detail: str | None = None
    field_errors: dict[str, list[str]] | None = None


@dataclass
class ApplySummary:
    """Counts of one apply."""

    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    claimed_elsewhere: int = 0  # another apply running at the same time holds these
    touched_contacts: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())


async def apply_plan(
    client: MarketplaceClient,
    warehouse: Warehouse,
    *,
    run_id: str,
    batch_size: int = 200,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ApplySummary:
    """Send every planned action that is not done or permanently rejected yet.

    One apply at a time per warehouse (``WarehouseBusyError`` otherwise): a second one would
    take over the actions the first holds as ``sending``.
    """
    with warehouse.exclusive("pushback"):
        return await _apply(client, warehouse, run_id, batch_size, clock)


async def _apply(
    client: MarketplaceClient,
    warehouse: Warehouse,
    run_id: str,
    batch_size: int,
    clock: Callable[[], datetime],
) -> ApplySummary:
    summary = ApplySummary()
    started = asyncio.get_running_loop().time()
    claim = uuid.uuid4().hex
    actions, summary.skipped = _pending_actions(warehouse)
    ledger = LedgerWriter(warehouse, _write_outcomes)
    try:
        await _send_claimed(client, ledger, actions, run_id, claim, batch_size, summary, clock)
    finally:
        await ledger.close()
    summary.seconds = asyncio.get_running_loop().time() - started
    return summary


async def _send_claimed(
    client: MarketplaceClient,
    ledger: LedgerWriter,
    actions: Sequence[Action],
    run_id: str,
    claim: str,
    batch_size: int,
    summary: ApplySummary,
    clock: Callable[[], datetime],
) -> None:
    """Claim the actions batch by batch and send what this apply holds; each outcome is
    committed as soon as the ledger writer can (see ``LedgerWriter``).

    Senders take claimed actions from a queue, so the rate limiter always has a request ready
    for its next turn: the next batch is claimed while the one before is still being sent,
    and no commit runs on the event loop. A sender waits for its outcome's commit before it
    takes the next action, so no more actions are sent and not yet recorded than there are
    connections: a kill loses no more than a commit per answer did.
    """
    ready: asyncio.Queue[Action | None] = asyncio.Queue(maxsize=max(1, batch_size // 2))
    senders = client.http.limits.max_concurrency
    # Claimed and not yet taken by a sender: given back if the apply stops, so the next one
    # does not take them for actions that may have been sent.
    unsent: dict[str, Action] = {}

    async def claim_in_batches() -> None:
        for start in range(0, len(actions), batch_size):
            batch = actions[start : start + batch_size]
            await ledger.run(
                functools.partial(_claim, batch=batch, run_id=run_id, claim=claim, now=clock())
            )
            # Read back after the commit: a concurrent apply's claim wins over ours.
            held = set(await ledger.run(functools.partial(_held, claim=claim)))
            summary.claimed_elsewhere += sum(a.action_key not in held for a in batch)
            held_actions = [a for a in batch if a.action_key in held]
            unsent.update((a.action_key, a) for a in held_actions)
            for action in held_actions:
                await ready.put(action)
        for _ in range(senders):
            await ready.put(None)

    async def send() -> None:
        while (action := await ready.get()) is not None:
            del unsent[action.action_key]
            try:
                outcome = await _perform(client, action)
            except AuthenticationError as exc:
                # The server refused who we are, not the action: it stays pending (a 401/403
                # means nothing was done) and the whole apply stops.
                await _record(ledger, action, _failed(exc, state="retry"), clock(), summary)
                raise
            await _record(ledger, action, outcome, clock(), summary)

    tasks = [asyncio.ensure_future(claim_in_batches())]
    tasks += [asyncio.ensure_future(send()) for _ in range(senders)]
    try:
        await asyncio.gather(*tasks)
    except BaseException as exc:
        for task in tasks:
            task.cancel()  # in flight: left ``sending``, so the next apply checks them first
        await asyncio.gather(*tasks, return_exceptions=True)
        # What was answered before the stop is recorded before the error goes up (shielded:
        # a second cancellation must not drop outcomes already in hand).
        await _drain_after(ledger, exc)
        await _release_after(ledger, list(unsent.values()), claim, exc)
        if isinstance(exc, AuthenticationError):
            raise ConfigurationError(
                f"{MPT_API_TOKEN} was refused by the Marketplace API ({exc.status} "
                f"{exc.problem.title or 'authentication failed'}): the apply stopped, and "
                "every action not done stays pending for the next apply"
            ) from exc
        raise
    await ledger.drain()


async def _drain_after(ledger: LedgerWriter, stop: BaseException) -> None:
    """Record the outcomes in hand when the apply stops; a failure to do so is logged, not
    raised (the error that stopped the apply is the one to report)."""
    try:
        await asyncio.shield(ledger.drain())
    except Exception as exc:
        log.error(
            "the apply stopped (%s) and the outcomes answered before could not all be "
            "recorded: %s; those actions stay 'sending' and the next apply looks them up",
            type(stop).__name__,
            exc,
        )


async def _release_after(
    ledger: LedgerWriter, actions: Sequence[Action], claim: str, stop: BaseException
) -> None:
    """Give back the claims of actions never sent when the apply stops; a failure is logged
    (they then stay ``sending``, and the next apply looks them up before sending)."""
    if not actions:
        return
    try:
        release = functools.partial(_release_unsent, actions=actions, claim=claim)
        await asyncio.shield(ledger.run(release))
    except Exception as exc:
        log.error(
            "the apply stopped (%s) and %d claimed, unsent actions could not be given back: "
            "%s; the next apply looks them up before sending",
            type(stop).__name__,
            len(actions),
            exc,
        )


def _release_unsent(tx: Transaction, *, actions: Sequence[Action], claim: str) -> None:
    tx.run_many(
        "pushback/delete_unsent_claim",
        [{"action_key": a.action_key, "claim": claim} for a in actions if a.previous_state is None],
    )
    tx.run_many(
        "pushback/restore_unsent_claim",
        [
            {
                "action_key": a.action_key,
                "claim": claim,
                "previous_state": a.previous_state,
                "attempts": a.attempts,
            }
            for a in actions
            if a.previous_state is not None
        ],
    )


async def _record(
    ledger: LedgerWriter,
    action: Action,
    outcome: Outcome,
    now: datetime,
    summary: ApplySummary,
) -> None:
    await ledger.record(_outcome_row(action, outcome, now))
    summary.outcomes[outcome.state] += 1
    if outcome.state == "done" and outcome.contact_id:
        summary.touched_contacts.append(outcome.contact_id)


def _write_outcomes(tx: Transaction, *, rows: Sequence[dict[str, Any]]) -> None:
    tx.run_many("pushback/update_outcome", rows)


@dataclass
class PendingWork:
    """The current plan's actions left pending by earlier applies."""

    by_state: dict[str, int]
    last_attempt_at: datetime | None

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


def pending_work(warehouse: Warehouse) -> PendingWork:
    """What earlier applies of the current plan left ``sending``, ``ambiguous`` or ``retry``."""
    with warehouse.transaction() as tx:
        rows = tx.run("pushback/count_pending_actions").all()
    latest = max((_instant(r[2]) for r in rows if r[2] is not None), default=None)
    return PendingWork({r[0]: int(r[1]) for r in rows}, latest)


def contacts_settled_by_plan(warehouse: Warehouse) -> list[str]:
    """Contacts the current plan's done actions touched (to re-read after an apply)."""
    with warehouse.transaction() as tx:
        return list(tx.run("pushback/select_contacts_settled_by_plan").scalars())


def _pending_actions(warehouse: Warehouse) -> tuple[list[Action], int]:
    with warehouse.transaction() as tx:
        rows = tx.run("pushback/select_plan_with_ledger").mappings().all()
    actions, skipped = [], 0
    for row in rows:
        if row["state"] in FINAL_STATES:
            skipped += 1
            continue
        actions.append(
            Action(
                action_key=row["action_key"],
                action=row["action"],
                email=row["email"],
                contact_id=row["contact_id"],
                name=row["name"],
                previous_state=row["state"],
                attempts=int(row["attempts"] or 0),
                create_may_have_landed=bool(row["create_may_have_landed"]),
                blocked_at_updated_at=row["blocked_at_updated_at"],
                blocked_with_reason=row["blocked_with_reason"],
            )
        )
    return actions, skipped


def _claim(
    tx: Transaction, *, batch: Sequence[Action], run_id: str, claim: str, now: datetime
) -> None:
    """Mark a batch ``sending`` under this apply's claim, committed before any of it is sent.

    Staged and written in two statements (new actions, and actions tried before if nobody
    touched them since they were read): a row at a time is slow on DuckDB.
    """
    with tx.stage("pushback_results") as stage:
        stage.write(
            [
                {
                    "action_key": action.action_key,
                    "action": action.action,
                    "email": action.email,
                    "contact_id": action.contact_id,
                    "state": action.previous_state,  # null: never claimed before
                    "attempts": action.attempts,  # as read: the claim adds this attempt
                }
                for action in batch
            ],
            {"run_id": run_id, "claim": claim, "last_attempt_at": now.isoformat()},
        )
        tx.run("pushback/insert_staged_claims", stage=stage.name)
        tx.run("pushback/update_staged_claims", stage=stage.name)


def _held(tx: Transaction, *, claim: str) -> list[str]:
    """The actions this apply's claim holds now."""
    return list(tx.run("pushback/select_claims", {"claim": claim}).scalars())


def _outcome_row(action: Action, outcome: Outcome, now: datetime) -> dict[str, Any]:
    contact = outcome.contact or {}
    return {
        "action_key": action.action_key,
        "state": outcome.state,
        "contact_id": outcome.contact_id or action.contact_id,
        "http_status": outcome.http_status,
        "problem_title": outcome.problem_title,
        "problem_detail": outcome.problem_detail,
        "field_errors": orjson.dumps(outcome.field_errors).decode()
        if outcome.field_errors
        else None,
        "now": now,
        "done_at": now if outcome.state == "done" else None,
        "contact_updated_at": ((contact.get("audit") or {}).get("updated") or {}).get("at"),
        "contact_blocked_reason": contact.get("blockedReason"),
    }


async def _perform(client: MarketplaceClient, action: Action) -> Outcome:
    """Send one action and say how it ended; never raises for an API answer."""
    try:
        if action.action == "create":
            return await _create(client, action)
        if action.contact_id is None:
            return Outcome("rejected", problem_title="No contact to act on")
        if action.action == "unblock":
            changed_since = await _changed_since_our_block(client, action)
            if changed_since:
                return Outcome("rejected", problem_title=changed_since)
        if action.action in ("block", "unblock"):
            return await _set_state(client, action)
        if action.action == "update":
            current = await client.get("contacts", action.contact_id)
            opt_outs = [c["id"] for c in current.get("optOuts") or []]
            contact = await client.update_contact(
                action.contact_id, current["email"], action.name, opt_outs
            )
        else:
            return Outcome("rejected", problem_title=f"Unknown action {action.action!r}")
        return Outcome("done", contact_id=contact.get("id", action.contact_id), contact=contact)
    except AuthenticationError:
        raise
    except ApiError as exc:
        return _failed(exc)
    except AmbiguousOutcomeError:
        return Outcome("ambiguous", problem_title="Outcome unknown; checked on the next run")
    except ConnectorError as exc:  # transport failures after every retry
        return Outcome("retry", problem_title=type(exc).__name__, problem_detail=str(exc))


async def _set_state(client: MarketplaceClient, action: Action) -> Outcome:
    """Block or unblock; an earlier attempt that may have landed is checked before resending."""
    assert action.contact_id is not None
    blocked = action.action == "block"
    target = "Blocked" if blocked else "Active"
    retried = action.previous_state in PENDING_STATES
    if retried:
        # A kill or a lost answer left it pending: if the contact is already where the action
        # takes it, that was our own attempt, so nothing is sent twice.
        current = await client.get("contacts", action.contact_id)
        if current.get("status") == target:
            return Outcome("done", contact_id=current.get("id", action.contact_id), contact=current)
    contact, changed = await client.set_contact_state(action.contact_id, blocked=blocked)
    # "Already blocked" (409, the contact read after it) is ours when an earlier attempt of
    # this action may have landed: its state is recorded so the block can be lifted later.
    # On a first attempt the block in place was put there by someone else: not recorded.
    ours = changed or retried
    return Outcome(
        "done", contact_id=contact.get("id", action.contact_id), contact=contact if ours else None
    )


async def _changed_since_our_block(client: MarketplaceClient, action: Action) -> str | None:
    """Why an unblock must not be sent (the block in place is not ours), or None."""
    assert action.contact_id is not None
    current = await client.get("contacts", action.contact_id)
    updated_at = ((current.get("audit") or {}).get("updated") or {}).get("at")
    if current.get("status") != "Blocked":
        return None  # already active: the unblock will be a no-op
    if action.blocked_at_updated_at is None or updated_at is None:
        return "Not unblocked: no record of the contact as this connector blocked it"
    ours = _instant(action.blocked_at_updated_at)
    if _instant(updated_at) > ours or current.get("blockedReason") != action.blocked_with_reason:
        return "Not unblocked: the contact changed since this connector blocked it"
    return None


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


async def _create(client: MarketplaceClient, action: Action) -> Outcome:
    assert action.email is not None
    if action.previous_state in PENDING_STATES or action.create_may_have_landed:
        # An earlier attempt (of this plan or an older export's) may have created it: look
        # before sending again.
        existing = await client.find_contact_by_email(action.email)
        if existing is not None:
            return Outcome("done", contact_id=existing["id"])
    try:
        created = await client.create_contact(action.email, action.name)
        return Outcome("done", contact_id=created["id"], contact=created)
    except ConflictError as exc:
        # The email exists now (our own earlier attempt, or someone else): the goal is met.
        existing = await client.find_contact_by_email(action.email)
        if existing is not None:
            return Outcome("done", contact_id=existing["id"])
        return _failed(exc)
    except AmbiguousOutcomeError:
        existing = await _find_quietly(client, action.email)
        if existing is not None:
            return Outcome("done", contact_id=existing["id"])
        return Outcome("ambiguous", problem_title="Outcome unknown; checked on the next run")


async def _find_quietly(client: MarketplaceClient, email: str) -> dict[str, Any] | None:
    try:
        return await client.find_contact_by_email(email)
    except ConnectorError:
        return None


def _failed(exc: ApiError, state: str | None = None) -> Outcome:
    problem = exc.problem
    return Outcome(
        state or ("retry" if exc.retryable else "rejected"),
        http_status=problem.status,
        problem_title=problem.title,
        problem_detail=problem.detail,
        field_errors=problem.field_errors or None,
    )
