"""Shared fixtures: sandboxes in-process (ASGI) and on loopback, clients pointed at them, fresh
PostgreSQL databases, the reporting warehouses with their helpers, and the code location."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.settings import SANDBOX_TOKEN, MarketplaceSettings, Secret
from sandbox.app import Sandbox, SandboxConfig
from sandbox.server import serve_in_thread

PROJECT_DIR = Path(__file__).resolve().parent.parent

# A fixed anchor keeps generated timestamps identical from run to run.
ANCHOR = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)


# DuckDB flushes its file to disk at every commit: on a disk shared with other work those
# waits took about half the wall time of the DuckDB tests. Test files are scratch, so where
# the machine has a RAM-backed /dev/shm the temporary directories go there (unless the
# caller chose a root with pytest's PYTEST_DEBUG_TEMPROOT).
RAM_DISK = Path("/dev/shm")


def pytest_configure(config: pytest.Config) -> None:
    """Temporary directories in memory where that is possible."""
    if RAM_DISK.is_dir() and os.access(RAM_DISK, os.W_OK):
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(RAM_DISK))


def make_sandbox(**settings: object) -> Sandbox:
    """A sandbox with a fixed start; settings as for ``SandboxConfig.with_behaviour``."""
    settings.setdefault("start", ANCHOR)
    return Sandbox(SandboxConfig.with_behaviour(**settings))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def small_sandbox() -> Sandbox:
    """A read-only sandbox of 1,000 contacts shared by tests that do not change data."""
    return make_sandbox(contacts=1000, seed=7)


def asgi_marketplace(sandbox: Sandbox, **limits: object) -> MarketplaceClient:
    """A Marketplace client talking to the sandbox in-process."""
    return MarketplaceClient(
        MarketplaceSettings(base_url="http://sandbox.local", token=Secret(SANDBOX_TOKEN)),
        limits=ClientLimits(**limits),  # type: ignore[arg-type]
        transport=httpx.ASGITransport(app=sandbox.app),
    )


@pytest.fixture
def loopback() -> Iterator[object]:
    """Factory: serve a sandbox on loopback for the rest of the test; returns its base URL."""
    with_stack: list[object] = []

    def start(sandbox: Sandbox) -> str:
        context = serve_in_thread(sandbox)
        url = context.__enter__()
        with_stack.append(context)
        return url

    yield start
    for context in reversed(with_stack):
        context.__exit__(None, None, None)  # type: ignore[attr-defined]


# --- PostgreSQL (added for the sync tests) ----------------------------------------------------

import contextlib  # noqa: E402
import uuid  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


# Emptied databases waiting for their next test, per server. DROP DATABASE forces a
# checkpoint on PostgreSQL 15 (a second or more of disk flushing each time), so each worker
# keeps the databases it made and empties them between tests instead; they are dropped once,
# when the session ends.
_EMPTY_DATABASES: dict[str, list[str]] = {}

# Everything a test can leave behind lives in a schema of the database (tables, views,
# functions, triggers, sequences): dropping every schema but the system ones, then making
# ``public`` again as PostgreSQL 15 makes it, gives a database like a new one.
_USER_SCHEMAS = (
    "select nspname from pg_namespace "
    "where left(nspname, 3) <> 'pg_' and nspname <> 'information_schema'"
)
_NEW_PUBLIC_SCHEMA = (
    "create schema public authorization pg_database_owner",
    "grant usage on schema public to public",
)

# Sessions a test left open (a killed child's, a pool it did not dispose of) would keep
# their locks, advisory locks included, into the next test.
_END_OTHER_SESSIONS = (
    "select pg_terminate_backend(pid) from pg_stat_activity "
    "where datname = current_database() and pid <> pg_backend_pid()"
)


def _admin_engine(server: str, database: str = "postgres") -> sa.Engine:
    return sa.create_engine(
        f"{server}/{database}", isolation_level="AUTOCOMMIT", poolclass=NullPool
    )


def _empty_database(server: str, name: str) -> None:
    engine = _admin_engine(server, name)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(_END_OTHER_SESSIONS)
            quote = connection.dialect.identifier_preparer.quote
            for schema in connection.exec_driver_sql(_USER_SCHEMAS).scalars().all():
                connection.exec_driver_sql(f"drop schema {quote(schema)} cascade")
            for statement in _NEW_PUBLIC_SCHEMA:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _drop_databases(server: str, names: list[str]) -> None:
    admin = _admin_engine(server)
    try:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f"drop database if exists {name} with (force)")
    finally:
        admin.dispose()


@contextlib.contextmanager
def fresh_postgres_database(server: str = POSTGRES_SERVER, query: str = "") -> Iterator[str]:
    """An empty PostgreSQL database for one test, emptied again (every schema dropped, the
    sessions left on it ended) and kept for a later test of this worker; ``query`` is
    appended to its URL (e.g. session options).

    The server on 127.0.0.1:5432 is part of every machine, CI included: when it cannot be
    reached this raises, so the test fails rather than skips."""
    idle = _EMPTY_DATABASES.setdefault(server, [])
    if idle:
        name = idle.pop()
    else:
        name = f"notifsync_test_{uuid.uuid4().hex}"
        admin = _admin_engine(server)
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"create database {name}")
        finally:
            admin.dispose()
    try:
        yield f"{server}/{name}" + (f"?{query}" if query else "")
    except BaseException:
        # The test failed: leave nothing it might have broken to the next one.
        _drop_databases(server, [name])
        raise
    try:
        _empty_database(server, name)
    except Exception:
        _drop_databases(server, [name])
        raise
    idle.append(name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the databases this worker kept."""
    for server, names in _EMPTY_DATABASES.items():
        _drop_databases(server, names)
        names.clear()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of an empty PostgreSQL database, emptied again after the test."""
    with fresh_postgres_database() as url:
        yield url


def load_definitions(**settings: Any) -> Any:
    """The code location built from the current environment, ``settings`` overriding it."""
    from assets.definitions import LocationSettings, build_definitions

    base = LocationSettings.from_env()
    return build_definitions(base.model_copy(update=settings))


# Every variable the code location reads: a test's settings start from none of them.
LOCATION_SETTINGS = (
    "MPT_API_BASE_URL",
    "MPT_API_TOKEN",
    "EVINOTICE_BASE_URL",
    "EVINOTICE_USERNAME",
    "EVINOTICE_PASSWORD",
    "EVINOTICE_SITE_ID",
    "WAREHOUSE_URL",
    "CRM_EXPORT_DIR",
    "CAMPAIGN_DIR",
    "NOTIFSYNC_SYNC_CRON",
    "NOTIFSYNC_MESSAGES_START_DATE",
)


def point_the_location_at(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sandbox: Sandbox,
    url: str,
    warehouse_url: str,
    **more: str,
) -> dict[str, str]:
    """Set the code location's variables to ``sandbox`` served at ``url`` (its own token and
    EviNotice credentials) and ``warehouse_url``, plus ``more``; every other setting unset and
    a fresh Dagster home under ``tmp_path``. Returns the variables set."""
    env = {
        "MPT_API_BASE_URL": url,
        "MPT_API_TOKEN": sandbox.config.token,
        "EVINOTICE_BASE_URL": url,
        "EVINOTICE_USERNAME": sandbox.config.evinotice_username,
        "EVINOTICE_PASSWORD": sandbox.config.evinotice_password,
        "EVINOTICE_SITE_ID": sandbox.config.evinotice_site_id,
        "WAREHOUSE_URL": warehouse_url,
        **more,
    }
    for name in LOCATION_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return env


# EviNotice fixtures (sandbox routes in-process, clients) for the tests/test_evinotice*.py files.
pytest_plugins = ["evinotice_api"]


# --- warehouses (shared by the sync tests) ------------------------------------------------------

from connector.warehouse.engine import Warehouse  # noqa: E402


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A SQLAlchemy URL of an empty warehouse: a DuckDB file, or a fresh PostgreSQL database.

    PostgreSQL is not optional: when the server is unreachable these tests fail."""
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def open_warehouse() -> Iterator[Any]:
    """Factory: a ``Warehouse`` with its tables ensured, disposed at the end of the test."""
    opened: list[Warehouse] = []

    def open_(url: str, ensure: bool = True, **options: Any) -> Warehouse:
        warehouse = Warehouse(url, **options)
        opened.append(warehouse)
        if ensure:
            warehouse.ensure_tables()
        return warehouse

    yield open_
    for warehouse in opened:
        warehouse.dispose()


@pytest.fixture
def warehouse(warehouse_url: str, open_warehouse: Any) -> Warehouse:
    """An empty warehouse with every table, on DuckDB and on PostgreSQL."""
    return open_warehouse(warehouse_url)


def run_script(script: str, *args: str) -> subprocess.Popen[str]:
    """A child Python process running ``script`` on the project's code (``args`` as its
    ``sys.argv[1:]``), its output piped: the kill tests SIGKILL such children mid-flight."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
