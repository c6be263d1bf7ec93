"""Reconcile benchmarks: planning a large CRM export against a large platform, and push-back
throughput as a share of the rate limit.

    python -m benchmarks.reconcile [--rows 1000000] [--rate 50] [--actions 600]
                                   [--postgres-rows 100000] [--profile] [--plan-only]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import io
import os
import pstats
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from benchmarks.sandbox_process import rate_limited_world
from benchmarks.sync import postgres_database
from connector.crm import read_export
from connector.crm.bulk import BulkCsvPart
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import pushback, reconcile
from connector.pipelines.sync import sync_contacts
from connector.warehouse.engine import (
    DEFAULT_DUCKDB_MEMORY_LIMIT,
    Stage,
    Transaction,
    Warehouse,
)

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


def _cpu() -> float:
    """CPU seconds of this process, every thread (DuckDB's and Arrow's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Split:
    """Wall and CPU seconds per label, taken by wrapping methods for the duration of a run.

    Only the outermost timed call of a thread counts, so a timed method calling another one
    (``Stage.write`` calls ``write_arrow`` on DuckDB) is not counted twice. CPU is the
    process's (every thread, DuckDB's own included): a label's CPU also counts what other
    threads did meanwhile, so it is printed only where nothing else runs beside it.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._depth = threading.local()
        self._originals: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attribute: str, label: Callable[[tuple[Any, ...]], str]) -> None:
        original = getattr(owner, attribute)
        split = self

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(split._depth, "value", 0):
                return original(self, *args, **kwargs)
            split._depth.value = 1
            wall, cpu = time.perf_counter(), _cpu()
            try:
                return original(self, *args, **kwargs)
            finally:
                split._depth.value = 0
                name = label(args)
                split.wall[name] = split.wall.get(name, 0.0) + time.perf_counter() - wall
                split.cpu[name] = split.cpu.get(name, 0.0) + _cpu() - cpu

        self._originals.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._originals):
            setattr(owner, attribute, original)
        self._originals.clear()


def _read_alone(export: Path) -> tuple[float, float, float]:
    """Wall and CPU seconds to read and normalise ``export`` with nothing stored, and the wall
    seconds of normalising among them."""
    split = _Split()
    split.wrap(BulkCsvPart, "_plain_rows", lambda args: "normalise")
    try:
        started, cpu = time.perf_counter(), _cpu()
        with read_export(export) as read:
            for _ in read.batches():
                pass
        return time.perf_counter() - started, _cpu() - cpu, split.wall.get("normalise", 0.0)
    finally:
        split.restore()


def _seconds(wall: float, cpu: float) -> str:
    return f"{wall:6.2f} s wall, {cpu:6.2f} s CPU"


def _plan_once(warehouse_url: str, rows: int, export: Path, profile: bool) -> dict[str, float]:
    read_wall, read_cpu, normalise_wall = _read_alone(export)
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_tables()
    _fill_contacts(warehouse, rows)
    split = _Split()
    # stage = rows into the warehouse and every statement the load runs, with its commit, in
    # the caller's thread; reading and normalising the next batch runs meanwhile in a worker
    # thread (connector/read_ahead.py), and is measured alone beforehand.
    split.wrap(Stage, "write", lambda args: "stage")
    split.wrap(Stage, "write_arrow", lambda args: "stage")
    split.wrap(Transaction, "run", lambda args: f"sql:{args[0]}")
    split.wrap(Connection, "_commit_impl", lambda args: "sql:commit")
    profiler = cProfile.Profile() if profile else None
    try:
        started, cpu = time.perf_counter(), _cpu()
        if profiler:
            profiler.enable()
        load = reconcile.load_exports(warehouse, [export], run_id="bench")
        if profiler:
            profiler.disable()
        load_wall, load_cpu = time.perf_counter() - started, _cpu() - cpu
        load_split = {label: (split.wall[label], split.cpu[label]) for label in split.wall}
        split.wall.clear()
        split.cpu.clear()
        started, cpu = time.perf_counter(), _cpu()
        plan = reconcile.make_plan(warehouse, run_id="bench", export_key=load.export_key)
        plan_wall, plan_cpu = time.perf_counter() - started, _cpu() - cpu
    finally:
        split.restore()
        warehouse.dispose()
    stage_wall = sum(w for n, (w, _) in load_split.items() if n == "stage" or n[:4] == "sql:")
    total_wall, total_cpu = load_wall + plan_wall, load_cpu + plan_cpu
    print(
        f"read + normalise + stage: {_seconds(load_wall, load_cpu)} "
        f"({rows / load_wall:,.0f} lines/s)"
    )
    print(f"  stage (into tables)   : {stage_wall:6.2f} s wall, while the next batch is read:")
    for name, (wall, _) in sorted(load_split.items(), key=lambda item: -item[1][0]):
        if wall >= 0.01:
            print(f"    {name.removeprefix('sql:'):<48}: {wall:6.2f} s wall")
    print(f"  waiting for the reader: {load_wall - stage_wall:6.2f} s wall")
    print(
        f"  read + normalise alone: {_seconds(read_wall, read_cpu)} "
        f"(normalise {normalise_wall:.2f} s; nothing stored)"
    )
    print(f"plan (SQL)              : {_seconds(plan_wall, plan_cpu)}")
    for name in sorted(split.wall, key=lambda n: -split.wall[n]):
        if split.wall[name] >= 0.01:
            print(f"  {name[4:]:<50}: {_seconds(split.wall[name], split.cpu[name])}")
    print(
        f"total                   : {_seconds(total_wall, total_cpu)}; plan {plan.actions}, "
        f"rejected {load.rejected}"
    )
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
        lines = [line for line in out.getvalue().splitlines() if line.strip()][-9:]
        print("where loading spends its time (cProfile, own time):")
        for line in lines:
            print("    " + line.strip())
    return {
        "read_seconds": load_wall,
        "plan_seconds": plan_wall,
        "total": total_wall,
        "total_cpu": total_cpu,
    }


def plan_benchmark(rows: int, profile: bool = False) -> dict[str, float]:
    """Read and plan ``rows`` CRM lines against ``rows`` platform contacts, DuckDB and
    PostgreSQL, with where the time goes (CPU seconds count every thread: compare those when
    the machine is busy, as wall seconds then measure the other work too)."""
    print(f"\n== plan: {rows:,} CRM lines against {rows:,} contacts ==")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as scratch:
        export = Path(scratch) / "crm.csv"
        write_export(export, rows)
        print(f"-- DuckDB (memory_limit {DEFAULT_DUCKDB_MEMORY_LIMIT})")
        duck = _plan_once(f"duckdb:///{Path(scratch) / 'plan.duckdb'}", rows, export, profile)
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
    with rate_limited_world(max(2 * actions, 1000), rate, latency_ms) as world:
        url, warehouse, scratch = world.url, world.warehouse, world.scratch
        settings, limits = world.settings, world.limits

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
                export = scratch / "crm.csv"
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
    parser.add_argument("--profile", action="store_true", help="cProfile the DuckDB load")
    parser.add_argument("--plan-only", action="store_true", help="skip the apply benchmark")
    args = parser.parse_args()
    plan_benchmark(args.rows, args.profile)
    plan_postgres_benchmark(args.postgres_rows)
    if not args.plan_only:
        apply_benchmark(args.rate, args.actions)


if __name__ == "__main__":
    main()
