"""The contacts asset refuses a mass deletion: pointed at a platform that lost most contacts
(a smaller sandbox, as a token scoped to another account would be), a full refresh fails with
the table unchanged, and passes only with a recorded reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import make_sandbox
from dagster import AssetKey, DagsterInstance

from assets.definitions import LocationSettings, build_definitions
from connector.pipelines import sync
from connector.warehouse.engine import Warehouse
from sandbox.app import Sandbox


def test_a_full_refresh_that_would_delete_most_contacts_stops_until_a_reason_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, loopback: Callable[[Sandbox], str]
) -> None:
    first = make_sandbox(contacts=400, seed=3, clock_speed=0.0)
    smaller = make_sandbox(contacts=100, seed=3, clock_speed=0.0)
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    monkeypatch.setenv("MPT_API_TOKEN", first.config.token)
    monkeypatch.setenv("WAREHOUSE_URL", warehouse_url)
    defs = build_definitions(LocationSettings(warehouse_url=warehouse_url))
    job = defs.resolve_job_def("sync_platform")

    def refresh(url: str, **config: object) -> bool:
        monkeypatch.setenv("MPT_API_BASE_URL", url)
        run_config = {"ops": {"contacts": {"config": {"full_refresh": True, **config}}}}
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                instance=instance,
                run_config=run_config,
                asset_selection=[AssetKey("contacts")],
                raise_on_error=False,
            )
        failures = [e for e in result.all_events if e.is_step_failure]
        refresh.messages = [str(e.step_failure_data.error.message) for e in failures]
        return result.success

    def live_ids() -> set[str]:
        warehouse = Warehouse(warehouse_url)
        try:
            rows = warehouse.query("select id from contacts where deleted_at is null")
            return {r[0] for r in rows}
        finally:
            warehouse.dispose()

    assert refresh(loopback(first))
    before = live_ids()
    assert len(before) == 400

    smaller_url = loopback(smaller)
    assert not refresh(smaller_url)
    assert "would mark 300 of 400 rows deleted" in refresh.messages[0]
    assert "mass_deletion_reason" in refresh.messages[0]
    assert live_ids() == before  # nothing changed

    assert refresh(smaller_url, mass_deletion_reason="contacts moved to the new account")
    assert len(live_ids()) == 100
    warehouse = Warehouse(warehouse_url)
    try:
        with warehouse.transaction() as tx:
            override = tx.get_state(sync.CONTACTS_MASS_DELETION_OVERRIDE)
    finally:
        warehouse.dispose()
    assert orjson.loads(override)["reason"] == "contacts moved to the new account"
