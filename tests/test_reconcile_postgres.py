"""Planning on PostgreSQL right after a load: the tables the plan reads get fresh statistics
first (without them the planner's guesses made the plan take minutes at 20,000 contacts)."""

from __future__ import annotations

from pathlib import Path

from reconcile_world import line, write_export

from connector.pipelines import reconcile
from connector.warehouse.engine import Warehouse

PLANNED_FROM = ("contacts", "crm_contacts", "pushback_results")


def reltuples(warehouse: Warehouse) -> dict[str, float]:
    with warehouse.transaction() as tx:
        rows = tx.connection.exec_driver_sql(
            "select relname, reltuples from pg_class where relname in "
            "('contacts', 'crm_contacts', 'pushback_results')"
        ).all()
    return {name: value for name, value in rows}


def test_the_plan_refreshes_the_statistics_of_the_tables_it_reads(
    postgres_url: str, tmp_path: Path
) -> None:
    warehouse = Warehouse(postgres_url)
    try:
        warehouse.ensure_tables()
        with warehouse.transaction() as tx:
            for name in PLANNED_FROM:  # only this test's ANALYZE may refresh them
                tx.connection.exec_driver_sql(
                    f"alter table {name} set (autovacuum_enabled = false)"
                )
            tx.connection.exec_driver_sql(
                "insert into contacts (id, email, email_key, name, status, opt_out_count) "
                "select 'CTT-' || i, 'p' || i || '@example.org', 'p' || i || '@example.org', "
                "'P', 'Active', 0 from generate_series(1, 500) as i"
            )
        export = write_export(
            tmp_path / "crm.csv", [line(f"p{i}@example.org", "P") for i in range(1, 301)]
        )
        load = reconcile.load_exports(warehouse, [export], "generic", run_id="r")
        # Loaded, never analysed: PostgreSQL has no row counts for the planner.
        assert set(reltuples(warehouse).values()) == {-1}

        plan = reconcile.make_plan(warehouse, run_id="r", export_key=load.export_key)

        assert plan.active_contacts == 500 and plan.missing_from_crm == 200
        assert reltuples(warehouse) == {
            "contacts": 500,
            "crm_contacts": 300,
            "pushback_results": 0,
        }
    finally:
        warehouse.dispose()
