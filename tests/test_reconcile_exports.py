"""Reading CRM exports into a plan: stable action keys, every bad line rejected with its file,
line and reason, unreadable files that change nothing, and a messy corpus end to end."""

from __future__ import annotations

import codecs
from collections import Counter
from pathlib import Path

import openpyxl
import pytest
import reconcile_world
from reconcile_world import (
    World,
    actives,
    blocked_by_platform,
    line,
    rows,
    snapshot,
)

from connector.crm import CrmFileError
from connector.pipelines import reconcile

# The shared fixtures, by name.
world = reconcile_world.world
warehouse_url = reconcile_world.warehouse_url

# --- keys, rejected lines, unreadable files -------------------------------------------------


def test_action_keys_are_stable_for_the_same_export_and_new_for_another(world: World) -> None:
    active = actives(world)
    lines_ = [line("new@example.org", "New"), line(active[0]["email"], None, "dne")]
    path = world.write("crm.csv", lines_)

    world.plan(path)
    first = {
        (r["action"], r["email"]): r["action_key"]
        for r in rows(world.warehouse, "reconciliation_plan")
    }
    world.plan(path)
    again = {
        (r["action"], r["email"]): r["action_key"]
        for r in rows(world.warehouse, "reconciliation_plan")
    }
    assert first == again and len(first) == 2
    assert len(set(first.values())) == 2

    world.write("crm.csv", [*lines_, line("another@example.org", "Another")])
    world.plan(path)
    changed = {
        (r["action"], r["email"]): r["action_key"]
        for r in rows(world.warehouse, "reconciliation_plan")
    }
    assert set(first) < set(changed)
    assert all(changed[k] != first[k] for k in first)


def test_every_bad_line_lands_in_crm_rejected_rows_with_file_line_and_reason(
    world: World,
) -> None:
    path = world.write(
        "crm.csv",
        [
            line("good@example.org", "Good"),
            line("", "No Email"),
            line("not-an-email", "Bad"),
            line("two@@example.org", "Two Ats"),
            ("extra@example.org", "Extra", "false", "false", "false", "surplus"),
            line("also.good@example.org", "Also Good"),
        ],
    )
    other = world.write(
        "other.csv", [line("x@example", "No Dot"), line("fine@example.org", "Fine")]
    )

    world.plan(path, other)

    rejected = {
        (r["source_file"], r["line"]): r for r in rows(world.warehouse, "crm_rejected_rows")
    }
    assert {k: r["kind"] for k, r in rejected.items()} == {
        ("crm.csv", 3): "missing email",
        ("crm.csv", 4): "invalid email",
        ("crm.csv", 5): "invalid email",
        ("crm.csv", 6): "unreadable line",
        ("other.csv", 2): "invalid email",
    }
    assert all(r["reason"].startswith(r["kind"]) for r in rejected.values())
    assert "not-an-email" in rejected[("crm.csv", 4)]["reason"]
    assert "too many fields" in rejected[("crm.csv", 6)]["reason"]
    assert "surplus" in rejected[("crm.csv", 6)]["raw"]
    assert {(r["source_file"], r["line"]) for r in rows(world.warehouse, "crm_contacts")} == {
        ("crm.csv", 2),
        ("crm.csv", 7),
        ("other.csv", 3),
    }
    assert world.actions() == {
        ("create", "good@example.org"),
        ("create", "also.good@example.org"),
        ("create", "fine@example.org"),
    }


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


UNREADABLE = {
    "png": (PNG, "this is a PNG image, not a CSV export"),
    "binary": (b"\x00\x01\x02\xff\xfe" * 200, "binary data"),
    "no email column": (b"Name,Phone\r\nAnn,123\r\n", "no email column"),
}


def test_an_unreadable_file_names_itself_and_changes_nothing(world: World) -> None:
    good = world.write("crm.csv", [line("good@example.org", "Good"), line("", "Bad")])
    world.plan(good)
    before = snapshot(world.warehouse)
    assert before["crm_contacts"] and before["crm_rejected_rows"] and before["reconciliation_plan"]

    newer = world.write("newer.csv", [line("newer@example.org", "Newer"), line("x", "Bad")])
    for kind, (data, problem) in UNREADABLE.items():
        junk = world.folder / f"export-{kind.replace(' ', '-')}.csv"
        junk.write_bytes(data)
        with pytest.raises(CrmFileError) as caught:
            # The good file is read (and staged) before the junk one.
            world.plan(newer, junk)

        assert caught.value.path == str(junk), kind
        assert str(caught.value).startswith(f"{junk}: "), kind
        assert problem in str(caught.value), kind
        assert snapshot(world.warehouse) == before, kind


