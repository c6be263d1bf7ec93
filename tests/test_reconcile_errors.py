"""Errors a person meets around a reconcile run: one line naming the setting and the cause,
and the real cause alone (no unrelated exception chained below it)."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path

import pytest

from assets.runner import run_async
from connector.errors import ConfigurationError
from connector.warehouse.engine import Warehouse


def test_a_failing_coroutine_shows_its_own_error_alone() -> None:
    async def fails() -> None:
        raise LookupError("the real cause")

    with pytest.raises(LookupError) as caught:
        run_async(fails())

    assert caught.value.__context__ is None and caught.value.__cause__ is None
    shown = "".join(traceback.format_exception(caught.value))
    assert "no running event loop" not in shown and "the real cause" in shown


def test_a_failing_coroutine_inside_a_running_loop_shows_its_own_error_alone() -> None:
    async def fails() -> None:
        raise LookupError("the real cause")

    async def caller() -> None:
        run_async(fails())

    with pytest.raises(LookupError) as caught:
        asyncio.run(caller())
    assert "no running event loop" not in "".join(traceback.format_exception(caught.value))


def test_a_warehouse_url_with_a_bad_port_names_the_setting_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Warehouse("postgresql+psycopg://loader:s3cret-pw@127.0.0.1:54x2/warehouse")
    message = str(caught.value)
    assert message.startswith("WAREHOUSE_URL ") and "port" in message
    assert "s3cret-pw" not in message and "\n" not in message


def test_a_bad_duckdb_option_names_the_setting_and_the_option(tmp_path: Path) -> None:
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?no_such_option=1")
    with pytest.raises(ConfigurationError) as caught, warehouse.transaction():
        pass
    message = str(caught.value)
    assert message.startswith("WAREHOUSE_URL (duckdb:///") and "no_such_option" in message
    assert "\n" not in message


def test_a_duckdb_url_turning_insertion_order_off_is_refused(tmp_path: Path) -> None:
    # The bulk load pairs each JSON line with its flattened row by position.
    with pytest.raises(ConfigurationError) as caught:
        Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?preserve_insertion_order=false")
    message = str(caught.value)
    assert message.startswith("WAREHOUSE_URL") and "preserve_insertion_order" in message
