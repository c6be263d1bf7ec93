"""The one ``Definitions`` of the code location: assets, checks, jobs, schedules, resources.

Environment: ``MPT_API_BASE_URL``, ``MPT_API_TOKEN``, ``EVINOTICE_BASE_URL``,
``EVINOTICE_USERNAME``, ``EVINOTICE_PASSWORD``, ``EVINOTICE_SITE_ID`` (read when a run starts;
a missing one fails the run naming it), ``WAREHOUSE_URL`` (default: DuckDB under ``data/``),
``NOTIFSYNC_SYNC_CRON`` (default hourly), ``NOTIFSYNC_MESSAGES_START_DATE`` and
``CRM_EXPORT_DIR`` (default ``data/crm_exports``).
"""

import os
from collections.abc import Iterator

from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    RunRequest,
    RunStatusSensorContext,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
    run_status_sensor,
    schedule,
)

from assets.campaigns import CAMPAIGN_ASSETS, CAMPAIGN_JOBS, campaign_sensor
from assets.evidence import EVIDENCE_ASSETS
from assets.ingest import PARTITIONED, UNPARTITIONED, messages, messages_partitions
from assets.reconcile import BY_PRODUCTS, RECONCILE_ASSETS, crm_export_sensor
from assets.reporting import REPORTING
from assets.resources import EviNoticeResource, MarketplaceResource, WarehouseResource
from connector.settings import (
    EVINOTICE_BASE_URL,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
    EVINOTICE_USERNAME,
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
)
from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL, WAREHOUSE_URL

SYNC_CRON = os.environ.get("NOTIFSYNC_SYNC_CRON", "0 * * * *")


def _warehouse() -> WarehouseResource:
    # EnvVar keeps a password in the URL out of the UI; unset means the embedded DuckDB.
    if os.environ.get(WAREHOUSE_URL):
        return WarehouseResource(url=EnvVar(WAREHOUSE_URL))
    return WarehouseResource(url=DEFAULT_WAREHOUSE_URL)


def _executor() -> object:
    # A DuckDB file takes one writer at a time: its steps run one after another in-process.
    url = os.environ.get(WAREHOUSE_URL, DEFAULT_WAREHOUSE_URL)
    return in_process_executor if url.startswith("duckdb") else multiprocess_executor


sync_platform_job = define_asset_job(
    "sync_platform",
    selection=AssetSelection.assets(*UNPARTITIONED),
    description="Contacts, categories (with a statistics snapshot), batches, EviNotice batches.",
    executor_def=_executor(),
)
sync_messages_job = define_asset_job(
    "sync_messages",
    selection=AssetSelection.assets(messages),
    partitions_def=messages_partitions,
    description="Messages of the selected days; backfill a range from the UI.",
    executor_def=_executor(),
)

reconcile_job = define_asset_job(
    "reconcile",
    selection=AssetSelection.assets(*RECONCILE_ASSETS),
    description="CRM exports → plan (guards block unusual plans) → apply exactly once → refresh.",
    executor_def=_executor(),
)

# The reports read tables of both sync jobs, so they are rebuilt after either succeeds rather
# than inside one of them (a report built inside sync_platform would miss the messages synced
# after it).
publish_reports_job = define_asset_job(
    "publish_reports",
    selection=AssetSelection.assets(*REPORTING),
    description="Reporting tables rebuilt from the synced tables; runs after each successful sync.",
    executor_def=_executor(),
)


@run_status_sensor(
    name="publish_reports_after_sync",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[sync_platform_job, sync_messages_job, reconcile_job],
    request_job=publish_reports_job,
    # It only follows runs someone started (a schedule, the UI), so it can be on from the start.
    default_status=DefaultSensorStatus.RUNNING,
)
def publish_reports_after_sync(context: RunStatusSensorContext) -> RunRequest:
    """Rebuild the reporting tables once a sync run has succeeded."""
    return RunRequest(run_key=context.dagster_run.run_id)


sync_platform_schedule = ScheduleDefinition(
    name="sync_platform_schedule", job=sync_platform_job, cron_schedule=SYNC_CRON
)


@schedule(name="sync_messages_schedule", job=sync_messages_job, cron_schedule=SYNC_CRON)
def sync_messages_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
    """Yesterday and today: late delivery outcomes still change yesterday's messages."""
    keys = messages_partitions.get_partition_keys(current_time=context.scheduled_execution_time)[
        -2:
    ]
    for key in keys:
        yield RunRequest(
            run_key=f"{key}@{context.scheduled_execution_time:%Y%m%d%H%M}", partition_key=key
        )


defs = Definitions(
    # Also for runs the UI launches outside these jobs (materialise, backfills).
    executor=_executor(),
    assets=[
        *UNPARTITIONED,
        *PARTITIONED,
        *RECONCILE_ASSETS,
        *BY_PRODUCTS,
        *REPORTING,
        *EVIDENCE_ASSETS,
        *CAMPAIGN_ASSETS,
    ],
    jobs=[sync_platform_job, sync_messages_job, reconcile_job, publish_reports_job, *CAMPAIGN_JOBS],
    schedules=[sync_platform_schedule, sync_messages_schedule],
    sensors=[publish_reports_after_sync, crm_export_sensor, campaign_sensor],
    resources={
        "marketplace": MarketplaceResource(
            base_url=EnvVar(MPT_API_BASE_URL), token=EnvVar(MPT_API_TOKEN)
        ),
        "evinotice": EviNoticeResource(
            base_url=EnvVar(EVINOTICE_BASE_URL),
            username=EnvVar(EVINOTICE_USERNAME),
            password=EnvVar(EVINOTICE_PASSWORD),
            site_id=EnvVar(EVINOTICE_SITE_ID),
        ),
        "warehouse": _warehouse(),
    },
)
