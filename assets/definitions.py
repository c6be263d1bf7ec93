"""The one ``Definitions`` of the code location: assets, checks, jobs, schedules, sensors and
resources, built by ``build_definitions`` from typed settings.

``defs`` is what Dagster loads (``workspace.yaml``): it reads the environment when the code
location loads, never at import. Settings of the location: ``WAREHOUSE_URL`` (default: DuckDB
under ``data/``), ``NOTIFSYNC_SYNC_CRON`` (default hourly), ``NOTIFSYNC_MESSAGES_START_DATE``.
The API settings (``MPT_API_*``, ``EVINOTICE_*``) are ``EnvVar``s of the resources, read when a
run starts; a missing one fails the run naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    ExecutorDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    definitions,
    in_process_executor,
    multiprocess_executor,
    schedule,
)
from dagster._utils.schedules import is_valid_cron_string
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from assets.campaigns import CAMPAIGN_ASSETS, CAMPAIGN_JOBS, campaign_performance, campaign_sensor
from assets.evidence import EVIDENCE_ASSETS
from assets.ingest import (
    DEFAULT_MESSAGES_START_DATE,
    MESSAGES_START_DATE,
    UNPARTITIONED,
    messages_asset,
    messages_partitions,
)
from assets.reconcile import BY_PRODUCTS, RECONCILE_ASSETS, crm_export_sensor
from assets.reporting import REPORTING
from assets.resources import EviNoticeResource, MarketplaceResource, WarehouseResource
from connector.errors import ConfigurationError
from connector.settings import (
    EVINOTICE_BASE_URL,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
    EVINOTICE_USERNAME,
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
    missing_message,
)
from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL, WAREHOUSE_URL

log = logging.getLogger(__name__)

SYNC_CRON = "NOTIFSYNC_SYNC_CRON"
DEFAULT_SYNC_CRON = "0 * * * *"


class LocationSettings(BaseModel):
    """What the code location is built from (the API settings are resources' ``EnvVar``s)."""

    model_config = ConfigDict(frozen=True)

    warehouse_url: str | None = None  # None: the embedded DuckDB file
    sync_cron: str = DEFAULT_SYNC_CRON
    messages_start_date: str = DEFAULT_MESSAGES_START_DATE

    @field_validator("sync_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not is_valid_cron_string(value):
            raise ValueError(f"{SYNC_CRON} is not a cron expression (e.g. '0 * * * *')")
        return value

    @field_validator("messages_start_date")
    @classmethod
    def _start_date(cls, value: str) -> str:
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{MESSAGES_START_DATE} is not a date (YYYY-MM-DD)") from None
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LocationSettings:
        """The settings from environment variables; an invalid one is named in one line."""
        env = os.environ if env is None else env
        values = {
            "warehouse_url": env.get(WAREHOUSE_URL) or None,
            "sync_cron": env.get(SYNC_CRON) or DEFAULT_SYNC_CRON,
            "messages_start_date": env.get(MESSAGES_START_DATE) or DEFAULT_MESSAGES_START_DATE,
        }
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(
                "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            ) from None

    @property
    def on_duckdb(self) -> bool:
        """Whether the warehouse is a DuckDB file (one writer at a time)."""
        return (self.warehouse_url or DEFAULT_WAREHOUSE_URL).startswith("duckdb")


def env_resources(settings: LocationSettings) -> dict[str, Any]:
    """The resources filled with ``EnvVar``s, so secrets stay out of the UI and run config."""
    return {
        "marketplace": MarketplaceResource(
            base_url=EnvVar(MPT_API_BASE_URL), token=EnvVar(MPT_API_TOKEN)
        ),
        "evinotice": EviNoticeResource(
            base_url=EnvVar(EVINOTICE_BASE_URL),
            username=EnvVar(EVINOTICE_USERNAME),
            password=EnvVar(EVINOTICE_PASSWORD),
            site_id=EnvVar(EVINOTICE_SITE_ID),
        ),
        # Unset means the embedded DuckDB; an EnvVar keeps a password in the URL out of the UI.
        "warehouse": WarehouseResource(url=EnvVar(WAREHOUSE_URL))
        if settings.warehouse_url
        else WarehouseResource(url=DEFAULT_WAREHOUSE_URL),
    }


def build_definitions(
    settings: LocationSettings | None = None, resources: Mapping[str, Any] | None = None
) -> Definitions:
    """The code location for these settings; ``resources`` default to ``env_resources``."""
    settings = settings or LocationSettings()
    # A DuckDB file takes one writer at a time: its steps run one after another in-process.
    executor: ExecutorDefinition = (
        in_process_executor if settings.on_duckdb else multiprocess_executor
    )
    partitions = messages_partitions(settings.messages_start_date)
    messages = messages_asset(partitions)

    sync_platform_job = define_asset_job(
        "sync_platform",
        selection=AssetSelection.assets(*UNPARTITIONED),
        description="Contacts, categories (with a statistics snapshot), batches, EviNotice "
        "batches.",
        executor_def=executor,
    )
    # The job takes its partitions from the asset it selects.
    sync_messages_job = define_asset_job(
        "sync_messages",
        selection=AssetSelection.assets(messages),
        description="Messages of the selected days; backfill a range from the UI.",
        executor_def=executor,
    )
    reconcile_job = define_asset_job(
        "reconcile",
        selection=AssetSelection.assets(*RECONCILE_ASSETS),
        description="CRM exports → plan (guards block unusual plans) → apply exactly once → "
        "refresh.",
        executor_def=executor,
    )
    # Every report at once, by hand; otherwise each follows its inputs (below).
    publish_reports_job = define_asset_job(
        "publish_reports",
        selection=AssetSelection.assets(*REPORTING),
        description="Every reporting table rebuilt from the synced tables.",
        executor_def=executor,
    )
    # Each report carries an automation condition (assets.reporting): it is rebuilt once after
    # any materialisation of what it reads, whoever launched it (a job, the UI, a backfill).
    reports_follow_inputs = AutomationConditionSensorDefinition(
        "reports_follow_their_inputs",
        target=AssetSelection.assets(*REPORTING, campaign_performance),
        default_status=DefaultSensorStatus.RUNNING,
        description="Rebuilds a report once after any of its inputs is materialised.",
    )

    sync_platform_schedule = ScheduleDefinition(
        name="sync_platform_schedule", job=sync_platform_job, cron_schedule=settings.sync_cron
    )

    @schedule(
        name="sync_messages_schedule", job=sync_messages_job, cron_schedule=settings.sync_cron
    )
    def sync_messages_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        """Yesterday and today: late delivery outcomes still change yesterday's messages."""
        when = context.scheduled_execution_time
        for key in partitions.get_partition_keys(current_time=when)[-2:]:
            yield RunRequest(run_key=f"{key}@{when:%Y%m%d%H%M}", partition_key=key)

    return Definitions(
        # Also for runs the UI launches outside these jobs (materialise, backfills).
        executor=executor,
        assets=[
            *UNPARTITIONED,
            messages,
            *RECONCILE_ASSETS,
            *BY_PRODUCTS,
            *REPORTING,
            *EVIDENCE_ASSETS,
            *CAMPAIGN_ASSETS,
        ],
        jobs=[
            sync_platform_job,
            sync_messages_job,
            reconcile_job,
            publish_reports_job,
            *CAMPAIGN_JOBS,
        ],
        schedules=[sync_platform_schedule, sync_messages_schedule],
        sensors=[reports_follow_inputs, crm_export_sensor, campaign_sensor],
        resources=dict(resources) if resources is not None else env_resources(settings),
    )


API_SETTINGS = (
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
    EVINOTICE_BASE_URL,
    EVINOTICE_USERNAME,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
)


@definitions
def defs() -> Definitions:
    """The code location as Dagster loads it, from the environment of that moment."""
    missing = [name for name in API_SETTINGS if not os.environ.get(name)]
    if missing:
        # Runs would fail naming them; said once here too, with the way to use the sandbox.
        log.warning("runs will fail: %s", missing_message(missing))
    return build_definitions(LocationSettings.from_env())
