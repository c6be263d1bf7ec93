"""Turns Marketplace records into warehouse rows: flattened references, typed values, the source
record kept as JSON, and a hash of it so unchanged rows are left alone on the next load.

Timestamps stay ISO 8601 text here; the warehouse writer casts them to timestamptz.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.emails import normalize_email
from connector.warehouse.rows import Row
from connector.warehouse.rows import encoded as _encoded

STATISTICS_PARTS = ("sent", "bounced", "complained", "discarded", "failed")
STATISTICS_WINDOWS = ("today", "week", "month")


def _at(record: dict[str, Any], event: str) -> str | None:
    return ((record.get("audit") or {}).get(event) or {}).get("at")


def _ref(record: dict[str, Any], name: str, field: str = "id") -> Any:
    value = record.get(name)
    return value.get(field) if isinstance(value, dict) else None


def contact_rows(records: Iterable[dict[str, Any]], synced_at: str) -> tuple[list[Row], list[Row]]:
    """Rows for ``contacts`` and ``contact_opt_outs``."""
    contacts: list[Row] = []
    opt_outs: list[Row] = []
    for record in records:
        raw, digest = _encoded(record)
        categories = record.get("optOuts") or []
        contacts.append(
            {
                "id": record["id"],
                "email": record.get("email"),
                "email_key": email_key(record.get("email")),
                "name": record.get("name"),
                "status": record.get("status"),
                "blocked_reason": record.get("blockedReason"),
                "user_id": _ref(record, "user"),
                "user_name": _ref(record, "user", "name"),
                "opt_out_count": len(categories),
                "created_at": _at(record, "created"),
                "updated_at": _at(record, "updated"),
                "deleted_at": None,
                "synced_at": synced_at,
                "row_hash": digest,
                "raw": raw,
            }
        )
        seen: set[str] = set()
        for category in categories:
            if category.get("id") and category["id"] not in seen:
                seen.add(category["id"])
                opt_outs.append(
                    {
                        "contact_id": record["id"],
                        "category_id": category["id"],
                        "category_name": category.get("name"),
                        "synced_at": synced_at,
                    }
                )
    return contacts, opt_outs


def email_key(email: Any) -> str | None:
    """The email as CRM exports are normalised, so the two sides match."""
    if not isinstance(email, str) or not email.strip():
        return None
    normalised, _ = normalize_email(email)
    return normalised or email.strip().casefold()


def with_email_keys(contacts: pa.Table) -> pa.Table:
    """Bulk-flattened contacts with ``email_key`` filled where the flattening left it null.

    The flatten statement folds plain ASCII addresses itself; an address it did not (IDN,
    spaces around, junk) goes through ``email_key`` here, so both paths give the same key.
    """
    keys = contacts.column("email_key").combine_chunks()
    emails = contacts.column("email").combine_chunks()
    todo = pc.and_(pc.is_null(keys), pc.is_valid(emails))
    if not pc.any(todo).as_py():
        return contacts
    positions = pc.indices_nonzero(todo)
    fixed = [email_key(e) for e in pc.take(emails, positions).to_pylist()]
    merged = pc.replace_with_mask(keys, todo, pa.array(fixed, pa.string()))
    return contacts.set_column(contacts.schema.get_field_index("email_key"), "email_key", merged)


def category_rows(records: Iterable[dict[str, Any]], synced_at: str) -> tuple[list[Row], list[Row]]:
    """Rows for ``categories`` and ``category_statistics_snapshots``."""
    categories: list[Row] = []
    snapshots: list[Row] = []
    for record in records:
        raw, digest = _encoded(record)
        categories.append(
            {
                "id": record["id"],
                "name": record.get("name"),
                "short_description": record.get("shortDescription"),
                "description": record.get("description"),
                "status": record.get("status"),
                "opt_out_allowed": record.get("optOutAllowed"),
                "created_at": _at(record, "created"),
                "updated_at": _at(record, "updated"),
                "synced_at": synced_at,
                "row_hash": digest,
                "raw": raw,
            }
        )
        statistics = record.get("statistics") or {}
        for window in STATISTICS_WINDOWS:
            figures = statistics.get(window)
            if not isinstance(figures, dict):
                continue
            snapshots.append(
                {
                    "snapshot_at": synced_at,
                    "category_id": record["id"],
                    "statistics_window": window,
                    **{part: figures.get(part) for part in (*STATISTICS_PARTS, "total")},
                }
            )
    return categories, snapshots


def batch_rows(records: Iterable[dict[str, Any]], synced_at: str) -> list[Row]:
    """Rows for ``batches``."""
    rows = []
    for record in records:
        raw, digest = _encoded(record)
        rows.append(
            {
                "id": record["id"],
                "subject": record.get("subject"),
                "category_id": _ref(record, "category"),
                "category_name": _ref(record, "category", "name"),
                "account_id": _ref(record, "account"),
                "account_name": _ref(record, "account", "name"),
                "attachment_count": len(record.get("attachments") or []),
                "created_at": _at(record, "created"),
                "updated_at": _at(record, "updated"),
                "synced_at": synced_at,
                "row_hash": digest,
                "raw": raw,
            }
        )
    return rows


def message_rows(records: Iterable[dict[str, Any]], synced_at: str) -> list[Row]:
    """Rows for ``messages`` (the body is left out of ``raw``: it repeats the batch's)."""
    rows = []
    for record in records:
        slim = {k: v for k, v in record.items() if k != "body"}
        rows.append(
            {
                "id": record["id"],
                "batch_id": _ref(record, "batch"),
                "contact_id": _ref(record, "contact"),
                "contact_email": _ref(record, "contact", "email"),
                "category_id": _ref(record, "category"),
                "account_id": _ref(record, "account"),
                "status": record.get("status"),
                "subject": record.get("subject"),
                "created_at": _at(record, "created"),
                "updated_at": _at(record, "updated"),
                "synced_at": synced_at,
                "raw": orjson.dumps(slim).decode(),
            }
        )
    return rows
