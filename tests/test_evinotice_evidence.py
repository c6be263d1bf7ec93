"""Per-recipient evidence end to end: the client's cursor paging, the sync into
``evinotice_evidence`` on DuckDB and PostgreSQL, and the Dagster asset; and how the checks of
EviNotice tables treat a state no list names."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database, make_sandbox
from dagster import AssetCheckSeverity, materialize
from evinotice_api import FAST, USER, Recording, evinotice_app, settings_for

from assets.checks import TABLE_CHECKS
from assets.evidence import evinotice_evidence
from assets.resources import EviNoticeResource, WarehouseResource
from connector.evinotice.client import EviNoticeClient, InvalidRequestError
from connector.evinotice.records import evinotice_batch_rows
from connector.pipelines import sync
from connector.pipelines.evidence_sync import sync_evidence
from connector.settings import EviNoticeSettings, Secret
from connector.warehouse.engine import Warehouse
from sandbox.clock import SandboxClock
from sandbox.evinotice.store import EviNoticeStore

NEW = {"Description": "Certified renewal", "Subject": "Renewal", "IssuerName": "Legal"}


def processed_batch(store: EviNoticeStore, count: int, prefix: str = "K") -> str:
    """A batch of ``count`` keyed recipients, submitted; the clock decides how far it got."""
    batch_id = store.create_batch(NEW, submitter=USER)
    store.set_body(batch_id, "Dear {{DisplayName}}")
    for start in range(0, count, 500):
        lines = ["Address|DisplayName|LookupKey"] + [
            f"p{i}.{prefix}@example.com|Person {i}|{prefix}-{i}"
            for i in range(start, min(count, start + 500))
        ]
        store.add_recipients(batch_id, "\n".join(lines))
    store.configure(batch_id, {"State": "Submitted"})
    return batch_id


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- the client ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_evidence_paging_sees_every_record_once_while_new_ones_appear(
    store: EviNoticeStore, clock: SandboxClock
) -> None:
    processed_batch(store, 400)
    clock.advance(10 + 2)  # processing has begun: a few dozen records so far
    before = {r["Id"] for r in store.evidence_snapshot()}
    assert 0 < len(before) < 400

    class MovingClock(Recording):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            clock.advance(1)  # more recipients are processed between pages
            return response

    transport = MovingClock(evinotice_app(store))
    async with EviNoticeClient(settings_for(), limits=FAST, transport=transport) as client:
        seen = [r["Id"] async for page in client.iter_evidence(page_size=10) for r in page]
    assert len(seen) == len(set(seen))
    assert before <= set(seen)
    assert len(seen) > len(before)  # records that appeared while paging were read too
    assert len(transport.sent("POST")) > 5


@pytest.mark.anyio
async def test_evidence_query_arguments_are_checked_before_sending(
    client: EviNoticeClient, transport: Recording
) -> None:
    for kwargs in (
        {"state": "Lost"},
        {"outcome": "Maybe"},
        {"page_size": 101},
        {"lookup_keys": ["ok", ""]},
    ):
        with pytest.raises(InvalidRequestError):
            [page async for page in client.iter_evidence(**kwargs)]
    assert transport.requests == []


# --- the sync, on both warehouses ----------------------------------------------------------


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Warehouse]:
    """An empty warehouse with its tables: a DuckDB file, or a fresh PostgreSQL database."""
    if request.param == "duckdb":
        opened = Warehouse(f"duckdb:///{tmp_path / 'evidence.duckdb'}")
        opened.ensure_tables()
        yield opened
        opened.dispose()
        return
    with fresh_postgres_database() as url:
        opened = Warehouse(url)
        opened.ensure_tables()
        yield opened
        opened.dispose()


def stored(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    with warehouse.transaction() as tx:
        rows = (
            tx.connection.execute(
                sa.select(
                    sa.table(
                        "evinotice_evidence",
                        *(
                            sa.column(c)
                            for c in (
                                "id",
                                "linked_id",
                                "lookup_key",
                                "recipient_address",
                                "state",
                                "outcome",
                                "created_at",
                                "last_update_date",
                                "time_to_live_minutes",
                            )
                        ),
                    )
                )
            )
            .mappings()
            .all()
        )
    return {row["id"]: dict(row) for row in rows}


TIMES = (("created_at", "CreationDate"), ("last_update_date", "LastUpdateDate"))


def assert_matches_truth(warehouse: Warehouse, truth: list[dict[str, Any]]) -> None:
    rows = stored(warehouse)
    assert sorted(rows) == sorted(r["Id"] for r in truth)
    for record in truth:
        row = rows[record["Id"]]
        assert (
            row["linked_id"],
            row["lookup_key"],
            row["recipient_address"],
            row["state"],
            row["outcome"],
            row["time_to_live_minutes"],
        ) == (
            record["LinkedId"],
            record["LookupKey"],
            record["RecipientAddress"],
            record["State"],
            record["Outcome"],
            record["TimeToLive"],
        )
        for column, field in (
            ("created_at", "CreationDate"),
            ("last_update_date", "LastUpdateDate"),
        ):
            value = row[column]
            value = value if value.tzinfo else value.replace(tzinfo=UTC)
            assert value == utc(record[field])


def test_evidence_sync_merges_records_as_their_states_move(
    warehouse: Warehouse, store: EviNoticeStore, clock: SandboxClock
) -> None:
    batch_id = processed_batch(store, 1_200)
    clock.advance(600)

    async def run(**kwargs: Any) -> Any:
        transport = Recording(evinotice_app(store))
        async with EviNoticeClient(settings_for(), limits=FAST, transport=transport) as client:
            return await sync_evidence(client, warehouse, **kwargs)

    first = asyncio.run(run())
    truth = store.evidence_snapshot()
    assert len(truth) == 1_200 and {r["LinkedId"] for r in truth} == {batch_id}
    assert first.counts["evinotice_evidence"].inserted == 1_200
    assert first.api_count == first.table_count == 1_200
    assert_matches_truth(warehouse, truth)

    # Two days on, people have read, accepted, rejected: the merge writes only what moved.
    clock.advance(2 * 86_400)
    second = asyncio.run(run())
    moved = store.evidence_snapshot()
    changed = sum(a != b for a, b in zip(truth, moved, strict=True))
    assert 0 < changed < 1_200
    assert second.counts["evinotice_evidence"].inserted == 0
    assert second.counts["evinotice_evidence"].updated == changed
    assert_matches_truth(warehouse, moved)

    # By lookup key (what a campaign's evidence sync asks for), over several queries.
    keys = [f"K-{i}" for i in range(0, 1_200, 3)] + ["K-unknown"]
    third = asyncio.run(run(lookup_keys=keys))
    assert third.api_count == third.table_count == 400
    assert third.counts["evinotice_evidence"].updated == 0
    assert asyncio.run(run(lookup_keys=[])).api_count == 0


def test_an_unknown_batch_state_is_stored_and_only_warns(warehouse: Warehouse) -> None:
    records = [
        {"Id": "b-1", "State": "Archived", "CreationDate": "2024-11-19T16:11:17.9870820+00:00"},
        {"Id": "b-2", "State": "Completed", "CreationDate": "2024-11-19T16:11:18.0000000+01:00"},
    ]
    with warehouse.transaction() as tx, tx.stage("evinotice_batches") as stage:
        stage.write(evinotice_batch_rows(records, "2026-03-02T12:00:00.000Z"))
        tx.merge(stage)
    results = {r.check_name: r for r in TABLE_CHECKS["evinotice_batches"].evaluate(warehouse, None)}
    accepted = results["accepted_values"]
    assert not accepted.passed and accepted.severity == AssetCheckSeverity.WARN
    assert accepted.metadata["unaccepted_state"].value == 1  # Completed is a documented state
    assert results["unique_key"].passed and results["required_columns"].passed


def test_a_batch_sync_against_the_vendor_spellings_reads_every_page(warehouse: Warehouse) -> None:
    sandbox = make_sandbox(contacts=10, evinotice_batches=250, evinotice_vendor_spellings=True)
    site = sandbox.config.evinotice_site_id
    transport = httpx.ASGITransport(app=sandbox.app)
    settings = EviNoticeSettings(
        base_url="http://sandbox.local",
        username=sandbox.config.evinotice_username,
        password=Secret(sandbox.config.evinotice_password),
        site_id=site,
    )

    async def run() -> Any:
        async with EviNoticeClient(settings, limits=FAST, transport=transport) as client:
            return await sync.sync_evinotice_batches(client, warehouse, site)

    result = asyncio.run(run())
    mine = [b for b in sandbox.truth("evinotice-batches") if b["SiteId"] == site]
    assert len(mine) > 100  # more than one page
    assert result.api_count == result.table_count == len(mine)


# --- the asset -----------------------------------------------------------------------------


def test_the_evidence_asset_materialises_with_its_checks(loopback: Any, tmp_path: Any) -> None:
    sandbox = make_sandbox(contacts=20, evinotice_batches=3)
    processed_batch(sandbox.evinotice, 30)
    sandbox.clock.advance(3_600)
    url = loopback(sandbox)
    config = sandbox.config
    warehouse_url = f"duckdb:///{tmp_path / 'asset.duckdb'}"
    result = materialize(
        [evinotice_evidence],
        resources={
            "evinotice": EviNoticeResource(
                base_url=url,
                username=config.evinotice_username,
                password=config.evinotice_password,
                site_id=config.evinotice_site_id,
            ),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
        run_config={"ops": {"evinotice_evidence": {"config": {"lookup_keys": ["K-1", "K-2"]}}}},
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("evinotice_evidence")
    assert materialization.metadata["dagster/row_count"].value == 2
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "unique_key": True,
        "required_columns": True,
        "accepted_values": True,
        "row_count_matches_api": True,
    }
    assert config.evinotice_password not in str(materialization.metadata)
    # The control endpoint's truth holds the same records the asset read from.
    assert len(list(sandbox.truth("evinotice-evidence"))) == 30
