"""Each fail-closed CRM case planned through the reconcile pipeline (``load_exports`` then
``make_plan``) on DuckDB and on PostgreSQL: a row that cannot be read with certainty becomes
no create and no block, the rows around it are planned as usual, and no warehouse fails.

One warehouse per backend for the module, with a small sandbox's contacts synced into it;
every test replaces the CRM tables and the plan, and nothing is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import asgi_marketplace, fresh_postgres_database, make_sandbox
from crm_files import make_workbook

from connector.pipelines import reconcile
from connector.pipelines.sync import sync_contacts
from connector.warehouse.engine import Warehouse


@dataclass
class Platform:
    """A warehouse holding the platform's contacts, and a folder for exports."""

    warehouse: Warehouse
    active: list[str]  # emails of Active platform contacts
    folder: Path

    def plan(
        self, *paths: Path, mapping: str = "auto", sheet: str | None = None
    ) -> reconcile.ExportLoad:
        run_id = f"run-{uuid.uuid4().hex[:8]}"
        load = reconcile.load_exports(
            self.warehouse, list(paths), mapping, run_id=run_id, sheet=sheet
        )
        reconcile.make_plan(self.warehouse, run_id=run_id, export_key=load.export_key)
        return load

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in self.warehouse.query(f"select * from {table}")]

    def actions(self) -> set[tuple[str, str]]:
        return {(r["action"], r["email"]) for r in self.rows("reconciliation_plan")}

    def rejected(self) -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["source_file"], r["line"]): r for r in self.rows("crm_rejected_rows")}

    def contacts(self) -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["source_file"], r["line"]): r for r in self.rows("crm_contacts")}

    def csv(self, name: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        path = self.folder / name
        path.write_text(out.getvalue(), encoding="utf-8", newline="")
        return path


@pytest.fixture(scope="module", params=["duckdb", "postgresql"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """12 sandbox contacts synced into a DuckDB file or a fresh PostgreSQL database."""
    folder = tmp_path_factory.mktemp("crm-plan")
    duckdb = contextlib.nullcontext(f"duckdb:///{folder / 'warehouse.duckdb'}")
    with fresh_postgres_database() if request.param == "postgresql" else duckdb as url:
        warehouse = Warehouse(url)
        warehouse.ensure_tables()
        sandbox = make_sandbox(contacts=12, seed=5, clock_speed=0.0)

        async def sync() -> None:
            async with asgi_marketplace(sandbox) as client:
                await sync_contacts(client, warehouse, full_refresh=True)

        asyncio.run(sync())
        active = [c["email"] for c in sandbox.truth("contacts") if c["status"] == "Active"]
        try:
            yield Platform(warehouse, active, folder)
        finally:
            warehouse.dispose()


# -- the cases -------------------------------------------------------------------------------


def test_unreadable_flag_values_become_no_create_and_no_block(platform: Platform) -> None:
    known, other = platform.active[:2]
    path = platform.csv(
        "crm.csv",
        ["Email", "Name", "Email Opt Out"],
        [
            ["new.ja@example.org", "Ja", "Ja"],
            ["new.tick@example.org", "Tick", "✓"],
            ["new.fine@example.org", "Fine", "0"],
            [known, "Known", "nope"],  # an Active contact: no block on a guess
            [other, "Other", "1"],
        ],
    )

    load = platform.plan(path, mapping="salesforce")

    assert platform.actions() == {("create", "new.fine@example.org"), ("block", other)}
    rejected = platform.rejected()
    assert {k: r["kind"] for k, r in rejected.items()} == {
        ("crm.csv", 2): "unreadable flag",
        ("crm.csv", 3): "unreadable flag",
        ("crm.csv", 5): "unreadable flag",
    }
    assert (
        "column 'Email Opt Out' (do_not_email) holds 'nope'" in rejected[("crm.csv", 5)]["reason"]
    )
    assert load.rejected_by_kind == {"unreadable flag": 3}


def test_two_opt_out_columns_with_one_header_the_most_restrictive_wins(
    platform: Platform,
) -> None:
    known, other = platform.active[2:4]
    path = platform.csv(
        "report.csv",
        ["Email", "Email Opt Out", "First Name", "Email Opt Out"],
        [
            [known, "0", "Known", "1"],
            [other, "0", "Other", "0"],
            ["new.second@example.org", "1", "Second", "0"],
            ["new.none@example.org", "0", "None", "0"],
        ],
    )

    load = platform.plan(path, mapping="salesforce")

    assert platform.actions() == {("block", known), ("create", "new.none@example.org")}
    assert any(
        "appears 2 times (columns 2, 4); all are read for do_not_email and the most "
        "restrictive reading wins" in warning
        for warning in load.summaries[0]["warnings"]
    )


def test_every_sheet_with_the_header_is_planned_and_a_title_row_is_skipped(
    platform: Platform,
) -> None:
    known = platform.active[4]
    path = make_workbook(
        platform.folder / "book.xlsx",
        [
            ["Contact export, November"],
            ["Email", "Name", "Unsubscribed"],
            ["new.first@example.org", "First", "no"],
        ],
        Leads=[["Email", "Name", "Unsubscribed"], [known, "Known", "yes"]],
        Notes=[["Remember to re-export on Monday"]],
    )

    load = platform.plan(path, mapping="generic")

    assert platform.actions() == {("create", "new.first@example.org"), ("block", known)}
    plan = {r["email"]: r for r in platform.rows("reconciliation_plan")}
    assert (plan[known]["source_file"], plan[known]["line"]) == ("book.xlsx[Leads]", 2)
    assert plan["new.first@example.org"]["line"] == 3
    warnings = load.summaries[0]["warnings"]
    assert warnings[0] == (
        "read sheets 'Contacts', 'Leads' of 3; not read: 'Notes' (no email column for "
        "mapping 'generic')"
    )
    assert "sheet 'Contacts': 1 row(s) above the header skipped" in warnings[1]


def test_a_named_sheet_is_the_only_one_planned(platform: Platform) -> None:
    known = platform.active[4]
    path = make_workbook(
        platform.folder / "book.xlsx",
        [["Email", "Name", "Unsubscribed"], ["new.first@example.org", "First", "no"]],
        Leads=[["Email", "Name", "Unsubscribed"], [known, "Known", "yes"]],
    )

    load = platform.plan(path, mapping="generic", sheet="Leads")

    assert platform.actions() == {("block", known)}
    assert load.summaries[0]["sheets"] == ["Leads"]


def test_a_nul_byte_rejects_its_line_and_no_warehouse_fails(platform: Platform) -> None:
    path = platform.folder / "nul.csv"
    path.write_bytes(
        b"Email,Name,Unsubscribed\n"
        b"new.nul@example.org,N\x00ul,false\n"
        b"new.after@example.org,After,false\n"
    )

    platform.plan(path)

    assert platform.actions() == {("create", "new.after@example.org")}
    rejected = platform.rejected()[("nul.csv", 2)]
    assert rejected["reason"] == "unreadable line: a NUL byte (\\x00) in the line"
    assert rejected["raw"] == "new.nul@example.org,N\u2400ul,false"


def test_a_bare_carriage_return_keeps_two_people_apart(platform: Platform) -> None:
    path = platform.folder / "cr.csv"
    path.write_bytes(
        b"Email,Name,Unsubscribed\nnew.one@example.org,One,false\rnew.two@example.org,Two,false\n"
    )

    platform.plan(path)

    assert platform.actions() == {
        ("create", "new.one@example.org"),
        ("create", "new.two@example.org"),
    }
    assert platform.rejected() == {}


def test_one_line_in_another_encoding_is_the_only_one_rejected(platform: Platform) -> None:
    path = platform.folder / "mixed.csv"
    path.write_bytes(
        b"Email,Name,Unsubscribed\n"
        + "new.rene@example.org,Renée Núñez-Gómez,false\n".encode("cp1252")
        + "new.zoe@example.org,Zoë,false\n".encode()
        + "new.lukasz@example.org,Łukasz,false\n".encode()
    )

    platform.plan(path)

    assert platform.actions() == {
        ("create", "new.zoe@example.org"),
        ("create", "new.lukasz@example.org"),
    }
    assert {r["email"]: r["name"] for r in platform.rows("reconciliation_plan")} == {
        "new.zoe@example.org": "Zoë",
        "new.lukasz@example.org": "Łukasz",
    }
    assert [r["kind"] for r in platform.rejected().values()] == ["unreadable line"]


def test_an_internationalised_local_part_is_planned(platform: Platform) -> None:
    path = platform.csv(
        "idn.csv", ["Email", "Name", "Unsubscribed"], [["Jörg@Bücher.de", "Jörg", "no"]]
    )

    platform.plan(path)

    assert platform.actions() == {("create", "jörg@xn--bcher-kva.de")}
    assert platform.rejected() == {}


def test_an_email_with_an_unreadable_flag_line_is_not_created_from_another_line(
    platform: Platform,
) -> None:
    first = platform.csv(
        "a.csv",
        ["Email", "Name", "Unsubscribed"],
        [["new.doubt@example.org", "Doubt", "vielleicht"], ["new.sure@example.org", "Sure", "no"]],
    )
    second = platform.csv(
        "b.csv", ["Email", "Name", "Unsubscribed"], [["New.Doubt@Example.org", "Doubt", "no"]]
    )

    platform.plan(first, second)

    # b.csv alone says mailable, but a.csv holds a line nobody can read: when in doubt, no
    # create. The line that could be read is still in crm_contacts.
    assert platform.actions() == {("create", "new.sure@example.org")}
    assert ("b.csv", 2) in platform.contacts()
    assert platform.rejected()[("a.csv", 2)]["email"] == "new.doubt@example.org"
