"""Delivery in the sandbox: the messages a new batch creates start ``Queued`` and move, over
sandbox time, to ``Sent``, ``Bounced``, ``Complained``, ``Failed`` or ``Discarded``.

Each address's outcome and delay are fixed by the seed and the address, so the same run gives
the same results; contacts opted out of the batch's category are ``Discarded``. The category
statistics follow, because the store's per-category index is updated as messages settle.
Delivery is lazy: whatever is due is settled when the store is next read.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandbox.clock import format_timestamp

if TYPE_CHECKING:
    from sandbox.marketplace.store import MarketplaceStore

# Shares of each outcome for a contact that may receive the category.
OUTCOMES = (("Sent", 0.90), ("Bounced", 0.04), ("Complained", 0.01), ("Failed", 0.02))
MIN_DELAY_SECONDS = 5
MAX_DELAY_SECONDS = 600


def outcome_for(seed: int, email: str) -> tuple[str, float]:
    """The final status and delivery delay (seconds) of a message to ``email``."""
    digest = hashlib.blake2b(f"{seed}|{email.strip().casefold()}".encode(), digest_size=16)
    value = int.from_bytes(digest.digest(), "big")
    roll = (value & 0xFFFFFFFF) / 2**32
    spread = ((value >> 32) & 0xFFFFFFFF) / 2**32
    delay = MIN_DELAY_SECONDS + spread * (MAX_DELAY_SECONDS - MIN_DELAY_SECONDS)
    for status, share in OUTCOMES:
        if roll < share:
            return status, delay
        roll -= share
    return "Discarded", delay


class Delivery:
    """Queued messages waiting for their delivery time, settled lazily."""

    def __init__(self, store: MarketplaceStore, seed: int) -> None:
        self._store = store
        self._seed = seed
        self._due: list[tuple[datetime, str, str]] = []  # (due, message id, final status)

    def queued(self, message: dict[str, Any], contact: dict[str, Any]) -> None:
        """A message just created ``Queued``: schedule its outcome."""
        status, delay = outcome_for(self._seed, contact["email"])
        opted_out = {c.get("id") for c in contact.get("optOuts") or []}
        if message["category"]["id"] in opted_out:
            status = "Discarded"
        created = datetime.fromisoformat(message["audit"]["created"]["at"].replace("Z", "+00:00"))
        heapq.heappush(self._due, (created + timedelta(seconds=delay), message["id"], status))

    def settle(self) -> int:
        """Move every message whose time has come to its final status; returns how many."""
        if not self._due:
            return 0
        store = self._store
        now = store.clock.now()
        if self._due[0][0] > now:
            return 0
        settled = 0
        with store.lock:
            while self._due and self._due[0][0] <= now:
                due, identifier, status = heapq.heappop(self._due)
                message = store.messages.get(identifier)
                if message is None or message["status"] != "Queued":
                    continue
                message["status"] = status
                message["audit"] = {**message["audit"], "updated": {"at": format_timestamp(due)}}
                self._reindex(message, status)
                settled += 1
            if settled:
                store.messages.touched()
        return settled

    def pending(self) -> int:
        """Messages still queued."""
        return len(self._due)

    def _reindex(self, message: dict[str, Any], status: str) -> None:
        # The store keeps (created at, status) per category, sorted, for its statistics.
        times = self._store._message_times.get(message["category"]["id"], [])
        entry = (message["audit"]["created"]["at"], "Queued")
        position = bisect.bisect_left(times, entry)
        if position < len(times) and times[position] == entry:
            del times[position]
        bisect.insort(times, (entry[0], status))
