"""Campaign benchmarks: planning a large audience against a large platform, and send
throughput as a share of the rate limit.

    python -m benchmarks.campaigns [--rows 1000000] [--rate 50] [--batches 300]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.sandbox_process import rate_limited_world
from connector.campaigns import parse_campaign
from connector.campaigns import plan as campaign_plan
from connector.marketplace.client import MarketplaceClient
from connector.pipelines import campaigns as sending
from connector.pipelines.sync import sync_categories, sync_contacts
from connector.warehouse.engine import Warehouse

CATEGORY = "NTC-0000-0005"


def plan_benchmark(rows: int) -> dict[str, float]:
    """Plan an audience of ``rows`` rows against ``rows`` contacts (DuckDB)."""
    print(f"\n== campaign plan: {rows:,}-row audience against {rows:,} contacts (DuckDB) ==")
    with tempfile.TemporaryDirectory() as scratch:
        warehouse = Warehouse(f"duckdb:///{Path(scratch) / 'campaign.duckdb'}")
        warehouse.ensure_tables()
        now = datetime.now(UTC)
        with warehouse.transaction() as tx:
            tx.run("benchmarks/insert_campaign_bench_rows", {"rows": rows, "category_id": CATEGORY})
            tx.set_state("contacts.synced_at", now.isoformat(), now)
        campaign = parse_campaign(
            {
                "name": "bench",
                "audience": "bench_audience",
                "category": CATEGORY,
                "subject": "Benchmark",
                "body": "Hello",
                "max_contacts_per_batch": 1000,
                "guards": {"max_recipients": rows * 2},
            }
        )
        started, cpu = time.perf_counter(), time.process_time()
        plan = campaign_plan.make_plan(warehouse, campaign, source="bench", run_id="bench")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        warehouse.dispose()
    # CPU seconds too: on a shared machine the wall time says more about the neighbours.
    print(
        f"plan: {seconds:6.2f} s ({cpu:.2f} CPU s) for {plan.audience_rows:,} rows "
        f"({plan.audience_rows / seconds:,.0f} rows/s); {plan.recipients:,} recipients in "
        f"{plan.batches:,} batches; excluded {plan.excluded_by_reason}"
    )
    return {"plan_seconds": seconds, "plan_cpu_seconds": cpu}


def send_benchmark(rate: float, batches: int, latency_ms: float = 30) -> dict[str, float]:
    """Send ``batches`` batches through a sandbox limited to ``rate`` requests per second."""
    print(f"\n== campaign send: {batches} batches, rate limit {rate:g}/s, {latency_ms:g} ms ==")
    per_batch = 2
    with rate_limited_world(max(batches * per_batch * 2, 1000), rate, latency_ms) as world:
        warehouse, settings, limits = world.warehouse, world.settings, world.limits
        campaign = parse_campaign(
            {
                "name": "bench-send",
                "audience": "select id as contact_id from contacts where status = 'Active' "
                f"order by id limit {batches * per_batch}",
                "category": CATEGORY,
                "subject": "Benchmark send",
                "body": "Hello",
                "max_contacts_per_batch": per_batch,
                "exclusions": {"frequency_cap_days": 0},
                "guards": {"max_excluded_share": 1.0},
            }
        )

        async def run() -> tuple[sending.SendSummary, float]:
            async with MarketplaceClient(settings, limits=limits) as client:
                await sync_contacts(client, warehouse, full_refresh=True)
                await sync_categories(client, warehouse)
                plan = campaign_plan.make_plan(warehouse, campaign, source="bench", run_id="b")
                guards = campaign_plan.evaluate_guards(plan, campaign)
                campaign_plan.record_plan(
                    warehouse, campaign, plan, guards, source="b", run_id="b", override_reason=None
                )
                # Let the sandbox's token bucket refill after the sync's requests.
                await asyncio.sleep(2)
                started = time.perf_counter()
                summary = await sending.send_campaign(
                    client, warehouse, campaign, run_id="b", concurrency=16
                )
                return summary, time.perf_counter() - started

        summary, seconds = asyncio.run(run())
    throughput = summary.batches / seconds
    print(f"outcomes: {dict(summary.outcomes)} in {seconds:.1f} s")
    print(f"throughput: {throughput:.1f} batches/s = {throughput / rate:.0%} of the rate limit")
    return {"throughput": throughput, "share_of_limit": throughput / rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    plan_benchmark(args.rows)
    send_benchmark(args.rate, args.batches)


if __name__ == "__main__":
    main()
