"""Turns EviNotice records into warehouse rows: batches (the list shape) for
``evinotice_batches`` and per-recipient evidence for ``evinotice_evidence``.

The service's timestamps carry up to seven fractional digits and an offset
(``2024-11-19T16:11:17.9870820+00:00``); they are parsed here and written as UTC with
microseconds, which every warehouse reads. A state or outcome no list names yet is stored as
it comes: it is data, never a reason to fail a sync.

The bulk path (``sql/load/flatten_evinotice_batches.sql``) gives the same batch rows; the few
timestamps it leaves to Python are filled by ``with_utc_timestamps``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.warehouse.rows import Row, encoded

# States after which a batch has nothing left to process.
FINISHED_STATES = ("Processed", "Sent", "Completed")
# The batch columns that hold the service's timestamps, and the fields they come from.
BATCH_TIMESTAMPS = {
    "created_at": "CreationDate",
    "scheduled_for": "ScheduledFor",
    "started_on": "StartedOn",
    "processed_on": "ProcessedOn",
}


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
                "created_at": utc_timestamp(record.get("CreationDate")),
                "scheduled_for": utc_timestamp(record.get("ScheduledFor")),
                "started_on": utc_timestamp(record.get("StartedOn")),
                "processed_on": utc_timestamp(record.get("ProcessedOn")),
                "synced_at": synced_at,
                "row_hash": digest,
                "raw": raw,
            }
        )
    return rows


def with_utc_timestamps(batches: pa.Table) -> pa.Table:
    """Bulk-flattened batches with the timestamps of their ``odd_timestamps`` rows read here.

    The flatten statement reads the service's own shape; a row with another form (one only
    Python's ISO 8601 reader takes, or junk) has its record read again and each timestamp
    made by ``utc_timestamp``, exactly as ``evinotice_batch_rows`` makes it.
    """
    odd = batches.column("odd_timestamps").combine_chunks()
    if not pc.any(odd).as_py():
        return batches
    records = [orjson.loads(raw) for raw in pc.filter(batches.column("raw"), odd).to_pylist()]
    for name, field in BATCH_TIMESTAMPS.items():
        moments = batches.column(name).combine_chunks()
        fixed = pa.array([utc_timestamp(r.get(field)) for r in records], pa.string())
        merged = pc.replace_with_mask(moments, odd, fixed.cast(moments.type))
        batches = batches.set_column(batches.schema.get_field_index(name), name, merged)
    return batches


def evidence_rows(records: Iterable[dict[str, Any]], synced_at: str) -> list[Row]:
    """Rows for ``evinotice_evidence``, from the evidence query's shape."""
    rows = []
    for record in records:
        raw, digest = encoded(record)
        ttl = record.get("TimeToLive")
        rows.append(
            {
                "id": record["Id"],
                "linked_id": record.get("LinkedId"),
                "lookup_key": record.get("LookupKey"),
                "recipient_address": record.get("RecipientAddress"),
                "state": record.get("State"),
                "outcome": record.get("Outcome"),
                "created_at": utc_timestamp(record.get("CreationDate")),
                "last_update_date": utc_timestamp(record.get("LastUpdateDate")),
                "time_to_live_minutes": ttl if isinstance(ttl, int) else None,
                "synced_at": synced_at,
                "row_hash": digest,
                "raw": raw,
            }
        )
    return rows


def utc_timestamp(value: Any) -> str | None:
    """An API timestamp as UTC ISO 8601 with microseconds; None when absent or unreadable
    (the record's raw JSON keeps what came)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # no offset given: the service's clock is UTC
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _progress(state: str | None, total: Any, done: int) -> float | None:
    """Percent done as EviNotice reports it: floored to 0.01, 100 once finished."""
    if state in FINISHED_STATES:
        return 100.0
    if not isinstance(total, int) or total <= 0:
        return 0.0 if total == 0 else None
    return math.floor(min(done, total) * 10_000 / total) / 100
