"""A sample CRM export (Salesforce-style CSV) made to match a sandbox's contacts.

It shows the whole reconcile loop: most lines agree with the platform, some are new people
(creates), some flag Active contacts as opted out or bounced (blocks), one email appears
twice with different flags (a conflict), and a few lines are bad (rejected with a reason).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HEADER = ["Id", "FirstName", "LastName", "Email", "HasOptedOutOfEmail", "IsEmailBounced"]


def write_sample_export(
    contacts: Iterable[dict[str, Any]],
    path: Path,
    *,
    seed: int = 1,
    agreeing: int = 400,
    creates: int = 12,
    blocks: int = 6,
) -> Path:
    """Write the export; returns its path."""
    rng = random.Random(seed)
    active = [c for c in contacts if c.get("status") == "Active"]
    rng.shuffle(active)
    # Small sandboxes still get their blocks and a conflict: fewer agreeing lines then.
    agreeing = max(0, min(agreeing, len(active) - blocks - 1))
    lines: list[list[str]] = []

    def line(contact_id: str, name: str | None, email: str, opted_out: bool, bounced: bool) -> None:
        first, _, last = (name or "").partition(" ")
        lines.append([contact_id, first, last, email, _flag(opted_out), _flag(bounced)])

    for n, contact in enumerate(active[:agreeing]):
        # CRMs often hold the same address in another case; matching must not care.
        email = contact["email"].upper() if n % 7 == 0 else contact["email"]
        line(f"003S{n:08d}", contact.get("name"), email, False, False)
    for n, contact in enumerate(active[agreeing : agreeing + blocks]):
        line(f"003B{n:08d}", contact.get("name"), contact["email"], n % 2 == 0, n % 2 == 1)
    for n in range(creates):
        line(f"003N{n:08d}", f"New Person{n}", f"new.person{n}@crm-sample.test", False, False)
    if len(active) > agreeing + blocks:
        twice = active[agreeing + blocks]
        line("003C00000001", twice.get("name"), twice["email"], False, False)
        line("003C00000002", twice.get("name"), twice["email"].title(), True, False)
    lines += [
        ["003X00000001", "No", "Email", "", "false", "false"],
        ["003X00000002", "Bad", "Address", "bad.address.example.com", "false", "false"],
        ["003X00000003", "Two", "Ats", "two@@example.com", "false", "false"],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(lines)
    return path


def _flag(value: bool) -> str:
    return "true" if value else "false"
