"""One clock, the database's (issue 8, fault 3): a runtime whose host clock is off by minutes.

The runtime's provider gets a host clock skewed by ±5 minutes (``host_clock=``, the seam the
provider reads this host's wall clock through). Everything stored and compared must still be
on the database's clock: timers fire on time by it, and an activity handed over by an inline
dispatch stays locked while it runs. Before the fix, a host clock 5 minutes ahead made a 1 s
timer fire 5 minutes late, one 5 minutes behind made it fire at once, and a handed-over
activity was stored with a lock that had expired 4 minutes before it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from durable_engine import Client, Registry, Runtime, RuntimeOptions, RuntimeStatus
from durable_engine.postgres import PostgresProvider

pytestmark = pytest.mark.postgres


class SkewedClock:
    """This host's wall clock, off by ``skew``."""

    manual = False

    def __init__(self, skew: timedelta) -> None:
        self.skew = skew

    def now(self) -> datetime:
        return datetime.now(UTC) + self.skew


@pytest.fixture(params=[timedelta(minutes=5), timedelta(minutes=-5)], ids=["ahead", "behind"])
async def skewed(pg_dsn: str, request: pytest.FixtureRequest) -> AsyncIterator[PostgresProvider]:
    provider = await PostgresProvider.connect(pg_dsn, max_pool=4, host_clock=SkewedClock(request.param))
    try:
        yield provider
    finally:
        await provider.close()


async def database_now(dsn: str) -> datetime:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


async def test_timers_fire_on_time_by_the_database_clock(pg_dsn: str, skewed: PostgresProvider) -> None:
    registry = Registry()

    @registry.orchestration("Sleeper")
    async def sleeper(ctx: Any, seconds: float) -> dict[str, str]:
        started = ctx.utc_now()
        await ctx.schedule_timer(timedelta(seconds=seconds))
        return {"started": started.isoformat(), "woke": ctx.utc_now().isoformat()}

    runtime = Runtime(skewed, registry, RuntimeOptions(idle_wait=0.5))
    await runtime.start()
    try:
        began = await database_now(pg_dsn)
        await Client(skewed).start_orchestration("sleepy", "Sleeper", 1.0)
        status = await Client(skewed).wait_for_completion("sleepy", timeout=30)
    finally:
        await runtime.shutdown(grace=2)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    fired_after = (status.updated_at - began).total_seconds()
    assert 0.9 <= fired_after < 10, f"a 1 s timer completed {fired_after:.1f} s after the start"
    # the turn's time (ctx.utc_now(), stored in history) is the database's too
    started = datetime.fromisoformat(status.output["started"])
    assert abs((started - began).total_seconds()) < 5, (started, began)


async def test_a_handed_over_activity_is_not_taken_by_another_worker_while_it_runs(
    pg_dsn: str, skewed: PostgresProvider
) -> None:
    registry = Registry()
    runs: list[int] = []

    @registry.activity("Slow")
    async def slow(ctx: Any, _: Any) -> str:
        runs.append(ctx.attempt)
        await asyncio.sleep(2.0)  # outlives the 0.2 s inline budget: handed over, stored locked
        return "slow"

    @registry.orchestration("UsesSlow")
    async def uses_slow(ctx: Any, _: Any) -> str:
        return str(await ctx.schedule_activity("Slow"))

    honest = await PostgresProvider.connect(pg_dsn, max_pool=4)
    owner = Runtime(skewed, registry, RuntimeOptions(idle_wait=0.5, inline_budget=timedelta(seconds=0.2)))
    other = Runtime(honest, registry, RuntimeOptions(idle_wait=0.5, inline_activities=False))

    async def other_worker() -> None:  # only takes activities from the queue
        while True:
            await other.run_activities()
            await asyncio.sleep(0.05)

    await owner.start()
    worker = asyncio.create_task(other_worker())
    try:
        await Client(skewed).start_orchestration("slow", "UsesSlow")
        status = await Client(honest).wait_for_completion("slow", timeout=30)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await owner.shutdown(grace=2)
        await honest.close()
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == "slow"
    assert runs == [1], f"the activity ran {len(runs)} times: another worker took it while it ran"


class JitteryClock:
    """A host clock that jumps back and forth by ``jump`` on successive reads (an NTP-stepped VM)."""

    manual = False

    def __init__(self, jump: timedelta) -> None:
        self.jump = jump
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return datetime.now(UTC) + (self.jump if self.reads % 2 else -self.jump)


async def test_orchestration_time_moves_forward_and_timers_take_their_time(pg_dsn: str) -> None:
    """``ctx.utc_now()`` never goes back between turns, and after a timer of ``d`` it is at least
    ``d`` later, even when the clock the turns are stamped with is an estimate that wobbles."""
    provider = await PostgresProvider.connect(
        pg_dsn, max_pool=4, host_clock=JitteryClock(timedelta(seconds=0.3))
    )
    registry = Registry()

    @registry.orchestration("Ticker")
    async def ticker(ctx: Any, _: Any) -> list[str]:
        seen = [ctx.utc_now().isoformat()]
        for _ in range(4):
            await ctx.schedule_timer(timedelta(seconds=0.2))
            seen.append(ctx.utc_now().isoformat())
        return seen

    runtime = Runtime(provider, registry, RuntimeOptions(idle_wait=0.5))
    await runtime.start()
    try:
        await Client(provider).start_orchestration("ticker", "Ticker")
        status = await Client(provider).wait_for_completion("ticker", timeout=30)
    finally:
        await runtime.shutdown(grace=2)
        await provider.close()
    assert status.status == RuntimeStatus.COMPLETED, status.error
    seen = [datetime.fromisoformat(t) for t in status.output]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(seen)]
    assert all(gap >= 0.2 for gap in gaps), gaps
