"""Builds the sandbox: both emulated APIs, the behaviour switches and the control endpoint.

Control endpoint (``/_sandbox``, no auth, never throttled or faulted; loopback only):

- ``GET /_sandbox/behaviour`` / ``PATCH /_sandbox/behaviour`` — latency, rate limit, faults, churn
- ``GET /_sandbox/stats`` / ``POST /_sandbox/stats/reset`` — arrivals, throttling, faults served
- ``GET /_sandbox/truth/{resource}`` — the sandbox's true current data as JSON lines
  (contacts, categories, batches, messages, evinotice-batches,
  evinotice-evidence), full records
- ``POST /_sandbox/churn`` ``{"events": n}`` — apply n contact changes now
- ``POST /_sandbox/clock/advance`` ``{"seconds": s}`` — move sandbox time forward
- ``POST /_sandbox/gate/hold`` ``{"offset": n, "times": k}`` / ``POST /_sandbox/gate/release`` —
  hold list requests for an offset until released (``sandbox.gate`` in-process)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.settings import (
    SANDBOX_EVINOTICE_PASSWORD,
    SANDBOX_EVINOTICE_SITE_ID,
    SANDBOX_EVINOTICE_USERNAME,
    SANDBOX_TOKEN,
)
from sandbox.behaviour import (
    CONTROL_PREFIX,
    Behaviour,
    BehaviourMiddleware,
    TrafficStats,
    parse_faults,
)
from sandbox.clock import SandboxClock
from sandbox.evinotice.routes import evinotice_routes
from sandbox.evinotice.store import EviNoticeStore
from sandbox.gate import Gate, GateMiddleware
from sandbox.marketplace.routes import MarketplaceApi
from sandbox.marketplace.store import MarketplaceStore
from sandbox.problems import problem_response

RESOURCES = (
    "contacts",
    "categories",
    "batches",
    "messages",
    "evinotice-batches",
    "evinotice-evidence",
)


@dataclass
class SandboxConfig:
    """Everything a sandbox starts with; behaviour can change later through the control API."""

    contacts: int = 1000
    seed: int = 1
    evinotice_batches: int = 40
    token: str = SANDBOX_TOKEN
    evinotice_username: str = SANDBOX_EVINOTICE_USERNAME
    evinotice_password: str = SANDBOX_EVINOTICE_PASSWORD
    evinotice_site_id: str = SANDBOX_EVINOTICE_SITE_ID
    # Answer with the vendor pages' spellings HashMoreResults / ProgessPercentage.
    evinotice_vendor_spellings: bool = False
    start: datetime | None = None
    clock_speed: float = 1.0
    behaviour: Behaviour = field(default_factory=Behaviour)

    @classmethod
    def with_behaviour(
        cls,
        *,
        latency_ms: float = 0,
        rate_limit: float | None = None,
        faults: str | float | None = None,
        churn_per_second: float = 0,
        churn_per_request: int = 0,
        slow_seconds: float = 12.0,
        reinserts_per_request: int = 0,
        null_totals: bool = False,
        **settings: Any,
    ) -> SandboxConfig:
        """A config with its behaviour switches given as plain values."""
        behaviour = Behaviour(
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            faults=parse_faults(faults),
            churn_per_second=churn_per_second,
            churn_per_request=churn_per_request,
            slow_seconds=slow_seconds,
            reinserts_per_request=reinserts_per_request,
            null_totals=null_totals,
        )
        return cls(behaviour=behaviour, **settings)


class Sandbox:
    """One running emulation of both APIs: data, behaviour and the ASGI app serving them."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config = config or SandboxConfig()
        self.clock = SandboxClock(config.start, speed=config.clock_speed)
        self.marketplace = MarketplaceStore(self.clock, contacts=config.contacts, seed=config.seed)
        self.evinotice = EviNoticeStore(
            self.clock,
            seed=config.seed,
            batches=config.evinotice_batches,
            site_id=config.evinotice_site_id,
            vendor_spellings=config.evinotice_vendor_spellings,
        )
        self.behaviour = config.behaviour
        self.stats = TrafficStats()
        self.gate = Gate()
        routes = [
            *MarketplaceApi(self.marketplace, config.token, behaviour=self.behaviour).routes(),
            *evinotice_routes(
                self.evinotice,
                username=config.evinotice_username,
                password=config.evinotice_password,
            ),
            *self._control_routes(),
        ]
        self.app = Starlette(
            routes=routes,
            middleware=[
                Middleware(GateMiddleware, gate=self.gate),
                Middleware(
                    BehaviourMiddleware,
                    behaviour=self.behaviour,
                    stats=self.stats,
                    churn=self.marketplace.churn_step,
                    seed=config.seed,
                    reinsert=self.marketplace.reinsert_step,
                ),
            ],
            lifespan=self._lifespan,
        )

    def truth(self, resource: str) -> Iterator[dict[str, Any]]:
        """The true current records of a resource, full representation."""
        store = self.marketplace
        if resource == "evinotice-batches":
            yield from self.evinotice.snapshot()
        elif resource == "evinotice-evidence":
            yield from self.evinotice.evidence_snapshot()
        elif resource == "categories":
            for category in list(store.categories.all()):
                yield store.category_with_statistics(category)
        else:
            with store.lock:
                rows = list(store.collection(resource).all())
            yield from rows

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self._churn_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _churn_loop(self) -> None:
        # Ticks ten times a second and applies whatever the rate asks for, carrying fractions.
        owed = 0.0
        while True:
            await asyncio.sleep(0.1)
            owed += self.behaviour.churn_per_second * 0.1
            if owed >= 1:
                events = int(owed)
                owed -= events
                self.marketplace.churn_step(events)

    def _control_routes(self) -> list[Route]:
        p = CONTROL_PREFIX
        return [
            Route(f"{p}/behaviour", self._get_behaviour, methods=["GET"]),
            Route(f"{p}/behaviour", self._patch_behaviour, methods=["PATCH", "PUT"]),
            Route(f"{p}/stats", self._get_stats, methods=["GET"]),
            Route(f"{p}/stats/reset", self._reset_stats, methods=["POST"]),
            Route(f"{p}/truth/{{resource}}", self._get_truth, methods=["GET"]),
            Route(f"{p}/churn", self._post_churn, methods=["POST"]),
            Route(f"{p}/clock/advance", self._advance_clock, methods=["POST"]),
            Route(f"{p}/gate/hold", self._gate_hold, methods=["POST"]),
            Route(f"{p}/gate/release", self._gate_release, methods=["POST"]),
        ]

    async def _gate_hold(self, request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        times = body.get("times")
        self.gate.hold(offset=int(body["offset"]), times=None if times is None else int(times))
        return Response(status_code=204)

    async def _gate_release(self, request: Request) -> Response:
        self.gate.release()
        return Response(status_code=204)

    async def _get_behaviour(self, request: Request) -> Response:
        return _json(self.behaviour.as_dict())

    async def _patch_behaviour(self, request: Request) -> Response:
        try:
            changes = orjson.loads(await request.body())
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of settings")
            self.behaviour.update(changes)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError too
            return problem_response(400, "Bad Request", str(exc))
        return _json(self.behaviour.as_dict())

    async def _get_stats(self, request: Request) -> Response:
        churn = self.marketplace.churn
        return _json(
            {
                **self.stats.summary(self.behaviour.rate_limit),
                "churn": {
                    "created": churn.created,
                    "updated": churn.updated,
                    "blocked": churn.blocked,
                    "unblocked": churn.unblocked,
                    "deleted": churn.deleted,
                },
            }
        )

    async def _reset_stats(self, request: Request) -> Response:
        self.stats.reset()
        return Response(status_code=204)

    async def _get_truth(self, request: Request) -> Response:
        resource = request.path_params["resource"]
        if resource not in RESOURCES:
            return problem_response(
                404, "Not Found", f"Unknown resource {resource!r}; known: {', '.join(RESOURCES)}"
            )
        dumps = orjson.dumps
        body = b"".join(dumps(r) + b"\n" for r in self.truth(resource))
        return Response(body, media_type="application/jsonl")

    async def _post_churn(self, request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        events = int(body.get("events", 1))
        self.marketplace.churn_step(events)
        return await self._get_stats(request)

    async def _advance_clock(self, request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        now = self.clock.advance(float(body.get("seconds", 0)))
        return _json({"now": now.isoformat()})


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")
