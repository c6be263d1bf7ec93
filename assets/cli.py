"""``notifsync demo`` and ``notifsync dev``: the Dagster side of the command line.

``demo`` starts the sandbox, materialises every asset into the warehouse (DuckDB under
``data/`` unless ``WAREHOUSE_URL`` says otherwise), prints what it wrote and stops.
``dev`` starts the sandbox and the Dagster UI pointed at it.
"""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from assets.campaign_cli import (
    campaign,
    sample_campaign_summary,
    sample_certified_summary,
    send_sample_campaign,
    send_sample_certified_campaign,
)
from assets.reconcile import export_dir
from assets.reporting import REPORT_NAMES
from connector.cli import main
from connector.settings import (
    EVINOTICE_BASE_URL,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
    EVINOTICE_USERNAME,
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
)
from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL, WAREHOUSE_URL, Warehouse
from connector.warehouse.tables import ALL_TABLE_NAMES
from sandbox.app import Sandbox, SandboxConfig
from sandbox.crm_export import write_sample_export
from sandbox.server import serve_in_thread

PROJECT_DIR = Path(__file__).resolve().parent.parent
main.add_command(campaign)
_PLANNED = ("planned_create", "planned_block", "planned_unblock", "planned_update")
_LAST_RECONCILE = "select * from reconciliation_runs order by started_at desc limit 1"


@contextlib.contextmanager
def sandbox_environment(contacts: int, seed: int, port: int = 0) -> Iterator[tuple[str, Sandbox]]:
    """Serve a sandbox on loopback and point this process's settings at it."""
    config = SandboxConfig(contacts=contacts, seed=seed)
    sandbox = Sandbox(config)
    with serve_in_thread(sandbox, port=port) as url:
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
            yield url, sandbox
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@main.command()
@click.option("--contacts", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--days", default=45, show_default=True, help="Days of messages to backfill.")
@click.option(
    "--keep/--fresh",
    default=False,
    help="Keep the embedded DuckDB file from an earlier demo (default: start it afresh).",
)
def demo(contacts: int, seed: int, days: int, keep: bool) -> None:
    """Sync a sandbox into the warehouse with every asset, and show what landed."""
    from dagster import DagsterInstance

    if not keep and not os.environ.get(WAREHOUSE_URL):
        # Each demo starts a new sandbox; an old ledger would say its actions are done already.
        _remove_embedded_warehouse()

    click.echo(f"Starting the sandbox ({contacts} contacts)...")
    with sandbox_environment(contacts, seed) as (url, sandbox):
        click.echo(f"Sandbox at {url}; materialising every asset...")
        from assets.definitions import defs

        instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
        with contextlib.ExitStack() as stack:
            if instance is None:
                instance = stack.enter_context(DagsterInstance.ephemeral())
            quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            outcomes = [
                defs.resolve_job_def("sync_platform").execute_in_process(
                    instance=instance, raise_on_error=False, run_config=quiet
                )
            ]
            today = datetime.now(UTC).date()
            first = (today - timedelta(days=days)).isoformat()
            outcomes.append(
                defs.resolve_job_def("sync_messages").execute_in_process(
                    instance=instance,
                    raise_on_error=False,
                    run_config=quiet,
                    tags={
                        "dagster/asset_partition_range_start": first,
                        "dagster/asset_partition_range_end": today.isoformat(),
                    },
                )
            )
            export = write_sample_export(
                sandbox.truth("contacts"), export_dir() / "sandbox_sample_export.csv", seed=seed
            )
            click.echo(f"Reconciling the sample CRM export {export} ...")
            reconcile_config = {
                **quiet,
                "ops": {"crm_exports": {"config": {"files": [str(export)]}}},
            }
            outcomes.append(
                defs.resolve_job_def("reconcile").execute_in_process(
                    instance=instance, raise_on_error=False, run_config=reconcile_config
                )
            )
            outcomes.append(send_sample_campaign(defs, instance, quiet))
            outcomes.append(send_sample_certified_campaign(defs, instance, quiet))
            outcomes.append(
                defs.resolve_job_def("publish_reports").execute_in_process(
                    instance=instance, raise_on_error=False, run_config=quiet
                )
            )
        # The resource's URL may be an EnvVar, only resolved inside a run: read it directly.
        warehouse = Warehouse(os.environ.get(WAREHOUSE_URL) or DEFAULT_WAREHOUSE_URL)
        _summary(warehouse, outcomes)
        if not all(o.success for o in outcomes):
            raise click.ClickException("some steps failed; see the log above")


def _remove_embedded_warehouse() -> None:
    """Delete the default DuckDB file (and its write-ahead log), the demo's own."""
    database = Path(DEFAULT_WAREHOUSE_URL.removeprefix("duckdb:///"))
    for path in (database, database.with_name(database.name + ".wal")):
        if path.exists():
            path.unlink()


def _summary(warehouse: Warehouse, outcomes: list) -> None:
    click.echo(f"\nWarehouse: {warehouse.url}")
    click.echo(f"{'table':<36}{'rows':>10}")
    for name in (*ALL_TABLE_NAMES, *REPORT_NAMES):
        click.echo(f"{name:<36}{warehouse.count(name):>10}")
    runs = warehouse.query(_LAST_RECONCILE)
    if runs:
        run = runs[0]._mapping
        click.echo(
            "\nReconcile: "
            + ", ".join(f"{k.removeprefix('planned_')} {run[k]}" for k in _PLANNED)
            + f" planned; {run['applied_done']} done, {run['applied_rejected']} rejected; "
            f"{run['rejected_rows']} CRM lines rejected, {run['conflicts']} conflicts"
        )
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
@click.option("--contacts", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--port", default=3000, show_default=True, help="Dagster UI port.")
def dev(contacts: int, seed: int, port: int) -> None:
    """Start the sandbox and the Dagster UI pointed at it (Ctrl-C stops both)."""
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_DIR / ".dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    with sandbox_environment(contacts, seed) as (url, _):
        click.echo(f"Sandbox at {url}; Dagster UI on http://127.0.0.1:{port}")
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
