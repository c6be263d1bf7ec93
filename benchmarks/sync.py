"""Sync throughput and memory: a full contacts sync into DuckDB against fetching alone.

Each figure comes from a separate process (the sandbox in another), so peak memory is the
sync's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.sandbox_process import sandbox_process


def _once(url: str, warehouse_url: str, *extra: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.sync_once", url, warehouse_url, *extra],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _rate(figures: dict[str, float]) -> str:
    rows, seconds = figures["rows"], figures["seconds"]
    return f"{rows:>9,.0f} rows in {seconds:6.2f} s = {rows / seconds:>9,.0f} rows/s"


def sync_benchmark(contacts: int, latency_ms: float) -> dict[str, float]:
    """Full sync of ``contacts`` into a fresh DuckDB file vs. fetching them, per read mode."""
    print(f"\n== sync: {contacts:,} contacts into DuckDB, {latency_ms:g} ms latency ==")
    figures: dict[str, float] = {}
    with (
        sandbox_process("--contacts", str(contacts), "--latency-ms", str(latency_ms)) as url,
        tempfile.TemporaryDirectory() as scratch,
    ):
        for mode in ("auto", "concurrent"):
            label = "streaming" if mode == "auto" else "concurrent paging"
            fetch = _once(url, "duckdb:///:memory:", mode, "fetch-only")
            synced = _once(url, f"duckdb:///{Path(scratch) / (mode + '.duckdb')}", mode)
            fetch_rate = fetch["rows"] / fetch["seconds"]
            sync_rate = synced["rows"] / synced["seconds"]
            print(f"{label}:")
            print(f"  fetch only: {_rate(fetch)}")
            print(f"  full sync : {_rate(synced)}")
            print(f"  sync / fetch throughput: {sync_rate / fetch_rate:4.2f}")
            figures[f"{mode}_ratio"] = sync_rate / fetch_rate
    return figures


def memory_benchmark(contacts: int) -> dict[str, float]:
    """Peak memory of a full sync of ``contacts`` into DuckDB."""
    print(f"\n== memory: full sync of {contacts:,} contacts into DuckDB ==")
    with (
        sandbox_process("--contacts", str(contacts), timeout=1200) as url,
        tempfile.TemporaryDirectory() as scratch,
    ):
        small = _once(url, "duckdb:///:memory:", "auto", "fetch-only")
        synced = _once(url, f"duckdb:///{Path(scratch) / 'bench.duckdb'}", "auto")
    print(f"rows synced     : {synced['rows']:,.0f} in {synced['seconds']:.1f} s")
    print(f"peak RSS        : {synced['peak_rss_mb']:,.0f} MB")
    print(f"  of which interpreter + imports: {synced['baseline_rss_mb']:,.0f} MB")
    print(f"fetch-only peak : {small['peak_rss_mb']:,.0f} MB")
    return synced
