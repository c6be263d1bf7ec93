"""Planning on PostgreSQL: the tables the plan reads get fresh statistics first (without them
the planner's guesses made the plan take minutes at 20,000 contacts), and a plan whose
process is killed does not keep its session running and holding locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from reconcile_world import line, write_export
from sqlalchemy.pool import NullPool
from sync_support import frozen_sandbox, sync_contacts

from connector.pipelines import reconcile
from connector.warehouse.engine import Warehouse

PROJECT = Path(__file__).resolve().parent.parent
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
        # The export's load analysed crm_contacts; contacts, written outside the warehouse's
        # loads, were never analysed: PostgreSQL has no row counts for them.
        assert reltuples(warehouse)["contacts"] == -1
        assert reltuples(warehouse)["pushback_results"] == -1

        plan = reconcile.make_plan(warehouse, run_id="r", export_key=load.export_key)

        assert plan.active_contacts == 500 and plan.missing_from_crm == 200
        assert reltuples(warehouse) == {
            "contacts": 500,
            "crm_contacts": 300,
            "pushback_results": 0,
        }
    finally:
        warehouse.dispose()


def test_a_load_leaves_statistics_for_the_tables_it_changed(postgres_url: str) -> None:
    # What the planner needs after a first load: the table's size and its unique key. The
    # sample is small (load/analyze_table.sql); a table the load did not change keeps none.
    warehouse = Warehouse(postgres_url)
    try:
        warehouse.ensure_tables()
        with warehouse.transaction() as tx:
            for name in ("contacts", "contact_opt_outs", "categories"):
                tx.connection.exec_driver_sql(
                    f"alter table {name} set (autovacuum_enabled = false)"
                )
        sync_contacts(frozen_sandbox(contacts=5000), warehouse, full_refresh=True)
        with warehouse.transaction() as tx:
            statistics = dict(
                tx.connection.exec_driver_sql(
                    "select relname, reltuples from pg_class where relname in "
                    "('contacts', 'contact_opt_outs', 'categories')"
                ).all()
            )
            opt_outs = tx.connection.exec_driver_sql(
                "select count(*) from contact_opt_outs"
            ).scalar_one()
            distinct_ids, buckets = tx.connection.exec_driver_sql(
                "select n_distinct, cardinality(histogram_bounds) from pg_stats "
                "where tablename = 'contacts' and attname = 'id'"
            ).one()
        assert opt_outs > 0
        assert statistics == {"contacts": 5000, "contact_opt_outs": opt_outs, "categories": -1}
        assert distinct_ids == -1  # every id distinct
        assert buckets == 11  # the small sample's ten buckets (the default's hundred take 0.2 s)
    finally:
        warehouse.dispose()


# The child: one plan against the given warehouse, as the reconciliation_plan asset makes it.
PLAN = """
import sys
from connector.pipelines import reconcile
from connector.warehouse.engine import Warehouse
warehouse = Warehouse(sys.argv[1])
print("START", flush=True)
reconcile.make_plan(warehouse, run_id="r", export_key="k")
"""


def plan_sessions(warehouse: Warehouse) -> list[tuple[int, str | None]]:
    """Sessions of other processes running a statement on reconciliation_plan."""
    with warehouse.transaction() as tx:
        return list(
            tx.connection.exec_driver_sql(
                "select pid, wait_event_type from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid() "
                "and position('reconciliation_plan' in query) > 0 and state = 'active'"
            ).all()
        )


def test_a_killed_plan_does_not_leave_its_session_running(postgres_url: str) -> None:
    setup = Warehouse(postgres_url)
    setup.ensure_tables()
    setup.dispose()
    holder = sa.create_engine(postgres_url, poolclass=NullPool)
    watcher = Warehouse(postgres_url)
    child = None
    try:
        with holder.connect() as held:
            # Another session holds the plan table: the child's plan waits inside its
            # planning transaction, as a long plan would be running there.
            held.exec_driver_sql("begin")
            held.exec_driver_sql("lock table reconciliation_plan in access exclusive mode")
            child = subprocess.Popen(
                [sys.executable, "-c", PLAN, postgres_url],
                cwd=PROJECT,
                env={**os.environ, "PYTHONPATH": str(PROJECT)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None and child.stdout.readline().strip() == "START"
            waiting = wait_until(lambda: [s for s in plan_sessions(watcher) if s[1] == "Lock"])
            assert waiting, "the plan never reached its planning transaction"
            child.send_signal(signal.SIGKILL)
            child.wait()
            # Still holding the lock: the killed plan's session must end by itself (the server
            # notices its client is gone), not linger until the lock is free.
            assert wait_until(lambda: not plan_sessions(watcher)), plan_sessions(watcher)
            held.exec_driver_sql("rollback")
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        holder.dispose()
        watcher.dispose()


def wait_until(condition: Callable[[], Any], within: float = 30.0) -> Any:
    """The condition's first true value, looked at until ``within`` seconds have passed (a
    generous bound: the server checks for a gone client every 2 s)."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
