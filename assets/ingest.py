"""Ingestion assets: the platform's collections synced into warehouse tables.

Each asset runs one ``connector.pipelines.sync`` function, then reports counts, a preview and its
checks in the same step. Groups: ``marketplace`` and ``evinotice``.
"""

import os
import warnings
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    Config,
    DailyPartitionsDefinition,
    FreshnessPolicy,
    MaterializeResult,
    asset,
    multi_asset,
)
from pydantic import Field

from assets.checks import TABLE_CHECKS, orphan_opt_outs, specs_for, statistics_add_up
from assets.metadata import definition_metadata, run_metadata
from assets.resources import EviNoticeResource, MarketplaceResource, WarehouseResource
from assets.runner import run_async
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from connector.warehouse.tables import table

# backfill_policy is marked beta; it is the documented way to run a range as few runs.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")

MESSAGES_START_DATE = "NOTIFSYNC_MESSAGES_START_DATE"
messages_partitions = DailyPartitionsDefinition(
    start_date=os.environ.get(MESSAGES_START_DATE, "2026-01-01"),
    # Today is a partition too, so hourly syncs keep today's messages current.
    end_offset=1,
)


# Synced hourly by default: warn after two missed syncs, fail after a quarter of a day.
FRESHNESS = FreshnessPolicy.time_window(
    fail_window=timedelta(hours=6), warn_window=timedelta(hours=2)
)


def _spec(name: str, group: str) -> AssetSpec:
    definition = table(name)
    return AssetSpec(
        name,
        group_name=group,
        description=definition.description,
        metadata=definition_metadata(name),
        freshness_policy=FRESHNESS,
        kinds={"sql"},
    )


def _table_asset(name: str, group: str, **options: Any) -> Any:
    """``@asset`` for a synced table: description, columns, checks and freshness from its DDL."""
    return asset(
        name=name,
        group_name=group,
        description=table(name).description,
        metadata=definition_metadata(name),
        check_specs=specs_for([name]),
        freshness_policy=FRESHNESS,
        kinds={"sql"},
        **options,
    )


def _sync(
    context: AssetExecutionContext,
    api: MarketplaceResource | EviNoticeResource,
    warehouse: WarehouseResource,
    run: Callable[[Any, Warehouse], Awaitable[sync.SyncResult]],
) -> tuple[Warehouse, sync.SyncResult]:
    """Run one sync with a fresh client; log what it did."""
    store = warehouse.warehouse()

    async def with_client() -> sync.SyncResult:
        async with api.client() as client:
            return await run(client, store)

    result = run_async(with_client())
    context.log.info("%s: %s", context.op_def.name, sync.describe(result))
    return store, result


def _materialized(
    warehouse: Warehouse, names: tuple[str, ...], result: sync.SyncResult
) -> Iterator[MaterializeResult | AssetCheckResult]:
    for name in names:
        yield MaterializeResult(asset_key=name, metadata=run_metadata(warehouse, name, result))
    for name in names:
        yield from TABLE_CHECKS[name].evaluate(warehouse, result)


class ContactsConfig(Config):
    """How the contacts sync runs."""

    full_refresh: bool = Field(
        default=False, description="Read every contact and mark the missing ones deleted."
    )
    lookback_minutes: float = Field(
        default=10, description="Re-read changes this far before the cursor (clock skew)."
    )
    full_refresh_every_hours: float = Field(
        default=24, description="Run a full refresh when the last one is older than this."
    )


@multi_asset(
    specs=[_spec("contacts", "marketplace"), _spec("contact_opt_outs", "marketplace")],
    check_specs=specs_for(["contacts", "contact_opt_outs"]),
    can_subset=False,
)
def contacts(
    context: AssetExecutionContext,
    config: ContactsConfig,
    marketplace: MarketplaceResource,
    warehouse: WarehouseResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Contacts merged incrementally (with a periodic full refresh), and their opt-outs."""
    policy = sync.ContactsPolicy(
        lookback=timedelta(minutes=config.lookback_minutes),
        full_refresh_every=timedelta(hours=config.full_refresh_every_hours),
    )
    store, result = _sync(
        context,
        marketplace,
        warehouse,
        lambda client, store: sync.sync_contacts(
            client, store, full_refresh=config.full_refresh, policy=policy
        ),
    )
    yield from _materialized(store, ("contacts", "contact_opt_outs"), result)
    yield orphan_opt_outs(store)


@multi_asset(
    specs=[
        _spec("categories", "marketplace"),
        _spec("category_statistics_snapshots", "marketplace"),
    ],
    check_specs=specs_for(["categories", "category_statistics_snapshots"]),
    can_subset=False,
)
def categories(
    context: AssetExecutionContext, marketplace: MarketplaceResource, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Categories replaced, and a snapshot of their rolling statistics appended."""
    store, result = _sync(context, marketplace, warehouse, sync.sync_categories)
    yield from _materialized(store, ("categories", "category_statistics_snapshots"), result)
    yield statistics_add_up(store, result)


@_table_asset("batches", "marketplace")
def batches(
    context: AssetExecutionContext, marketplace: MarketplaceResource, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Every batch, merged on id."""
    store, result = _sync(context, marketplace, warehouse, sync.sync_batches)
    yield from _materialized(store, ("batches",), result)


@_table_asset(
    "messages",
    "marketplace",
    partitions_def=messages_partitions,
    # A backfill of a date range runs as few runs, each covering up to a month of days.
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=31),
)
def messages(
    context: AssetExecutionContext, marketplace: MarketplaceResource, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Messages of the day(s) being materialised; each day replaced as a whole."""
    window = context.partition_time_window
    context.log.info("messages created in [%s, %s)", window.start, window.end)
    store, result = _sync(
        context,
        marketplace,
        warehouse,
        lambda client, store: sync.sync_messages(client, store, window.start, window.end),
    )
    yield from _materialized(store, ("messages",), result)


@_table_asset("evinotice_batches", "evinotice")
def evinotice_batches(
    context: AssetExecutionContext, evinotice: EviNoticeResource, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """EviNotice batches of the owner site, merged on id."""
    store, result = _sync(
        context,
        evinotice,
        warehouse,
        lambda client, store: sync.sync_evinotice_batches(client, store, evinotice.site_id),
    )
    yield from _materialized(store, ("evinotice_batches",), result)


UNPARTITIONED = [contacts, categories, batches, evinotice_batches]
PARTITIONED = [messages]
