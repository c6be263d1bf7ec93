"""What a full refresh may mark deleted: nothing when its read came back incomplete, and not
most of the table unless a person overrides the guard with a reason (DuckDB and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sync_support import (
    ContactsAnswerRewriter,
    Paging,
    _contacts,
    by_id,
    frozen_sandbox,
    live_contacts,
    rows,
    run,
    state,
    sync_contacts,
)

from connector.errors import MassDeletionError
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse


class Withholding(ContactsAnswerRewriter):
    """A server that lists one record less than it counts: the record with ``withheld`` id
    is cut out of every list answer (page or stream), while ``limit=0`` counts still include
    it. A read through it ends incomplete, whatever gap repair does."""

    def __init__(self, app: Any, withheld: str) -> None:
        super().__init__(app)
        self.withheld = withheld.encode()
        self.cut = 0

    def rewrite(self, body: bytes, start: dict[str, Any]) -> bytes:
        if start.get("status") != 200 or self.withheld not in body:
            return body
        self.cut += 1
        if body.lstrip().startswith(b'{"$meta"'):
            page = orjson.loads(body)
            page["data"] = [r for r in page["data"] if r["id"].encode() != self.withheld]
            return orjson.dumps(page)
        lines = body.splitlines(keepends=True)
        return b"".join(line for line in lines if self.withheld not in line)


@pytest.mark.parametrize("read", ["streaming", "paging"])
def test_a_full_refresh_whose_read_ended_incomplete_marks_nothing_deleted(
    read: str, warehouse: Warehouse
) -> None:
    sandbox = frozen_sandbox(contacts=800)
    sync_contacts(sandbox, warehouse)
    contacts = sorted(sandbox.truth("contacts"), key=lambda c: c["id"])
    # Gone upstream: a complete full refresh would mark it deleted.
    sandbox.marketplace.delete_contact(contacts[100]["id"])
    # Withheld from the lists, inside a page rather than at a page boundary.
    withheld = contacts[250]["id"]
    before = rows(warehouse, "contacts")

    server = Withholding(sandbox.app, withheld)
    app = Paging(server) if read == "paging" else server
    result = run(_contacts(app, warehouse, full_refresh=True))

    assert server.cut > 0
    assert result.read is not None
    assert result.read.mode == ("streaming" if read == "streaming" else "concurrent")
    assert not result.read.complete
    assert result.read.rows < (result.read.final_count or 0)
    assert result.counts["contacts"].deleted == 0
    assert any("incomplete" in note for note in result.notes)
    after = by_id(rows(warehouse, "contacts"))
    assert [i for i, r in after.items() if r["deleted_at"] is not None] == []
    # The withheld contact and the really deleted one are both still there, unchanged.
    previous = by_id(before)
    assert after[withheld] == previous[withheld]
    assert after[contacts[100]["id"]] == previous[contacts[100]["id"]]

    # The next complete refresh settles it.
    done = sync_contacts(sandbox, warehouse, full_refresh=True)
    assert done.read is not None and done.read.complete
    assert done.counts["contacts"].deleted == 1


def _shrink(sandbox: Any, keep: int) -> list[str]:
    """Delete all but ``keep`` contacts upstream (a token scoped to a smaller account)."""
    ids = sorted(c["id"] for c in sandbox.truth("contacts"))
    for identifier in ids[keep:]:
        sandbox.marketplace.delete_contact(identifier)
    return ids[keep:]


def test_a_full_refresh_that_would_mark_most_contacts_deleted_changes_nothing(
    warehouse: Warehouse,
) -> None:
    sandbox = frozen_sandbox(contacts=600)
    sync_contacts(sandbox, warehouse)
    before = {n: rows(warehouse, n) for n in ("contacts", "contact_opt_outs", "sync_state")}
    sandbox.clock.advance(60)
    # One live change too: the stopped refresh must not merge it either.
    changed = sorted(sandbox.truth("contacts"), key=lambda c: c["id"])[0]
    sandbox.marketplace.update_contact(
        changed["id"], {"email": changed["email"], "name": "Changed Meanwhile"}
    )
    gone = _shrink(sandbox, keep=400)

    with pytest.raises(MassDeletionError) as raised:
        sync_contacts(sandbox, warehouse, full_refresh=True)

    error = raised.value
    assert (error.table, error.missing, error.live) == ("contacts", len(gone), 600)
    assert "200 of 600" in str(error) and "10%" in str(error)
    for name, previous in before.items():
        assert rows(warehouse, name) == previous, name


def test_the_guard_lets_a_small_share_through_and_counts_what_it_says(
    warehouse: Warehouse,
) -> None:
    sandbox = frozen_sandbox(contacts=600)
    sync_contacts(sandbox, warehouse)
    # 60 of 600 is exactly the default 10%: allowed (more than the share is what stops).
    _shrink(sandbox, keep=540)
    result = sync_contacts(sandbox, warehouse, full_refresh=True)
    assert result.counts["contacts"].deleted == 60
    # Now 540 live: one more than 10% of them (55) stops; the already deleted do not count.
    _shrink(sandbox, keep=540 - 55)
    with pytest.raises(MassDeletionError) as raised:
        sync_contacts(sandbox, warehouse, full_refresh=True)
    assert (raised.value.missing, raised.value.live) == (55, 540)
    # A share of the caller's choosing is honoured too.
    strict = sync.ContactsPolicy(max_deleted_share=0.5)
    assert sync_contacts(sandbox, warehouse, full_refresh=True, policy=strict).counts[
        "contacts"
    ].deleted == (55)


def test_an_override_with_a_reason_goes_through_and_is_recorded(warehouse: Warehouse) -> None:
    sandbox = frozen_sandbox(contacts=500)
    sync_contacts(sandbox, warehouse)
    gone = _shrink(sandbox, keep=100)

    with pytest.raises(MassDeletionError):
        sync_contacts(sandbox, warehouse, full_refresh=True, mass_deletion_reason="   ")
    result = sync_contacts(
        sandbox, warehouse, full_refresh=True, mass_deletion_reason="account split, ticket 42"
    )

    assert result.counts["contacts"].deleted == len(gone) == 400
    assert sorted(live_contacts(warehouse)) == sorted(c["id"] for c in sandbox.truth("contacts"))
    record = orjson.loads(state(warehouse)[sync.CONTACTS_MASS_DELETION_OVERRIDE])
    assert record["reason"] == "account split, ticket 42"
    assert (record["missing"], record["live"]) == (400, 500)
