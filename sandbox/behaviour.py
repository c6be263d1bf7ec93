"""Switchable misbehaviour for the sandbox: added latency, a rate limit and a fault mix.

``BehaviourMiddleware`` wraps the API routes (never the control routes). It counts every
arrival per second so the control endpoint can say whether a client kept to the rate limit.
Faults: ``error`` (a 5xx problem answer), ``drop`` (headers sent, then the connection is
closed), ``truncate`` (a 200 whose body is cut short) and ``slow`` (an answer held back for
``slow_seconds``, past a sensible client timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.problems import problem_body

FAULT_KINDS = ("error", "drop", "truncate", "slow")
CONTROL_PREFIX = "/_sandbox"


class FaultSpecError(ValueError):
    """A ``--faults`` value that cannot be understood."""


def parse_faults(spec: str | float | None) -> dict[str, float]:
    """``0.2`` = a 20% mix of every kind; ``error=0.1,drop=0.05`` names kinds and rates."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, int | float):
        spec = str(spec)
    text = spec.strip()
    rates: dict[str, float] = {}
    if "=" not in text:
        total = _rate(text, "faults")
        return {kind: total / len(FAULT_KINDS) for kind in FAULT_KINDS} if total else {}
    for part in text.split(","):
        kind, _, value = part.partition("=")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        rates[kind] = _rate(value, kind)
    if sum(rates.values()) > 1:
        raise FaultSpecError("fault rates add up to more than 1")
    return {k: v for k, v in rates.items() if v > 0}


def _rate(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"{name}: {text!r} is not a rate between 0 and 1") from None
    if not 0 <= value <= 1:
        raise FaultSpecError(f"{name}: {value} is not a rate between 0 and 1")
    return value


@dataclass
class Behaviour:
    """The switches; the control endpoint changes them while the sandbox runs."""

    latency_ms: float = 0.0
    rate_limit: float | None = None  # requests per second over all clients; None = no limit
    faults: dict[str, float] = field(default_factory=dict)
    slow_seconds: float = 12.0
    churn_per_second: float = 0.0
    # Contact changes applied before each API request: rows move while a client pages,
    # deterministically, wherever the client is in its read.
    churn_per_request: int = 0
    # Contacts inserted at random earlier positions before each API request: rows move to a
    # later position while a client pages, so a row read at the end of one page comes again
    # at the start of the next.
    reinserts_per_request: int = 0
    # Answer list requests with ``$meta.pagination.total: null`` (the OpenAPI marks it
    # nullable), counts (limit=0) included.
    null_totals: bool = False

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, validating each value."""
        for key, value in changes.items():
            if key == "faults":
                self.faults = parse_faults(value)
            elif key == "rate_limit":
                self.rate_limit = None if value in (None, 0) else _positive(key, value)
            elif key in ("latency_ms", "slow_seconds", "churn_per_second"):
                setattr(self, key, _non_negative(key, value))
            elif key in ("churn_per_request", "reinserts_per_request"):
                setattr(self, key, int(_non_negative(key, value)))
            elif key == "null_totals":
                if not isinstance(value, bool):
                    raise ValueError(f"null_totals must be true or false, got {value!r}")
                self.null_totals = value
            else:
                raise ValueError(f"unknown behaviour setting {key!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(name: str, value: Any) -> float:
    number = _non_negative(name, value)
    if number == 0:
        raise ValueError(f"{name} must be positive")
    return number


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


class TrafficStats:
    """Arrivals per second and what the sandbox did with them."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._per_second: deque[list[int]] = deque(maxlen=3600)  # [second, arrivals]

    def arrival(self) -> None:
        second = int(time.monotonic())
        if self._per_second and self._per_second[-1][0] == second:
            self._per_second[-1][1] += 1
        else:
            self._per_second.append([second, 1])
        self.counts["requests"] += 1

    def reset(self) -> None:
        self.counts.clear()
        self._per_second.clear()

    def summary(self, rate_limit: float | None) -> dict[str, Any]:
        arrivals = [n for _, n in self._per_second]
        over = [n for n in arrivals if rate_limit is not None and n > math.ceil(rate_limit)]
        return {
            **self.counts,
            "max_arrivals_per_second": max(arrivals, default=0),
            "seconds_over_rate_limit": len(over),
            "seconds_observed": len(arrivals),
        }


class _TokenBucket:
    def __init__(self) -> None:
        self.tokens = 0.0
        self.updated = time.monotonic()
        self.rate: float | None = None

    def take(self, rate: float) -> float:
        """0 when a request may pass now, else the seconds until one may."""
        now = time.monotonic()
        capacity = max(1.0, rate)  # one second's worth of burst
        if self.rate != rate:
            self.rate, self.tokens = rate, capacity
        self.tokens = min(capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class DroppedConnection(Exception):
    """Raised after the headers went out, so the server closes the connection mid-answer."""


class BehaviourMiddleware:
    """ASGI middleware applying the current ``Behaviour`` to API requests."""

    def __init__(
        self,
        app: ASGIApp,
        behaviour: Behaviour,
        stats: TrafficStats,
        churn: Callable[[int], None],
        seed: int = 0,
        reinsert: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.churn = churn
        self.reinsert = reinsert
        self.behaviour = behaviour
        self.stats = stats
        self._bucket = _TokenBucket()
        self._rng = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        behaviour = self.behaviour
        self.stats.arrival()
        if behaviour.rate_limit is not None:
            wait = self._bucket.take(behaviour.rate_limit)
            if wait > 0:
                self.stats.counts["throttled"] += 1
                await _send_problem(
                    send,
                    429,
                    "Too Many Requests",
                    "Rate limit exceeded; retry after the time given in Retry-After.",
                    [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
                )
                return
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        if behaviour.churn_per_request:
            self.churn(behaviour.churn_per_request)
        if behaviour.reinserts_per_request and self.reinsert is not None:
            self.reinsert(behaviour.reinserts_per_request)
        fault = self._pick_fault()
        if fault is None:
            await self.app(scope, receive, send)
            return
        self.stats.counts[f"fault:{fault}"] += 1
        if fault == "error":
            status = self._rng.choice((500, 502, 503, 504))
            await _send_problem(send, status, "Server Error", "Injected sandbox fault.", [])
        elif fault == "slow":
            # Read the request first, as a real server would before a slow handler, so the
            # work is done even when the client has given up waiting.
            receive = await _buffered(receive)
            await asyncio.sleep(behaviour.slow_seconds)
            await self.app(scope, receive, _ignore_disconnected(send))
        elif fault == "drop":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            raise DroppedConnection("injected sandbox fault: connection dropped")
        else:
            await self._truncated(scope, receive, send)

    def _pick_fault(self) -> str | None:
        faults = self.behaviour.faults
        if not faults:
            return None
        roll = self._rng.random()
        for kind, rate in faults.items():
            if roll < rate:
                return kind
            roll -= rate
        return None

    async def _truncated(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        assert start is not None
        body = b"".join(chunks)
        cut = body[: max(1, len(body) // 2)]
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(cut)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": cut})


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; replay it to the app later."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    replay = iter(messages)

    async def replayed() -> Message:
        return next(replay, {"type": "http.disconnect"})

    return replayed


def _ignore_disconnected(send: Send) -> Send:
    """Sending to a client that already left is not an error worth a traceback."""

    async def guarded(message: Message) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            await send(message)

    return guarded


async def _send_problem(
    send: Send, status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = problem_body(status, title, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class QuietDroppedConnections(logging.Filter):
    """Keeps uvicorn from printing a traceback for every connection the sandbox drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))
