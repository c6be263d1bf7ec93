"""A load merged in batches while it reads (connector/warehouse/streamed_merge.py) gives the
same tables, counts and cursor as one merge at the end: a first load (written straight into
the empty tables, against one staged and merged), a full refresh after updates, creations,
blocks and deletions, then an incremental run; and a stop by the mass-deletion guard after
batches were merged still leaves the table as it was. On DuckDB and PostgreSQL, against a
reference DuckDB file merged in one batch."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sync_support import (
    ContactsAnswerRewriter,
    Paging,
    content,
    evinotice_client,
    frozen_sandbox,
    marketplace_client,
    rows,
    run,
    state,
)

from connector.errors import MassDeletionError, RepeatedKeysError
from connector.pipelines import sync
from connector.warehouse.engine import MergeCounts, Warehouse
from sandbox.app import Sandbox

# A contact only the reference holds before its first load, so that load is staged and
# merged; the full refresh marks it deleted there, and the comparisons leave it out.
GHOST = "CTT-9999-9999-9999"
# Paged and handed on in small chunks (a few pages each): a full read is several chunks,
# each its own batch below.
CONTACTS = 3_000
CHUNK_BYTES = 50_000


def _both(
    sandbox: Sandbox, batched: Warehouse, reference: Warehouse, **options: Any
) -> tuple[sync.SyncResult, sync.SyncResult]:
    return _paged(sandbox, batched, **options), _paged(sandbox, reference, **options)


def _paged(sandbox: Sandbox, warehouse: Warehouse, **options: Any) -> sync.SyncResult:
    async def go() -> sync.SyncResult:
        async with marketplace_client(Paging(sandbox.app), chunk_bytes=CHUNK_BYTES) as client:
            return await sync.sync_contacts(client, warehouse, **options)

    return run(go())


def _same(batched: Warehouse, reference: Warehouse) -> None:
    for name, key in (("contacts", "id"), ("contact_opt_outs", "contact_id, category_id")):
        expected = [r for r in content(reference, name) if r.get("id") != GHOST]
        assert content(batched, name) == expected, name
        # Kept by the loads themselves: on DuckDB these tables have no key index.
        repeated = f"select {key} from {name} group by {key} having count(*) > 1"
        assert list(batched.query(repeated)) == [], name
    assert state(batched)["contacts.cursor"] == state(reference)["contacts.cursor"]


def _counts(result: sync.SyncResult) -> dict[str, tuple[int, int, int, int]]:
    return {name: (c.staged, c.inserted, c.updated, c.deleted) for name, c in result.counts.items()}


# A batch per chunk, and batches of several chunks.
@pytest.mark.parametrize(
    ("batch", "refresh_batches", "incremental_batches"),
    [
        ({"merge_every_rows": 1}, 5, 2),  # each chunk its own batch
        ({"merge_every_rows": 700}, 3, 1),  # several chunks a batch
        ({"merge_every_bytes": 250_000}, 3, 1),  # the same, bounded by bytes instead
    ],
)
def test_batches_merged_while_reading_equal_one_merge_at_the_end(
    batch: dict[str, int],
    refresh_batches: int,
    incremental_batches: int,
    warehouse_url: str,
    open_warehouse: Any,
    tmp_path: Any,
) -> None:
    sandbox = frozen_sandbox(contacts=CONTACTS, seed=13)
    batched = open_warehouse(warehouse_url, **batch)
    reference = open_warehouse(f"duckdb:///{tmp_path / 'reference.duckdb'}")
    now = sandbox.clock.now()

    with reference.transaction() as tx:
        tx.connection.exec_driver_sql(
            f"insert into contacts (id, email, status, row_hash) "
            f"values ('{GHOST}', 'ghost@example.test', 'Active', 'ghost')"
        )

    ghost_gone = "the reference's ghost contact"
    first, first_reference = _both(
        sandbox, batched, reference, full_refresh=True, now=now, mass_deletion_reason=ghost_gone
    )
    assert first_reference.counts["contacts"].batches == 1
    assert first_reference.counts["contacts"].deleted == 1  # the ghost
    first_reference.counts["contacts"].deleted = 0
    assert _counts(first) == _counts(first_reference)
    assert first.counts["contacts"].inserted == CONTACTS
    _same(batched, reference)

    # Changes spread over the whole id range, so every batch meets some.
    store = sandbox.marketplace
    contacts = sorted(sandbox.truth("contacts"), key=lambda c: c["id"])
    for contact in contacts[::70]:
        store.update_contact(contact["id"], {"email": contact["email"], "name": "Renamed"})
    for contact in contacts[35::150]:
        store.set_blocked(contact["id"], contact["status"] != "Blocked", "bounce")
    for contact in contacts[10::130]:
        store.delete_contact(contact["id"])
    for number in range(12):
        store.create_contact({"email": f"new.{number}@example.test", "name": f"New {number}"})
    later = now + timedelta(hours=1)

    again, again_reference = _both(sandbox, batched, reference, full_refresh=True, now=later)
    assert again.counts["contacts"].batches >= refresh_batches
    assert _counts(again) == _counts(again_reference)
    assert again.counts["contacts"].deleted == len(contacts[10::130])
    assert again.counts["contacts"].inserted == 12
    _same(batched, reference)

    for contact in contacts[5::12]:
        if store.contacts.get(contact["id"]) is not None:
            store.update_contact(contact["id"], {"email": contact["email"], "name": "Again"})
    # The newest change of all is in the first batch: the cursor comes from every batch.
    sandbox.clock.advance(60)
    store.update_contact(contacts[3]["id"], {"email": contacts[3]["email"], "name": "Newest"})
    incremental, incremental_reference = _both(
        sandbox, batched, reference, now=later + timedelta(minutes=5)
    )
    assert incremental.mode == "incremental"
    assert incremental.counts["contacts"].batches >= incremental_batches
    assert _counts(incremental) == _counts(incremental_reference)
    _same(batched, reference)
    newest = store.contacts.get(contacts[3]["id"])["audit"]["updated"]["at"]
    assert state(batched)["contacts.cursor"] == newest


def test_the_mass_deletion_guard_stops_a_batched_refresh_with_the_table_unchanged(
    warehouse_url: str, open_warehouse: Any
) -> None:
    sandbox = frozen_sandbox(contacts=CONTACTS, seed=14)
    batched = open_warehouse(warehouse_url, merge_every_rows=1)
    _paged(sandbox, batched, full_refresh=True)
    contacts = sorted(sandbox.truth("contacts"), key=lambda c: c["id"])
    for contact in contacts[::3]:
        sandbox.marketplace.delete_contact(contact["id"])
    # Changed rows in every batch: merged before the guard runs at the end, then rolled back.
    for contact in [c for i, c in enumerate(contacts) if i % 60 == 1 and i % 3]:
        sandbox.marketplace.update_contact(
            contact["id"], {"email": contact["email"], "name": "Changed"}
        )
    before = rows(batched, "contacts"), rows(batched, "contact_opt_outs"), state(batched)

    with pytest.raises(MassDeletionError):
        _paged(sandbox, batched, full_refresh=True)

    assert (rows(batched, "contacts"), rows(batched, "contact_opt_outs"), state(batched)) == before


class Repeating(ContactsAnswerRewriter):
    """A server that hands one contact twice in a streamed answer, its line repeated in the
    middle of the stream (where the client, trusting a stream's order, does not look)."""

    def __init__(self, app: Any, repeated: str) -> None:
        super().__init__(app)
        self.repeated = repeated.encode()

    def rewrite(self, body: bytes, start: dict[str, Any]) -> bytes:
        lines = body.splitlines(keepends=True)
        return b"".join(line * (2 if self.repeated in line else 1) for line in lines)


@pytest.mark.parametrize("load", ["first", "again"])
def test_a_row_handed_twice_stops_the_load_with_the_tables_unchanged(
    load: str, warehouse: Warehouse
) -> None:
    # On DuckDB no key index would refuse the second row: the load itself must.
    sandbox = frozen_sandbox(contacts=600, seed=15)
    if load == "again":  # a staged merge rather than a first load written straight in
        run(_streamed(sandbox.app, warehouse))
    repeated = sorted(c["id"] for c in sandbox.truth("contacts"))[300]
    before = rows(warehouse, "contacts"), rows(warehouse, "contact_opt_outs"), state(warehouse)

    # Or, copied straight into a PostgreSQL table, its primary key refuses it first.
    refusals = (RepeatedKeysError, psycopg.errors.UniqueViolation)
    with pytest.raises(refusals, match="contacts"):
        run(_streamed(Repeating(sandbox.app, repeated), warehouse))

    after = rows(warehouse, "contacts"), rows(warehouse, "contact_opt_outs"), state(warehouse)
    assert after == before


async def _streamed(app: Any, warehouse: Warehouse) -> sync.SyncResult:
    async with marketplace_client(app) as client:
        return await sync.sync_contacts(client, warehouse, full_refresh=True)


def test_evinotice_batches_merged_a_few_pages_at_a_time_equal_one_merge(
    warehouse_url: str, open_warehouse: Any, tmp_path: Any
) -> None:
    # Cursor pages of 100 batches handed on a page or so at a time, each chunk its own batch;
    # twice, the second time against what the first wrote.
    sandbox = frozen_sandbox(contacts=200, seed=17, evinotice_batches=450)
    batched = open_warehouse(warehouse_url, merge_every_rows=1)
    reference = open_warehouse(f"duckdb:///{tmp_path / 'reference.duckdb'}")
    for _ in range(2):
        counts = [
            run(_evinotice(sandbox, batched, CHUNK_BYTES)),
            run(_evinotice(sandbox, reference, 2 << 20)),
        ]
        assert counts[0].batches > 1
        assert counts[1].batches == 1
        assert (counts[0].staged, counts[0].inserted, counts[0].updated) == (
            counts[1].staged,
            counts[1].inserted,
            counts[1].updated,
        )
        assert content(batched, "evinotice_batches") == content(reference, "evinotice_batches")
        repeated = "select id from evinotice_batches group by id having count(*) > 1"
        assert list(batched.query(repeated)) == []


async def _evinotice(sandbox: Sandbox, warehouse: Warehouse, chunk_bytes: int) -> MergeCounts:
    site = sandbox.config.evinotice_site_id
    async with evinotice_client(sandbox, chunk_bytes=chunk_bytes) as client:
        result = await sync.sync_evinotice_batches(client, warehouse, site)
    return result.counts["evinotice_batches"]
