"""What the kill tests share: a recording front for the sandbox, the points where a round's
child is killed, and the round loop (start a child, SIGKILL it at its point, check, and at
the end let one child finish)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from connector.warehouse.engine import Warehouse
from sandbox.server import serve_in_thread

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Put before a child's script: each record the pipeline logs becomes an ``EVENT ...`` line
# on the child's stdout, which ``AfterEvents`` counts.
_REPORT_PROGRESS = """
import logging as _logging


class _Progress(_logging.Handler):
    def emit(self, record):
        print("EVENT", record.getMessage(), flush=True)


_logger = _logging.getLogger({logger!r})
_logger.setLevel(_logging.DEBUG)
_logger.addHandler(_Progress())
"""


def reporting_progress(logger: str, script: str) -> str:
    """``script`` for a child that prints each record of ``logger`` as a progress event."""
    return _REPORT_PROGRESS.format(logger=logger) + script


def ledger_rows(warehouse: Warehouse, table: str) -> list[dict[str, Any]]:
    """Every row of a ledger table, as dicts."""
    with warehouse.transaction() as tx:
        result = tx.connection.exec_driver_sql(f"select * from {table}")
        return [dict(r) for r in result.mappings()]


class Recorder:
    """ASGI app in front of the sandbox that records each API request and its status, and
    sets ``reached`` when the ``kill_at``-th write (POST, PUT, PATCH, DELETE) of the round
    arrives, or, with ``hold``, once the sandbox has carried it out: its answer is then held
    back until the next round (the client never learns the outcome)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, int]] = []
        self.writes = 0
        self.kill_at: int | None = None
        self.hold = False
        self.reached = threading.Event()
        self.released = threading.Event()

    def next_round(self, writes: int | None, *, hold: bool = False) -> None:
        self.released.set()  # a held answer goes out (to a killed client) now
        self.released = threading.Event()
        self.writes = 0
        self.kill_at = writes
        self.hold = hold
        self.reached.clear()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        kill_here = False
        if scope["method"] in WRITE_METHODS:
            self.writes += 1
            kill_here = self.kill_at is not None and self.writes == self.kill_at
            if kill_here and not self.hold:
                self.reached.set()
        status: list[int] = []
        released = self.released

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if kill_here and self.hold:
                    # Carried out: the kill lands before the answer leaves.
                    self.reached.set()
                    await asyncio.to_thread(released.wait, 60)
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            self.requests.append((scope["method"], scope["path"], status[0] if status else 0))


@contextlib.contextmanager
def served(recorder: Recorder) -> Iterator[str]:
    """The recorder (and the sandbox behind it) on loopback; yields the base URL."""
    # serve_in_thread only needs an object with the ASGI app to serve.
    with serve_in_thread(types.SimpleNamespace(app=recorder)) as url:  # type: ignore[arg-type]
        yield url


class KillPoint(Protocol):
    """Where in a round its child is killed."""

    def arm(self) -> None:
        """Prepare, before the round's child starts."""

    def wait(self, child: subprocess.Popen[str]) -> str:
        """Block until the moment to kill; describe it."""

    def disarm(self) -> None:
        """Undo ``arm`` once the child is dead."""


@dataclass(frozen=True)
class AfterEvents:
    """Kill right after the child printed its ``count``-th progress line (``EVENT ...``)
    of the round; 0: as soon as it started (while it plans)."""

    count: int

    def arm(self) -> None:
        pass

    def disarm(self) -> None:
        pass

    def wait(self, child: subprocess.Popen[str]) -> str:
        assert child.stdout is not None
        line = "START"
        for _ in range(self.count):
            line = child.stdout.readline()
            assert line.startswith("EVENT"), f"expected {self.count} events, then: {line!r}"
        return line.strip()


@dataclass(frozen=True)
class AtWrite:
    """Kill the moment the sandbox receives the round's ``count``-th write (the writes before
    it were carried out and answered, their outcomes maybe not yet recorded); with
    ``answered``, once the sandbox has carried that write out, before the client hears so."""

    recorder: Recorder
    count: int
    answered: bool = False

    def arm(self) -> None:
        self.recorder.next_round(self.count, hold=self.answered)

    def disarm(self) -> None:
        self.recorder.next_round(None)

    def wait(self, child: subprocess.Popen[str]) -> str:
        assert self.recorder.reached.wait(timeout=120), f"no write {self.count} in the round"
        return f"write {self.count}" + (" carried out" if self.answered else "")


def kill_points(
    recorder: Recorder, specs: Sequence[tuple[str, int]], *, answered: bool = False
) -> list[KillPoint]:
    """Kill points from ``("events", N)`` (``AfterEvents``) and ``("write", N)`` (``AtWrite``)."""
    return [
        AtWrite(recorder, count, answered=answered) if kind == "write" else AfterEvents(count)
        for kind, count in specs
    ]


def wait_for_start(child: subprocess.Popen[str]) -> None:
    """Read the child's first line, which must be START."""
    assert child.stdout is not None
    first = child.stdout.readline()
    if first.strip() != "START":
        child.kill()
        assert child.stderr is not None
        raise AssertionError(f"the child did not start: {first!r} {child.stderr.read()}")


def kill_rounds(
    start: Callable[[str], subprocess.Popen[str]],
    points: Sequence[KillPoint],
    after_kill: Callable[[int], None] = lambda round_: None,
) -> tuple[list[str], str]:
    """One round per kill point: ``start`` a child (run id ``kill-N``), SIGKILL it at the
    point, then ``after_kill(N)``; then one more child that must finish. Returns where each
    kill landed and the output of the finishing child."""
    landed: list[str] = []
    for round_, point in enumerate(points):
        point.arm()
        child = start(f"kill-{round_}")
        wait_for_start(child)
        where = point.wait(child)
        # Every kill must land mid-flight: a child that ended first was not killed at all.
        assert child.poll() is None, f"round {round_} ended before its kill ({where})"
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        point.disarm()
        landed.append(where)
        after_kill(round_)
    child = start(f"kill-{len(points)}")
    wait_for_start(child)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return landed, out
