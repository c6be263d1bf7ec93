"""Syncs EviNotice per-recipient evidence into ``evinotice_evidence``: read through the
evidence query's cursor, stage, then merge on id in one transaction.

Evidence changes state for weeks (delivered, read, accepted, ...), so every run reads the
records again and the merge writes only those that changed. Nothing here knows Dagster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from connector.evinotice.client import EviNoticeClient
from connector.evinotice.records import evidence_rows
from connector.pipelines.sync import SyncResult, _now, _pipe, format_timestamp
from connector.warehouse.engine import Warehouse

# Lookup keys per evidence query: the key list travels in the request body, so a campaign of
# many recipients is read in several queries rather than one huge body.
KEYS_PER_QUERY = 100


async def sync_evidence(
    client: EviNoticeClient,
    warehouse: Warehouse,
    *,
    lookup_keys: Sequence[str] | None = None,
    owner: str | None = None,
    now: datetime | None = None,
) -> SyncResult:
    """Merge the evidence records of the given lookup keys (default: every record visible)."""
    now = _now(now)
    synced_at = format_timestamp(now)
    result = SyncResult(mode="merge", synced_at=now)
    seen: set[str] = set()

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        groups: list[list[str] | None] = [None]
        if lookup_keys is not None:  # an empty list asks for nothing
            keys = sorted(set(lookup_keys))
            groups = [keys[i : i + KEYS_PER_QUERY] for i in range(0, len(keys), KEYS_PER_QUERY)]
        for group in groups:
            async for page in client.iter_evidence(lookup_keys=group, owner=owner):
                # The client deduplicates within one query; this, across the queries.
                fresh = [record for record in page if record["Id"] not in seen]
                seen.update(record["Id"] for record in fresh)
                if fresh:
                    yield fresh

    with warehouse.transaction() as tx, tx.stage("evinotice_evidence") as stage:
        result.api_count = await _pipe(
            pages(), lambda page: stage.write(evidence_rows(page, synced_at))
        )
        result.counts = tx.merge(stage)
    if lookup_keys is None:
        result.table_count = warehouse.count("evinotice_evidence")
    elif lookup_keys:
        with warehouse.transaction() as tx:
            result.table_count = tx.run(
                "load/count_evinotice_evidence_of_lookup_keys", {"keys": sorted(set(lookup_keys))}
            ).scalar()
    else:
        result.table_count = 0
    return result
