"""Reconcile benchmarks: planning a large CRM export against a large platform, and push-back
throughput as a share of the rate limit.

    python -m benchmarks.reconcile [--rows 1000000] [--rate 50] [--actions 600]
                                   [--postgres-rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import io
import pstats
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from benchmarks.sandbox_process import sandbox_process
from benchmarks.sync import postgres_database
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import pushback, reconcile
from connector.pipelines.sync import sync_contacts
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Transaction, Warehouse

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"

# The same contacts on PostgreSQL (generate_series instead of DuckDB's range).
_FILL_CONTACTS_POSTGRES = """
insert into contacts (id, email, email_key, name, status, opt_out_count, synced_at, row_hash)
select
    'CTT-' || lpad(cast(i as text), 12, '0'),
    'person.' || cast(i as text) || '@example.com',
    'person.' || cast(i as text) || '@example.com',
    'Person ' || cast(i as text),
    case when mod(i, 50) = 0 then 'Blocked' else 'Active' end,
    0,
    now(),
    md5(cast(i as text))
from generate_series(0, {rows} - 1) as t(i)
"""

# 1M platform contacts made in SQL: setting up is not what is measured.
_FILL_CONTACTS = """
insert into contacts (id, email, email_key, name, status, opt_out_count, synced_at, row_hash)
select
    'CTT-' || lpad(cast(i as text), 12, '0'),
    'person.' || cast(i as text) || '@example.com',
    'person.' || cast(i as text) || '@example.com',
    'Person ' || cast(i as text),
    case when mod(i, 50) = 0 then 'Blocked' else 'Active' end,
    0,
    now(),
    md5(cast(i as text))
from range({rows}) as t(i)
"""


def write_export(path: Path, rows: int) -> None:
    """A Salesforce-style export: mostly agreeing, 0.5% new, 0.5% flagged, a few bad lines."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "FirstName", "LastName", "Email", "HasOptedOutOfEmail"])
        for i in range(rows):
            if i % 200 == 1:
                email = f"new.person.{i}@example.com"
            elif i % 100_000 == 7:
                email = "not-an-email"
            else:
                email = f"Person.{i}@Example.com"
            writer.writerow([f"003{i:012d}", "Person", str(i), email, i % 200 == 2])


def _fill_contacts(warehouse: Warehouse, rows: int) -> None:
    # DuckDB numbers rows with range(), PostgreSQL with generate_series(); the rest is shared.
    series = "range({rows})" if warehouse.dialect == "duckdb" else "generate_series(0, {rows} - 1)"
    fill = _FILL_CONTACTS.replace("range({rows})", series).format(rows=int(rows))
    with warehouse.transaction() as tx:
        tx.connection.exec_driver_sql(fill)
        tx.changed.add("contacts")  # as a sync would: fresh statistics after the commit
        now = datetime.now(UTC)
        tx.set_state("contacts.synced_at", now.isoformat(), now)


def _statement_times() -> tuple[dict[str, float], Any]:
    """Seconds per ``sql/`` file run through the warehouse while the block runs."""
    times: dict[str, float] = {}
    original = Transaction.run

    def timed(self: Transaction, name: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, name, *args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - started

    return times, timed


def _plan_once(warehouse_url: str, rows: int, export: Path, profile: bool) -> dict[str, float]:
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    _fill_contacts(warehouse, rows)
    times, timed = _statement_times()
    original = Transaction.run
    Transaction.run = timed  # type: ignore[method-assign]
    profiler = cProfile.Profile() if profile else None
    try:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        load = reconcile.load_exports(warehouse, [export], run_id="bench")
        if profiler:
            profiler.disable()
        read_seconds = time.perf_counter() - started
        read_sql = sum(times.values())
        started = time.perf_counter()
        plan = reconcile.make_plan(warehouse, run_id="bench", export_key=load.export_key)
        plan_seconds = time.perf_counter() - started
    finally:
        Transaction.run = original  # type: ignore[method-assign]
        warehouse.dispose()
    total = read_seconds + plan_seconds
    print(
        f"read + normalise + stage: {read_seconds:6.2f} s ({load.rows / read_seconds:,.0f} lines/s;"
        f" of which SQL {read_sql:.2f} s)"
    )
    print(f"plan (SQL)              : {plan_seconds:6.2f} s")
    print(
        f"total                   : {total:6.2f} s; plan {plan.actions}, rejected {load.rejected}"
    )
    slowest = sorted(times.items(), key=lambda item: -item[1])[:6]
    print("slowest statements      : " + ", ".join(f"{n} {t:.2f} s" for n, t in slowest))
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
        lines = [line for line in out.getvalue().splitlines() if line.strip()][-9:]
        print("where reading spends its time (cProfile, own time):")
        for line in lines:
            print("    " + line.strip())
    return {"read_seconds": read_seconds, "plan_seconds": plan_seconds, "total": total}


def plan_benchmark(rows: int) -> dict[str, float]:
    """Read and plan ``rows`` CRM lines against ``rows`` platform contacts, DuckDB and
    PostgreSQL, with where the time goes."""
    print(f"\n== plan: {rows:,} CRM lines against {rows:,} contacts ==")
    with tempfile.TemporaryDirectory() as scratch:
        export = Path(scratch) / "crm.csv"
        write_export(export, rows)
        print("-- DuckDB")
        duck = _plan_once(f"duckdb:///{Path(scratch) / 'plan.duckdb'}", rows, export, True)
        print("-- PostgreSQL")
        with postgres_database() as url:
            pg = _plan_once(url, rows, export, False)
    return {"duckdb_total": duck["total"], "postgresql_total": pg["total"]}


def plan_postgres_benchmark(rows: int) -> dict[str, float]:
    """Plan ``rows`` CRM lines against ``rows`` contacts on PostgreSQL right after the load."""
    print(f"\n== plan: {rows:,} CRM lines against {rows:,} contacts (PostgreSQL, fresh load) ==")
    name = f"notifsync_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f"create database {name}")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            warehouse = Warehouse(f"{POSTGRES_SERVER}/{name}")
            warehouse.ensure_tables()
            with warehouse.transaction() as tx:
                tx.connection.exec_driver_sql(_FILL_CONTACTS_POSTGRES.format(rows=int(rows)))
                now = datetime.now(UTC)
                tx.set_state("contacts.synced_at", now.isoformat(), now)
            export = Path(scratch) / "crm.csv"
            write_export(export, rows)
            load = reconcile.load_exports(warehouse, [export], run_id="bench")
            # Right after the load: no statistics yet unless the plan refreshes them.
            started = time.perf_counter()
            plan = reconcile.make_plan(warehouse, run_id="bench", export_key=load.export_key)
            plan_seconds = time.perf_counter() - started
            warehouse.dispose()
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"drop database if exists {name} with (force)")
        admin.dispose()
    print(f"plan (SQL, ANALYZE first): {plan_seconds:6.2f} s; plan {plan.actions}")
    return {"postgres_plan_seconds": plan_seconds}


