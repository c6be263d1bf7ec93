"""Planning rules on small hand-written exports, on DuckDB and PostgreSQL: creates, blocks,
unblocks only of the connector's own blocks, conflicts, updates, missing contacts, and the
guards that stop an unusual plan."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import reconcile_world
from reconcile_world import (
    World,
    actives,
    blocked_by_platform,
    line,
    rows,
    write_export,
)

from connector.pipelines import reconcile
from connector.warehouse.engine import Warehouse

# The shared fixtures, by name.
world = reconcile_world.world
warehouse_url = reconcile_world.warehouse_url

# --- the rules ----------------------------------------------------------------------------


def test_create_only_for_a_mailable_email_no_platform_contact_has(world: World) -> None:
    # A platform contact with an internationalised domain, created before the sync.
    world.sandbox.marketplace.create_contact({"email": "Ann@Bücher.de", "name": "Ann Idn"})
    world.sync()
    known = actives(world)[0]
    path = world.write(
        "crm.csv",
        [
            line("New.Person@Example.org", "New Person"),
            line("flagged.stranger@example.org", "Flagged Stranger", "dne"),
            line("bounced.stranger@example.org", "Bounced Stranger", "bounced"),
            # The same addresses as the platform's, written differently: no create.
            line(f"  {known['email'].upper()}  ", known["name"]),
            line("ann@BÜCHER.DE", "Ann Idn"),
            line("ANN@xn--bcher-kva.de ", "Ann Idn"),
        ],
    )

    plan = world.plan(path)

    assert world.actions() == {("create", "new.person@example.org")}
    assert plan.actions == {"create": 1, "block": 0, "unblock": 0, "update": 0}
    row = world.plan_rows()[("create", "new.person@example.org")]
    assert row["contact_id"] is None
    assert row["name"] == "New Person"
    assert (row["source_file"], row["line"]) == ("crm.csv", 2)
    assert "mailable" in row["reason"] and "no platform contact" in row["reason"]


def test_block_a_flagged_contact_only_while_it_is_active(world: World) -> None:
    # The fixture's premise: Active contacts, and platform blocks of every kind.
    assert len(actives(world)) == 34 and world.warehouse.count("contacts") == 40
    assert set(blocked_by_platform(world)) == {"Bounced", "Complained", "Blocked by administrator"}
    dne, unsub, bounced, fine = actives(world)[:4]
    platform_blocked = blocked_by_platform(world)["Complained"]
    path = world.write(
        "crm.csv",
        [
            line(dne["email"], dne["name"], "dne"),
            line(unsub["email"], unsub["name"], "unsub"),
            line(bounced["email"].title(), bounced["name"], "bounced"),
            line(fine["email"], fine["name"]),
            # Already blocked by the platform: nothing to do.
            line(platform_blocked["email"], platform_blocked["name"], "dne", "unsub"),
        ],
    )

    world.plan(path)

    plan = world.plan_rows()
    assert set(plan) == {("block", c["email"]) for c in (dne, unsub, bounced)}
    assert {k[1]: r["contact_id"] for k, r in plan.items()} == {
        c["email"]: c["id"] for c in (dne, unsub, bounced)
    }
    assert "do-not-email" in plan[("block", dne["email"])]["reason"]
    assert "unsubscribed" in plan[("block", unsub["email"])]["reason"]
    assert "hard-bounced" in plan[("block", bounced["email"])]["reason"]
    assert all("platform contact is Active" in r["reason"] for r in plan.values())


def test_unblock_only_a_contact_this_connector_blocked(world: World) -> None:
    target = actives(world)[0]
    platform_blocked = blocked_by_platform(world)
    first = world.write("week1.csv", [line(target["email"], target["name"], "unsub")])
    world.plan(first)
    assert world.actions() == {("block", target["email"])}
    world.apply()
    assert world.sandbox.marketplace.contacts.get(target["id"])["status"] == "Blocked"

    # The CRM says everyone is mailable again, including the platform's own blocks
    # (bounced, complained, blocked by an administrator).
    everyone = [target, *platform_blocked.values()]
    second = world.write("week2.csv", [line(c["email"], c["name"]) for c in everyone])
    world.plan(second)

    plan = world.plan_rows()
    assert set(plan) == {("unblock", target["email"])}
    assert plan[("unblock", target["email"])]["contact_id"] == target["id"]
    assert "this connector blocked" in plan[("unblock", target["email"])]["reason"]

    world.apply()
    assert world.sandbox.marketplace.contacts.get(target["id"])["status"] == "Active"
    for reason, contact in platform_blocked.items():
        assert world.sandbox.marketplace.contacts.get(contact["id"])["status"] == "Blocked", reason

    # Once unblocked, the same mailable export plans nothing more.
    third = world.write("week3.csv", [line(c["email"], c["name"]) for c in everyone])
    world.plan(third)
    assert world.actions() == set()


def test_never_unblock_a_platform_block_that_followed_ours(world: World) -> None:
    """The connector blocked the contact; later someone unblocked it on the platform and the
    platform blocked it again because it bounced. That block is the platform's own."""
    target = actives(world)[0]
    world.plan(world.write("week1.csv", [line(target["email"], target["name"], "dne")]))
    world.apply()
    store = world.sandbox.marketplace
    store.set_blocked(target["id"], False)
    store.set_blocked(target["id"], True, "Bounced")
    world.sync()
    synced = {r["id"]: r for r in rows(world.warehouse, "contacts")}[target["id"]]
    assert (synced["status"], synced["blocked_reason"]) == ("Blocked", "Bounced")

    world.plan(world.write("week2.csv", [line(target["email"], target["name"])]))

    assert world.actions() == set()


