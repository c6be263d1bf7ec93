"""The client keeps to its rate: the limiter's spacing on a fake clock (no dependence on the
machine's speed), 429 pauses that hold back every caller, and end to end against the
sandbox's rate limit, judged on the sandbox's own per-second arrival counts."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_sandbox
from reconcile_world import Gateway, World, line, served

from connector.http import ClientLimits, RateLimiter, ResilientClient
from connector.pipelines import pushback
from connector.settings import SANDBOX_TOKEN
from connector.warehouse.engine import Warehouse


class FakeTime:
    """Virtual time: ``sleep`` parks the caller until ``run`` moves the clock to its wake-up."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def run(self, *work: Awaitable[object]) -> None:
        """Run the work to the end, jumping the clock from one wake-up to the next."""
        tasks = [asyncio.ensure_future(w) for w in work]
        while not all(t.done() for t in tasks):
            for _ in range(20):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        for task in tasks:
            task.result()


def most_in_any_second(starts: list[float]) -> int:
    """The largest number of starts inside any window of one second (sliding, not bucketed)."""
    ordered = sorted(starts)
    most = 0
    for i, start in enumerate(ordered):
        j = i
        while j < len(ordered) and ordered[j] < start + 1.0 - 1e-9:
            j += 1
        most = max(most, j - i)
    return most


def limiter_on(time: FakeTime, rate: float | None) -> RateLimiter:
    return RateLimiter(rate, clock=time.clock, sleep=time.sleep)


def workers(
    limiter: RateLimiter, time: FakeTime, count: int, requests: int, starts: list[float]
) -> list[Awaitable[None]]:
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await limiter.acquire()
            starts.append(time.now)
            await time.sleep(0.03)  # the request itself

    return [worker() for _ in range(count)]


@pytest.mark.parametrize("rate", [3.0, 10.0, 47.5])
def test_the_limiter_never_starts_more_than_its_rate_in_any_second(rate: float) -> None:
    time = FakeTime()
    limiter = limiter_on(time, rate)
    starts: list[float] = []
    asyncio.run(time.run(*workers(limiter, time, 8, 400, starts)))

    assert len(starts) == 400
    assert most_in_any_second(starts) <= int(rate) + (0 if rate == int(rate) else 1)
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert min(gaps) >= 1 / rate - 1e-9
    # ...and it does not crawl: the requests take the time the rate says, no more.
    assert sorted(starts)[-1] == pytest.approx(399 / rate)


def test_callers_woken_late_by_a_busy_loop_never_crowd_a_second() -> None:
    """The event loop is held for 85 ms (a commit, another process): the callers whose turns
    passed meanwhile all wake at once. The first goes as soon as the loop is free, the others
    at least half an interval apart (catching up the turns the loop held, never a burst), and
    never more than the rate within one second, however the seconds are cut."""
    time = FakeTime()
    limiter = limiter_on(time, 50.0)
    starts: list[float] = []

    async def busy_loop() -> None:
        await time.sleep(2.021)
        time.now += 0.085  # nobody runs meanwhile; every turn booked in it is late

    asyncio.run(time.run(*workers(limiter, time, 8, 300, starts), busy_loop()))

    assert len(starts) == 300
    assert 2.106 in [pytest.approx(s) for s in starts]  # went as soon as the loop was free
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert min(gaps) >= 1 / 50 / 2 - 1e-9
    assert most_in_any_second(starts) <= 50
    # The turns the busy loop held are caught up: the run ends when it would have without it.
    assert sorted(starts)[-1] == pytest.approx(299 / 50)


def test_a_long_stall_never_lets_the_late_callers_go_at_once() -> None:
    """Eight callers at 2 per second, the loop held for 3 s: the six whose turns passed never
    start at the same instant (at least half an interval apart), never more than two within
    one second, and the run loses only the turns the stall held."""
    time = FakeTime()
    limiter = limiter_on(time, 2.0)
    starts: list[float] = []

    async def stall() -> None:
        await time.sleep(3.01)
        time.now += 3.0

    asyncio.run(time.run(*workers(limiter, time, 8, 40, starts), stall()))

    assert len(starts) == 40
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert min(gaps) >= 1 / 2 / 2 - 1e-9
    assert most_in_any_second(starts) <= 2
    # Seven went before the stall, the eighth as the loop was free (6.01 s), the rest at two
    # per second.
    assert sorted(starts)[-1] == pytest.approx(6.01 + 32 / 2)


