"""One resilient HTTP client shared by both API clients.

It owns the connection pool, explicit timeouts, a client-side rate limit, a concurrency limit
and the retry policy (exponential backoff with full jitter, ``Retry-After`` honoured). It turns
HTTP failures into ``connector.errors`` exceptions. Whether a request may be retried after it
possibly reached the server is the caller's call (``safe_to_retry``): reads and idempotent
writes say yes; for the rest a timeout or dropped connection becomes ``AmbiguousOutcomeError``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from connector.errors import (
    AmbiguousOutcomeError,
    ApiError,
    ConnectionFailedError,
    Problem,
    TransportError,
    error_for_status,
)

log = logging.getLogger(__name__)

# Statuses that say the server did not act on the request, so even a create may be resent.
_NOT_PROCESSED = frozenset({429, 503})
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# JSON lines the clients hand on at a time (``read_lines``, ``read_batch_lines``): each chunk
# is flattened and staged at once, and at most two are held.
CHUNK_BYTES = 2 << 20


@dataclass(frozen=True)
class ClientLimits:
    """Timeouts, limits and retry policy for one API client."""

    timeout: float = 30.0
    max_concurrency: int = 8
    rate_limit: float | None = None  # requests per second, client-side; None = unlimited
    # Share of ``rate_limit`` left unused, so that requests whose way to the server takes a
    # little more or less time (up to about ``rate_headroom`` seconds: 20 ms) still never
    # arrive more than the limit within one of the server's seconds.
    rate_headroom: float = 0.02
    max_attempts: int = 6
    backoff_base: float = 0.2
    backoff_max: float = 30.0
    # 429 answers are waited out (Retry-After, for every caller) without spending an attempt;
    # this bounds how many one request may meet before it fails.
    max_throttled_waits: int = 30

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be positive (or None for no limit)")
        if not 0 <= self.rate_headroom < 1:
            raise ValueError("rate_headroom must be at least 0 and below 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


class RateLimiter:
    """Spaces request starts evenly at ``rate`` per second; a 429 pauses every caller.

    Turns are booked ahead, one ``1 / rate`` after the other, so a caller that waits for its
    turn is ready when it opens. A caller woken late (the event loop was busy) still goes, but
    never so that more than ``ceil(rate)`` requests start within one second: a burst of late
    callers would be exactly what the server counts against its limit.

    ``headroom`` keeps that share of the rate unused (see ``ClientLimits.rate_headroom``).
    ``clock`` and ``sleep`` are injectable so the spacing can be checked without real time.
    A caller re-checks the pause after its wait, so a 429 that arrives while it waits holds
    it back too. Without a configured rate, a 429 teaches the limiter one (the server's limit
    is not published): half of what was sent in the second before it, lowered again by each
    later pause.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        headroom: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._configured = rate is not None
        self._clock = clock
        self._sleep = sleep
        self._next_start = 0.0
        self._last_start = -math.inf
        self._paused_until = 0.0
        self._recent: deque[float] = deque()  # starts in the last second (for learning a rate)
        self._lock = asyncio.Lock()
        self._window: deque[float] = deque()  # the latest starts, up to ceil(rate) of them
        self._set_interval(0.0 if rate is None else 1.0 / (rate * (1.0 - headroom)))
        # Seconds a turn stood open with no caller ready to take it: budget lost for good,
        # since the next caller's turn starts from when it came (``idle_slots`` in turns).
        self.idle_seconds = 0.0

    @property
    def rate(self) -> float | None:
        """Requests per second now enforced (configured or learned), None when unlimited."""
        return 1.0 / self._interval if self._interval else None

    @property
    def idle_slots(self) -> float:
        """Turns that went unused so far (``idle_seconds`` at the current rate)."""
        return self.idle_seconds / self._interval if self._interval else 0.0

    @property
    def paused(self) -> bool:
        """Whether a 429 pause holds callers back right now."""
        return self._paused_until > self._clock()

    async def acquire(self) -> None:
        """Wait for this caller's turn (inside the concurrency slot, just before sending)."""
        while True:
            async with self._lock:
                now = self._clock()
                opens = max(self._next_start, self._paused_until, self._window_opens())
                if opens <= now:
                    if self._interval and self._next_start:
                        self.idle_seconds += now - opens
                    self._started(now)
                    return
                # Book the turn, sleep, then look again: a pause may have come meanwhile.
                self._next_start = opens + self._interval
            await self._sleep(opens - now)
            while True:
                async with self._lock:
                    now = self._clock()
                    if self._paused_until > opens:
                        break  # paused meanwhile: book a new turn
                    # Late callers (woken together after the process was held up) go at
                    # least half an interval apart and never crowd the second. Half, not a
                    # whole one: a wake-up a few milliseconds late must not push every later
                    # turn back by as much (the lateness would add up, turn after turn).
                    spaced = self._last_start + self._interval / 2
                    ready = max(self._window_opens(), spaced)
                    if ready <= now:
                        self._started(now)
                        return
                # Woken so late, behind other late callers, that going now would crowd the
                # server: wait the little it takes, keeping this turn.
                await self._sleep(ready - now)

    def _window_opens(self) -> float:
        """When one more start keeps at most ``ceil(rate)`` starts in any one second."""
        window = self._window
        if window.maxlen is None or len(window) < window.maxlen:
            return 0.0
        return window[0] + 1.0  # a start exactly one second later is in a new second

    def _started(self, now: float) -> None:
        self._last_start = now
        self._next_start = max(self._next_start, now + self._interval)
        self._window.append(now)
        self._remember(now)

    def _set_interval(self, interval: float) -> None:
        self._interval = interval
        size = math.ceil(1.0 / interval - 1e-9) if interval else None  # no cap without a rate
        self._window = deque(self._window, maxlen=size)

    def pause(self, seconds: float) -> None:
        """Hold back every caller for ``seconds`` (the server asked us to slow down)."""
        now = self._clock()
        if not self._configured and self._paused_until <= now:
            # Once per pause, not per refused request: half of what went out in the last
            # second (a burst overshoots the server's limit by far, refused requests included),
            # then 80% of the learned rate each time the server still refuses.
            sent = sum(1 for t in self._recent if t > now - 1.0)
            learned = 0.5 * sent if self._interval == 0.0 else 0.8 / self._interval
            self._set_interval(1.0 / max(1.0, learned))
        self._paused_until = max(self._paused_until, now + seconds)

    def _remember(self, now: float) -> None:
        if self._configured:
            return
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()


