"""What a load did to its table: rows staged, inserted, updated, deleted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MergeCounts:
    """What a load did to its table."""

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    batches: int = 1  # merged in this many batches (connector/warehouse/streamed_merge.py)

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated

    def add(self, other: MergeCounts) -> None:
        """Add another batch's counts to these."""
        self.staged += other.staged
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted
        self.batches += other.batches
