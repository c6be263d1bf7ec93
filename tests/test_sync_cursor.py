"""The contacts cursor and the incremental run's request budget: an incremental run's
high-water mark comes from the rows the read returned (no requests of its own), a change made
while the read runs is picked up by the next run, a read too slow for the look-back keeps the
old cursor, and so does a full read whose high-water answer came too late."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sync_support import (
    _contacts,
    assert_contacts_match_truth,
    at,
    by_id,
    frozen_sandbox,
    marketplace_client,
    rows,
    run,
    state,
)

from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox

PAGE = 100


async def incremental(
    sandbox: Sandbox, warehouse: Warehouse, mode: str, **options: Any
) -> sync.SyncResult:
    """A contacts sync reading in ``mode`` ("concurrent": paging, as a server that does not
    stream is read; "auto": streaming)."""
    client = marketplace_client(sandbox.app)
    client.read_mode = mode  # type: ignore[assignment]
    async with client:
        return await sync.sync_contacts(client, warehouse, **options)


def instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def rename(sandbox: Sandbox, contact: dict[str, Any], name: str) -> dict[str, Any]:
    return sandbox.marketplace.update_contact(
        contact["id"], {"email": contact["email"], "name": name}
    )


def changed_contacts(sandbox: Sandbox, count: int) -> list[dict[str, Any]]:
    """Rename ``count`` contacts an hour after the first sync; returns them in id order."""
    sandbox.clock.advance(3600)
    chosen = sorted(sandbox.truth("contacts"), key=lambda c: c["id"])[::5][:count]
    return [rename(sandbox, c, f"Changed {n}") for n, c in enumerate(chosen)]


@pytest.mark.parametrize("mode", ["concurrent", "auto"])
def test_an_incremental_run_stays_within_its_request_budget(
    warehouse: Warehouse, mode: str
) -> None:
    sandbox = frozen_sandbox()
    run(_contacts(sandbox.app, warehouse))
    changed = changed_contacts(sandbox, 250)
    sandbox.stats.reset()

    result = run(incremental(sandbox, warehouse, mode))

    assert result.mode == "incremental", result.notes
    # The changes, and the few the look-back window adds (changed just before the cursor).
    assert result.read is not None and 250 <= result.read.rows < 300
    # The pages of the changes (one stream) and 2 counts (the completeness check, the deletion
    # check): no request before the read for the high-water mark.
    pages = 1 if mode == "auto" else -(-result.read.rows // PAGE)
    assert sandbox.stats.counts["requests"] == pages + 2
    assert sandbox.stats.counts["requests"] <= len(changed) / 100 + 3
    assert state(warehouse)[sync.CONTACTS_CURSOR] == max(at(c, "updated") for c in changed)
    assert_contacts_match_truth(warehouse, sandbox)


def _read_with_a_change_in_the_middle(
    sandbox: Sandbox, warehouse: Warehouse, policy: sync.ContactsPolicy
) -> tuple[sync.SyncResult, dict[str, Any], dict[str, Any]]:
    """An incremental paged read of 150 changes; while its second page is held, the first
    changed contact (already read) changes again, then the last one (not read yet).

    Returns the result and the two contacts as they are after their change in the middle.
    """
    changed = changed_contacts(sandbox, 150)
    first, last = changed[0], changed[-1]
    gate = sandbox.gate
    gate.hold(offset=PAGE)

    async def go() -> tuple[sync.SyncResult, dict[str, Any], dict[str, Any]]:
        reading = asyncio.ensure_future(
            incremental(sandbox, warehouse, "concurrent", policy=policy)
        )
        await gate.wait_until(lambda g: g.held >= 1)
        sandbox.clock.advance(1)
        moved_behind = rename(sandbox, first, "Changed behind the read")
        sandbox.clock.advance(1)
        moved_ahead = rename(sandbox, last, "Changed ahead of the read")
        gate.release()
        return await reading, moved_behind, moved_ahead

    return asyncio.run(go())


def test_a_change_made_during_the_read_is_picked_up_by_the_next_run(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox()
    run(_contacts(sandbox.app, warehouse))
    policy = sync.ContactsPolicy()

    result, behind, ahead = _read_with_a_change_in_the_middle(sandbox, warehouse, policy)

    # The read returned the later change (its page was still to come) but not the earlier
    # one (its page was already read): the cursor is past a change this run did not see.
    assert result.mode == "incremental", result.notes
    stored = by_id(rows(warehouse, "contacts"))
    assert stored[ahead["id"]]["name"] == "Changed ahead of the read"
    assert stored[behind["id"]]["name"] != "Changed behind the read"
    assert state(warehouse)[sync.CONTACTS_CURSOR] == at(ahead, "updated")
    assert at(behind, "updated") < at(ahead, "updated")

    # The look-back reaches back over the read, so the next run reads it.
    follow_up = run(_contacts(sandbox.app, warehouse, policy=policy))

    assert follow_up.mode == "incremental", follow_up.notes
    assert by_id(rows(warehouse, "contacts"))[behind["id"]]["name"] == "Changed behind the read"
    assert_contacts_match_truth(warehouse, sandbox)


def test_a_read_longer_than_the_look_back_allows_keeps_the_old_cursor(
    warehouse: Warehouse,
) -> None:
    sandbox = frozen_sandbox()
    run(_contacts(sandbox.app, warehouse))
    cursor = state(warehouse)[sync.CONTACTS_CURSOR]
    # A look-back shorter than any read: the mark from the rows cannot be trusted, since a
    # change made during the read may be older than the mark minus the look-back.
    policy = sync.ContactsPolicy(lookback=timedelta(microseconds=2))

    result, behind, _ = _read_with_a_change_in_the_middle(sandbox, warehouse, policy)

    assert any("cursor stays" in note for note in result.notes), result.notes
    assert state(warehouse)[sync.CONTACTS_CURSOR] == cursor
    follow_up = run(_contacts(sandbox.app, warehouse, policy=policy))
    assert follow_up.mode == "incremental", follow_up.notes
    assert by_id(rows(warehouse, "contacts"))[behind["id"]]["name"] == "Changed behind the read"
    assert_contacts_match_truth(warehouse, sandbox)


def test_a_full_refresh_uses_the_newest_change_only_when_it_came_within_the_look_back(
    warehouse: Warehouse,
) -> None:
    """A full read asks for its high-water mark beside the read: an answer that came later
    than half the look-back after the read started is not used (the old cursor stays);
    otherwise the cursor is the newest change the API names."""
    sandbox = frozen_sandbox()
    run(_contacts(sandbox.app, warehouse))
    cursor = state(warehouse)[sync.CONTACTS_CURSOR]
    (renamed,) = changed_contacts(sandbox, 1)
    newest = renamed["audit"]["updated"]["at"]
    assert instant(newest) > instant(cursor)

    # A look-back shorter than any round trip: every answer counts as late.
    hasty = sync.ContactsPolicy(lookback=timedelta(microseconds=2))
    late = run(_contacts(sandbox.app, warehouse, full_refresh=True, policy=hasty))

    assert late.mode == "full"
    assert any("cursor stays" in note for note in late.notes), late.notes
    assert state(warehouse)[sync.CONTACTS_CURSOR] == cursor

    on_time = run(_contacts(sandbox.app, warehouse, full_refresh=True))

    assert not any("cursor stays" in note for note in on_time.notes), on_time.notes
    assert instant(state(warehouse)[sync.CONTACTS_CURSOR]) == instant(newest)
    assert_contacts_match_truth(warehouse, sandbox)
