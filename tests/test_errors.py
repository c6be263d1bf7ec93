"""Errors a person can act on: each misconfiguration is a line or two naming the setting, the
host or URL (never a password) and the cause, before anything runs; help is complete; a
collection that comes back empty after having rows is a warning, not silence."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from conftest import make_sandbox
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from assets.cli import FETCHABLE, main
from assets.definitions import LocationSettings, build_definitions
from assets.ingest import evinotice_batches
from assets.resources import EviNoticeResource, WarehouseResource
from connector.errors import ConfigurationError
from connector.marketplace.client import RESOURCES
from connector.settings import (
    EVINOTICE_BASE_URL,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
    EVINOTICE_USERNAME,
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
)
from sandbox.app import Sandbox

PROJECT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-warehouse-pw"
API_SETTINGS = (
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
    EVINOTICE_BASE_URL,
    EVINOTICE_USERNAME,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
)


def notifsync(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in API_SETTINGS}
    return subprocess.run(
        [sys.executable, "-m", "assets.cli", *args],
        cwd=PROJECT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_settings_are_listed_at_once_with_the_way_to_the_sandbox() -> None:
    done = notifsync("fetch", "contacts")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{MPT_API_BASE_URL}, {MPT_API_TOKEN} are not set" in lines[0]
    assert "notifsync sandbox" in lines[0]

    done = notifsync("fetch", "evinotice-batches", **{EVINOTICE_USERNAME: "someone"})
    (line,) = done.stderr.strip().splitlines()
    for name in (EVINOTICE_BASE_URL, EVINOTICE_PASSWORD, EVINOTICE_SITE_ID):
        assert name in line
    assert EVINOTICE_USERNAME not in line


def test_an_unreachable_api_names_the_host_and_the_reason_after_a_few_retries() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = notifsync(
        "fetch",
        "contacts",
        **{MPT_API_BASE_URL: f"http://127.0.0.1:{port}", MPT_API_TOKEN: "t"},
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert (
        lines[-1] == f"Error: GET /contacts: cannot connect to 127.0.0.1:{port}: Connection refused"
    )
    # One line per wait of one retry schedule, not one schedule per resumed stream.
    waits = [line for line in lines[:-1] if "retrying in" in line]
    assert waits == lines[:-1] and 1 <= len(waits) <= 5, lines


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        (f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:9/analytics", "refused"),
        (
            f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/no_such_database_here",
            'database "no_such_database_here" does not exist',
        ),
    ],
    ids=["not-a-url", "server-down", "unknown-database"],
)
def test_a_bad_warehouse_url_is_one_line_before_anything_runs(
    url: str, cause: str, tmp_path: Path
) -> None:
    done = notifsync("demo", WAREHOUSE_URL=url, DAGSTER_HOME=str(tmp_path / "home"))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("Error: WAREHOUSE_URL")
    assert cause in lines[0]
    assert PASSWORD not in done.stdout + done.stderr
    if "://" in url:
        assert "postgresql+psycopg://postgres:***@127.0.0.1" in lines[0]
    # Nothing started: no sandbox, no Dagster run.
    assert "Sandbox at" not in done.stdout
    assert not (tmp_path / "home").exists()


def test_a_bad_warehouse_fails_a_dagster_run_once_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:9/analytics"
    for name in API_SETTINGS:
        monkeypatch.setenv(name, "http://127.0.0.1:9" if name.endswith("URL") else "x")
    monkeypatch.setenv("WAREHOUSE_URL", url)
    defs = build_definitions(LocationSettings(warehouse_url=url))
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("sync_platform").execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success
    # The warehouse is opened once, before any step: no step ran, so none failed.
    assert [e for e in result.all_events if e.is_step_failure] == []
    assert [e for e in result.all_events if e.is_step_start] == []
    (failure,) = [e for e in result.all_events if e.is_failure]
    error = failure.event_specific_data.error
    causes = []
    while error is not None:
        causes.append(error.message)
        error = error.cause
    text = "\n".join(causes)
    assert "WAREHOUSE_URL=postgresql+psycopg://postgres:***@127.0.0.1:9/analytics" in text
    assert "Connection refused" in text
    assert PASSWORD not in text


def test_invalid_location_settings_are_named() -> None:
    with pytest.raises(ConfigurationError, match="NOTIFSYNC_SYNC_CRON"):
        LocationSettings.from_env({"NOTIFSYNC_SYNC_CRON": "every hour"})
    with pytest.raises(ConfigurationError, match="NOTIFSYNC_MESSAGES_START_DATE"):
        LocationSettings.from_env({"NOTIFSYNC_MESSAGES_START_DATE": "yesterday"})


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    # The CLI names what fetch can dump without importing the client (help stays instant).
    assert (*RESOURCES, "evinotice-batches") == FETCHABLE
    for name, command in main.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"
                assert "%%" not in param.help, f"{name} {param.opts}"


def test_a_collection_that_had_rows_and_returns_none_is_a_warning(
    tmp_path: Path, loopback: Callable[[Sandbox], str]
) -> None:
    sandbox = make_sandbox(contacts=50, seed=3)
    url = loopback(sandbox)
    warehouse = WarehouseResource(url=f"duckdb:///{tmp_path / 'warehouse.duckdb'}")

    def sync(site_id: str) -> object:
        evinotice = EviNoticeResource(
            base_url=url,
            username=sandbox.config.evinotice_username,
            password=sandbox.config.evinotice_password,
            site_id=site_id,
        )
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                [evinotice_batches],
                resources={"evinotice": evinotice, "warehouse": warehouse},
                instance=instance,
            )
        (check,) = [
            e
            for e in result.get_asset_check_evaluations()
            if e.check_name == "api_still_returns_rows"
        ]
        return check

    assert sync(sandbox.config.evinotice_site_id).passed
    wrong = sync("SITE-THAT-DOES-NOT-EXIST")
    assert not wrong.passed
    assert wrong.severity == AssetCheckSeverity.WARN
    assert wrong.metadata["rows_before"].value > 0
    assert "EVINOTICE_SITE_ID" in (wrong.description or "")
