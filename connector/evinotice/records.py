"""Turns EviNotice batch records (the list shape) into ``evinotice_batches`` rows."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from connector.warehouse.rows import Row, encoded


def evinotice_batch_rows(records: Iterable[dict[str, Any]], synced_at: str) -> list[Row]:
    """Rows for ``evinotice_batches``, from the list (``QUERY``) shape."""
    rows = []
    for record in records:
        raw, digest = encoded(record)
        total = record.get("TotalCount")
        sent = record.get("TotalSent")
        failed = record.get("TotalFailed")
        progress = _progress(record.get("State"), total, (sent or 0) + (failed or 0))
        rows.append(
            {
                "id": record["Id"],
                "state": record.get("State"),
                "description": record.get("Description"),
                "site_id": record.get("SiteId"),
                "site_name": record.get("SiteName"),
                "submitter": record.get("Submitter"),
                "total_count": total,
                "sent_count": sent,
                "failed_count": failed,
                "progress_percentage": progress,
                "created_at": record.get("CreationDate"),
                "scheduled_for": record.get("ScheduledFor"),
                "started_on": record.get("StartedOn"),
                "processed_on": record.get("ProcessedOn"),
                "synced_at": synced_at,
                "row_hash": digest,
                "raw": raw,
            }
        )
    return rows


def _progress(state: str | None, total: Any, done: int) -> float | None:
    """Percent done as EviNotice reports it: floored to 0.01, 100 only once Processed."""
    if state == "Processed":
        return 100.0
    if not isinstance(total, int) or total <= 0:
        return 0.0 if total == 0 else None
    return math.floor(min(done, total) * 10_000 / total) / 100
