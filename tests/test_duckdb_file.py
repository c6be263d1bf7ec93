"""A DuckDB warehouse file as the connector opens it (connector/warehouse/engine.py): attached
with the row group size loads write in, so a load's rows reach the file while it runs; the
file itself stays an ordinary DuckDB file; another process holding it is waited for."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sync_support import frozen_sandbox, sync_contacts

from connector.errors import ConfigurationError
from connector.warehouse.engine import DUCKDB_ROW_GROUP_ROWS, Warehouse


def _row_groups(path: Path, table: str) -> list[int]:
    """Rows per row group of ``table``, read by DuckDB opening the file directly."""
    with duckdb.connect(str(path), read_only=True) as duck:
        return [
            count
            for (count,) in duck.execute(
                "select max(count) from pragma_storage_info(?) where column_id = 0 "
                "group by row_group_id order by row_group_id",
                [table],
            ).fetchall()
        ]


def test_a_sync_writes_row_groups_of_the_size_in_the_url(
    tmp_path: Path, open_warehouse: Any
) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = open_warehouse(f"duckdb:///{path}?row_group_size=2048")
    sync_contacts(frozen_sandbox(contacts=5000), warehouse, full_refresh=True)
    warehouse.dispose()
    # In the file itself (an ordinary DuckDB file, as analysts open it), in groups of 2,048
    # rows: DuckDB's own default would have made one group of all 5,000.
    assert _row_groups(path, "contacts") == [2048, 2048, 904]


def test_loads_write_row_groups_of_the_connectors_size_by_default(
    tmp_path: Path, open_warehouse: Any
) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = open_warehouse(f"duckdb:///{path}")
    rows = DUCKDB_ROW_GROUP_ROWS + 100
    ids = pa.array([f"CTT-{n:012d}" for n in range(rows)])
    with warehouse.transaction() as tx:
        tx.writer("contacts").write_arrow(
            pa.table({"id": ids}), {"synced_at": "2026-01-01T00:00:00Z"}
        )
    warehouse.dispose()
    assert _row_groups(path, "contacts") == [DUCKDB_ROW_GROUP_ROWS, 100]


@pytest.mark.parametrize("value", ["0", "-2048", "many", "100", "2048&row_group_size=4096"])
def test_a_row_group_size_duckdb_would_not_take_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?row_group_size={value}")
    message = str(caught.value)
    assert message.startswith("WAREHOUSE_URL") and "row_group_size" in message


def test_the_warehouse_names_its_file_and_spills_beside_it(
    tmp_path: Path, open_warehouse: Any
) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = open_warehouse(f"duckdb:///{path}?memory_limit=64MB")
    # What logs and metadata show is the file, not the DuckDB instance it is attached to.
    assert warehouse.url == f"duckdb:///{path}"
    # Where DuckDB would spill for the file opened directly, not the working directory.
    ((spill,),) = warehouse.query("select current_setting('temp_directory')")
    assert spill == f"{path}.tmp"
    ((limit,),) = warehouse.query("select current_setting('memory_limit')")
    assert limit.startswith("61.0 MiB")  # the URL's setting reaches the instance (64 MB)


def test_a_read_only_warehouse_reads_and_writes_nothing(
    tmp_path: Path, open_warehouse: Any
) -> None:
    path = tmp_path / "w.duckdb"
    sync_contacts(frozen_sandbox(contacts=50), open_warehouse(f"duckdb:///{path}"))
    reader = open_warehouse(f"duckdb:///{path}?access_mode=read_only", ensure=False)
    assert reader.count_rows("contacts") == 50
    with pytest.raises(sa.exc.DBAPIError, match="read-only"):
        reader.query("delete from contacts")
    with pytest.raises(ConfigurationError, match="access_mode"):
        Warehouse(f"duckdb:///{path}?access_mode=sometimes")


def test_a_named_in_memory_warehouse_stays_in_memory(
    tmp_path: Path, open_warehouse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    warehouse = open_warehouse("duckdb:///:memory:scratch", ensure=False)
    assert warehouse.query("select current_database()") == [("memory",)]
    assert list(tmp_path.iterdir()) == []  # no file of that name in the working directory


def _cap(tx: Any) -> str:
    return tx.scalar("select current_setting('memory_limit')")


@contextlib.contextmanager
def _first_load(warehouse: Warehouse) -> Iterator[Any]:
    """A load as one writing straight into empty tables runs it: its cap lowered."""
    with warehouse.load() as tx:
        tx.lower_memory_cap()
        yield tx


def test_a_first_load_written_straight_in_runs_capped_and_a_merge_does_not(
    tmp_path: Path, open_warehouse: Any
) -> None:
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    batches = pa.table({"id": [f"BAT-{n:04d}" for n in range(3)]})
    constants = {"synced_at": "2026-01-01T00:00:00Z"}
    for load_number in range(2):
        with warehouse.load() as tx, tx.streamed_merge("batches", keys_once=True) as merge:
            merge.stage.write_arrow(batches, constants)
            merge.chunk_written()
            # The first load writes straight into the empty table, at sync_memory_limit; the
            # second merges into what the first wrote, rewriting rows: memory_limit.
            assert _cap(tx) == ("30.5 MiB" if load_number == 0 else "244.1 MiB")
            merge.finish()
            assert _cap(tx) == "244.1 MiB"  # the read is over


def test_a_load_caps_duckdb_lower_while_it_runs_and_puts_the_cap_back(
    tmp_path: Path, open_warehouse: Any
) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    warehouse, other = open_warehouse(url), open_warehouse(url, ensure=False)
    with warehouse.transaction() as reader:  # keeps the process's DuckDB instance alive
        assert _cap(reader) == "244.1 MiB"  # memory_limit: 256 MB by default
        with _first_load(warehouse) as load:
            assert _cap(load) == _cap(reader) == "30.5 MiB"  # sync_memory_limit: 32 MB
            with _first_load(other) as second:  # two loads at once: the first to end ...
                assert _cap(second) == "30.5 MiB"
            assert _cap(load) == "30.5 MiB"  # ... leaves the cap to the one still running
        assert _cap(reader) == "244.1 MiB"
        with pytest.raises(RuntimeError), _first_load(warehouse):
            raise RuntimeError("a load that stops")
        assert _cap(reader) == "244.1 MiB"
        # Lifted early, before work over the whole table: that work gets the full cap, even
        # while another load streams, which is capped again once it is alone.
        with _first_load(other) as second:
            with _first_load(warehouse) as load:
                load.lift_memory_cap()
                load.lift_memory_cap()  # once is enough
                assert _cap(reader) == "244.1 MiB"
            assert _cap(reader) == "30.5 MiB"
            second.lift_memory_cap()
            assert _cap(reader) == "244.1 MiB"
        assert _cap(reader) == "244.1 MiB"


def test_a_cap_duckdb_cannot_reach_leaves_the_load_running_and_later_ones_capped(
    tmp_path: Path, open_warehouse: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Nowhere to spill (a spill directory that cannot be made) and a temporary table of some
    # 70 MB held: DuckDB refuses to go down to 32 MB. The load goes on at the cap it had.
    warehouse = open_warehouse(
        f"duckdb:///{tmp_path / 'w.duckdb'}?temp_directory=/proc/notifsync_nowhere"
    )
    with warehouse.transaction() as reader:  # keeps the process's DuckDB instance alive
        with warehouse.transaction() as holder:
            holder.scalar(
                "create temporary table big as select md5(range::varchar) "
                "|| md5((range + 1)::varchar) as t from range(1000000)"
            )
            with _first_load(warehouse) as load:
                assert _cap(load) == "244.1 MiB"
            assert "memory cap left as it was" in caplog.text
        # The table gone with its connection: the next load is capped, and nothing is left
        # counted from the refused one once it ends.
        with _first_load(warehouse) as load:
            assert _cap(load) == "30.5 MiB"
        assert _cap(reader) == "244.1 MiB"


@pytest.mark.parametrize(
    ("query", "during_loads"),
    [
        ("?memory_limit=16MB", "15.2 MiB"),  # a smaller memory_limit is never raised
        ("?sync_memory_limit=128MB", "122.0 MiB"),
        ("?memory_limit=1GB&sync_memory_limit=2GB", "953.6 MiB"),
    ],
)
def test_a_load_takes_the_lower_of_the_two_caps(
    query: str, during_loads: str, tmp_path: Path, open_warehouse: Any
) -> None:
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}{query}")
    with _first_load(warehouse) as load:
        assert _cap(load) == during_loads


@pytest.mark.parametrize("value", ["lots", "0MB", "80%"])
def test_a_sync_memory_limit_that_is_not_a_size_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigurationError, match="sync_memory_limit"):
        Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}?sync_memory_limit={value}")


HOLD_THE_FILE = """
import sys
import duckdb

duck = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()
duck.close()
print("released", flush=True)
"""


class _Said(logging.Handler):
    """Sets ``event`` when a record containing ``words`` is logged."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


def test_a_file_another_process_holds_is_waited_for(tmp_path: Path, open_warehouse: Any) -> None:
    path = tmp_path / "w.duckdb"
    open_warehouse(f"duckdb:///{path}").dispose()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_FILE, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    said = _Said("is locked by another process")
    engine_log = logging.getLogger("connector.warehouse.engine")
    engine_log.addHandler(said)
    try:
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        counted: list[int] = []
        reader = threading.Thread(
            target=lambda: counted.append(Warehouse(f"duckdb:///{path}").count_rows("contacts"))
        )
        reader.start()
        # The warehouse says who holds the file and waits (DuckDB lets one process in).
        assert said.event.wait(timeout=120)
        assert not counted
        holder.stdin.close()  # the holder lets go
        reader.join(timeout=120)
        assert counted == [0]
    finally:
        engine_log.removeHandler(said)
        if holder.poll() is None:
            holder.kill()
        holder.wait()