def test_the_most_restrictive_line_wins_and_the_conflict_is_reported(world: World) -> None:
    twice, same_twice = actives(world)[:2]
    first = world.write(
        "a.csv",
        [
            line(twice["email"], twice["name"]),
            line("stranger@example.org", "Stranger"),
            line(same_twice["email"], same_twice["name"]),
        ],
    )
    second = world.write(
        "b.csv",
        [
            line("Stranger@Example.org", "Stranger", "unsub"),
            line(twice["email"].upper(), twice["name"], "dne"),
            line(same_twice["email"], same_twice["name"]),
        ],
    )

    plan = world.plan(first, second)

    # Do-not-email beats subscribed: a block, decided by b.csv line 3; the stranger who
    # unsubscribed in one export is not created from the other.
    assert world.actions() == {("block", twice["email"])}
    row = world.plan_rows()[("block", twice["email"])]
    assert (row["source_file"], row["line"]) == ("b.csv", 3)
    conflicts = {r["email"]: r for r in rows(world.warehouse, "crm_conflicts")}
    assert set(conflicts) == {twice["email"], "stranger@example.org"}
    assert conflicts[twice["email"]]["lines"] == "a.csv:2, b.csv:3"
    assert conflicts["stranger@example.org"]["lines"] == "a.csv:3, b.csv:2"
    assert all("most restrictive wins" in r["resolution"] for r in conflicts.values())
    assert plan.conflicts == 2


def test_name_updates_only_when_asked(world: World) -> None:
    renamed, same = actives(world)[:2]
    path = world.write(
        "crm.csv",
        [line(renamed["email"], "Completely New Name"), line(same["email"], same["name"])],
    )

    world.plan(path)
    assert world.actions() == set()

    plan = world.plan(path, include_updates=True)
    assert world.actions() == {("update", renamed["email"])}
    assert plan.actions["update"] == 1
    row = world.plan_rows()[("update", renamed["email"])]
    assert row["contact_id"] == renamed["id"]
    assert row["name"] == "Completely New Name"
    assert renamed["name"] in row["reason"]

    world.apply()
    assert world.sandbox.marketplace.contacts.get(renamed["id"])["name"] == "Completely New Name"
    assert world.ledger()[renamed["email"]]["state"] == "done"


