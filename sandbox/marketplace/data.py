"""Deterministic, consistent Marketplace data for the sandbox, from a few rows to a million.

The same seed and size always give the same records relative to the anchor time: categories,
contacts (some blocked with a reason, some with opt-outs, a few linked to users), batches sent
to a category and a set of contacts, and one message per contact per batch. Category
statistics are not stored: the store derives them from the messages in each window.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sandbox.clock import format_timestamp

FIRST_NAMES = [
    "Ana",
    "Ben",
    "Chloe",
    "Daniel",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Xavier",
    "Yara",
    "Zoe",
]
LAST_NAMES = [
    "Smith",
    "Garcia",
    "Muller",
    "Rossi",
    "Novak",
    "Silva",
    "Kowalski",
    "Jensen",
    "Dubois",
    "Tanaka",
    "Okafor",
    "Larsen",
    "Petrov",
    "Haddad",
    "Moreau",
    "Fischer",
    "Costa",
    "Nguyen",
    "Walsh",
    "Ortega",
]
DOMAINS = ("example.com", "contoso.test", "fabrikam.test", "adatum.test", "northwind.test")
BLOCK_REASONS = ("Bounced", "Complained", "Blocked by administrator")
MESSAGE_STATUSES = ("Sent", "Failed", "Bounced", "Complained", "Discarded")
MESSAGE_WEIGHTS = (0.86, 0.03, 0.06, 0.02, 0.03)

CATEGORY_SPECS = (
    ("Orders", "Order confirmations and updates", True),
    ("Invoices", "Invoices and billing notices", True),
    ("Subscriptions", "Subscription renewals and changes", True),
    ("Security", "Security alerts", False),
    ("Marketing", "Product news and offers", True),
    ("Service", "Planned maintenance and incidents", True),
    ("Agreements", "Agreement lifecycle", True),
    ("Legacy", "Retired notifications", True),
)

ACCOUNT = {"id": "ACC-1000-2000", "name": "Sandbox Vendor", "type": "Vendor", "status": "Active"}


def contact_id(n: int) -> str:
    """The id for contact number n: ``CTT-####-####-####``, one in ten ``CTT-####-####``.

    The platform hands out both shapes, so text order is not creation order: clients must
    not assume either (the two shapes never collide: their lengths differ).
    """
    if n % 10 == 7 and n < 10**8:
        return f"CTT-{n // 10**4 % 10**4:04d}-{n % 10**4:04d}"
    return f"CTT-{n // 10**8 % 10**4:04d}-{n // 10**4 % 10**4:04d}-{n % 10**4:04d}"


def contact_number(n: int) -> int:
    """The number in the n-th created contact's id: odd, so that contacts inserted later at
    earlier positions (``MarketplaceStore.reinsert_step``) can take the even ones between."""
    return 2 * n - 1


def category_id(n: int) -> str:
    return f"NTC-{n // 10**4 % 10**4:04d}-{n % 10**4:04d}"


def batch_id(n: int) -> str:
    return f"MST-{n // 10**8 % 10**4:04d}-{n // 10**4 % 10**4:04d}-{n % 10**4:04d}"


def message_id(batch: int, n: int) -> str:
    high, low = divmod(batch, 10**4)
    return f"MSG-{high % 10**4:04d}-{low:04d}-{n // 10**4 % 10**4:04d}-{n % 10**4:04d}"


def user_id(n: int) -> str:
    return f"USR-{n // 10**4 % 10**4:04d}-{n % 10**4:04d}"


def audit(created: datetime, updated: datetime | None = None) -> dict[str, Any]:
    """The audit block in the API's shape: one ``{"at"}`` per event that happened.

    An event that has not happened is left out, key included, as the platform does: a record
    never updated has ``audit.created`` and no ``audit.updated``.
    """
    events: dict[str, Any] = {"created": {"at": format_timestamp(created)}}
    if updated is not None:
        events["updated"] = {"at": format_timestamp(updated)}
    return events


def category_ref(category: dict[str, Any]) -> dict[str, Any]:
    """How a category appears inside another object."""
    return {"id": category["id"], "name": category["name"]}


@dataclass
class GeneratedData:
    categories: list[dict[str, Any]]
    contacts: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    messages: list[dict[str, Any]]


def generate(contacts: int, seed: int, anchor: datetime) -> GeneratedData:
    """Build the whole data set; ``anchor`` is the sandbox's "now" at start."""
    rng = random.Random(seed)
    categories = _categories(anchor)
    opt_out_choices = [c for c in categories if c["optOutAllowed"]]
    contact_rows = [_contact(n, rng, anchor, opt_out_choices) for n in range(1, contacts + 1)]
    batches, messages = _batches_and_messages(rng, anchor, categories, contact_rows)
    return GeneratedData(categories, contact_rows, batches, messages)


