"""EviNotice batch sync against fetching alone: a full sync of the batch list into DuckDB and
PostgreSQL through the bulk path (JSON lines) and through the row builders, each run in a
process of its own (the sandbox in another), with wall time and the run's CPU time.

The list pages by cursor, 100 batches a request, one request after another, so wall time is
mostly round trips; CPU seconds are the client's own cost of reading and writing.

    python -m benchmarks.evinotice_sync [--batches 5000] [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.sandbox_process import sandbox_process
from benchmarks.sync import postgres_database


def _once(url: str, warehouse_url: str, kind: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.evinotice_sync_once", url, warehouse_url, kind],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _line(label: str, figures: dict[str, float]) -> str:
    rows, seconds, cpu = figures["rows"], figures["seconds"], figures["cpu"]
    return (
        f"  {label:<26}: {rows:>7,.0f} rows in {seconds:6.2f} s = {rows / seconds:>8,.0f} rows/s"
        f", {cpu:5.2f} CPU s ({cpu / rows * 1e6:5.1f} us/row)"
    )


def evinotice_sync_benchmark(batches: int, latency_ms: float) -> dict[str, float]:
    """Full EviNotice batch syncs, bulk and row builders, DuckDB and PostgreSQL, vs fetching."""
    print(f"\n== EviNotice batches sync: {batches:,} batches, {latency_ms:g} ms latency ==")
    options = ("--contacts", "10", "--evinotice-batches", str(batches))
    figures: dict[str, float] = {}
    with (
        sandbox_process(*options, "--latency-ms", str(latency_ms)) as url,
        tempfile.TemporaryDirectory() as scratch,
    ):
        runs = {
            "fetch only (JSON lines)": _once(url, "duckdb:///:memory:", "fetch-lines"),
            "fetch only (records)": _once(url, "duckdb:///:memory:", "fetch-records"),
        }
        for kind in ("bulk", "row-builders"):
            runs[f"{kind}, DuckDB"] = _once(url, f"duckdb:///{Path(scratch) / kind}.duckdb", kind)
            with postgres_database() as pg_url:
                runs[f"{kind}, PostgreSQL"] = _once(url, pg_url, kind)
    for label, run in runs.items():
        print(_line(label, run))
    fetch = runs["fetch only (JSON lines)"]
    for label, run in runs.items():
        if not label.startswith("fetch"):
            ratio = (run["rows"] / run["seconds"]) / (fetch["rows"] / fetch["seconds"])
            extra = (run["cpu"] - fetch["cpu"]) / run["rows"] * 1e6
            print(f"  sync / fetch, {label:<24}: {ratio:4.2f} ({extra:5.1f} CPU us/row beyond it)")
            figures[label] = ratio
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    args = parser.parse_args()
    evinotice_sync_benchmark(args.batches, args.latency_ms)


if __name__ == "__main__":
    main()
