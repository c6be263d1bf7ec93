"""Holding chosen API requests until the test releases them: a slow answer without a clock.

A held request waits inside the sandbox exactly as a slow one would, for as long as the test
wants and no longer, so a test can look at what a client does meanwhile (which other pages it
asks for, how many requests it keeps in flight) without sleeping or timing anything. The gate
also notes every API request's path and ``offset`` and how many are in flight at once.

    sandbox.gate.hold(offset=100)            # every request for offset=100 waits...
    await sandbox.gate.wait_until(lambda g: len(g.arrivals) >= 40)
    sandbox.gate.release()                   # ...until now

Control endpoint: ``POST /_sandbox/gate/hold`` ``{"offset": 100, "times": 1}`` and
``POST /_sandbox/gate/release``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.behaviour import CONTROL_PREFIX


@dataclass
class _Hold:
    offset: int
    times: int | None  # requests still to hold; None: all of them until released


@dataclass(frozen=True)
class Arrival:
    """One API request as the gate saw it arrive."""

    method: str
    path: str
    offset: int | None


class Gate:
    """The holds, and what arrived; shared by the middleware and the test or control API."""

    def __init__(self) -> None:
        self._holds: list[_Hold] = []
        self.arrivals: list[Arrival] = []
        self.held = 0  # requests waiting at the gate now
        self.in_flight = 0  # requests inside the sandbox now (held ones included)
        self.max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release = asyncio.Event()
        self._changed = asyncio.Condition()

    def hold(self, *, offset: int, times: int | None = None) -> None:
        """Hold list requests for ``offset`` (the next ``times`` of them, or all) until released."""
        self._holds.append(_Hold(offset, times))
        self._release.clear()

    def release(self) -> None:
        """Let every held request go on, and hold nothing more."""
        self._holds.clear()
        self._release.set()

    def reset(self) -> None:
        """Forget arrivals and counts (holds stay)."""
        self.arrivals.clear()
        self.max_in_flight = self.in_flight

    async def wait_until(self, condition: Callable[[Gate], bool], timeout: float = 120) -> None:
        """Wait until ``condition(gate)`` holds; the timeout only stops a broken test hanging."""
        self._bind()
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: condition(self)), timeout)

    def _bind(self) -> None:
        # asyncio primitives belong to one loop; a test may run several loops in turn.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            released = self._release.is_set() and not self._holds
            self._release = asyncio.Event()
            if released:
                self._release.set()
            self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def enter(self, method: str, path: str, offset: int | None) -> None:
        """Note an arriving request and wait while a hold matches it."""
        self._bind()
        self.arrivals.append(Arrival(method, path, offset))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await self._notify()
        hold = next((h for h in self._holds if h.offset == offset), None)
        if hold is None:
            return
        if hold.times is not None:
            hold.times -= 1
            if hold.times <= 0:
                self._holds.remove(hold)
        self.held += 1
        await self._notify()
        try:
            await self._release.wait()
        finally:
            self.held -= 1

    async def leave(self) -> None:
        """Note a request answered (or abandoned)."""
        self.in_flight -= 1
        await self._notify()


class GateMiddleware:
    """ASGI middleware passing every API request (not the control routes) through a ``Gate``."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        await self.gate.enter(scope["method"], scope["path"], _offset(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            await self.gate.leave()


def _offset(scope: Scope) -> int | None:
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "offset" and value.isdigit():
            return int(value)
    return None
