"""Faults a deployment meets and the contract suite did not reach (issue 8), on both providers.

Each test here failed before its fix; the commit that fixed it says how.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from durable_engine import (
    MessageKind,
    OrchestratorMessage,
    Provider,
    RuntimeStatus,
    SubOrchestrationError,
    TurnCommit,
)

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


async def test_a_message_arriving_while_continue_as_new_backs_off_waits_for_the_new_execution(
    faulty: tuple[Engine, FaultyProvider],
) -> None:
    """Fault 1: the turn holding ContinueAsNew fails to commit; an event arrives in the backoff.

    Before the fix the event was fetched alone, the old execution (ending in ContinuedAsNew) was
    replayed, and the instance failed with "completed during replay".
    """
    engine, wrapper = faulty

    @engine.registry.orchestration("Generations")
    async def generations(ctx: Any, generation: int) -> Any:
        if generation == 0:
            await ctx.wait_for_event("tick")
            return ctx.continue_as_new(1)
        return {"generation": generation, "go": await ctx.wait_for_event("go")}

    await engine.start_runtime(error_backoff=timedelta(seconds=2))
    await engine.client.start_orchestration("gen", "Generations", 0)
    await engine.client.raise_event("gen", "tick")

    async def commit_refused() -> bool:
        return bool(wrapper.failed)

    await engine.until(commit_refused, step=0.01)
    assert wrapper.failed[0].consumed_message_ids, "the refused turn held the ContinueAsNew message"
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

    @engine.registry.orchestration("Generations")
    async def generations(ctx: Any, generation: int) -> Any:
        await ctx.wait_for_event("tick")
        return ctx.continue_as_new(generation + 1)

    await engine.start_runtime(error_backoff=timedelta(seconds=2))
    await engine.client.start_orchestration("gen", "Generations", 0)
    await engine.client.raise_event("gen", "tick")

    async def commit_refused() -> bool:
        return bool(wrapper.failed)

    await engine.until(commit_refused, step=0.01)
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

    @engine.registry.orchestration("Generations")
    async def generations(ctx: Any, generation: int) -> Any:
        if generation == 0:
            await ctx.wait_for_event("tick")
            return ctx.continue_as_new(1)
        return {"generation": generation, "go": await ctx.wait_for_event("go")}

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
