"""The ``notifsync`` command as a user runs it: the sandbox in its own process, ``fetch``
through faults and a rate limit, (the errors are in test_errors.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from benchmarks.sandbox_process import sandbox_process
from connector.settings import (
    EVINOTICE_BASE_URL,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
    EVINOTICE_USERNAME,
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
    SANDBOX_EVINOTICE_PASSWORD,
    SANDBOX_EVINOTICE_SITE_ID,
    SANDBOX_EVINOTICE_USERNAME,
    SANDBOX_TOKEN,
)

RATE_LIMIT = 30


def notifsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def settings_for(url: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MPT_", "EVINOTICE_"))}
    return {
        **clean,
        MPT_API_BASE_URL: url,
        MPT_API_TOKEN: SANDBOX_TOKEN,
        EVINOTICE_BASE_URL: url,
        EVINOTICE_USERNAME: SANDBOX_EVINOTICE_USERNAME,
        EVINOTICE_PASSWORD: SANDBOX_EVINOTICE_PASSWORD,
        EVINOTICE_SITE_ID: SANDBOX_EVINOTICE_SITE_ID,
    }


@pytest.fixture(scope="module")
def faulty_sandbox() -> Iterator[str]:
    """``notifsync sandbox`` with a 20% mix of every fault and a rate limit."""
    options = ("--contacts", "1500", "--seed", "5", "--faults", "0.2")
    options += ("--rate-limit", str(RATE_LIMIT), "--slow-seconds", "1.5")
    options += ("--evinotice-batches", "250")
    with sandbox_process(*options) as url:
        yield url


def truth(url: str, resource: str) -> list[dict]:
    body = httpx.get(f"{url}/_sandbox/truth/{resource}", timeout=30).content
    return [orjson.loads(line) for line in body.splitlines()]


@pytest.mark.parametrize("mode", ["auto", "concurrent"])
def test_fetch_through_faults_and_a_rate_limit_returns_exactly_the_truth(
    faulty_sandbox: str, tmp_path: Path, mode: str
) -> None:
    httpx.post(f"{faulty_sandbox}/_sandbox/stats/reset", timeout=10)
    expected = [c["id"] for c in truth(faulty_sandbox, "contacts")]
    # A streamed read is a handful of requests: several reads meet every kind of fault.
    for attempt in range(4 if mode == "auto" else 1):
        output = tmp_path / f"contacts-{attempt}.jsonl"
        done = notifsync(
            "fetch", "contacts", "--output", str(output), "--mode", mode,
            "--timeout", "0.5", "--rate-limit", str(RATE_LIMIT * 0.9),
            env=settings_for(faulty_sandbox),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        rows = [orjson.loads(line) for line in output.read_bytes().splitlines()]
        assert [r["id"] for r in rows] == expected
        assert SANDBOX_TOKEN not in done.stderr
    stats = httpx.get(f"{faulty_sandbox}/_sandbox/stats", timeout=10).json()
    assert sum(v for k, v in stats.items() if k.startswith("fault:")) > 0
    assert stats["seconds_over_rate_limit"] <= 1


def test_fetch_of_a_filtered_collection_and_of_evinotice_batches(
    faulty_sandbox: str, tmp_path: Path
) -> None:
    env = settings_for(faulty_sandbox)
    blocked = tmp_path / "blocked.jsonl"
    done = notifsync(
        "fetch", "contacts", "--filter", "eq(status,Blocked)", "-o", str(blocked),
        "--timeout", "0.5", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    expected = [c["id"] for c in truth(faulty_sandbox, "contacts") if c["status"] == "Blocked"]
    assert [orjson.loads(line)["id"] for line in blocked.read_bytes().splitlines()] == expected

    batches = tmp_path / "batches.jsonl"
    done = notifsync("fetch", "evinotice-batches", "-o", str(batches), "--timeout", "0.5", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = {orjson.loads(line)["Id"] for line in batches.read_bytes().splitlines()}
    owned = {
        b["Id"]
        for b in truth(faulty_sandbox, "evinotice-batches")
        if b["SiteId"] == SANDBOX_EVINOTICE_SITE_ID
    }
    assert ids == owned and len(owned) > 200  # --evinotice-batches: three pages
