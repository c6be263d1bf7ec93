"""Runs ``notifsync sandbox`` in its own process, so it never competes with the client for
the interpreter lock while a benchmark measures the client."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector.http import ClientLimits
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from connector.warehouse.engine import Warehouse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def sandbox_process(*options: str, timeout: float = 600) -> Iterator[str]:
    """Start a sandbox with the given ``notifsync sandbox`` options; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "assets.cli", "sandbox", "--port", str(port), *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPT_", "EVINOTICE_"))}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"sandbox exited: {process.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(f"{url}/_sandbox/behaviour", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sandbox did not start in time") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class RateLimitedWorld:
    """A sandbox process under a rate limit, a client configured for it and a scratch DuckDB
    warehouse with its tables: what the send benchmarks (push-back, campaigns) start from."""

    url: str
    settings: MarketplaceSettings
    limits: ClientLimits
    warehouse: Warehouse
    scratch: Path


@contextlib.contextmanager
def rate_limited_world(contacts: int, rate: float, latency_ms: float) -> Iterator[RateLimitedWorld]:
    """A sandbox of ``contacts`` limited to ``rate`` requests/s with ``latency_ms`` added, and
    a client at the same rate (16 connections)."""
    options = ("--contacts", str(contacts), "--rate-limit", str(rate))
    with (
        sandbox_process(*options, "--latency-ms", str(latency_ms)) as url,
        tempfile.TemporaryDirectory() as scratch,
    ):
        warehouse = Warehouse(f"duckdb:///{Path(scratch) / 'bench.duckdb'}")
        warehouse.ensure_tables()
        try:
            yield RateLimitedWorld(
                url=url,
                settings=MarketplaceSettings(url, Secret(SANDBOX_TOKEN)),
                limits=ClientLimits(
                    rate_limit=rate, max_concurrency=16, timeout=30, max_attempts=8
                ),
                warehouse=warehouse,
                scratch=Path(scratch),
            )
        finally:
            warehouse.dispose()
