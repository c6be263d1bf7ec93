"""The sync functions against the sandbox and real warehouses (a DuckDB file and a fresh
PostgreSQL database per test): complete loads, no-op re-runs, incremental changes, deletions,
churn and state kept in the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import make_sandbox
from sync_support import (
    MERGED,
    Paging,
    _contacts,
    assert_contacts_match_truth,
    at,
    by_id,
    content,
    evinotice_client,
    frozen_sandbox,
    iso,
    live_contacts,
    rows,
    run,
    state,
    sync_contacts,
    sync_everything,
)

from connector.marketplace.records import STATISTICS_PARTS, STATISTICS_WINDOWS
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from connector.warehouse.tables import TABLE_NAMES

# --- a full sync -----------------------------------------------------------------------------


def test_full_sync_fills_every_table_with_the_truth(
    warehouse: Warehouse, warehouse_url: str
) -> None:
    sandbox = frozen_sandbox()
    results = sync_everything(sandbox, warehouse)

    assert results["contacts"].mode == "full"
    assert_contacts_match_truth(warehouse, sandbox)
    assert all(r["deleted_at"] is None for r in rows(warehouse, "contacts"))
    assert results["contacts"].counts["contacts"].inserted == 1500
    assert results["contacts"].api_count == results["contacts"].table_count == 1500

    categories = list(sandbox.truth("categories"))
    stored = by_id(rows(warehouse, "categories"))
    assert sorted(stored) == sorted(c["id"] for c in categories)
    for category in categories:
        row = stored[category["id"]]
        assert (row["name"], row["status"], row["opt_out_allowed"]) == (
            category["name"],
            category["status"],
            category["optOutAllowed"],
        )
        assert row["raw"] == category

    # One snapshot: each category's statistics, window by window, exactly as the API gave them.
    snapshots = rows(warehouse, "category_statistics_snapshots")
    assert len({r["snapshot_at"] for r in snapshots}) == 1
    assert {
        (r["category_id"], r["statistics_window"]): {p: r[p] for p in (*STATISTICS_PARTS, "total")}
        for r in snapshots
    } == {
        (c["id"], window): c["statistics"][window]
        for c in categories
        for window in STATISTICS_WINDOWS
    }
    assert len(snapshots) == 3 * len(categories)
    # The anchor-day batches make "today" non-empty, so the comparison above means something.
    assert sum(r["total"] for r in snapshots if r["statistics_window"] == "today") > 0

    batches = list(sandbox.truth("batches"))
    stored = by_id(rows(warehouse, "batches"))
    assert sorted(stored) == sorted(b["id"] for b in batches)
    for batch in batches:
        row = stored[batch["id"]]
        assert (row["category_id"], row["category_name"], row["subject"]) == (
            batch["category"]["id"],
            batch["category"]["name"],
            batch["subject"],
        )
        assert row["account_id"] == batch["account"]["id"]
        assert row["created_at"] == iso(at(batch, "created"))

    messages = list(sandbox.truth("messages"))
    assert len(messages) > 100
    stored = by_id(rows(warehouse, "messages"))
    assert sorted(stored) == sorted(m["id"] for m in messages)
    for message in messages:
        row = stored[message["id"]]
        assert (
            row["batch_id"],
            row["contact_id"],
            row["contact_email"],
            row["category_id"],
            row["status"],
            row["created_at"],
        ) == (
            message["batch"]["id"],
            message["contact"]["id"],
            message["contact"]["email"],
            message["category"]["id"],
            message["status"],
            iso(at(message, "created")),
        )
        assert "body" not in row["raw"]

    # The owner site's batches; the sandbox also holds a partner site's, which are not ours.
    site = sandbox.config.evinotice_site_id
    everything = list(sandbox.truth("evinotice-batches"))
    evinotice = [b for b in everything if b["SiteId"] == site]
    assert len(everything) > len(evinotice)
    stored = by_id(rows(warehouse, "evinotice_batches"))
    assert sorted(stored) == sorted(b["Id"] for b in evinotice)
    for batch in evinotice:
        row = stored[batch["Id"]]
        assert (
            row["state"],
            row["total_count"],
            row["sent_count"],
            row["failed_count"],
            row["created_at"],
            row["started_on"],
            row["processed_on"],
        ) == (
            batch["State"],
            batch["TotalCount"],
            batch["SentCount"],
            batch["FailedCount"],
            iso(batch["CreationDate"]),
            iso(batch["StartedOn"]),
            iso(batch["ProcessedOn"]),
        )
        assert row["progress_percentage"] == pytest.approx(batch["ProgressPercentage"], abs=0.011)
    assert {b["State"] for b in evinotice} >= {"Processed", "Draft"}

    for name, result in results.items():
        assert result.api_count == result.table_count, name
    # The cursor is the newest change the API had when the read began.
    # (created or updated: a contact never updated has no audit.updated)
    newest = max(at(c, e) or "" for c in sandbox.truth("contacts") for e in ("created", "updated"))
    assert state(warehouse)[sync.CONTACTS_CURSOR] == newest
    assert sync.CONTACTS_LAST_FULL_REFRESH in state(warehouse)


# --- a second run ----------------------------------------------------------------------------


def test_second_run_changes_nothing_that_did_not_change_upstream(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    sync_everything(sandbox, warehouse)
    before = {name: rows(warehouse, name) for name in TABLE_NAMES}

    results = sync_everything(sandbox, warehouse)

    assert results["contacts"].mode == "incremental"
    for result in results.values():
        for name, counts in result.counts.items():
            if name in MERGED:
                assert (counts.inserted, counts.updated, counts.deleted) == (0, 0, 0), name
    # Merged tables: not a single value rewritten, synced_at included.
    for name in MERGED:
        assert rows(warehouse, name) == before[name], name
    # Only the time of the last contacts sync moves; cursors stay where they were.
    after_state = state(warehouse)
    before_state = {r["name"]: r["value"] for r in before["sync_state"]}
    assert after_state.pop(sync.CONTACTS_SYNCED_AT) > before_state.pop(sync.CONTACTS_SYNCED_AT)
    assert after_state == before_state
    # Replaced tables: same content; snapshots: the old one untouched, an identical new one.
    for name in ("categories", "messages"):
        assert content(warehouse, name) == [
            {k: v for k, v in r.items() if k != "synced_at"} for r in before[name]
        ]
    snapshots = rows(warehouse, "category_statistics_snapshots")
    old = before["category_statistics_snapshots"]
    assert snapshots[: len(old)] == old
    new = snapshots[len(old) :]
    assert [{k: v for k, v in r.items() if k != "snapshot_at"} for r in new] == [
        {k: v for k, v in r.items() if k != "snapshot_at"} for r in old
    ]


def test_evinotice_progress_equals_the_api_figure(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=100)

    async def go() -> None:
        async with evinotice_client(sandbox) as evi:
            await sync.sync_evinotice_batches(evi, warehouse, sandbox.config.evinotice_site_id)

    run(go())
    truth = {b["Id"]: b["ProgressPercentage"] for b in sandbox.truth("evinotice-batches")}
    stored = {r["id"]: r["progress_percentage"] for r in rows(warehouse, "evinotice_batches")}
    assert stored == {i: truth[i] for i in stored}


def test_opt_out_rows_written_are_counted(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    result = sync_contacts(sandbox, warehouse)
    written = len(rows(warehouse, "contact_opt_outs"))
    assert written > 0
    assert result.counts["contact_opt_outs"].inserted == written


# --- changes between runs --------------------------------------------------------------------


def test_changes_between_runs_show_up_after_the_next_incremental_run(
    warehouse: Warehouse,
) -> None:
    sandbox = frozen_sandbox()
    store = sandbox.marketplace
    sync_everything(sandbox, warehouse)
    before = by_id(rows(warehouse, "contacts"))
    cursor = state(warehouse)[sync.CONTACTS_CURSOR]

    sandbox.clock.advance(3600)
    truth = list(sandbox.truth("contacts"))
    active = [c for c in truth if c["status"] == "Active"]
    renamed = next(c for c in active if not c["optOuts"])
    blocked = next(c for c in active if not c["optOuts"] and c is not renamed)
    opted = next(c for c in active if c["optOuts"])
    unblocked = next(c for c in truth if c["status"] == "Blocked")
    store.update_contact(
        renamed["id"],
        {"email": "renamed@example.test", "name": "Renamed Person", "optOuts": []},
    )
    store.set_blocked(blocked["id"], True, "Bounced")
    store.set_blocked(unblocked["id"], False)
    store.update_contact(opted["id"], {"email": opted["email"], "name": opted["name"]})
    created = store.create_contact(
        {
            "email": "new.person@example.test",
            "name": "New Person",
            "optOuts": [{"id": "NTC-0000-0001"}],
        }
    )

    result = sync_contacts(sandbox, warehouse)

    assert result.mode == "incremental"
    # Only what changed was read (plus the look-back window), not the whole collection.
    assert result.read is not None and result.read.rows < 100
    assert (result.counts["contacts"].inserted, result.counts["contacts"].updated) == (1, 4)
    assert_contacts_match_truth(warehouse, sandbox)
    after = by_id(rows(warehouse, "contacts"))
    assert after[renamed["id"]]["email"] == "renamed@example.test"
    assert after[blocked["id"]]["status"] == "Blocked"
    assert after[blocked["id"]]["blocked_reason"] == "Bounced"
    assert after[unblocked["id"]]["status"] == "Active"
    assert after[unblocked["id"]]["blocked_reason"] is None
    assert after[opted["id"]]["opt_out_count"] == 0
    assert after[created["id"]]["opt_out_count"] == 1
    assert not [r for r in rows(warehouse, "contact_opt_outs") if r["contact_id"] == opted["id"]]
    # Rows that did not change were not rewritten.
    changed = {renamed["id"], blocked["id"], unblocked["id"], opted["id"], created["id"]}
    for identifier, row in before.items():
        if identifier not in changed:
            assert after[identifier] == row, identifier
    assert state(warehouse)[sync.CONTACTS_CURSOR] > cursor


def test_deleted_contact_gets_deleted_at_on_full_refresh_and_is_kept(
    warehouse: Warehouse,
) -> None:
    sandbox = frozen_sandbox()
    sync_contacts(sandbox, warehouse)
    victim = list(sandbox.truth("contacts"))[42]
    kept_opt_outs = [
        r for r in rows(warehouse, "contact_opt_outs") if r["contact_id"] == victim["id"]
    ]
    sandbox.clock.advance(60)
    sandbox.marketplace.delete_contact(victim["id"])

    now = sandbox.clock.now()
    result = sync_contacts(sandbox, warehouse, full_refresh=True, now=now)

    assert result.mode == "full"
    assert result.counts["contacts"].deleted == 1
    stored = by_id(rows(warehouse, "contacts"))
    assert len(stored) == 1500  # nothing dropped
    assert stored[victim["id"]]["deleted_at"] == sync._now(now).isoformat()
    assert stored[victim["id"]]["email"] == victim["email"]
    assert [r for r in stored.values() if r["deleted_at"] is not None] == [stored[victim["id"]]]
    assert_contacts_match_truth(warehouse, sandbox)
    assert result.api_count == result.table_count == 1499
    # Its opt-outs stay with it, so the row remains whole.
    assert [
        r for r in rows(warehouse, "contact_opt_outs") if r["contact_id"] == victim["id"]
    ] == kept_opt_outs

    # A later full refresh keeps the first deletion time.
    sync_contacts(sandbox, warehouse, full_refresh=True, now=now + timedelta(hours=1))
    assert by_id(rows(warehouse, "contacts"))[victim["id"]]["deleted_at"] == (
        sync._now(now).isoformat()
    )


def test_incremental_run_notices_a_deletion_through_the_count(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    sync_contacts(sandbox, warehouse)
    victim = list(sandbox.truth("contacts"))[7]
    sandbox.marketplace.delete_contact(victim["id"])

    result = sync_contacts(sandbox, warehouse)

    # The incremental read cannot see a deletion; the API's count can, and a refresh follows.
    assert result.mode == "full"
    assert result.notes and "full refresh" in result.notes[0]
    assert by_id(rows(warehouse, "contacts"))[victim["id"]]["deleted_at"] is not None
    assert_contacts_match_truth(warehouse, sandbox)


def test_a_contact_that_reappears_is_live_again(warehouse: Warehouse) -> None:
    # The API has no undelete, but a contact restored on the platform side comes back with
    # its old id and audit: the store puts the very same record back.
    sandbox = frozen_sandbox()
    sync_contacts(sandbox, warehouse)
    victim = list(sandbox.truth("contacts"))[99]
    sandbox.marketplace.delete_contact(victim["id"])
    sync_contacts(sandbox, warehouse, full_refresh=True)
    assert by_id(rows(warehouse, "contacts"))[victim["id"]]["deleted_at"] is not None

    sandbox.marketplace.contacts.put(victim)
    sync_contacts(sandbox, warehouse)

    row = by_id(rows(warehouse, "contacts"))[victim["id"]]
    assert row["deleted_at"] is None
    assert_contacts_match_truth(warehouse, sandbox)


# --- churn -----------------------------------------------------------------------------------


def test_churn_during_a_sync_is_settled_by_one_follow_up_run(warehouse: Warehouse) -> None:
    sandbox = make_sandbox(contacts=3000, seed=13, churn_per_request=3)
    # Paging (not one streamed snapshot), so rows move between the pages of the read.
    proxy = Paging(sandbox.app)
    run(_contacts(proxy, warehouse))
    churn = sandbox.marketplace.churn
    assert proxy.requests > 30
    assert churn.created and churn.updated and churn.deleted and churn.blocked

    sandbox.behaviour.update({"churn_per_request": 0})
    result = run(_contacts(proxy, warehouse))

    live = live_contacts(warehouse)
    truth = by_id(list(sandbox.truth("contacts")))
    assert sorted(live) == sorted(truth)
    assert {i: (r["name"], r["status"]) for i, r in live.items()} == {
        i: (c["name"], c["status"]) for i, c in truth.items()
    }
    assert_contacts_match_truth(warehouse, sandbox)
    assert result.api_count == result.table_count == len(truth)
    # Every contact churn deleted is still there, marked.
    stored = by_id(rows(warehouse, "contacts"))
    seen_deleted = [i for i in churn.deleted_ids if i in stored]
    assert all(stored[i]["deleted_at"] is not None for i in seen_deleted)


# --- state in the warehouse ------------------------------------------------------------------


def test_a_new_warehouse_object_continues_from_the_stored_cursor(
    warehouse_url: str, open_warehouse: Any
) -> None:
    sandbox = frozen_sandbox()
    first = open_warehouse(warehouse_url)
    sync_contacts(sandbox, first)
    first.dispose()
    sandbox.clock.advance(120)
    target = list(sandbox.truth("contacts"))[500]
    sandbox.marketplace.update_contact(
        target["id"], {"email": target["email"], "name": "Moved Machines"}
    )

    # As on a new machine: nothing in memory, only the warehouse.
    second = open_warehouse(warehouse_url)
    result = sync_contacts(sandbox, second)

    assert result.mode == "incremental"
    assert result.read is not None and result.read.rows < 100
    assert result.counts["contacts"].updated == 1
    assert by_id(rows(second, "contacts"))[target["id"]]["name"] == "Moved Machines"
    assert state(second)[sync.CONTACTS_CURSOR] == at(
        sandbox.marketplace.contacts.get(target["id"]), "updated"
    )


def test_full_refresh_is_due_after_its_interval(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    now = datetime(2026, 11, 20, 8, tzinfo=UTC)
    policy = sync.ContactsPolicy(full_refresh_every=timedelta(hours=24))
    assert sync_contacts(sandbox, warehouse, policy=policy, now=now).mode == "full"
    later = now + timedelta(hours=23)
    assert sync_contacts(sandbox, warehouse, policy=policy, now=later).mode == "incremental"
    assert state(warehouse)[sync.CONTACTS_LAST_FULL_REFRESH] == "2026-11-20T08:00:00.000Z"
    day_later = now + timedelta(hours=24)
    assert sync_contacts(sandbox, warehouse, policy=policy, now=day_later).mode == "full"
    assert state(warehouse)[sync.CONTACTS_LAST_FULL_REFRESH] == "2026-11-21T08:00:00.000Z"
