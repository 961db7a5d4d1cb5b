"""Faults a deployment meets and the contract suite did not reach (issue 8), on both providers.

Each test here failed before its fix; the commit that fixed it says how.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from durable_engine import (
    ErrorCategory,
    MessageKind,
    OrchestratorMessage,
    Provider,
    Runtime,
    RuntimeOptions,
    RuntimeStatus,
    SubOrchestrationError,
    TurnCommit,
)
from durable_engine.postgres import PostgresProvider

from .harness import Engine, FaultyProvider


def _holds_continue_as_new(commit: TurnCommit) -> bool:
    """The first turn of execution 2: the one that consumes the ContinueAsNew message."""
    return commit.execution_id == 2 and commit.update is not None and commit.update.execution_id == 2


@pytest.fixture
async def faulty(provider: Provider) -> AsyncIterator[tuple[Engine, FaultyProvider]]:
    failed_once: set[str] = set()

    def fail_first_continue_as_new_turn(commit: TurnCommit) -> bool:
        if _holds_continue_as_new(commit) and commit.instance_id not in failed_once:
            failed_once.add(commit.instance_id)
            return True
        return False

    wrapper = FaultyProvider(provider, fail_first_continue_as_new_turn)
    eng = Engine(wrapper)  # type: ignore[arg-type]
    try:
        yield eng, wrapper
    finally:
        await eng.stop_all()


def _register_generations(engine: Engine) -> None:
    """Generation 0 waits for "tick" and continues as new; generation 1 waits for "go"."""

    @engine.registry.orchestration("Generations")
    async def generations(ctx: Any, generation: int) -> Any:
        if generation == 0:
            await ctx.wait_for_event("tick")
            return ctx.continue_as_new(1)
        return {"generation": generation, "go": await ctx.wait_for_event("go")}


async def _continue_as_new_and_refuse_its_commit(engine: Engine, wrapper: FaultyProvider) -> None:
    """Run "gen" until the turn holding its ContinueAsNew message failed to commit (2 s backoff)."""
    _register_generations(engine)
    await engine.start_runtime(error_backoff=timedelta(seconds=2))
    await engine.client.start_orchestration("gen", "Generations", 0)
    await engine.client.raise_event("gen", "tick")

    async def commit_refused() -> bool:
        return bool(wrapper.failed)

    await engine.until(commit_refused, step=0.01)
    assert wrapper.failed[0].consumed_message_ids, "the refused turn held the ContinueAsNew message"


async def test_a_message_arriving_while_continue_as_new_backs_off_waits_for_the_new_execution(
    faulty: tuple[Engine, FaultyProvider],
) -> None:
    """Fault 1: the turn holding ContinueAsNew fails to commit; an event arrives in the backoff.

    Before the fix the event was fetched alone, the old execution (ending in ContinuedAsNew) was
    replayed, and the instance failed with "completed during replay".
    """
    engine, wrapper = faulty
    await _continue_as_new_and_refuse_its_commit(engine, wrapper)
    # the ContinueAsNew message is backing off now; a stray event arrives in that window
    await engine.client.raise_event("gen", "go", "later")
    status = await engine.finish("gen", step=0.25)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == {"generation": 1, "go": "later"}
    assert status.execution_id == 2
    history = await engine.client.get_history("gen")
    assert [e.kind.value for e in history].count("OrchestrationStarted") == 1


async def test_cancel_arriving_while_continue_as_new_backs_off_cancels_the_new_execution(
    faulty: tuple[Engine, FaultyProvider],
) -> None:
    """Fault 1 with a cancellation as the stray message: the instance ends Cancelled, not Failed."""
    engine, wrapper = faulty
    await _continue_as_new_and_refuse_its_commit(engine, wrapper)
    assert await engine.client.cancel("gen", "stop between generations")
    status = await engine.finish("gen", step=0.25)
    assert status.status == RuntimeStatus.CANCELLED, status.error
    assert status.error is not None and "stop between generations" in status.error.message
    assert status.execution_id == 2


async def test_a_message_without_the_continue_as_new_it_follows_is_deferred_not_failed(
    provider: Provider,
) -> None:
    """Defence in depth for fault 1: should a stray message ever come without the ContinueAsNew
    message (here the test holds that message back), the turn is deferred, never failed."""
    held: list[OrchestratorMessage] = []

    def hold_back_continue_as_new(commit: TurnCommit) -> bool:
        for timed in list(commit.orchestrator_messages):
            if timed.message.kind == MessageKind.CONTINUE_AS_NEW and not held:
                held.append(timed.message)
                commit.orchestrator_messages.remove(timed)
        return False

    engine = Engine(FaultyProvider(provider, hold_back_continue_as_new))  # type: ignore[arg-type]
    _register_generations(engine)

    try:
        await engine.start_runtime(error_backoff=timedelta(seconds=0.2))
        await engine.client.start_orchestration("gen", "Generations", 0)
        await engine.client.raise_event("gen", "tick")

        async def continued() -> bool:
            return bool(held)

        await engine.until(continued)
        await engine.client.raise_event("gen", "go", "later")
        for _ in range(8):  # several deliveries of the lone event, each deferred
            await engine.tick(0.25)
        status = await engine.client.get_status("gen")
        assert status is not None and status.status == RuntimeStatus.RUNNING, status
        await provider.enqueue_orchestrator_message(held[0])
        status = await engine.finish("gen")
        assert status.status == RuntimeStatus.COMPLETED, status.error
        assert status.output == {"generation": 1, "go": "later"}
    finally:
        await engine.stop_all()


async def test_sub_orchestration_whose_instance_id_exists_fails_the_parent_catchably(engine: Engine) -> None:
    """Fault 2: creation skipped the existing id and nobody told the parent, which waited forever."""

    @engine.registry.orchestration("Child")
    async def child(ctx: Any, x: int) -> int:
        return x

    @engine.registry.orchestration("Parent")
    async def parent(ctx: Any, _: Any) -> Any:
        try:
            await ctx.schedule_sub_orchestration("Child", 2, instance_id="taken")
        except SubOrchestrationError as exc:
            fresh = await ctx.schedule_sub_orchestration("Child", 3, instance_id="fresh")
            return {"type": exc.error_type, "message": exc.error_message, "fresh": fresh}
        return "created?"

    @engine.registry.orchestration("Careless")
    async def careless(ctx: Any, _: Any) -> Any:
        return await ctx.schedule_sub_orchestration("Child", 4, instance_id="taken")

    assert await engine.client.start_orchestration("taken", "Child", 1)
    await engine.start_runtime()
    await engine.client.start_orchestration("parent", "Parent")
    await engine.client.start_orchestration("careless", "Careless")
    status = await engine.finish("parent")
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output["type"] == "InstanceAlreadyExists"
    assert "'taken'" in status.output["message"] and "already exists" in status.output["message"]
    assert status.output["fresh"] == 3
    careless_status = await engine.finish("careless")
    assert careless_status.status == RuntimeStatus.FAILED
    assert careless_status.error is not None and "'taken'" in careless_status.error.message
    taken = await engine.finish("taken")
    assert taken.output == 1 and taken.parent_instance_id is None, "the existing instance is untouched"


# --- fault 4: orchestration code is bounded ----------------------------------------------------


def _register_quick(engine: Engine) -> None:
    """``Quick``: one activity, the orchestrations whose latency shows a stalled process."""

    @engine.registry.activity("Inc")
    def inc(ctx: Any, x: int) -> int:
        return x + 1

    @engine.registry.orchestration("Quick")
    async def quick(ctx: Any, x: int) -> int:
        return int(await ctx.schedule_activity("Inc", x))


async def _latency(engine: Engine, instance_id: str) -> float:
    began = time.monotonic()
    await engine.client.start_orchestration(instance_id, "Quick", 1)
    status = await engine.client.wait_for_completion(instance_id, timeout=60)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    return time.monotonic() - began


async def test_a_turn_that_blocks_does_not_stall_the_rest_of_the_process(provider: Provider) -> None:
    """Fault 4: orchestration code ran on the event loop; a ``time.sleep`` stalled every dispatcher."""
    engine = Engine(provider)
    sleeping = threading.Event()
    _register_quick(engine)

    @engine.registry.orchestration("Blocker")
    async def blocker(ctx: Any, seconds: float) -> str:
        if not ctx.is_replaying:
            sleeping.set()
            time.sleep(seconds)  # noqa: ASYNC251 - what orchestration code must never do
        return "woke"

    try:
        await engine.start_runtime()
        usual = max([await _latency(engine, f"before-{n}") for n in range(3)])
        await engine.client.start_orchestration("blocker", "Blocker", 10.0)
        began = time.monotonic()
        while not sleeping.is_set():
            await asyncio.sleep(0.01)
        during = []
        while time.monotonic() - began < 8.0:  # the whole time the blocker sleeps
            during.append(await _latency(engine, f"during-{len(during)}"))
        assert len(during) >= 4
        # "usual" on a shared 2-core machine: far below the 10 s a stalled loop would add
        assert max(during) < max(2.0, 10 * usual), (usual, during)
        status = await engine.client.wait_for_completion("blocker", timeout=60)
        assert status.status == RuntimeStatus.COMPLETED and status.output == "woke", status.error
    finally:
        await engine.stop_all()


async def test_a_turn_past_its_time_limit_fails_the_instance_and_the_process_goes_on(
    provider: Provider,
) -> None:
    engine = Engine(provider)
    stopped: list[str] = []
    _register_quick(engine)

    @engine.registry.orchestration("Sleeper")
    async def sleeper(ctx: Any, _: Any) -> str:
        time.sleep(3)  # noqa: ASYNC251 - blocking on purpose
        return "slept"

    @engine.registry.orchestration("Spinner")
    async def spinner(ctx: Any, _: Any) -> str:
        try:
            while True:  # a busy loop: the engine stops its thread once the turn is given up
                pass
        finally:
            stopped.append("spinner")

    @engine.registry.orchestration("Parent")
    async def parent(ctx: Any, _: Any) -> str:
        try:
            await ctx.schedule_sub_orchestration("Sleeper", instance_id="child-sleeper")
        except SubOrchestrationError as exc:
            return exc.error_type
        return "completed?"

    try:
        await engine.start_runtime(turn_timeout=timedelta(seconds=1))
        await engine.client.start_orchestration("sleeper", "Sleeper")
        await engine.client.start_orchestration("spinner", "Spinner")
        await engine.client.start_orchestration("parent", "Parent")
        assert await _latency(engine, "quick") < 5
        for instance_id in ("sleeper", "spinner"):
            status = await engine.client.wait_for_completion(instance_id, timeout=30)
            assert status.status == RuntimeStatus.FAILED, status
            assert status.error is not None and status.error.type == "TurnTimeout"
            assert status.error.category == ErrorCategory.CONFIGURATION
            assert "1.0 s" in status.error.message and "must not block" in status.error.message
        parent_status = await engine.client.wait_for_completion("parent", timeout=30)
        assert parent_status.output == "TurnTimeout", "the parent of a timed-out child hears of it"
        deadline = time.monotonic() + 10
        while not stopped and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stopped == ["spinner"], "the busy loop's thread was interrupted"
    finally:
        await engine.stop_all()


async def test_activity_delivered_more_than_the_maximum_fails_the_orchestration(provider: Provider) -> None:
    """The activity poison path: a task whose runs keep dying fails its orchestration, readably."""
    registry_engine = Engine(provider)
    runs: list[int] = []

    @registry_engine.registry.activity("Fragile")
    def fragile(ctx: Any, _: Any) -> str:
        runs.append(ctx.attempt)
        return "ran"

    @registry_engine.registry.orchestration("UsesFragile")
    async def uses_fragile(ctx: Any, _: Any) -> str:
        return str(await ctx.schedule_activity("Fragile"))

    await registry_engine.client.start_orchestration("fragile", "UsesFragile")
    scheduler = Runtime(provider, registry_engine.registry, RuntimeOptions(inline_activities=False))
    assert await scheduler.run_orchestrations() == 1  # the task is queued now
    for _ in range(3):  # three workers took it and died before completing it
        item = await provider.fetch_activity(timedelta(seconds=30))
        assert item is not None and item.task.name == "Fragile"
        await provider.abandon_activity(item.lock_token)
    try:
        await registry_engine.start_runtime(max_dequeue_count=3)
        status = await registry_engine.finish("fragile")
    finally:
        await registry_engine.stop_all()
    assert status.status == RuntimeStatus.FAILED
    assert status.error is not None and status.error.category == ErrorCategory.INFRASTRUCTURE
    assert status.error.details is not None
    cause = status.error.details["cause"]
    assert cause["type"] == "PoisonMessage"
    assert "'Fragile' was delivered 4 times" in cause["message"]
    assert runs == [], "a poison task is not run again"


class _RuntimeInAThread:
    """A second runtime with an event loop of its own: another process, as far as locks go."""

    def __init__(self, dsn: str, registry: Any, options: RuntimeOptions) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(dsn, registry, options),))

    async def _main(self, dsn: str, registry: Any, options: RuntimeOptions) -> None:
        provider = await PostgresProvider.connect(dsn, max_pool=2)
        runtime = Runtime(provider, registry, options)
        await runtime.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await runtime.shutdown(grace=5)
            await provider.close()

    def __enter__(self) -> _RuntimeInAThread:
        self._thread.start()
        assert self._ready.wait(30), "the competing runtime did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.postgres
async def test_a_turn_longer_than_its_lock_keeps_the_instance(pg_dsn: str) -> None:
    """Lock renewal for long turns: before it, a turn outliving ``lock_timeout`` was taken over by
    another process and ran twice (the first commit then lost its lock)."""
    provider = await PostgresProvider.connect(pg_dsn, max_pool=4)
    engine = Engine(provider)
    turns: list[int] = []

    @engine.registry.orchestration("Slow")
    async def slow(ctx: Any, _: Any) -> str:
        if not ctx.is_replaying:
            turns.append(threading.get_ident())
            time.sleep(2.0)  # noqa: ASYNC251 - three times the lock
        return "done"

    lock = timedelta(seconds=0.6)
    try:
        await engine.start_runtime(lock_timeout=lock)
        with _RuntimeInAThread(pg_dsn, engine.registry, RuntimeOptions(lock_timeout=lock, idle_wait=0.1)):
            await engine.client.start_orchestration("slow", "Slow")  # either runtime may take it
            status = await engine.client.wait_for_completion("slow", timeout=30)
            await asyncio.sleep(1.0)  # time for a takeover to show, had there been one
        assert status.status == RuntimeStatus.COMPLETED, status.error
        assert len(turns) == 1, f"the turn ran {len(turns)} times"
        history = await engine.client.get_history("slow")
        assert [e.kind.value for e in history].count("TurnStarted") == 1
    finally:
        await engine.stop_all()
        await provider.close()
