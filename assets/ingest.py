"""Ingestion assets: the platform's collections synced into warehouse tables.

Each asset runs one ``connector.pipelines.sync`` function, then reports counts, a preview and its
checks in the same step. Groups: ``marketplace`` and ``evinotice``. ``messages`` is built by
``messages_asset`` because its first partition is a setting of the code location.
"""

import warnings
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    Config,
    DailyPartitionsDefinition,
    Failure,
    FreshnessPolicy,
    MaterializeResult,
    asset,
    multi_asset,
)
from pydantic import Field

from assets.checks import (
    EMPTIED_WATCHED,
    TABLE_CHECKS,
    emptied_check,
    specs_for,
    statistics_add_up,
)
from assets.metadata import definition_metadata, run_metadata
from assets.resources import EviNoticeResource, MarketplaceResource, WarehouseResource
from assets.runner import run_async
from connector.errors import MassDeletionError
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from connector.warehouse.tables import table

MESSAGES_START_DATE = "NOTIFSYNC_MESSAGES_START_DATE"
DEFAULT_MESSAGES_START_DATE = "2026-01-01"


def messages_partitions(start_date: str = DEFAULT_MESSAGES_START_DATE) -> DailyPartitionsDefinition:
    """One partition per day of messages from ``start_date``, today included."""
    # Today is a partition too, so hourly syncs keep today's messages current.
    return DailyPartitionsDefinition(start_date=start_date, end_offset=1)


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
) -> tuple[Warehouse, sync.SyncResult, int]:
    """Run one sync with a fresh client; log what it did. Also returns the rows the asset's
    (first) table held before."""
    store = warehouse.warehouse()
    rows_before = store.count(context.op_def.name)

    async def with_client() -> sync.SyncResult:
        async with api.client() as client:
            return await run(client, store)

    result = run_async(with_client())
    context.log.info("%s: %s", context.op_def.name, sync.describe(result))
    return store, result, rows_before


def _materialized(
    context: AssetExecutionContext,
    warehouse: Warehouse,
    names: tuple[str, ...],
    result: sync.SyncResult,
    rows_before: int,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    # A multi-asset may run for a subset (``--select contacts``): its sync still fills every
    # table, but only the selected assets and checks are reported.
    selected = [n for n in names if AssetKey(n) in context.selected_asset_keys]
    checks = context.selected_asset_check_keys
    for name in selected:
        yield MaterializeResult(asset_key=name, metadata=run_metadata(warehouse, name, result))
    for name in selected:
        for check in TABLE_CHECKS[name].evaluate(warehouse, result):
            if check.asset_key is None or check.check_name is None:
                continue
            if any(k.asset_key == check.asset_key and k.name == check.check_name for k in checks):
                yield check
    if names[0] in selected and names[0] in EMPTIED_WATCHED:
        emptied = emptied_check(names[0], rows_before, result)
        if not emptied.passed:
            context.log.warning(emptied.description)
        yield emptied


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
    max_deleted_share: float = Field(
        default=0.10,
        description="Guard: a full refresh that would mark more than this share of the live "
        "contacts deleted stops and changes nothing.",
    )
    mass_deletion_reason: str = Field(
        default="",
        description="Override of the guard above: why so many contacts really are gone "
        "(recorded in sync_state).",
    )


@multi_asset(
    specs=[_spec("contacts", "marketplace"), _spec("contact_opt_outs", "marketplace")],
    check_specs=specs_for(["contacts", "contact_opt_outs"]),
    can_subset=True,
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
        max_deleted_share=config.max_deleted_share,
    )
    try:
        store, result, before = _sync(
            context,
            marketplace,
            warehouse,
            lambda client, store: sync.sync_contacts(
                client,
                store,
                full_refresh=config.full_refresh,
                policy=policy,
                mass_deletion_reason=config.mass_deletion_reason or None,
            ),
        )
    except MassDeletionError as exc:
        # A token scoped to another account, or a smaller sandbox: the table stays as it was.
        raise Failure(
            description=f"{exc} (run config: ops.contacts.config.mass_deletion_reason)",
            metadata={"missing": exc.missing, "live": exc.live, "max_share": exc.max_share},
            allow_retries=False,
        ) from None
    yield from _materialized(context, store, ("contacts", "contact_opt_outs"), result, before)


@multi_asset(
    specs=[
        _spec("categories", "marketplace"),
        _spec("category_statistics_snapshots", "marketplace"),
    ],
    check_specs=specs_for(["categories", "category_statistics_snapshots"]),
    can_subset=True,
)
def categories(
    context: AssetExecutionContext, marketplace: MarketplaceResource, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Categories replaced, and a snapshot of their rolling statistics appended."""
    store, result, before = _sync(context, marketplace, warehouse, sync.sync_categories)
    names = ("categories", "category_statistics_snapshots")
    yield from _materialized(context, store, names, result, before)
    if AssetKey("category_statistics_snapshots") in context.selected_asset_keys:
        yield statistics_add_up(store, result)


@_table_asset("batches", "marketplace")
def batches(
    context: AssetExecutionContext, marketplace: MarketplaceResource, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Every batch, merged on id."""
    store, result, before = _sync(context, marketplace, warehouse, sync.sync_batches)
    yield from _materialized(context, store, ("batches",), result, before)


def messages_asset(partitions_def: DailyPartitionsDefinition) -> AssetsDefinition:
    """The ``messages`` asset over these daily partitions."""

    # backfill_policy is marked beta; it is the documented way to run a range as few runs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")
        decorate = _table_asset(
            "messages",
            "marketplace",
            partitions_def=partitions_def,
            # A backfill of a date range runs as few runs, each covering up to a month of days.
            backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=31),
        )

    @decorate
    def messages(
        context: AssetExecutionContext,
        marketplace: MarketplaceResource,
        warehouse: WarehouseResource,
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        """Messages of the day(s) being materialised; each day replaced as a whole."""
        window = context.partition_time_window
        context.log.info("messages created in [%s, %s)", window.start, window.end)
        store, result, before = _sync(
            context,
            marketplace,
            warehouse,
            lambda client, store: sync.sync_messages(client, store, window.start, window.end),
        )
        yield from _materialized(context, store, ("messages",), result, before)

    return messages


@_table_asset("evinotice_batches", "evinotice")
def evinotice_batches(
    context: AssetExecutionContext, evinotice: EviNoticeResource, warehouse: WarehouseResource
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """EviNotice batches of the owner site, merged on id."""
    store, result, before = _sync(
        context,
        evinotice,
        warehouse,
        lambda client, store: sync.sync_evinotice_batches(client, store, evinotice.site_id),
    )
    yield from _materialized(context, store, ("evinotice_batches",), result, before)


UNPARTITIONED = [contacts, categories, batches, evinotice_batches]