def apply_benchmark(rate: float, actions: int, latency_ms: float = 30) -> dict[str, float]:
    """Push ``actions`` creates and blocks through a sandbox limited to ``rate`` requests/s."""
    print(f"\n== apply: {actions} actions, rate limit {rate:g}/s, {latency_ms:g} ms latency ==")
    contacts = max(2 * actions, 1000)
    options = (
        "--contacts",
        str(contacts),
        "--rate-limit",
        str(rate),
        "--latency-ms",
        str(latency_ms),
    )
    with sandbox_process(*options) as url, tempfile.TemporaryDirectory() as scratch:
        warehouse = Warehouse(f"duckdb:///{Path(scratch) / 'apply.duckdb'}")
        warehouse.ensure_tables()
        settings = MarketplaceSettings(url, Secret(SANDBOX_TOKEN))
        limits = ClientLimits(rate_limit=rate, max_concurrency=16, timeout=30, max_attempts=8)

        async def run() -> tuple[pushback.ApplySummary, float, float]:
            async with MarketplaceClient(settings, limits=limits) as client:
                await sync_contacts(client, warehouse, full_refresh=True)
                emails = [
                    r[0]
                    for r in warehouse.query(
                        "select email from contacts where status = 'Active' order by id limit :n",
                        n=actions // 2,
                    )
                ]
                export = Path(scratch) / "crm.csv"
                with export.open("w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["Email", "FirstName", "LastName", "HasOptedOutOfEmail"])
                    writer.writerows([e, "A", "B", "true"] for e in emails)
                    writer.writerows(
                        [f"new.{i}@apply-bench.test", "New", str(i), "false"]
                        for i in range(actions - len(emails))
                    )
                load = reconcile.load_exports(warehouse, [export], run_id="bench")
                reconcile.make_plan(warehouse, run_id="bench", export_key=load.export_key)
                # Let the sandbox's token bucket refill after the sync's requests.
                await asyncio.sleep(2)
                # One request first, so the limiter books the pause above before counting.
                await client.count("contacts")
                httpx.post(f"{url}/_sandbox/stats/reset").raise_for_status()
                limiter = client.http.rate_limiter
                idle_before = limiter.idle_slots
                started = time.perf_counter()
                summary = await pushback.apply_plan(client, warehouse, run_id="bench")
                seconds = time.perf_counter() - started
                return summary, seconds, limiter.idle_slots - idle_before

        cpu_before = _cpu_seconds()
        summary, seconds, idle_slots = asyncio.run(run())
        cpu = _cpu_seconds() - cpu_before
        seen = httpx.get(f"{url}/_sandbox/stats").json()
    throughput = summary.sent / seconds
    print(
        f"outcomes: {dict(summary.outcomes)} in {seconds:.1f} s "
        f"(client CPU, set-up and sync included: {cpu:.1f} s)"
    )
    print(f"throughput: {throughput:.1f} actions/s = {throughput / rate:.0%} of the rate limit")
    print(
        f"sandbox: {seen['requests']} requests, at most {seen['max_arrivals_per_second']} in a "
        f"second, {seen['seconds_over_rate_limit']} seconds over the limit, "
        f"{seen.get('throttled', 0)} throttled; client limiter: {idle_slots:.1f} turns unused"
    )
    return {
        "throughput": throughput,
        "share_of_limit": throughput / rate,
        "idle_slots": idle_slots,
        "max_arrivals_per_second": seen["max_arrivals_per_second"],
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--actions", type=int, default=600)
    parser.add_argument("--postgres-rows", type=int, default=100_000)
    args = parser.parse_args()
    plan_benchmark(args.rows)
    plan_postgres_benchmark(args.postgres_rows)
    apply_benchmark(args.rate, args.actions)


if __name__ == "__main__":
    main()
