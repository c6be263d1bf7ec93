"""Per-recipient evidence of the EviNotice sandbox: what happens to each certified message.

Pure functions of the seed, the recipient and the moment it was processed: every recipient a
batch processes gets one evidence record, whose state and outcome move along a fixed timeline
in sandbox time. The recipient's fate (left unread, read, accepted, rejected, refused) is drawn
from the seed and the address, so the same seed gives the same evidence; a recipient the batch
counts as failed fails here too.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

EVIDENCE_PATH = "/api/v2/EviNotice/Query"
STATES = (
    "Submitted",
    "Processed",
    "Sent",
    "Dispatched",
    "Delivered",
    "Read",
    "Replied",
    "Closed",
    "Failed",
)
OUTCOMES = (
    "None",
    "Certified",
    "Sent",
    "Delivered",
    "Read",
    "Accepted",
    "Rejected",
    "Failed",
    "Cancelled",
    "Refused",
)
# How long an evidence stays open for the recipient (the service reports it in minutes).
TIME_TO_LIVE_MINUTES = 30 * 24 * 60
# Seconds after processing until the message is delivered (or fails).
DELIVERY_SECONDS = 5.0
# Fates by share of a hundred: (upper bound, name).
_FATES = ((30, "unread"), (60, "read"), (75, "accepted"), (85, "rejected"), (100, "refused"))


@dataclass(frozen=True)
class Recipient:
    """One processed recipient: where its evidence comes from."""

    batch_id: str
    index: int  # position among the batch's uploaded recipients
    address: str
    lookup_key: str | None
    processed_at: datetime
    failed: bool


def evidence_id(batch_id: str, index: int) -> str:
    """The evidence id of a batch's ``index``-th uploaded recipient (stable, GUID-shaped)."""
    digest = hashlib.blake2b(f"{batch_id}|{index}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def fate(seed: int, address: str) -> str:
    """What the recipient at ``address`` does with the message, for this seed."""
    digest = hashlib.blake2b(f"{seed}|{address.lower()}".encode(), digest_size=4).digest()
    share = int.from_bytes(digest, "big") % 100
    return next(name for bound, name in _FATES if share < bound)


def timeline(seed: int, recipient: Recipient) -> list[tuple[datetime, str, str]]:
    """``(from when, State, Outcome)`` steps of the recipient's evidence, in order."""
    start = recipient.processed_at
    steps = [(start, "Sent", "Sent")]
    delivered = start + timedelta(seconds=DELIVERY_SECONDS)
    if recipient.failed:
        return [*steps, (delivered, "Failed", "Failed")]
    steps.append((delivered, "Delivered", "Delivered"))
    what = fate(seed, recipient.address)
    if what == "unread":
        return steps
    digest = hashlib.blake2b(f"{seed}|{recipient.address}|t".encode(), digest_size=4).digest()
    # Opened between a minute and a day after delivery; decided up to an hour later.
    opened = delivered + timedelta(seconds=60 + int.from_bytes(digest, "big") % 86_400)
    if what == "refused":
        return [*steps, (opened, "Closed", "Refused")]
    steps.append((opened, "Read", "Read"))
    if what == "read":
        return steps
    decided = opened + timedelta(seconds=int.from_bytes(digest, "big") % 3_600)
    return [*steps, (decided, "Closed", what.capitalize())]


def evidence_record(
    seed: int, recipient: Recipient, now: datetime, formatted: Any
) -> dict[str, Any]:
    """The evidence record as the query answers it at ``now`` (``formatted`` writes times)."""
    reached = [step for step in timeline(seed, recipient) if step[0] <= now]
    moment, state, outcome = reached[-1]
    return {
        "Id": evidence_id(recipient.batch_id, recipient.index),
        "LinkedId": recipient.batch_id,
        "LookupKey": recipient.lookup_key,
        "RecipientAddress": recipient.address,
        "State": state,
        "Outcome": outcome,
        "CreationDate": formatted(recipient.processed_at),
        "LastUpdateDate": formatted(moment),
        "TimeToLive": TIME_TO_LIVE_MINUTES,
    }
