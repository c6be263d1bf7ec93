"""A merge that runs while the rows arrive: the stage is merged into its table each time it
holds ``every`` rows or ``every_bytes`` (whichever comes first), and emptied, so a load holds
a bounded batch of rows whatever the size of the collection, and after the last chunk only
the last batch is left to merge.

Everything stays inside the caller's transaction: the table changes all at once at commit,
or not at all. With ``keep_read``, the keys of every row read are kept (``read``) for what
needs the whole read at the end (a full refresh marking the rows the API no longer returns).

A first load (the tables empty) whose chunks should never repeat a key (``keys_once``) writes
straight into the tables: every row is new, so there is nothing to compare with, and no copy
is staged.

A key handed twice in a batch (or, written straight, in the whole load) stops the load with
``RepeatedKeysError``: on DuckDB no key index would (connector/warehouse/schema.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connector.warehouse.merge_counts import MergeCounts
from connector.warehouse.staging import Stage
from connector.warehouse.tables import Table

if TYPE_CHECKING:
    from connector.warehouse.transaction import Transaction

# Rows merged at a time. Large enough that a merge's scan of the table is paid rarely (a
# million-row table is read ten times in a million-row load), small enough that the stage
# stays a few tens of MB and the merge left after the last chunk is short.
MERGE_EVERY_ROWS = 100_000
# The same bound in bytes (as Arrow holds the staged rows), for rows wider than the sandbox's
# contacts (about 340 bytes each staged, so 100k of them is some 32 MB).
MERGE_EVERY_BYTES = 32 << 20


@dataclass(frozen=True)
class ReadKeys:
    """The temporary table of the keys a load has read (column: the table's key)."""

    name: str
    table: Table


class StreamedMerge:
    """Merges ``stage`` (and its children's stages) into their tables in batches; or, for a
    first load (``direct``), writes straight into the tables (``stage`` is the table)."""

    def __init__(
        self,
        tx: Transaction,
        stage: Stage,
        children: tuple[tuple[Stage, str], ...],
        every: int,
        before_merge: Callable[[Stage], None] | None,
        *,
        every_bytes: int = MERGE_EVERY_BYTES,
        direct: bool = False,
        keep_read: bool = False,
    ) -> None:
        self.tx = tx
        self.stage = stage
        self.children = children
        self.every = every
        self.every_bytes = every_bytes
        self.before_merge = before_merge
        self.direct = direct
        self.keep_read = keep_read
        # Written straight into the table, the table holds exactly the keys read.
        self.read = ReadKeys(stage.name if direct else read_keys_name(stage), stage.table)
        self.counts: dict[str, MergeCounts] = {}

    def chunk_written(self) -> None:
        """Call after each chunk is staged (parents and children): merges a full batch.

        Only between chunks, so a parent and its children are always merged together."""
        full = self.stage.rows >= self.every or self.stage.bytes >= self.every_bytes
        if not self.direct and full:
            self._merge_batch()

    def finish(self) -> dict[str, MergeCounts]:
        """Merge what is left; the counts of the whole load, per table."""
        if self.direct:
            self.tx.lift_memory_cap()  # the read is over
            if not self.stage.keys_ascending:  # else no key can repeat
                self.tx.refuse_repeated_keys(self.stage)
            if self.before_merge is not None:
                self.before_merge(self.stage)
            for stage in (self.stage, *(child for child, _ in self.children)):
                self.counts[stage.table.name] = MergeCounts(staged=stage.rows, inserted=stage.rows)
                if stage.rows:
                    self.tx.changed.add(stage.table.name)
        elif self.stage.rows or not self.counts:
            self._merge_batch()
        return self.counts

    def _merge_batch(self) -> None:
        self.tx.refuse_repeated_keys(self.stage)
        if self.before_merge is not None:
            self.before_merge(self.stage)
        if self.keep_read:
            names = {"read": self.read.name, "stage": self.stage.name}
            self.tx.run("load/insert_read_keys", **names, key=self.tx.key(self.stage.table))
        for table, counts in self.tx.merge(self.stage, *self.children).items():
            if table in self.counts:
                self.counts[table].add(counts)
            else:
                self.counts[table] = counts
        for stage in (self.stage, *(child for child, _ in self.children)):
            self.tx.empty_stage(stage)


@contextlib.contextmanager
def streamed_merge(
    tx: Transaction,
    target: str,
    *children: tuple[str, str],
    every: int = MERGE_EVERY_ROWS,
    every_bytes: int = MERGE_EVERY_BYTES,
    before_merge: Callable[[Stage], None] | None = None,
    keys_once: bool = False,
    keep_read: bool = False,
) -> Iterator[StreamedMerge]:
    """Stages for ``target`` and its ``children`` ((table, key column) pairs), merged in
    batches of ``every`` rows or ``every_bytes``; call ``finish()`` after the last chunk.

    ``before_merge`` sees each batch's stage before it is merged and emptied. ``keys_once``:
    the chunks should hand each key once (the client's JSON lines), so a first load may go
    straight into the tables (checked before commit all the same). ``keep_read``: keep the
    keys of every row read in ``read`` (a full refresh's deletions need them)."""
    tables = (target, *(child for child, _ in children))
    if keys_once and not any(tx.run("load/select_any_row", target=t).scalar_one() for t in tables):
        writers = [tx.writer(name) for name in tables]
        child_writers = tuple(
            (writer, key) for writer, (_, key) in zip(writers[1:], children, strict=True)
        )
        # Only new rows, written straight in: DuckDB's own memory can stay small (what it would
        # keep is blocks already written), so the load lowers its cap while the rows come.
        tx.lower_memory_cap()
        yield StreamedMerge(tx, writers[0], child_writers, every, before_merge, direct=True)
        return
    with contextlib.ExitStack() as stages:
        stage = stages.enter_context(tx.stage(target))
        child_stages = tuple(
            (stages.enter_context(tx.stage(child)), key) for child, key in children
        )
        names = {"read": read_keys_name(stage), "target": target, "key": tx.key(stage.table)}
        if keep_read:
            tx.run("load/drop_read_keys", **names)
            tx.run("load/create_read_keys", **names)
        yield StreamedMerge(
            tx,
            stage,
            child_stages,
            every,
            before_merge,
            every_bytes=every_bytes,
            keep_read=keep_read,
        )
        # Only on success, as for the stages: after an error the rollback drops it.
        if keep_read:
            tx.run("load/drop_read_keys", **names)


def read_keys_name(stage: Stage) -> str:
    """The temporary table of the keys a load has read."""
    return f"{stage.name}_read"
