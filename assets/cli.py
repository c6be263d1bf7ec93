"""The ``notifsync`` command: ``sandbox``, ``fetch``, ``demo`` and ``dev``.

Only ``click`` and the settings' names are imported up front, so ``--help`` and argument
errors answer at once; each command imports what it needs (Dagster, the clients, the
sandbox) when it runs. Errors a person can act on (a missing setting, a warehouse that cannot
be opened, an API that cannot be reached) are one line naming the setting or host and the
cause, not a stack trace.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from assets.campaign_cli import campaign
from connector.settings import (
    EVINOTICE_BASE_URL,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
    EVINOTICE_USERNAME,
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
    SANDBOX_EVINOTICE_PASSWORD,
    SANDBOX_EVINOTICE_USERNAME,
    SANDBOX_TOKEN,
)

if TYPE_CHECKING:
    from connector.http import ClientLimits
    from connector.marketplace.client import ReadReport
    from connector.warehouse.engine import Warehouse
    from sandbox.app import Sandbox

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The demo and `notifsync dev` share this Dagster instance, so the UI shows what the demo did.
DAGSTER_HOME = "DAGSTER_HOME"
DEFAULT_DAGSTER_HOME = PROJECT_DIR / "data" / "dagster_home"
# One size and seed for the demo, `dev` and `sandbox`: the same sandbox data each time, so
# switching between them against one warehouse meets the same ids.
DEFAULT_CONTACTS = 2000
DEFAULT_SEED = 1
# Marketplace collections `fetch` can dump (the client's RESOURCES), and EviNotice batches.
FETCHABLE = ("contacts", "categories", "batches", "messages", "evinotice-batches")
_PLANNED = ("planned_create", "planned_block", "planned_unblock", "planned_update")

_contacts_option = click.option(
    "--contacts",
    default=DEFAULT_CONTACTS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Contacts the sandbox generates.",
)
_seed_option = click.option(
    "--seed",
    default=DEFAULT_SEED,
    show_default=True,
    type=int,
    help="Seed of the sandbox's generated data (same seed, same data).",
)


@click.group()
def main() -> None:
    """Sync SoftwareOne Marketplace notifications and EviNotice batches into a warehouse."""


main.add_command(campaign)


# --- sandbox -----------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to listen on.")
@_contacts_option
@_seed_option
@click.option(
    "--latency-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Added to every response, in milliseconds.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests per second before it answers 429 (no limit if unset).",
)
@click.option(
    "--faults",
    default="",
    help="Share of faulty answers: 0.2 = a 20% mix of every kind, or per kind, e.g. "
    "error=0.1,drop=0.05.",
)
@click.option(
    "--slow-seconds",
    default=12.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How long a 'slow' fault holds its answer.",
)
@click.option("--churn", is_flag=True, help="Create, update, block and delete contacts live.")
@click.option("--churn-rate", default=5.0, show_default=True, help="Churn events per second.")
@click.option(
    "--evinotice-batches",
    default=40,
    show_default=True,
    type=click.IntRange(min=0),
    help="EviNotice batches to generate.",
)
def sandbox(
    host: str,
    port: int,
    contacts: int,
    seed: int,
    latency_ms: float,
    rate_limit: float | None,
    faults: str,
    slow_seconds: float,
    churn: bool,
    churn_rate: float,
    evinotice_batches: int,
) -> None:
    """Serve a local emulator of both APIs on loopback until stopped (Ctrl-C)."""
    from sandbox.app import Sandbox, SandboxConfig
    from sandbox.behaviour import FaultSpecError
    from sandbox.server import base_url, bind, serve

    token = os.environ.get(MPT_API_TOKEN) or SANDBOX_TOKEN
    username = os.environ.get(EVINOTICE_USERNAME) or SANDBOX_EVINOTICE_USERNAME
    password = os.environ.get(EVINOTICE_PASSWORD) or SANDBOX_EVINOTICE_PASSWORD
    try:
        config = SandboxConfig.with_behaviour(
            contacts=contacts,
            seed=seed,
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            faults=faults,
            slow_seconds=slow_seconds,
            churn_per_second=churn_rate if churn else 0,
            token=token,
            evinotice_username=username,
            evinotice_password=password,
            evinotice_batches=evinotice_batches,
        )
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from exc
    started = time.monotonic()
    click.echo(f"Generating sandbox data ({contacts} contacts, seed {seed})...", err=True)
    box = Sandbox(config)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    url = base_url(sock)
    click.echo(f"Sandbox ready in {time.monotonic() - started:.1f}s at {url}", err=True)
    click.echo("Point the clients at it with:", err=True)
    click.echo(f"  export {MPT_API_BASE_URL}={url}", err=True)
    click.echo(f"  export {EVINOTICE_BASE_URL}={url}", err=True)
    click.echo(f"  export {EVINOTICE_SITE_ID}={config.evinotice_site_id}", err=True)
    if token == SANDBOX_TOKEN:
        click.echo(f"  export {MPT_API_TOKEN}={SANDBOX_TOKEN}", err=True)
    else:
        click.echo(f"  ({MPT_API_TOKEN} as already set in this environment)", err=True)
    if username == SANDBOX_EVINOTICE_USERNAME and password == SANDBOX_EVINOTICE_PASSWORD:
        click.echo(f"  export {EVINOTICE_USERNAME}={SANDBOX_EVINOTICE_USERNAME}", err=True)
        click.echo(f"  export {EVINOTICE_PASSWORD}={SANDBOX_EVINOTICE_PASSWORD}", err=True)
    else:
        click.echo("  (EviNotice credentials as already set in this environment)", err=True)
    click.echo(f"Control endpoint: {url}/_sandbox/behaviour, /_sandbox/stats", err=True)
    serve(box, sock)


# --- fetch -------------------------------------------------------------------------------


@main.command()
@click.argument("resource", type=click.Choice(FETCHABLE))
@click.option(
    "--filter",
    "filter_text",
    default=None,
    help="RQL filter (Marketplace only), e.g. eq(status,Active).",
)
@click.option("--output", "-o", type=click.File("wb"), default="-", help="File (default stdout).")
@click.option(
    "--mode",
    type=click.Choice(["auto", "streaming", "concurrent", "sequential"]),
    default="auto",
    show_default=True,
    help="How pages are read: streamed, fetched concurrently, one after another, or the "
    "best the server offers.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per request.")
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests in flight at once.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Client-side cap in requests per second (none if unset).",
)
def fetch(
    resource: str,
    filter_text: str | None,
    output: IO[bytes],
    mode: str,
    timeout: float,
    concurrency: int,
    rate_limit: float | None,
) -> None:
    """Dump one collection as JSON lines, using the real client."""
    import asyncio

    from connector.errors import ConnectorError
    from connector.http import ClientLimits

    if filter_text and resource == "evinotice-batches":
        raise click.UsageError("--filter applies to Marketplace resources only")
    limits = ClientLimits(timeout=timeout, max_concurrency=concurrency, rate_limit=rate_limit)
    try:
        report = asyncio.run(_fetch(resource, filter_text, output, mode, limits))
    except ConnectorError as exc:
        raise click.ClickException(str(exc)) from None
    if report is not None and not report.complete:
        raise click.ClickException(
            f"read {report.rows} {resource} but the server counts {report.final_count}"
        )


async def _fetch(
    resource: str, filter_text: str | None, output: IO[bytes], mode: str, limits: ClientLimits
) -> ReadReport | None:
    import orjson

    from connector.evinotice.client import EviNoticeClient
    from connector.marketplace import rql
    from connector.marketplace.client import MarketplaceClient, ReadReport
    from connector.settings import EviNoticeSettings, MarketplaceSettings

    dumps = orjson.dumps
    with _progress(resource) as progress:
        if resource == "evinotice-batches":
            settings = EviNoticeSettings.from_env()
            async with EviNoticeClient(settings, limits=limits) as client:
                async for page in client.iter_batches(settings.site_id):
                    output.write(b"".join(dumps(r) + b"\n" for r in page))
                    progress.update(len(page))
            return None
        client_settings = MarketplaceSettings.from_env()
        report = ReadReport(resource)
        filter_expr = rql.raw(filter_text) if filter_text else None
        async with MarketplaceClient(client_settings, limits=limits) as client:
            async for chunk in client.read(
                resource,
                filter=filter_expr,
                mode=mode,
                report=report,  # type: ignore[arg-type]
            ):
                output.write(b"".join(dumps(r) + b"\n" for r in chunk))
                # The first page's total makes the bar a percentage with the time left.
                if progress.total is None and report.reported_total is not None:
                    progress.total = report.reported_total
                    progress.refresh()
                progress.update(len(chunk))
        output.flush()
        return report


@contextlib.contextmanager
def _progress(resource: str) -> Iterator[Any]:
    """Rows fetched, rate, and the total and time left once known, on a terminal; silent
    when stderr is not one."""
    from tqdm import tqdm

    with tqdm(
        desc=resource,
        unit=" rows",
        unit_scale=True,
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
    ) as bar:
        yield bar


# --- demo and dev ------------------------------------------------------------------------


@contextlib.contextmanager
def sandbox_environment(contacts: int, seed: int, port: int = 0) -> Iterator[tuple[str, Sandbox]]:
    """Serve a sandbox on loopback and point this process's settings at it."""
    from sandbox.app import Sandbox, SandboxConfig
    from sandbox.server import serve_in_thread

    config = SandboxConfig(contacts=contacts, seed=seed)
    box = Sandbox(config)
    with serve_in_thread(box, port=port) as url:
        settings = {
            MPT_API_BASE_URL: url,
            MPT_API_TOKEN: config.token,
            EVINOTICE_BASE_URL: url,
            EVINOTICE_USERNAME: config.evinotice_username,
            EVINOTICE_PASSWORD: config.evinotice_password,
            EVINOTICE_SITE_ID: config.evinotice_site_id,
        }
        previous = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        try:
            yield url, box
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def dagster_home() -> Path:
    """The Dagster instance's folder (``DAGSTER_HOME``, else ``data/dagster_home``), created."""
    home = Path(os.environ.get(DAGSTER_HOME) or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        # Dagster's defaults (storage in this folder); the file says so and stops its notice.
        settings.write_text("# Dagster instance of `notifsync demo` and `notifsync dev`.\n")
    os.environ[DAGSTER_HOME] = str(home)
    return home


def _warehouse_url() -> str:
    from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL, WAREHOUSE_URL

    return os.environ.get(WAREHOUSE_URL) or DEFAULT_WAREHOUSE_URL


def _open_warehouse() -> Warehouse:
    """The configured warehouse, checked before anything runs; one line if it cannot open."""
    from assets.resources import open_warehouse
    from connector.errors import ConfigurationError

    try:
        return open_warehouse(_warehouse_url())
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@_contacts_option
@_seed_option
@click.option("--days", default=45, show_default=True, help="Days of messages to backfill.")
@click.option(
    "--keep/--fresh",
    default=False,
    help="Keep the embedded DuckDB file from an earlier demo (default: start it afresh).",
)
def demo(contacts: int, seed: int, days: int, keep: bool) -> None:
    """Sync a sandbox into the warehouse with every asset, and show what landed."""
    from connector.warehouse.engine import WAREHOUSE_URL

    if not keep and not os.environ.get(WAREHOUSE_URL):
        # Each demo starts a new sandbox; an old ledger would say its actions are done already.
        _remove_embedded_warehouse()
    _open_warehouse().dispose()
    home = dagster_home()
    click.echo("Loading Dagster and the connector...")
    from dagster import DagsterInstance

    from assets.definitions import LocationSettings, build_definitions
    from sandbox.crm_export import write_sample_export

    click.echo(f"Starting the sandbox ({contacts} contacts, seed {seed})...")
    with sandbox_environment(contacts, seed) as (url, box), DagsterInstance.get() as instance:
        click.echo(f"Sandbox at {url}; runs recorded in the Dagster instance at {home}")
        defs = build_definitions(LocationSettings.from_env())
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        outcomes = []

        def step(title: str, job: str, **options: Any) -> None:
            click.echo(f"{title}...")
            started = time.monotonic()
            outcome = defs.resolve_job_def(job).execute_in_process(
                instance=instance, raise_on_error=False, **options
            )
            outcomes.append(outcome)
            click.echo(f"  {_rows_written(outcome)} ({time.monotonic() - started:.0f}s)")

        step("Syncing contacts, categories, batches and EviNotice batches", "sync_platform",
             run_config=quiet)  # fmt: skip
        last = datetime.now(UTC).date()
        first = last - timedelta(days=days)
        step(
            f"Syncing messages of {first} to {last}",
            "sync_messages",
            run_config=quiet,
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
        )
        # Outside CRM_EXPORT_DIR: the export sensor of `notifsync dev` must not reconcile the
        # demo's sample a second time.
        export = write_sample_export(
            box.truth("contacts"), Path("data/demo/sample_export.csv"), seed=seed
        )
        step(
            f"Reconciling the sample CRM export {export}",
            "reconcile",
            run_config={**quiet, "ops": {"crm_exports": {"config": {"files": [str(export)]}}}},
        )
        from assets.campaign_cli import write_sample_campaign, write_sample_certified_campaign

        for title, sample in (
            ("Sending the sample campaign", write_sample_campaign()),
            (
                "Building the sample certified campaign on EviNotice",
                write_sample_certified_campaign(),
            ),
        ):
            step(
                f"{title} {sample}",
                "send_campaign",
                run_config={**quiet, "ops": {"campaign_plan": {"config": {"file": str(sample)}}}},
            )
        step("Building the reports", "publish_reports", run_config=quiet)
    warehouse = _open_warehouse()
    try:
        _summary(warehouse, outcomes)
    finally:
        warehouse.dispose()
    click.echo(f"\nSee the runs in the UI: `make dev` (Dagster instance {home}).")
    if not all(o.success for o in outcomes):
        raise click.ClickException("some steps failed; see the log above")


def _rows_written(outcome: Any) -> str:
    """Each materialised table with its row count, in one line."""
    rows: dict[str, Any] = {}
    for event in outcome.get_asset_materialization_events():
        count = event.materialization.metadata.get("dagster/row_count")
        rows[event.asset_key.to_user_string()] = count.value if count is not None else "?"
    failed = [e.step_key for e in outcome.all_events if e.is_step_failure]
    text = ", ".join(f"{name} {count}" for name, count in rows.items()) or "nothing written"
    return text + (f"; FAILED: {', '.join(failed)}" if failed else "")


def _remove_embedded_warehouse() -> None:
    """Delete the default DuckDB file (and its write-ahead log), the demo's own."""
    from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL

    database = Path(DEFAULT_WAREHOUSE_URL.removeprefix("duckdb:///"))
    for path in (database, database.with_name(database.name + ".wal")):
        if path.exists():
            path.unlink()


def _summary(warehouse: Warehouse, outcomes: list[Any]) -> None:
    from assets.reporting import REPORT_NAMES
    from connector.warehouse.tables import ALL_TABLE_NAMES

    click.echo(f"\nWarehouse: {warehouse.url}")
    click.echo(f"{'table':<36}{'rows':>10}")
    for name in (*ALL_TABLE_NAMES, *REPORT_NAMES):
        click.echo(f"{name:<36}{warehouse.count(name):>10}")
    with warehouse.transaction() as tx:
        run = tx.run("metadata/select_last_reconciliation_run").mappings().first()
    if run is not None:
        click.echo(
            "\nReconcile: "
            + ", ".join(f"{k.removeprefix('planned_')} {run[k]}" for k in _PLANNED)
            + f" planned; {run['applied_done']} done, {run['applied_rejected']} rejected; "
            f"{run['rejected_rows']} CRM lines rejected, {run['conflicts']} conflicts"
        )
    from assets.campaign_cli import sample_campaign_summary, sample_certified_summary

    campaign_line = sample_campaign_summary(warehouse)
    if campaign_line:
        click.echo(f"\n{campaign_line}")
    certified_line = sample_certified_summary(warehouse)
    if certified_line:
        click.echo(certified_line)
    evaluations = [e for o in outcomes for e in o.get_asset_check_evaluations()]
    failed = [e for e in evaluations if not e.passed]
    click.echo(f"\nAsset checks: {len(evaluations) - len(failed)} passed, {len(failed)} failed")
    for evaluation in failed:
        click.echo(f"  FAILED {evaluation.asset_key.to_user_string()}: {evaluation.check_name}")


@main.command()
@_contacts_option
@_seed_option
@click.option("--port", default=3000, show_default=True, help="Dagster UI port.")
def dev(contacts: int, seed: int, port: int) -> None:
    """Start the sandbox and the Dagster UI pointed at it (Ctrl-C stops both)."""
    import subprocess

    _open_warehouse().dispose()
    home = dagster_home()
    with sandbox_environment(contacts, seed) as (url, _):
        click.echo(f"Sandbox at {url}; Dagster UI on http://127.0.0.1:{port} (instance {home})")
        command = [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(PROJECT_DIR / "workspace.yaml"),
            "-p",
            str(port),
        ]
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(command, cwd=PROJECT_DIR, check=False)


if __name__ == "__main__":
    main()