def test_platform_contacts_missing_from_the_crm_are_reported_and_never_deleted(
    world: World,
) -> None:
    listed = actives(world)[:5]
    flagged = actives(world)[5]
    path = world.write(
        "crm.csv",
        [*(line(c["email"], c["name"]) for c in listed), line(flagged["email"], None, "dne")],
    )

    plan = world.plan(path)

    missing = {
        r["contact_id"]: r for r in rows(world.warehouse, "platform_contacts_missing_from_crm")
    }
    expected = {c["id"] for c in actives(world)} - {c["id"] for c in [*listed, flagged]}
    assert set(missing) == expected
    assert plan.missing_from_crm == len(expected) == 28
    assert {r["status"] for r in missing.values()} == {"Active"}
    assert all(
        r["email"] == world.sandbox.marketplace.contacts.get(i)["email"] for i, r in missing.items()
    )
    assert {a for a, _ in world.actions()} == {"block"}

    before = {c["id"] for c in world.sandbox.truth("contacts")}
    world.apply()
    assert {c["id"] for c in world.sandbox.truth("contacts")} == before
    assert not world.gateway.sent("DELETE")


# --- guards -------------------------------------------------------------------------------


def guard_results(
    plan: reconcile.PlanSummary, overrides: Sequence[str] = (), **limits: Any
) -> dict[str, reconcile.GuardResult]:
    return {
        g.name: g for g in reconcile.evaluate_guards(plan, reconcile.Guards(**limits), overrides)
    }


def test_guards_trip_and_an_override_lets_only_its_own_guard_pass(world: World) -> None:
    active = actives(world)
    path = world.write(
        "crm.csv",
        [
            *(line(f"new{n}@example.org", f"New {n}") for n in range(3)),
            *(line(c["email"], c["name"], "dne") for c in active[:2]),
        ],
    )
    synced = datetime.now(UTC)
    world.sync(now=synced)
    plan = world.plan(path, now=synced + timedelta(minutes=30))
    assert plan.actions["create"] == 3 and plan.actions["block"] == 2
    assert plan.active_contacts == 34

    # Within every limit (limits are inclusive): all pass.
    ok = guard_results(
        plan, max_creates=3, max_block_share=2 / 34, max_snapshot_age=timedelta(hours=1)
    )
    assert all(g.passed and g.allows_apply and not g.overridden for g in ok.values())

    # The defaults: 2 blocks of 34 active contacts is 5.88%, over the 5% default.
    defaults = guard_results(plan)
    assert [n for n, g in defaults.items() if not g.passed] == ["max_block_share"]
    assert defaults["max_block_share"].figure == "5.88%"

    tripped = guard_results(
        plan, max_creates=2, max_block_share=0.05, max_snapshot_age=timedelta(minutes=29)
    )
    assert {n: g.passed for n, g in tripped.items()} == {
        "max_creates": False,
        "max_block_share": False,
        "max_snapshot_age": False,
        "max_unblocks": True,
    }
    assert tripped["max_creates"].message == "3 creates planned (limit 2)"
    assert tripped["max_snapshot_age"].figure == "0:30:00"

    overridden = guard_results(
        plan,
        ["max_creates"],
        max_creates=2,
        max_block_share=0.05,
        max_snapshot_age=timedelta(minutes=29),
    )
    assert {n: (g.overridden, g.allows_apply) for n, g in overridden.items()} == {
        "max_creates": (True, True),
        "max_block_share": (False, False),
        "max_snapshot_age": (False, False),
        "max_unblocks": (False, True),
    }
    # The overridden guard still reports that it tripped, with its figure.
    assert not overridden["max_creates"].passed and overridden["max_creates"].figure == "3"
    # Overriding a guard that passes changes nothing; an unknown guard is an error.
    assert not guard_results(plan, ["max_snapshot_age"])["max_snapshot_age"].overridden
    with pytest.raises(ValueError, match="max_blocks"):
        guard_results(plan, ["max_blocks"])


def test_snapshot_age_guard_trips_when_contacts_were_never_synced(
    warehouse_url: str, tmp_path: Path
) -> None:
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    try:
        path = write_export(tmp_path / "crm.csv", [line("a@example.org", "A")])
        load = reconcile.load_exports(warehouse, [path], "generic", run_id="r")
        plan = reconcile.make_plan(warehouse, run_id="r", export_key=load.export_key)
    finally:
        warehouse.dispose()
    assert plan.contacts_synced_at is None and plan.actions["create"] == 1
    age = guard_results(plan, max_snapshot_age=timedelta(days=365))["max_snapshot_age"]
    assert (age.passed, age.figure, age.message) == (
        False,
        "never synced",
        "contacts were never synced",
    )
    assert guard_results(plan, ["max_snapshot_age"])["max_snapshot_age"].allows_apply


