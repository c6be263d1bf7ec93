"""The EviNotice evidence asset: per-recipient certified-mail evidence synced into
``evinotice_evidence``, with its checks evaluated in the same step."""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    asset,
)
from pydantic import Field

from assets.checks import TableChecks
from assets.metadata import definition_metadata, run_metadata
from assets.resources import EviNoticeResource, WarehouseResource
from assets.runner import run_async
from connector.evinotice.client import EVIDENCE_OUTCOMES, EVIDENCE_STATES
from connector.pipelines import certified_campaigns, evidence_sync, sync
from connector.warehouse.tables import table

TABLE = "evinotice_evidence"
# States and outcomes the service may add later are stored as they come: those checks warn.
EVIDENCE_CHECKS = TableChecks(
    TABLE,
    ("id",),
    ("id", "state"),
    {"state": EVIDENCE_STATES, "outcome": EVIDENCE_OUTCOMES},
    unaccepted_severity=AssetCheckSeverity.WARN,
)


class EvidenceConfig(Config):
    """Which evidence records to read."""

    lookup_keys: list[str] | None = Field(
        default=None,
        description="Only the evidence of these recipients' LookupKeys (default: every record).",
    )
    owner: str | None = Field(
        default=None, description="Only the evidence of this owner's email (site users only)."
    )
    campaign: str | None = Field(
        default=None,
        description="Only the evidence of this certified campaign's recipients (its LookupKeys).",
    )


@asset(
    name=TABLE,
    group_name="evinotice",
    description=table(TABLE).description,
    metadata=definition_metadata(TABLE),
    check_specs=EVIDENCE_CHECKS.specs(),
    kinds={"sql"},
)
def evinotice_evidence(
    context: AssetExecutionContext,
    config: EvidenceConfig,
    evinotice: EviNoticeResource,
    warehouse: WarehouseResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Per-recipient evidence records (state, outcome), merged on id."""
    store = warehouse.warehouse()
    lookup_keys = config.lookup_keys
    if config.campaign is not None:
        lookup_keys = [
            *(lookup_keys or []),
            *certified_campaigns.campaign_lookup_keys(store, config.campaign),
        ]

    async def run() -> sync.SyncResult:
        async with evinotice.client() as client:
            return await evidence_sync.sync_evidence(
                client, store, lookup_keys=lookup_keys, owner=config.owner
            )

    result = run_async(run())
    context.log.info("%s: %s", TABLE, sync.describe(result))
    yield MaterializeResult(asset_key=TABLE, metadata=run_metadata(store, TABLE, result))
    yield from EVIDENCE_CHECKS.evaluate(store, result)


EVIDENCE_ASSETS = [evinotice_evidence]
