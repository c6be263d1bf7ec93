"""How long ``notifsync --help`` and an argument error take, as a user's shell runs them:
a new process each time, against a baseline of a bare Python start in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 5


def _seconds(*args: str) -> float:
    """Median wall time of a fresh process running ``python *args``."""
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_startup_benchmark() -> dict[str, float]:
    """Print and return the medians of --help, an argument error and a bare interpreter."""
    print(f"\n== notifsync start-up: median of {RUNS} fresh processes ==")
    results = {
        "python -c pass": _seconds("-c", "pass"),
        "notifsync --help": _seconds("-m", "assets.cli", "--help"),
        "notifsync fetch --help": _seconds("-m", "assets.cli", "fetch", "--help"),
        "notifsync fetch nothing (argument error)": _seconds("-m", "assets.cli", "fetch", "x"),
    }
    base = results["python -c pass"]
    for name, seconds in results.items():
        print(f"{name:<42}{seconds:7.2f} s  ({seconds / base:4.1f}x a bare python start)")
    return results