def test_never_unblock_a_platform_reblock_after_ours_even_with_the_same_reason(
    world: World,
) -> None:
    """Someone lifted the connector's block on the platform, and later the platform blocked
    the contact again with the very reason text the connector's block carries: the updated
    time after our block is what says it is not ours."""
    target, control = actives(world)[:2]
    world.plan(
        world.write(
            "week1.csv",
            [line(c["email"], c["name"], "dne") for c in (target, control)],
        )
    )
    world.apply()
    store = world.sandbox.marketplace
    ours = store.contacts.get(target["id"])["blockedReason"]
    world.sandbox.clock.advance(60)
    store.set_blocked(target["id"], False)
    world.sandbox.clock.advance(60)
    store.set_blocked(target["id"], True, ours)
    world.sync()
    synced = {r["id"]: r for r in rows(world.warehouse, "contacts")}
    assert (synced[target["id"]]["status"], synced[target["id"]]["blocked_reason"]) == (
        "Blocked",
        ours,
    )
    assert synced[target["id"]]["blocked_reason"] == synced[control["id"]]["blocked_reason"]

    world.plan(world.write("week2.csv", [line(c["email"], c["name"]) for c in (target, control)]))

    # The untouched block is still ours and is lifted; the re-block is the platform's.
    assert world.actions() == {("unblock", control["email"])}


def test_the_block_share_is_taken_of_active_contacts_not_deleted_ones(world: World) -> None:
    active = actives(world)
    deleted = active[-10:]
    for contact in deleted:
        world.sandbox.marketplace.delete_contact(contact["id"])
    # A quarter of this small platform is gone: past the mass-deletion guard, on purpose.
    world.sync(mass_deletion_reason="contacts deleted on the platform by the test")
    table = {r["id"]: r for r in rows(world.warehouse, "contacts")}
    assert all(table[c["id"]]["deleted_at"] is not None for c in deleted), "kept, marked deleted"
    assert all(table[c["id"]]["status"] == "Active" for c in deleted)

    path = world.write("crm.csv", [line(c["email"], c["name"], "dne") for c in active[:3]])
    plan = world.plan(path)

    # 34 active on the platform at first, 10 of them deleted since: 24 remain.
    assert plan.active_contacts == 24
    assert plan.block_share == 3 / 24
    judged = guard_results(plan, max_block_share=3 / 24)["max_block_share"]
    assert judged.passed and judged.figure == "12.50%"
    assert not guard_results(plan, max_block_share=3 / 34 + 0.001)["max_block_share"].passed


def test_lifting_most_of_the_connectors_blocks_trips_the_unblocks_guard(world: World) -> None:
    targets = actives(world)[:12]
    world.plan(world.write("week1.csv", [line(c["email"], c["name"], "dne") for c in targets]))
    world.apply()
    world.sync()
    # An export whose flag columns went missing: everyone reads as mailable.
    path = world.write(
        "week2.csv", [(c["email"], c["name"]) for c in targets], header=("Email", "Name")
    )
    plan = world.plan(path)
    assert plan.actions["unblock"] == 12 and plan.connector_blocks == 12

    default = guard_results(plan)["max_unblocks"]
    assert not default.passed and not default.allows_apply
    assert default.figure == "12 (100.00%)"
    assert "12 unblocks planned = 100.00% of the 12 blocks" in default.message
    # The count limit alone trips too; within both limits it passes; an override lets it by.
    assert not guard_results(plan, max_unblocks=11, max_unblock_share=1.0)["max_unblocks"].passed
    assert guard_results(plan, max_unblocks=12, max_unblock_share=1.0)["max_unblocks"].passed
    overridden = guard_results(plan, ["max_unblocks"])["max_unblocks"]
    assert overridden.overridden and overridden.allows_apply

    # A few blocks in place: lifting them all is ordinary, only the count limit applies.
    few = reconcile.PlanSummary(**{**vars(plan), "connector_blocks": 3, "actions": {"unblock": 3}})
    assert guard_results(few)["max_unblocks"].passed
    assert not guard_results(few, max_unblocks=2)["max_unblocks"].passed