def test_turns_left_unused_are_counted() -> None:
    """A caller that comes back 100 ms after its last request, at 50 per second: each time the
    turn stood open 80 ms, four turns nobody took."""
    time = FakeTime()
    limiter = limiter_on(time, 50.0)

    async def slow_caller() -> None:
        for _ in range(11):
            await limiter.acquire()
            await time.sleep(0.1)

    asyncio.run(time.run(slow_caller()))

    assert limiter.idle_slots == pytest.approx(10 * 4)


def test_callers_waiting_for_their_turns_leave_none_unused() -> None:
    time = FakeTime()
    limiter = limiter_on(time, 50.0)
    starts: list[float] = []
    asyncio.run(time.run(*workers(limiter, time, 4, 200, starts)))

    assert limiter.idle_slots == pytest.approx(0)
    assert sorted(starts)[-1] == pytest.approx(199 / 50)


def test_a_429_pause_holds_back_callers_already_waiting_for_their_turn() -> None:
    time = FakeTime()
    limiter = limiter_on(time, 10.0)
    starts: list[float] = []

    async def pause_at_one_second() -> None:
        await time.sleep(1.0)
        limiter.pause(2.5)

    asyncio.run(time.run(*workers(limiter, time, 8, 60, starts), pause_at_one_second()))

    assert len(starts) == 60
    assert not [s for s in starts if 1.0 < s < 3.5], "nobody starts during the pause"
    after = sorted(s for s in starts if s >= 3.5)
    # The callers that waited through the pause go one by one at the rate, not together.
    assert after[0] == pytest.approx(3.5)
    assert min(b - a for a, b in itertools.pairwise(after)) >= 0.1 - 1e-9


def test_without_a_configured_rate_the_first_429_sets_half_of_what_was_sent() -> None:
    time = FakeTime()
    limiter = limiter_on(time, None)
    starts: list[float] = []

    async def throttled_after_a_burst() -> None:
        await time.sleep(0.5)
        limiter.pause(1.0)

    asyncio.run(time.run(*workers(limiter, time, 4, 120, starts), throttled_after_a_burst()))

    burst = [s for s in starts if s <= 0.5]
    later = sorted(s for s in starts if s > 0.5)
    assert limiter.rate == pytest.approx(0.5 * len(burst))
    assert later[0] == pytest.approx(1.5)
    assert most_in_any_second(later) <= int(limiter.rate or 0) + 1


# --- end to end: the sandbox's own count of arrivals per second ------------------------------


def hammer(url: str, requests: int, **limits: object) -> dict[str, int]:
    """Many concurrent reads of one contact; returns the client's stats."""

    async def run() -> dict[str, int]:
        client = ResilientClient(
            url + "/public/v1/notifications",
            headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
            limits=ClientLimits(backoff_base=0.05, backoff_max=0.5, **limits),  # type: ignore[arg-type]
        )
        async with client:
            query = "limit=1&offset=0"
            await asyncio.gather(
                *(
                    client.send_json("GET", "/contacts", params=query, safe_to_retry=True)
                    for _ in range(requests)
                )
            )
            return dict(client.stats)

    return asyncio.run(run())


def test_the_sandbox_never_sees_more_than_the_configured_rate(
    loopback: Callable[..., str],
) -> None:
    sandbox = make_sandbox(contacts=20, seed=5)
    url = loopback(sandbox)
    stats = hammer(url, 45, rate_limit=9.0, max_concurrency=8)
    seen = httpx.get(f"{url}/_sandbox/stats").json()

    assert stats["requests"] == 45 and seen["requests"] == 45
    # Several seconds of traffic, and no second with more arrivals than the rate allows (one
    # more when a request delayed on its way lands in the next second's count).
    assert seen["seconds_observed"] >= 4
    assert seen["max_arrivals_per_second"] <= 10


def test_against_a_server_limit_the_client_waits_out_429s_without_losing_a_request(
    loopback: Callable[..., str],
) -> None:
    sandbox = make_sandbox(contacts=20, seed=5, rate_limit=10)
    url = loopback(sandbox)
    # Two attempts only: were the 429 waits counted as failed attempts, requests would fail.
    stats = hammer(url, 80, max_concurrency=8, max_attempts=2)
    seen = httpx.get(f"{url}/_sandbox/stats").json()

    assert seen["requests"] - seen.get("throttled", 0) == 80
    assert stats.get("gave_up", 0) == 0
    # Each pause lowers the rate the client learned: a few 429s in the first seconds, then
    # the client keeps under the server's limit.
    assert seen["throttled"] <= 30
    assert seen["seconds_over_rate_limit"] <= 2
    assert seen["seconds_observed"] >= 6


