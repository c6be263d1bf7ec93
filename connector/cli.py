"""The ``notifsync`` command: run the sandbox, dump collections, run the demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import click
import orjson
from tqdm import tqdm

from connector.errors import ConnectorError
from connector.evinotice.client import EviNoticeClient
from connector.http import ClientLimits
from connector.marketplace import rql
from connector.marketplace.client import RESOURCES, MarketplaceClient, ReadReport
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
    EviNoticeSettings,
    MarketplaceSettings,
)

FETCHABLE = (*RESOURCES, "evinotice-batches")


@click.group()
def main() -> None:
    """Sync SoftwareOne Marketplace notifications and EviNotice batches into a warehouse."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--contacts", default=1000, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), help="Requests/s.")
@click.option("--faults", default="", help="0.2 = 20%% mix of every kind, or error=0.1,drop=0.05")
@click.option("--slow-seconds", default=12.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--churn", is_flag=True, help="Create, update, block and delete contacts live.")
@click.option("--churn-rate", default=5.0, show_default=True, help="Churn events per second.")
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
        )
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from exc
    started = time.monotonic()
    click.echo(f"Generating sandbox data ({contacts} contacts, seed {seed})...", err=True)
    box = Sandbox(config)
    sock = bind(host, port)
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


@main.command()
@click.argument("resource", type=click.Choice(FETCHABLE))
@click.option("--filter", "filter_text", default=None, help="RQL filter, e.g. eq(status,Active)")
@click.option("--output", "-o", type=click.File("wb"), default="-", help="File (default stdout).")
@click.option(
    "--mode",
    type=click.Choice(["auto", "streaming", "concurrent", "sequential"]),
    default="auto",
    show_default=True,
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per request.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), help="Requests/s.")
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
    limits = ClientLimits(timeout=timeout, max_concurrency=concurrency, rate_limit=rate_limit)
    try:
        report = asyncio.run(_fetch(resource, filter_text, output, mode, limits))
    except ConnectorError as exc:
        raise click.ClickException(str(exc)) from exc
    if report is not None and report.final_count is None:
        click.echo(f"{resource}: {report.completeness}", err=True)  # total: null, nothing to check
    elif report is not None and not report.complete:
        raise click.ClickException(
            f"read {report.rows} {resource} but the server counts {report.final_count}"
        )


async def _fetch(
    resource: str, filter_text: str | None, output: IO[bytes], mode: str, limits: ClientLimits
) -> ReadReport | None:
    dumps = orjson.dumps
    with _progress(resource) as progress:
        if resource == "evinotice-batches":
            if filter_text:
                raise click.UsageError("--filter applies to Marketplace resources only")
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
                progress.update(len(chunk))
        output.flush()
        return report


@contextlib.contextmanager
def _progress(resource: str) -> Iterator[Any]:
    """Rows fetched and rate on a terminal; silent when stderr is not one."""
    with tqdm(
        desc=resource,
        unit=" rows",
        unit_scale=True,
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
    ) as bar:
        yield bar


if __name__ == "__main__":
    main()