def _categories(anchor: datetime) -> list[dict[str, Any]]:
    rows = []
    for n, (name, description, opt_out_allowed) in enumerate(CATEGORY_SPECS, start=1):
        created = anchor - timedelta(days=400 - n)
        rows.append(
            {
                "id": category_id(n),
                "name": name,
                "shortDescription": name,
                "description": description,
                "optOutAllowed": opt_out_allowed,
                "status": "Unpublished" if name == "Legacy" else "Published",
                "icon": None,
                "audit": audit(created),
            }
        )
    return rows


def new_contact(
    identifier: str, email: str, name: str | None, opt_outs: list[dict[str, Any]], at: datetime
) -> dict[str, Any]:
    """A freshly created, Active contact."""
    return {
        "id": identifier,
        "name": name,
        "email": email,
        "status": "Active",
        "blockedReason": None,
        "optOuts": opt_outs,
        "audit": audit(at),
    }


def _contact(
    n: int, rng: random.Random, anchor: datetime, opt_out_choices: list[dict[str, Any]]
) -> dict[str, Any]:
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    created = anchor - timedelta(seconds=rng.randint(3600, 365 * 86400))
    updated = created + timedelta(seconds=rng.randint(0, int((anchor - created).total_seconds())))
    roll = rng.random()
    opt_outs = []
    if roll < 0.15:
        picked = rng.sample(opt_out_choices, k=1 if roll < 0.11 else 2)
        opt_outs = [
            {"id": c["id"], "name": c["name"], "shortDescription": c["shortDescription"]}
            for c in sorted(picked, key=lambda c: c["id"])
        ]
    contact = new_contact(
        contact_id(contact_number(n)),
        f"{first}.{last}.{n}@{DOMAINS[n % len(DOMAINS)]}".lower(),
        f"{first} {last}",
        opt_outs,
        created,
    )
    # A third of the contacts were never updated after they were created.
    contact["audit"] = audit(created, None if n % 3 == 0 else updated)
    if rng.random() < 0.08:
        contact["status"] = "Blocked"
        contact["blockedReason"] = rng.choice(BLOCK_REASONS)
    if rng.random() < 0.05:
        contact["user"] = {"id": user_id(n), "name": f"{first} {last}"}
    return contact


def _batches_and_messages(
    rng: random.Random,
    anchor: datetime,
    categories: list[dict[str, Any]],
    contacts: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    published = [c for c in categories if c["status"] == "Published"]
    batch_count = max(3, len(contacts) // 200) if contacts else 0
    batches: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    # Spread batches over the last 45 days so every statistics window (today, this week,
    # this month) has messages in it; the last few land in the hour before the anchor.
    for b in range(1, batch_count + 1):
        if b > batch_count - 3:
            created = anchor - timedelta(minutes=rng.randint(5, 50))
        else:
            created = anchor - timedelta(seconds=rng.randint(3600, 45 * 86400))
        category = published[b % len(published)]
        batch = {
            "id": batch_id(b),
            "subject": f"{category['name']} update #{b}",
            "body": f"<p>Notification {b} about {category['name'].lower()}.</p>",
            "category": category_ref(category),
            "account": dict(ACCOUNT),
            "attachments": [],
            "audit": audit(created),
        }
        batches.append(batch)
        size = min(len(contacts), rng.randint(10, 110))
        recipients = rng.sample(range(len(contacts)), k=size)
        for m, index in enumerate(sorted(recipients), start=1):
            status = rng.choices(MESSAGE_STATUSES, MESSAGE_WEIGHTS)[0]
            messages.append(
                new_message(batch, contacts[index], message_id(b, m), status, created, m)
            )
    return batches, messages


def new_message(
    batch: dict[str, Any],
    contact: dict[str, Any],
    identifier: str,
    status: str,
    batch_created: datetime,
    position: int,
) -> dict[str, Any]:
    """One message of a batch to one contact."""
    at = batch_created + timedelta(milliseconds=150 * position)
    return {
        "id": identifier,
        "batch": {"id": batch["id"], "subject": batch["subject"]},
        "contact": {"id": contact["id"], "email": contact["email"], "name": contact["name"]},
        "category": dict(batch["category"]),
        "account": dict(batch["account"]),
        "status": status,
        "subject": batch["subject"],
        "body": batch["body"],
        "audit": audit(at),
    }