def apply_against_a_server_limit(
    tmp_path: Path,
    *,
    contacts: int,
    seed: int,
    blocks: int,
    creates: int,
    server_rate: float,
    limits: dict[str, object],
    batch_size: int | None = None,
) -> tuple[World, pushback.ApplySummary, dict[str, Any]]:
    """In a sandbox of ``contacts``, plan ``blocks`` blocks of active contacts and
    ``creates`` new contacts, then apply them with the client ``limits`` against a sandbox
    limited to ``server_rate`` requests/s; returns the world, the apply's summary and the
    sandbox's stats of the apply alone."""
    sandbox = make_sandbox(contacts=contacts, seed=seed, clock_speed=0.0)
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    world = World(sandbox, Gateway(sandbox.app), warehouse, tmp_path)
    world.warehouse.ensure_tables()
    try:
        world.sync()
        targets = [c for c in sandbox.truth("contacts") if c["status"] == "Active"][:blocks]
        world.plan(
            world.write(
                "crm.csv",
                [
                    *(line(c["email"], c["name"], "dne") for c in targets),
                    *(line(f"limit{n}@example.org", f"Limit {n}") for n in range(creates)),
                ],
            )
        )
        world.limits.update(limits)
        sandbox.behaviour.update({"rate_limit": server_rate})
        with served(world.gateway, sandbox) as url:
            world.url = url
            httpx.post(f"{url}/_sandbox/stats/reset")
            options = {} if batch_size is None else {"batch_size": batch_size}
            summary = world.apply(refresh=False, **options)
            seen = httpx.get(f"{url}/_sandbox/stats").json()
    finally:
        world.warehouse.dispose()
    return world, summary, seen


@pytest.mark.parametrize("client_rate", [None, 10.0], ids=["learned-rate", "configured-rate"])
def test_an_apply_against_a_tight_server_limit_loses_no_action(
    tmp_path: Path, client_rate: float | None
) -> None:
    """40 actions against 10 requests/s with only two attempts per request: the 429s are
    waited out, never counted as failures, and every action is done. With the rate configured
    the server never refuses one; without, only the first burst before the first 429 does."""
    world, summary, seen = apply_against_a_server_limit(
        tmp_path,
        contacts=60,
        seed=13,
        blocks=20,
        creates=20,
        server_rate=10,
        limits={
            "max_attempts": 2,
            "max_concurrency": 8,
            "backoff_base": 0.05,
            "rate_limit": client_rate,
        },
    )

    assert summary.outcomes == Counter(done=40)
    assert {r["state"] for r in world.ledger().values()} == {"done"}
    assert seen["requests"] >= 40 and seen["seconds_observed"] >= 3
    if client_rate is None:
        assert seen.get("throttled", 0) <= 25
        assert seen["seconds_over_rate_limit"] <= 3
    else:
        assert seen.get("throttled", 0) == 0
        # One more than the rate when a request delayed on its way lands in the next second.
        assert seen["max_arrivals_per_second"] <= 11


def test_headroom_leaves_its_share_of_the_rate_unused() -> None:
    time = FakeTime()
    limiter = RateLimiter(50.0, headroom=0.02, clock=time.clock, sleep=time.sleep)
    starts: list[float] = []
    asyncio.run(time.run(*workers(limiter, time, 8, 200, starts)))

    assert limiter.rate == pytest.approx(49.0)
    assert most_in_any_second(starts) <= 49
    assert sorted(starts)[-1] == pytest.approx(199 / 49)
    assert ClientLimits().rate_headroom == 0.02  # what clients use unless told otherwise


def test_an_apply_in_small_batches_keeps_to_the_server_limit_and_sends_each_action_once(
    tmp_path: Path,
) -> None:
    """60 actions claimed 7 at a time (each batch claimed while the one before is sent, the
    outcomes committed off the event loop) against a 20/s server limit with the client's rate
    set to it: no second above the limit, no 429, every action sent once and recorded done."""
    world, summary, seen = apply_against_a_server_limit(
        tmp_path,
        contacts=80,
        seed=17,
        blocks=30,
        creates=30,
        server_rate=20,
        limits={"max_concurrency": 4, "rate_limit": 20.0},
        batch_size=7,
    )

    assert summary.outcomes == Counter(done=60) and summary.claimed_elsewhere == 0
    ledger = world.ledger()
    assert {r["state"] for r in ledger.values()} == {"done"}
    assert {r["attempts"] for r in ledger.values()} == {1}
    assert len(world.gateway.sent("POST")) == 60  # one write per action, none repeated
    assert seen.get("throttled", 0) == 0
    # One more than the rate when a request delayed on its way (here the sandbox shares the
    # interpreter with the client) lands in the next second's count.
    assert seen["max_arrivals_per_second"] <= 21