@dataclass(frozen=True)
class _Call:
    """One request as the caller asked for it, sent again on each attempt."""

    method: str
    path: str
    params: Mapping[str, Any] | str | None
    json: Any
    content: bytes | str | None
    headers: Mapping[str, str] | None
    safe_to_retry: bool


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, reason: str, error: Exception, delay: float | None = None) -> None:
        self.reason = reason
        self.error = error
        self.delay = delay


class ResilientClient:
    """Async HTTP client with a pool, limits, retries and typed errors."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        limits: ClientLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.limits = limits or ClientLimits()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(self.limits.timeout),
            limits=httpx.Limits(
                max_connections=self.limits.max_concurrency,
                max_keepalive_connections=self.limits.max_concurrency,
            ),
            transport=transport,
            follow_redirects=True,  # large results may answer 302 to a download location
        )
        self._slots = asyncio.Semaphore(self.limits.max_concurrency)
        self._rate = RateLimiter(self.limits.rate_limit, headroom=self.limits.rate_headroom)
        self.stats: Counter[str] = Counter()

    @property
    def rate_limiter(self) -> RateLimiter:
        """The limiter every request of this client waits on (its rate, pauses, idle turns)."""
        return self._rate

    async def __aenter__(self) -> ResilientClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | str | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        safe_to_retry: bool,
    ) -> httpx.Response:
        """Send one request, retrying what may be retried; returns a 2xx response, body read."""
        call = _Call(method, path, params, json, content, headers, safe_to_retry)
        response, _ = await self._attempts(call, decode=False)
        return response

    async def send_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | str | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        safe_to_retry: bool,
    ) -> Any:
        """Like ``send``, and decode the JSON body (an undecodable body counts as truncated)."""
        call = _Call(method, path, params, json, content, headers, safe_to_retry)
        _, body = await self._attempts(call, decode=True)
        return body

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Open a streamed read; retries until a 2xx status line arrives, not once the body flows.

        Errors while reading the body surface as ``TransportError`` so the caller can resume.
        """
        attempt = throttled = 0
        while True:
            # The rate slot is taken inside the concurrency slot, right before sending: a caller
            # queued for a connection cannot hold an old turn and then send in a burst.
            async with self._slots:
                await self._rate.acquire()
                self.stats["requests"] += 1
                try:
                    url, query = _url(path, params)
                    request = self._http.build_request(method, url, params=query, headers=headers)
                    response = await self._http.send(request, stream=True)
                except httpx.HTTPError as exc:
                    failure = _Retry(type(exc).__name__, _transport_error(method, path, exc))
                else:
                    if response.is_success:
                        try:
                            yield _GuardedStream(response)
                        finally:
                            await response.aclose()
                        return
                    await response.aread()
                    await response.aclose()
                    failure = self._status_failure(method, path, response, safe_to_retry=True)
                    if failure is None:
                        raise _api_error(method, path, response)
            if self._throttled(failure, throttled):
                throttled += 1
                continue
            attempt += 1
            await self._back_off_or_raise(method, path, attempt, failure)

    async def _attempts(self, call: _Call, *, decode: bool) -> tuple[httpx.Response, Any]:
        attempt = throttled = 0
        while True:
            async with self._slots:
                await self._rate.acquire()  # inside the slot: see ``stream``
                self.stats["requests"] += 1
                try:
                    return await self._attempt(call, decode)
                except _Retry as failure:
                    pending = failure
            if self._throttled(pending, throttled):
                throttled += 1
                continue
            attempt += 1
            await self._back_off_or_raise(call.method, call.path, attempt, pending)

    def _throttled(self, failure: _Retry, waits: int) -> bool:
        """A 429 to wait out (the limiter holds every caller back), not a failed attempt."""
        if failure.reason != "http_429" or waits >= self.limits.max_throttled_waits:
            return False
        if failure.delay is None:
            # No Retry-After: the pause grows while the server keeps refusing this request.
            self._rate.pause(min(self.limits.backoff_max, self.limits.backoff_base * 2**waits))
        self.stats["retry:http_429"] += 1
        return True

    async def _attempt(self, call: _Call, decode: bool) -> tuple[httpx.Response, Any]:
        method, path, safe = call.method, call.path, call.safe_to_retry
        headers = dict(call.headers or {})
        content = call.content
        if call.json is not None:
            content = orjson.dumps(call.json)
            headers.setdefault("Content-Type", "application/json")
        url, query = _url(path, call.params)
        try:
            response = await self._http.request(
                method, url, params=query, content=content, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never left this machine: resending cannot duplicate anything.
            raise _Retry(type(exc).__name__, _transport_error(method, path, exc)) from exc
        except httpx.HTTPError as exc:
            if not safe:
                raise AmbiguousOutcomeError(method, path, exc) from exc
            raise _Retry(type(exc).__name__, TransportError(_describe(method, path, exc))) from exc
        if not response.is_success:
            failure = self._status_failure(method, path, response, safe)
            if failure is None:
                raise _api_error(method, path, response)
            raise failure
        if not decode:
            return response, None
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError as exc:
            error = TransportError(f"{method} {path}: response body is not valid JSON (truncated?)")
            if not safe:
                raise AmbiguousOutcomeError(method, path, exc) from exc
            raise _Retry("invalid_body", error) from exc
        return response, body

    def _status_failure(
        self, method: str, path: str, response: httpx.Response, safe_to_retry: bool
    ) -> _Retry | None:
        """A ``_Retry`` for a status worth retrying, else None (the caller raises the error)."""
        status = response.status_code
        if status not in _RETRYABLE_STATUSES:
            return None
        error = _api_error(method, path, response)
        if not safe_to_retry and status not in _NOT_PROCESSED:
            raise AmbiguousOutcomeError(method, path, error)
        retry_after = _retry_after(response)
        if status == 429:
            already = self._rate.paused
            self._rate.pause(retry_after if retry_after is not None else self.limits.backoff_base)
            if not already:  # one line per pause, not one per waiting request
                log.warning(
                    "%s %s: throttled (429); every request waits %.1fs, then goes at %s",
                    method,
                    path,
                    retry_after if retry_after is not None else self.limits.backoff_base,
                    f"{self._rate.rate:.1f}/s" if self._rate.rate else "full speed",
                )
        return _Retry(f"http_{status}", error, retry_after)

    async def _back_off_or_raise(
        self, method: str, path: str, attempt: int, failure: _Retry
    ) -> None:
        self.stats[f"retry:{failure.reason}"] += 1
        if attempt >= self.limits.max_attempts:
            self.stats["gave_up"] += 1
            raise failure.error
        ceiling = min(self.limits.backoff_max, self.limits.backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(0, ceiling)  # full jitter: concurrent callers spread out
        if failure.delay is not None:
            delay = min(self.limits.backoff_max, failure.delay) + random.uniform(0, 0.05)
        log.warning(
            "%s %s failed (%s), attempt %d of %d, retrying in %.2fs",
            method,
            path,
            failure.reason,
            attempt,
            self.limits.max_attempts,
            delay,
        )
        await asyncio.sleep(delay)


class _GuardedStream:
    """A streamed response whose body errors surface as ``TransportError``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.headers = response.headers
        self.status_code = response.status_code

    async def aiter_lines(self) -> AsyncIterator[str]:
        try:
            async for line in self.response.aiter_lines():
                yield line
        except httpx.HTTPError as exc:
            raise TransportError(f"stream interrupted ({type(exc).__name__})") from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise TransportError(f"stream interrupted ({type(exc).__name__})") from exc


def _url(path: str, params: Mapping[str, Any] | str | None) -> tuple[str, Mapping[str, Any] | None]:
    # A str is a ready-made, encoded query string: RQL is written straight into it, and httpx's
    # own params handling would re-encode it as key=value pairs.
    if isinstance(params, str):
        return (f"{path}?{params}" if params else path), None
    return path, params


def _transport_error(method: str, path: str, exc: Exception) -> TransportError:
    """A ``ConnectionFailedError`` when no connection could be made, else a TransportError."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectionFailedError(_describe(method, path, exc))
    return TransportError(_describe(method, path, exc))


def _describe(method: str, path: str, exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"{method} {path}: {_connect_failure(exc)}"
    return f"{method} {path}: {type(exc).__name__}"


def _connect_failure(exc: httpx.TransportError) -> str:
    """'cannot connect to <host:port>: <the system's reason>' (refused, unknown host, ...)."""
    try:
        url = exc.request.url
        where = f"{url.host}:{url.port}" if url.port else url.host
    except RuntimeError:  # no request attached
        where = "the API host"
    # httpx says "All connection attempts failed"; the system's own words are further down.
    reason = str(exc).strip() or type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            # asyncio words a refusal "Connect call failed (...)"; errno 111 is plainer.
            known = isinstance(cause.errno, int) and cause.errno > 0
            reason = os.strerror(cause.errno) if known else cause.strerror
            break
        if isinstance(cause, ExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
            continue
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect to {where}: {reason}"


def _api_error(method: str, path: str, response: httpx.Response) -> ApiError:
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        body = None
    problem = Problem.from_response_body(response.status_code, body)
    return error_for_status(method, path, problem, _retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
