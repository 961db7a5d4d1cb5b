"""Inline activities: a dispatch runs the activities its turns schedule and commits once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from durable_engine import EventKind, Provider, RuntimeStatus, TurnCommit

from .harness import Engine


class CountingProvider:
    """Delegates to a real provider and counts commits (a wrapper of our own, not a mock)."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner
        self.commits: list[TurnCommit] = []

    async def commit_turn(self, lock_token: str, commit: TurnCommit) -> None:
        # recorded first: the commit itself may wake a waiting test before it returns here
        self.commits.append(commit)
        await self._inner.commit_turn(lock_token, commit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
async def counted(provider: Provider) -> AsyncIterator[tuple[Engine, CountingProvider]]:
    wrapper = CountingProvider(provider)
    eng = Engine(wrapper)  # type: ignore[arg-type]
    try:
        yield eng, wrapper
    finally:
        await eng.stop_all()


async def test_a_chain_of_quick_activities_commits_once(counted: tuple[Engine, CountingProvider]) -> None:
    engine, wrapper = counted

    @engine.registry.activity("Inc")
    def inc(ctx: Any, x: int) -> int:
        return x + 1

    @engine.registry.orchestration("Chain")
    async def chain(ctx: Any, n: int) -> int:
        value = 0
        for _ in range(n):
            value = await ctx.schedule_activity("Inc", value)
        fanned = await ctx.join([ctx.schedule_activity("Inc", i) for i in range(5)])
        return value + sum(fanned)

    await engine.start_runtime(inline_budget=timedelta(seconds=30))
    await engine.client.start_orchestration("chain", "Chain", 10)
    status = await engine.client.wait_for_completion("chain", 20)
    assert status.status == RuntimeStatus.COMPLETED and status.output == 10 + 15
    assert len(wrapper.commits) == 1
    history = await engine.client.get_history("chain")
    assert [e.event_id for e in history] == list(range(1, len(history) + 1))
    kinds = [e.kind for e in history]
    assert kinds.count(EventKind.ACTIVITY_SCHEDULED) == kinds.count(EventKind.ACTIVITY_COMPLETED) == 15
    # the start and 10 chain steps, then the fan-in: one turn per batch of the 5 parallel
    # completions that arrive together (usually one, more on a busy machine)
    assert 12 <= kinds.count(EventKind.TURN_STARTED) <= 16


async def test_an_activity_outliving_the_budget_is_handed_over_and_runs_once(
    counted: tuple[Engine, CountingProvider],
) -> None:
    engine, wrapper = counted
    runs: list[int] = []

    @engine.registry.activity("Slow")
    async def slow(ctx: Any, _: Any) -> str:
        runs.append(ctx.attempt)
        await asyncio.sleep(0.5)
        return "slow"

    @engine.registry.orchestration("UsesSlow")
    async def uses_slow(ctx: Any, _: Any) -> str:
        return str(await ctx.schedule_activity("Slow"))

    await engine.start_runtime(
        inline_budget=timedelta(seconds=0.05),
        activity_lock_timeout=timedelta(seconds=2),
        lock_renewal_interval=timedelta(seconds=0.2),
    )
    await engine.client.start_orchestration("slow", "UsesSlow")
    status = await engine.client.wait_for_completion("slow", 20)
    assert status.status == RuntimeStatus.COMPLETED and status.output == "slow"
    assert runs == [1]
    first = wrapper.commits[0]
    assert first.activity_tasks == [] and [c.task.name for c in first.claimed_tasks] == ["Slow"]
    assert len(wrapper.commits) == 2  # the handed-over activity's completion came through the queue


async def test_inline_runs_respect_activity_concurrency(engine_provider: Provider) -> None:
    engine = Engine(engine_provider)
    running = 0
    peak = 0

    @engine.registry.activity("Busy")
    async def busy(ctx: Any, _: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    @engine.registry.orchestration("Wide")
    async def wide(ctx: Any, n: int) -> int:
        await ctx.join([ctx.schedule_activity("Busy") for _ in range(n)])
        return n

    try:
        await engine.start_runtime(activity_concurrency=2)
        await engine.client.start_orchestration("wide", "Wide", 12)
        status = await engine.client.wait_for_completion("wide", 30)
    finally:
        await engine.stop_all()
    assert status.status == RuntimeStatus.COMPLETED
    assert peak <= 4  # 2 inline slots + 2 worker-loop slots


@pytest.fixture
def engine_provider(provider: Provider) -> Provider:
    return provider


async def test_a_client_with_a_local_runtime_dispatches_the_first_turn_itself(
    counted: tuple[Engine, CountingProvider],
) -> None:
    from durable_engine import Client

    engine, wrapper = counted
    fetches: list[object] = []
    original_fetch = wrapper.fetch_orchestration_item

    async def counting_fetch(lock_timeout: timedelta) -> Any:
        item = await original_fetch(lock_timeout)
        if item is not None:
            fetches.append(item)
        return item

    wrapper.fetch_orchestration_item = counting_fetch  # type: ignore[method-assign]

    @engine.registry.activity("Inc")
    def inc(ctx: Any, x: int) -> int:
        return x + 1

    @engine.registry.orchestration("One")
    async def one(ctx: Any, x: int) -> int:
        return int(await ctx.schedule_activity("Inc", x))

    runtime = await engine.start_runtime()
    client = Client(wrapper, runtime=runtime)  # type: ignore[arg-type]
    assert await client.start_orchestration("local", "One", 41)
    assert not await client.start_orchestration("local", "One", 0)  # still idempotent
    status = await client.wait_for_completion("local", 20)
    assert status.status == RuntimeStatus.COMPLETED and status.output == 42
    assert fetches == []  # nobody fetched it: the client's process ran the turn directly
    assert len(wrapper.commits) == 1


async def test_an_instance_created_locked_but_never_run_is_taken_over_after_the_lock(
    engine_provider: Provider,
) -> None:
    from durable_engine import NewInstance

    engine = Engine(engine_provider)

    @engine.registry.orchestration("Hello")
    async def hello(ctx: Any, name: str) -> str:
        return f"hello {name}"

    # a client process created it locked for itself and died before running the turn
    item = await engine_provider.create_instance_locked(
        NewInstance("orphan", "Hello", None, "world"), timedelta(seconds=0.5)
    )
    assert item is not None and [m.kind.value for m in item.messages] == ["Start"]
    assert await engine_provider.fetch_orchestration_item(timedelta(seconds=5)) is None  # still locked
    try:
        await engine.start_runtime(lock_timeout=timedelta(seconds=0.5))
        status = await engine.finish("orphan", step=0.2)
    finally:
        await engine.stop_all()
    assert status.output == "hello world"
