"""The sandbox's notion of time: real time, optionally sped up, plus manual advances.

EviNotice batches progress and churn timestamps move on this clock, so tests can jump
ahead (``advance``) instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class SandboxClock:
    """Wall-clock time scaled by ``speed`` and shifted by explicit advances."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._origin = start or datetime.now(UTC)
        self._started = time.monotonic()
        self._offset = 0.0
        self.speed = speed

    def now(self) -> datetime:
        """Current sandbox time, timezone-aware UTC."""
        with self._lock:
            elapsed = (time.monotonic() - self._started) * self.speed + self._offset
        return self._origin + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> datetime:
        """Jump forward by ``seconds`` of sandbox time; returns the new now."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()


def format_timestamp(moment: datetime) -> str:
    """The APIs' timestamp form: UTC with exactly three millisecond digits."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