def test_a_messy_corpus_plans_the_good_lines_and_rejects_the_bad_ones(world: World) -> None:
    active = actives(world)
    a, b, c, d, e = active[:5]
    platform_blocked = blocked_by_platform(world)["Bounced"]
    files: list[Path] = []

    # Salesforce report export, UTF-8 with BOM, quoted name over two lines, CRLF.
    sf = world.folder / "salesforce.csv"
    sf.write_bytes(
        codecs.BOM_UTF8
        + (
            '"Contact ID","First Name","Last Name","Email","Email Opt Out",'
            '"Email Bounced Reason"\r\n'
            f'"003A","A","A","{a["email"].upper()}","0",""\r\n'
            f'"003B","Zoë","Ünal","zoe.unal@example.org","0",""\r\n'
            '"003C","Multi","Line\r\nName","multi.line@example.org","0",""\r\n'
            f'"003D","B","B","{b["email"]}","1",""\r\n'
            '"003E","No","Mail","","0",""\r\n'
            f'"003F","Dup","Dup","dup.new@example.org","0",""\r\n'
        ).encode()
    )
    files.append(sf)
    # HubSpot-like export in Windows-1252 with semicolons, a broken line and a duplicate.
    hub = world.folder / "hubspot.csv"
    hub.write_bytes(
        (
            "Email;First Name;Last Name;Unsubscribed from all email;Email hard bounce reason\r\n"
            f"{c['email']};C;C;true;\r\n"
            "josé.garcía@example.org;José;García;false;\r\n"
            "rene@exämple.org;René;Exämple;false;\r\n"
            "broken@example.org;Too;Many;false;;x;y\r\n"
            "dup.new@example.org;Dup;Dup;true;\r\n"
            f"{platform_blocked['email']};Was;Bounced;false;\r\n"
        ).encode("cp1252")
    )
    files.append(hub)
    # A tab-separated generic list with an unterminated quote at the end.
    tab = world.folder / "list.txt"
    tab.write_bytes(
        (
            "E-mail\tFull Name\tHard Bounced\n"
            f"{d['email']}\tD D\tyes\n"
            "tabbed.new@example.org\tTabbed New\tno\n"
            'quote@example.org\t"Unterminated\tno\n'
        ).encode()
    )
    files.append(tab)
    # An Excel workbook (Dynamics-style labels).
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Full Name", "Email", "Do not allow Emails"])
    sheet.append([e["name"], e["email"], "Do Not Allow"])
    sheet.append(["Excel New", "excel.new@example.org", "Allow"])
    sheet.append(["Excel Bad", "excel bad@example.org", "Allow"])
    xlsx = world.folder / "dynamics.xlsx"
    book.save(xlsx)
    files.append(xlsx)

    run_id = "messy"
    load = reconcile.load_exports(world.warehouse, files, "auto", run_id=run_id)
    plan = reconcile.make_plan(world.warehouse, run_id=run_id, export_key=load.export_key)

    assert {s["file"]: s["mapping"] for s in load.summaries} == {
        "salesforce.csv": "salesforce",
        "hubspot.csv": "hubspot",
        "list.txt": "generic",
        "dynamics.xlsx": "dynamics365",
    }
    rejected = {
        (r["source_file"], r["line"]): r["kind"] for r in rows(world.warehouse, "crm_rejected_rows")
    }
    assert rejected == {
        ("salesforce.csv", 7): "missing email",
        ("hubspot.csv", 5): "unreadable line",
        ("list.txt", 4): "unreadable line",
        ("dynamics.xlsx", 4): "invalid email",
    }
    assert load.rejected == 4
    good = {
        (r["source_file"], r["line"]): r["email"] for r in rows(world.warehouse, "crm_contacts")
    }
    assert good == {
        ("salesforce.csv", 2): a["email"],
        ("salesforce.csv", 3): "zoe.unal@example.org",
        ("salesforce.csv", 4): "multi.line@example.org",
        ("salesforce.csv", 6): b["email"],
        ("salesforce.csv", 8): "dup.new@example.org",
        ("hubspot.csv", 2): c["email"],
        # RFC 6531: a non-ASCII part before the @ is a valid address.
        ("hubspot.csv", 3): "josé.garcía@example.org",
        ("hubspot.csv", 4): "rene@xn--exmple-cua.org",
        ("hubspot.csv", 6): "dup.new@example.org",
        ("hubspot.csv", 7): platform_blocked["email"],
        ("list.txt", 2): d["email"],
        ("list.txt", 3): "tabbed.new@example.org",
        ("dynamics.xlsx", 2): e["email"],
        ("dynamics.xlsx", 3): "excel.new@example.org",
    }
    assert load.rows == len(good)
    names = {r["email"]: r["name"] for r in rows(world.warehouse, "crm_contacts")}
    assert names["zoe.unal@example.org"] == "Zoë Ünal"
    assert names["multi.line@example.org"] == "Multi Line Name"

    # dup.new@example.org unsubscribed in one export: not created. The platform's own
    # bounce block stays. Everything else that is new and mailable is created once.
    assert world.actions() == {
        ("create", "zoe.unal@example.org"),
        ("create", "josé.garcía@example.org"),
        ("create", "rene@xn--exmple-cua.org"),
        ("create", "multi.line@example.org"),
        ("create", "tabbed.new@example.org"),
        ("create", "excel.new@example.org"),
        ("block", b["email"]),
        ("block", c["email"]),
        ("block", d["email"]),
        ("block", e["email"]),
    }
    assert plan.conflicts == 1

    world.limits["max_concurrency"] = 4
    summary = world.apply()
    assert summary.outcomes == Counter(done=10)
    truth = world.truth()
    created = (
        "zoe.unal@example.org",
        "josé.garcía@example.org",
        "rene@xn--exmple-cua.org",
        "multi.line@example.org",
        "tabbed.new@example.org",
        "excel.new@example.org",
    )
    for email in created:
        assert truth[email]["status"] == "Active"
    for contact in (b, c, d, e):
        assert truth[contact["email"]]["status"] == "Blocked"
    assert len(truth) == 46 and "dup.new@example.org" not in truth
