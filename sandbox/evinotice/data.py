"""Seeded generation of the EviNotice sandbox's initial batches.

Everything here is a pure function of the seed and an anchor time, so the same seed and clock
give the same batches: the store turns these seeds into live batches whose progress is then
derived from sandbox time.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# Sandbox time a Submitted batch waits in the queue before processing starts.
QUEUE_DELAY_SECONDS = 10.0

_CAMPAIGNS = (
    "Contract renewal notice",
    "Payment reminder",
    "Terms of service update",
    "Price change notification",
    "Account closure notice",
    "Privacy policy update",
    "Service interruption notice",
    "Annual statement",
    "Delivery confirmation request",
    "Debt collection notice",
)
_AUDIENCES = ("EMEA", "Americas", "APAC", "enterprise customers", "partners", "resellers")
_SUBMITTERS = (
    "ana.garcia@sandbox.example",
    "jonas.weber@sandbox.example",
    "li.wei@sandbox.example",
    "maria.rossi@sandbox.example",
)
_LANGUAGES = ("en", "es", "de", "fr", "it")
_COMMITMENT = ("Disabled", "Accept", "Reject", "AcceptOrReject")


@dataclass(frozen=True)
class SeedBatch:
    """One generated batch: its content, owner and where in its lifecycle it sits."""

    id: str
    site_id: str
    site_name: str
    submitter: str
    created: datetime
    description: str
    subject: str
    issuer_name: str
    body: str
    options: dict[str, Any]
    recipients: int
    rate: float  # recipients processed per second of sandbox time
    fail_permille: int
    submitted_at: datetime | None
    scheduled_for: datetime | None
    attachments: list[dict[str, Any]] = field(default_factory=list)


def other_site(site_id: str) -> tuple[str, str]:
    """The sibling site that owns a share of seeded batches, so OwnerSiteId filtering matters."""
    return f"{site_id}-partner", "Sandbox Partner Site"


def batch_parameters(batch_id: str) -> tuple[float, int]:
    """Processing rate and failure share of a batch created through the API, derived from its id."""
    digest = uuid.UUID(batch_id).int
    return 5.0 + digest % 46, 5 + (digest >> 16) % 26


def generate_batches(
    *, seed: int, count: int, anchor: datetime, site_id: str, site_name: str
) -> list[SeedBatch]:
    """Make ``count`` batches spread over the 30 days before ``anchor``, in every state."""
    rng = random.Random(seed)
    partner_id, partner_name = other_site(site_id)
    # One of each state first, so even a handful of batches covers the whole lifecycle.
    states = ["Processed", "Processing", "Scheduled", "Submitted", "Draft"]
    weighted = ["Processed"] * 11 + ["Processing"] * 3 + ["Scheduled"] * 2 + ["Submitted", "Draft"]
    plan = states[:count] + [rng.choice(weighted) for _ in range(max(0, count - len(states)))]
    rng.shuffle(plan)
    batches = [
        _one_batch(rng, target, anchor, site_id, site_name, partner_id, partner_name)
        for target in plan
    ]
    batches.sort(key=lambda b: (b.created, b.id))
    return batches


def _one_batch(
    rng: random.Random,
    target: str,
    anchor: datetime,
    site_id: str,
    site_name: str,
    partner_id: str,
    partner_name: str,
) -> SeedBatch:
    batch_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    on_partner = rng.random() < 0.1
    campaign = rng.choice(_CAMPAIGNS)
    audience = rng.choice(_AUDIENCES)
    # Mostly hundreds of recipients, now and then several thousand.
    recipients = max(1, int(rng.lognormvariate(5.5, 1.0)))
    recipients = min(recipients, 20_000)
    rate = float(rng.randint(5, 50))
    duration = recipients / rate
    created = anchor - timedelta(seconds=rng.uniform(3_600, 30 * 86_400))
    submitted_at: datetime | None = None
    scheduled_for: datetime | None = None
    if target == "Draft":
        pass
    elif target == "Submitted":
        # Still inside the queue delay at the anchor.
        created = anchor - timedelta(seconds=rng.uniform(60, 3_600))
        submitted_at = anchor - timedelta(seconds=rng.uniform(0, QUEUE_DELAY_SECONDS * 0.9))
    elif target == "Scheduled":
        submitted_at = created + timedelta(seconds=rng.uniform(60, 1_800))
        submitted_at = min(submitted_at, anchor)
        scheduled_for = anchor + timedelta(seconds=rng.uniform(3_600, 7 * 86_400))
    elif target == "Processing":
        start = anchor - timedelta(seconds=duration * rng.uniform(0.05, 0.9))
        submitted_at = start - timedelta(seconds=QUEUE_DELAY_SECONDS)
        created = min(created, submitted_at - timedelta(seconds=60))
    else:  # Processed
        start = created + timedelta(seconds=rng.uniform(600, 86_400))
        if start + timedelta(seconds=duration) >= anchor:
            start = anchor - timedelta(seconds=duration + rng.uniform(60, 3_600))
            created = min(created, start - timedelta(seconds=600))
        if rng.random() < 0.3:
            submitted_at = start - timedelta(seconds=rng.uniform(600, 86_400))
            submitted_at = max(submitted_at, created + timedelta(seconds=60))
            scheduled_for = start
        else:
            submitted_at = start - timedelta(seconds=QUEUE_DELAY_SECONDS)
    language = rng.choice(_LANGUAGES)
    options: dict[str, Any] = {
        "CostCentre": rng.choice(("Marketing", "Legal", "Billing", "Operations")),
        "AffidavitKinds": ["Submitted", "Delivered"],
        "Language": language,
        "AffidavitLanguage": language,
        "OnlineRetentionPeriod": rng.choice((1, 3, 5)),
        "LtaStorage": rng.random() < 0.2,
        "CommitmentOptions": rng.choice(_COMMITMENT),
        "AllowRefusal": rng.random() < 0.5,
    }
    return SeedBatch(
        id=batch_id,
        site_id=partner_id if on_partner else site_id,
        site_name=partner_name if on_partner else site_name,
        submitter=rng.choice(_SUBMITTERS),
        created=created,
        description=f"{campaign} ({audience}) #{rng.randint(100, 999)}",
        subject=campaign,
        issuer_name=rng.choice(("Legal Department", "Billing Team", "Customer Care")),
        body=f"<p>Dear {{{{DisplayName}}}},</p><p>{campaign}.</p>",
        options=options,
        recipients=recipients,
        rate=rate,
        fail_permille=rng.randint(0, 40),
        submitted_at=submitted_at,
        scheduled_for=scheduled_for,
    )
