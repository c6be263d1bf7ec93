"""Applying a plan against the sandbox: every outcome in the ledger, retries, ambiguous
creates looked up before a resend, refreshed contacts, and applies that must not collide."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import reconcile_world
import sqlalchemy as sa
from reconcile_world import (
    World,
    actives,
    line,
    rows,
    served,
)

from connector.errors import ConfigurationError
from connector.pipelines import pushback
from connector.pipelines.sync import refresh_contacts
from connector.settings import SANDBOX_TOKEN
from connector.warehouse.engine import Warehouse, WarehouseBusyError

# The shared fixtures, by name.
world = reconcile_world.world
warehouse_url = reconcile_world.warehouse_url

# --- apply ----------------------------------------------------------------------------------


def ledger_requests(world: World, start: int) -> list[tuple[str, str, int]]:
    return world.gateway.requests[start:]


def test_apply_records_every_outcome_and_never_sends_a_settled_action_again(
    world: World,
) -> None:
    a, b, gone = actives(world)[:3]
    world.gateway.refused.add("refused@suppressed.example")
    path = world.write(
        "crm.csv",
        [
            line("new.one@example.org", "New One"),
            line("New.Two@Example.org", "New Two"),
            line("refused@suppressed.example", "Refused"),
            line(a["email"], a["name"], "dne"),
            line(b["email"], b["name"], "bounced"),
            line(gone["email"], gone["name"], "unsub"),
        ],
    )
    world.plan(path)
    planned = {r["action_key"]: r for r in rows(world.warehouse, "reconciliation_plan")}
    assert len(planned) == 6
    # Deleted on the platform after the plan was made.
    world.sandbox.marketplace.delete_contact(gone["id"])

    summary = world.apply(refresh=False)

    assert summary.outcomes == Counter(done=4, rejected=2)
    assert summary.skipped == 0
    ledger = world.ledger()
    assert set(ledger) == {r["email"] for r in planned.values()}
    assert {r["action_key"] for r in ledger.values()} == set(planned)
    truth = world.truth()
    for email in ("new.one@example.org", "new.two@example.org"):
        row = ledger[email]
        assert (row["action"], row["state"], row["attempts"]) == ("create", "done", 1)
        assert row["contact_id"] == truth[email]["id"]
        assert row["done_at"] is not None and row["first_attempt_at"] is not None
        assert row["http_status"] is None and row["problem_title"] is None
        assert row["run_id"] == "apply"
    for contact in (a, b):
        row = ledger[contact["email"]]
        assert (row["action"], row["state"], row["contact_id"]) == ("block", "done", contact["id"])
        assert truth[contact["email"]]["status"] == "Blocked"

    refused = ledger["refused@suppressed.example"]
    assert refused["state"] == "rejected" and refused["done_at"] is None
    assert (refused["http_status"], refused["problem_title"], refused["problem_detail"]) == (
        400,
        "Bad Request",
        "One or more validation errors occurred.",
    )
    assert refused["field_errors"] == {
        "email": ["This address is on the platform's suppression list."]
    }
    assert "refused@suppressed.example" not in truth
    missing = ledger[gone["email"]]
    # Block answers an unknown id with 400 "not found" (its published responses are 200 and
    # 400); the client calls that ContactGoneError: final, not retried.
    assert (missing["state"], missing["http_status"], missing["problem_title"]) == (
        "rejected",
        400,
        "Bad Request",
    )
    assert missing["problem_detail"] == f"Contact {gone['id']} was not found."

    # Each action went out once; nothing was created twice.
    assert len(world.gateway.sent("POST", "/contacts")) == 3
    assert len(world.gateway.sent("POST", "/block")) == 3
    assert Counter(c["email"] for c in world.sandbox.truth("contacts"))["new.two@example.org"] == 1

    # Again: every action is settled (done or rejected for good), so nothing is sent; the
    # settled contacts are only read again.
    sent_before = len(world.gateway.requests)
    again = world.apply()
    assert again.outcomes == Counter() and again.skipped == 6
    assert [r for r in world.gateway.requests[sent_before:] if r[0] != "GET"] == []
    assert world.ledger() == ledger


def test_refresh_contacts_shows_what_the_apply_changed(world: World) -> None:
    a = actives(world)[0]
    path = world.write(
        "crm.csv", [line("fresh@example.org", "Fresh"), line(a["email"], None, "dne")]
    )
    world.plan(path)

    async def go() -> pushback.ApplySummary:
        async with world.client() as client:
            return await pushback.apply_plan(client, world.warehouse, run_id="r")

    summary = asyncio.run(go())
    created = world.truth()["fresh@example.org"]
    assert sorted(summary.touched_contacts) == sorted([created["id"], a["id"]])
    table = {r["id"]: r for r in rows(world.warehouse, "contacts")}
    assert created["id"] not in table and table[a["id"]]["status"] == "Active"

    async def refresh() -> None:
        async with world.client() as client:
            await refresh_contacts(client, world.warehouse, summary.touched_contacts)

    asyncio.run(refresh())
    table = {r["id"]: r for r in rows(world.warehouse, "contacts")}
    assert (table[created["id"]]["email"], table[created["id"]]["status"]) == (
        "fresh@example.org",
        "Active",
    )
    assert table[created["id"]]["email_key"] == "fresh@example.org"
    assert (table[a["id"]]["status"], table[a["id"]]["blocked_reason"]) == (
        "Blocked",
        "Blocked by API",
    )
    assert len(table) == 41
    # With the table current, the same export plans nothing more.
    world.plan(path)
    assert world.actions() == set()


def test_retryable_failures_are_sent_again_on_the_next_apply(world: World) -> None:
    active = actives(world)
    path = world.write(
        "crm.csv",
        [
            *(line(f"retry{n}@example.org", f"Retry {n}") for n in range(3)),
            *(line(c["email"], c["name"], "unsub") for c in active[:5]),
        ],
    )
    world.plan(path)
    world.limits.update(max_attempts=1, max_concurrency=1)
    with served(world.gateway, world.sandbox) as url:
        world.url = url
        world.sandbox.behaviour.update({"faults": "error=0.5"})
        first = world.apply(refresh=False)
        after_first = world.ledger()
        states = Counter(r["state"] for r in after_first.values())
        # Half the answers were server errors: some actions are done, the rest wait.
        assert states["done"] and states["retry"] and states["done"] < 8
        assert set(states) <= {"done", "retry", "ambiguous"}
        assert sum(first.outcomes.values()) == 8
        for row in after_first.values():
            if row["state"] == "retry":
                assert row["http_status"] in (500, 502, 503, 504)
                assert row["problem_title"] == "Server Error"
            if row["action"] == "block" and row["state"] != "done":
                assert row["state"] == "retry"

        world.sandbox.behaviour.update({"faults": None})
        start = len(world.gateway.requests)
        second = world.apply(refresh=False)
        sent = world.gateway.requests[start:]

    assert second.skipped == states["done"]
    assert second.outcomes == Counter(done=8 - states["done"])
    # Only the pending actions were sent; the done ones were skipped.
    pending = {e: r for e, r in after_first.items() if r["state"] != "done"}
    blocked_paths = {p.rsplit("/", 2)[-2] for m, p, _ in sent if p.endswith("/block")}
    assert blocked_paths == {r["contact_id"] for r in pending.values() if r["action"] == "block"}
    # A pending create is looked up, then sent (the injected errors never reached the API).
    pending_creates = [r for r in pending.values() if r["action"] == "create"]
    contacts = "/public/v1/notifications/contacts"
    assert Counter((m, p) for m, p, _ in sent if p == contacts) == {
        ("GET", contacts): len(pending_creates),
        ("POST", contacts): len(pending_creates),
    }
    ledger = world.ledger()
    assert {r["state"] for r in ledger.values()} == {"done"}
    for email, row in ledger.items():
        expected = 1 if after_first[email]["state"] == "done" else 2
        assert row["attempts"] == expected, email
    truth = Counter(c["email"] for c in world.sandbox.truth("contacts"))
    assert all(truth[f"retry{n}@example.org"] == 1 for n in range(3))
    statuses = world.truth()
    assert all(statuses[c["email"]]["status"] == "Blocked" for c in active[:5])


@pytest.mark.parametrize(
    "landed", [True, False], ids=["answer-lost-after-landing", "dropped-before-landing"]
)
def test_an_ambiguous_create_is_looked_up_before_it_is_sent_again(
    world: World, landed: bool
) -> None:
    email = "o.brien+news@example.org"
    contacts = "/public/v1/notifications/contacts"
    world.plan(world.write("crm.csv", [line(email, "O Brien")]))
    (action_key,) = [r["action_key"] for r in rows(world.warehouse, "reconciliation_plan")]
    world.limits.update(max_attempts=2)
    with served(world.gateway, world.sandbox) as url:
        world.url = url
        if landed:
            # The create is carried out, its answer lost; the lookup after it finds the API
            # unavailable, so the outcome stays unknown.
            world.gateway.lose_answers.add(("POST", "/contacts"))
            world.gateway.unavailable.add("GET")
        else:
            world.sandbox.behaviour.update({"faults": "drop=1"})
        first = world.apply(refresh=False)
        assert first.outcomes == Counter(ambiguous=1)
        row = world.ledger()[email]
        assert (row["action_key"], row["state"], row["attempts"]) == (action_key, "ambiguous", 1)
        assert row["contact_id"] is None and row["done_at"] is None
        assert (email in world.truth()) is landed

        world.gateway.lose_answers.clear()
        world.gateway.unavailable.clear()
        world.sandbox.behaviour.update({"faults": None})
        start = len(world.gateway.requests)
        second = world.apply(refresh=False)
        sent = [(m, p) for m, p, _ in world.gateway.requests[start:]]

    assert second.outcomes == Counter(done=1)
    # The email is looked up first; it is sent only when no contact has it.
    assert sent == ([("GET", contacts)] if landed else [("GET", contacts), ("POST", contacts)])
    matching = [c for c in world.sandbox.truth("contacts") if c["email"].casefold() == email]
    assert len(matching) == 1
    row = world.ledger()[email]
    assert (row["state"], row["attempts"], row["contact_id"]) == ("done", 2, matching[0]["id"])


def test_contacts_reflect_actions_done_by_an_apply_that_stopped_before_its_refresh(
    world: World,
) -> None:
    a = actives(world)[0]
    world.plan(
        world.write("crm.csv", [line("late@example.org", "Late"), line(a["email"], None, "dne")])
    )
    world.apply(refresh=False)  # the run stops here, before it re-reads the contacts
    world.apply()  # the retried run, as the pushback_results asset runs it

    table = {r["email"]: r for r in rows(world.warehouse, "contacts")}
    assert table[a["email"]]["status"] == "Blocked"
    assert "late@example.org" in table


# --- protections added after review -----------------------------------------------------------


def test_two_applies_at_once_send_each_action_once(world: World) -> None:
    a, b = actives(world)[:2]
    world.plan(
        world.write(
            "crm.csv",
            [
                line("twice.one@example.org", "One"),
                line("twice.two@example.org", "Two"),
                line(a["email"], None, "dne"),
                line(b["email"], None, "unsub"),
            ],
        )
    )

    async def both() -> list[Any]:
        async with world.client() as first, world.client() as second:
            return list(
                await asyncio.gather(
                    pushback.apply_plan(first, world.warehouse, run_id="a"),
                    pushback.apply_plan(second, world.warehouse, run_id="b"),
                    return_exceptions=True,
                )
            )

    results = asyncio.run(both())

    # One apply ran; the other was refused before it claimed or sent anything.
    done = [r for r in results if isinstance(r, pushback.ApplySummary)]
    refused = [r for r in results if isinstance(r, WarehouseBusyError)]
    assert len(done) == 1 and len(refused) == 1, results
    assert done[0].sent == 4
    assert len(world.gateway.sent("POST", "/contacts")) == 2
    assert len(world.gateway.sent("POST", "/block")) == 2
    assert {r["state"] for r in world.ledger().values()} == {"done"}


def test_an_apply_in_another_process_holding_the_postgres_lock_refuses_this_one(
    postgres_url: str,
) -> None:
    holder = Warehouse(postgres_url)
    other = Warehouse(postgres_url)
    with holder.exclusive("pushback"):
        # Another process has only its own session: the advisory lock is what refuses it.
        with other.engine.connect() as session:
            taken = session.execute(
                sa.text("select pg_try_advisory_lock(hashtext('notifsync:pushback'))")
            ).scalar()
        assert taken is False
    with other.engine.connect() as session:
        taken = session.execute(
            sa.text("select pg_try_advisory_lock(hashtext('notifsync:pushback'))")
        ).scalar()
        assert taken is True


def test_a_create_pending_under_an_older_export_is_looked_up_before_a_new_export_sends_it(
    world: World,
) -> None:
    first = world.write("week1.csv", [line("landed@example.org", "Landed")])
    world.plan(first)
    # The first export's create landed, but its answer was lost (the ledger says ambiguous).
    world.sandbox.marketplace.create_contact({"email": "landed@example.org", "name": "Landed"})
    with world.warehouse.transaction() as tx:
        key = tx.scalar("select action_key from reconciliation_plan")
        tx.connection.exec_driver_sql(
            "insert into pushback_results (action_key, action, email, state, attempts) "
            f"values ('{key}', 'create', 'landed@example.org', 'ambiguous', 1)"
        )
    # A new export (different content, so different action keys) still lists the person.
    second = world.write(
        "week2.csv", [line("landed@example.org", "Landed"), line("other@example.org", "Other")]
    )
    world.plan(second)
    world.apply()

    creates = world.gateway.sent("POST", "/contacts")
    assert [c for c in creates if c[2] == 201] == creates  # no 409: nothing sent blind
    assert len(creates) == 1  # only other@example.org
    emails = [c["email"] for c in world.sandbox.truth("contacts")]
    assert emails.count("landed@example.org") == 1


def test_an_unblock_is_not_sent_when_the_contact_changed_after_the_plan(world: World) -> None:
    target = actives(world)[0]
    world.plan(world.write("week1.csv", [line(target["email"], target["name"], "dne")]))
    world.apply()
    world.sync()
    world.plan(world.write("week2.csv", [line(target["email"], target["name"])]))
    assert world.actions() == {("unblock", target["email"])}
    # Between plan and apply someone unblocks it and the platform blocks it for a bounce.
    store = world.sandbox.marketplace
    store.set_blocked(target["id"], False)
    world.sandbox.clock.advance(1)
    store.set_blocked(target["id"], True, "Bounced")

    summary = world.apply()

    assert summary.outcomes == Counter({"rejected": 1})
    assert world.gateway.sent("POST", "/unblock") == []
    assert store.contacts.get(target["id"])["blockedReason"] == "Bounced"
    (entry,) = [r for r in world.ledger().values() if r["action"] == "unblock"]
    assert "changed since this connector blocked it" in entry["problem_title"]


# --- intent never silently lost -----------------------------------------------------------------


def test_a_refused_token_stops_the_apply_and_the_right_token_then_does_everything(
    world: World,
) -> None:
    active = actives(world)
    path = world.write(
        "crm.csv",
        [
            *(line(f"token{n}@example.org", f"Token {n}") for n in range(4)),
            *(line(c["email"], c["name"], "dne") for c in active[:3]),
        ],
    )
    world.plan(path)
    world.token = "not-the-token"

    with pytest.raises(ConfigurationError) as caught:
        world.apply(refresh=False)

    message = str(caught.value)
    assert "MPT_API_TOKEN" in message and "401" in message and "not-the-token" not in message
    assert "pending" in message
    # Nothing was rejected: every action is still pending, none final.
    ledger = world.ledger()
    assert {r["state"] for r in ledger.values()} <= set(pushback.PENDING_STATES)
    assert all(r["done_at"] is None for r in ledger.values())

    world.token = SANDBOX_TOKEN
    again = world.apply(refresh=False)

    assert again.outcomes == Counter(done=7) and again.skipped == 0
    assert {r["state"] for r in world.ledger().values()} == {"done"}
    truth = world.truth()
    assert all(f"token{n}@example.org" in truth for n in range(4))
    assert {truth[c["email"]]["status"] for c in active[:3]} == {"Blocked"}


def test_actions_claimed_but_never_sent_are_given_back_when_the_apply_stops(
    world: World,
) -> None:
    """One sender, a refused token: the first action is sent and refused, the apply stops with
    the rest of the batch claimed but unsent. Those claims are given back, so the next apply
    neither counts an attempt that never happened nor takes them for perhaps-sent ones."""
    path = world.write("crm.csv", [line(f"unsent{n}@example.org", f"Unsent {n}") for n in range(5)])
    world.plan(path)
    world.token = "not-the-token"
    world.limits.update(max_concurrency=1)

    with pytest.raises(ConfigurationError):
        world.apply(refresh=False)

    (sent,) = world.ledger().values()  # only the action that went out is in the ledger
    assert (sent["state"], sent["attempts"]) == ("retry", 1)

    world.token = SANDBOX_TOKEN
    again = world.apply(refresh=False)

    assert again.outcomes == Counter(done=5)
    attempts = {email: r["attempts"] for email, r in world.ledger().items()}
    assert attempts == {
        f"unsent{n}@example.org": 2 if f"unsent{n}@example.org" == sent["email"] else 1
        for n in range(5)
    }


def test_a_block_whose_answer_was_lost_is_recorded_as_ours_and_can_be_lifted(
    world: World,
) -> None:
    targets = actives(world)[:3]
    world.plan(world.write("week1.csv", [line(c["email"], c["name"], "dne") for c in targets]))
    world.limits.update(max_attempts=1)
    with served(world.gateway, world.sandbox) as url:
        world.url = url
        # The blocks land on the platform, their answers are lost: the ledger cannot say.
        world.gateway.lose_answers.add(("POST", "/block"))
        first = world.apply(refresh=False)
        assert sum(first.outcomes.values()) == 3 and first.outcomes["done"] == 0
        assert {world.truth()[c["email"]]["status"] for c in targets} == {"Blocked"}

        world.gateway.lose_answers.clear()
        start = len(world.gateway.requests)
        second = world.apply(refresh=False)
        resent = [r for r in world.gateway.requests[start:] if r[0] == "POST"]

    assert second.outcomes == Counter(done=3)
    # Nothing was sent twice: the contacts were read, found blocked, and that block recorded.
    assert resent == []
    for contact in targets:
        row = world.ledger()[contact["email"]]
        assert row["state"] == "done"
        assert row["contact_updated_at"] is not None
        assert row["contact_blocked_reason"] == "Blocked by API"

    # The CRM says they are mailable again: the connector recognises its own blocks.
    world.url = None
    world.sync()
    world.plan(world.write("week2.csv", [line(c["email"], c["name"]) for c in targets]))
    assert world.actions() == {("unblock", c["email"]) for c in targets}
    assert world.apply().outcomes == Counter(done=3)
    assert {world.truth()[c["email"]]["status"] for c in targets} == {"Active"}


def test_a_first_block_met_by_409_already_blocked_is_not_recorded_as_ours(
    world: World,
) -> None:
    target = actives(world)[0]
    world.plan(world.write("week1.csv", [line(target["email"], target["name"], "dne")]))
    # After the plan, before the apply, the platform blocks the contact itself.
    world.sandbox.marketplace.set_blocked(target["id"], True, "Blocked by API")

    assert world.apply().outcomes == Counter(done=1)

    assert [s for *_, s in world.gateway.sent("POST", "/block")] == [409]
    row = world.ledger()[target["email"]]
    assert (row["contact_updated_at"], row["contact_blocked_reason"]) == (None, None)
    world.plan(world.write("week2.csv", [line(target["email"], target["name"])]))
    assert world.actions() == set()
