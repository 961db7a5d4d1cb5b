"""The semantics DESIGN.md promises, each proven on both providers (``provider`` fixture)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from durable_engine import (
    ActivityError,
    ActivityTimeoutError,
    ErrorCategory,
    EventKind,
    InstanceNotFoundError,
    InvalidInputError,
    RetryPolicy,
    RuntimeStatus,
    SubOrchestrationError,
)

from .harness import Engine


def _kinds(history: list[Any]) -> list[str]:
    return [e.kind.value for e in history]


# --- correlation, join and select -------------------------------------------------------------


async def test_join_returns_results_in_argument_order(engine: Engine) -> None:
    @engine.registry.activity("Echo")
    async def echo(ctx: Any, value: int) -> int:
        await asyncio.sleep(0.01 * (5 - value))  # later arguments finish first
        return value * 10

    @engine.registry.orchestration("FanOut")
    async def fan_out(ctx: Any, n: int) -> list[int]:
        return await ctx.join([ctx.schedule_activity("Echo", i) for i in range(n)])

    await engine.start_runtime()
    await engine.client.start_orchestration("fan", "FanOut", 5)
    status = await engine.finish("fan")
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == [0, 10, 20, 30, 40]
    history = await engine.client.get_history("fan")
    scheduled = [e.corr_id for e in history if e.kind == EventKind.ACTIVITY_SCHEDULED]
    completed = [e.corr_id for e in history if e.kind == EventKind.ACTIVITY_COMPLETED]
    assert sorted(scheduled) == sorted(completed) == [1, 2, 3, 4, 5]
    assert len(set(e.event_id for e in history)) == len(history)


async def test_select_picks_first_completion_in_history_order(engine: Engine) -> None:
    @engine.registry.activity("Quick")
    def quick(ctx: Any, _: Any) -> str:
        return "quick"

    @engine.registry.orchestration("Race")
    async def race(ctx: Any, _: Any) -> dict[str, Any]:
        slow_timer = ctx.schedule_timer(timedelta(hours=1))
        index, value = await ctx.select([slow_timer, ctx.schedule_activity("Quick")])
        # both already-completed futures: the one earlier in history wins
        a = ctx.schedule_activity("Quick")
        b = ctx.schedule_activity("Quick")
        await ctx.join([a, b])
        first, _ = await ctx.select([b, a])
        return {
            "index": index,
            "value": value,
            "first_of_done": first,
            "a_seq_lt_b": a.completion_seq < b.completion_seq,
        }

    await engine.start_runtime()
    await engine.client.start_orchestration("race", "Race")
    status = await engine.finish("race", step=0.01)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output["index"] == 1 and status.output["value"] == "quick"
    expected_first = 1 if status.output["a_seq_lt_b"] else 0
    assert status.output["first_of_done"] == expected_first


# --- nondeterminism -----------------------------------------------------------------------------


async def test_replay_that_diverges_fails_with_nondeterminism(engine: Engine) -> None:
    code = {"activity": "StepA"}

    @engine.registry.activity("StepA")
    def step_a(ctx: Any, _: Any) -> str:
        return "a"

    @engine.registry.activity("StepB")
    def step_b(ctx: Any, _: Any) -> str:
        return "b"

    @engine.registry.orchestration("Fickle")
    async def fickle(ctx: Any, _: Any) -> str:
        await ctx.schedule_activity(code["activity"])
        return str(await ctx.wait_for_event("go"))

    await engine.start_runtime()
    await engine.client.start_orchestration("fickle", "Fickle")

    async def subscribed() -> bool:
        return EventKind.EVENT_SUBSCRIBED in [e.kind for e in await engine.client.get_history("fickle")]

    await engine.until(subscribed)
    code["activity"] = "StepB"  # a "deployment" that changed the code under a running instance
    await engine.client.raise_event("fickle", "go", 1)
    status = await engine.finish("fickle")
    assert status.status == RuntimeStatus.FAILED
    assert status.error is not None
    assert status.error.category == ErrorCategory.CONFIGURATION
    assert status.error.type == "NonDeterminismError"
    assert "position 1" in status.error.message
    assert "'StepA'" in status.error.message and "'StepB'" in status.error.message


# --- turns, locks, timers ---------------------------------------------------------------------------


async def test_timers_fire_at_their_time_and_survive_a_runtime_restart(engine: Engine) -> None:
    @engine.registry.orchestration("Sleeper")
    async def sleeper(ctx: Any, seconds: float) -> str:
        start = ctx.utc_now()
        await ctx.schedule_timer(timedelta(seconds=seconds))
        return str((ctx.utc_now() - start).total_seconds())

    runtime = await engine.start_runtime()
    await engine.client.start_orchestration("sleepy", "Sleeper", 0.6)

    async def timer_created() -> bool:
        return EventKind.TIMER_CREATED in [e.kind for e in await engine.client.get_history("sleepy")]

    await engine.until(timer_created)
    await runtime.shutdown()
    engine.runtimes.clear()
    await engine.start_runtime()  # a fresh process: the timer lives in the store, not in memory
    status = await engine.finish("sleepy", step=0.1)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert float(status.output) >= 0.6


async def test_external_event_raised_before_wait_is_kept(engine: Engine) -> None:
    @engine.registry.orchestration("LateListener")
    async def late_listener(ctx: Any, _: Any) -> list[Any]:
        await ctx.schedule_timer(timedelta(seconds=0.3))
        first = await ctx.wait_for_event("approval")
        second = await ctx.wait_for_event("approval")
        return [first, second]

    await engine.client.start_orchestration("late", "LateListener")
    await engine.client.raise_event("late", "approval", {"by": "alice"})
    await engine.client.raise_event("late", "approval", {"by": "bob"})
    await engine.start_runtime()
    status = await engine.finish("late", step=0.1)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == [{"by": "alice"}, {"by": "bob"}]


async def test_crashed_dispatcher_item_comes_back_after_lock_expiry(engine: Engine) -> None:
    @engine.registry.orchestration("Simple")
    async def simple(ctx: Any, x: int) -> int:
        return x + 1

    await engine.client.start_orchestration("crashy", "Simple", 41)
    # a dispatcher takes the item and dies without committing or abandoning
    item = await engine.provider.fetch_orchestration_item(timedelta(seconds=0.5))
    assert item is not None
    assert await engine.provider.fetch_orchestration_item(timedelta(seconds=0.5)) is None
    await engine.start_runtime(lock_timeout=timedelta(seconds=0.5))
    status = await engine.finish("crashy", step=0.2)
    assert status.status == RuntimeStatus.COMPLETED and status.output == 42
    history = await engine.client.get_history("crashy")
    assert _kinds(history).count("OrchestrationStarted") == 1


async def test_long_activity_renews_its_lock_and_runs_once(engine: Engine) -> None:
    runs: list[int] = []

    @engine.registry.activity("Slow")
    async def slow(ctx: Any, _: Any) -> str:
        runs.append(ctx.attempt)
        for _ in range(12):  # ~1.2 s real time; the lock is 0.4 s, renewed every 0.1 s
            await asyncio.sleep(0.1)
            if engine.manual_clock is not None:
                engine.manual_clock.advance(timedelta(seconds=0.1))
        return "done"

    @engine.registry.orchestration("UsesSlow")
    async def uses_slow(ctx: Any, _: Any) -> str:
        return str(await ctx.schedule_activity("Slow"))

    await engine.start_runtime(
        activity_lock_timeout=timedelta(seconds=0.4),
        lock_renewal_interval=timedelta(seconds=0.1),
        activity_concurrency=2,
    )
    await engine.client.start_orchestration("slow", "UsesSlow")
    status = await engine.client.wait_for_completion("slow", timeout=20)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert runs == [1]


async def test_graceful_shutdown_abandons_unfinished_activity_for_another_runtime(engine: Engine) -> None:
    release = asyncio.Event()
    runs: list[int] = []

    @engine.registry.activity("Blocking")
    async def blocking(ctx: Any, _: Any) -> int:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            await release.wait()  # the first run never finishes by itself
        return len(runs)

    @engine.registry.orchestration("UsesBlocking")
    async def uses_blocking(ctx: Any, _: Any) -> int:
        return int(await ctx.schedule_activity("Blocking"))

    first = await engine.start_runtime()
    await engine.client.start_orchestration("blk", "UsesBlocking")
    while not runs:
        await asyncio.sleep(0.02)
    await first.shutdown(grace=0.1)
    engine.runtimes.remove(first)
    await engine.start_runtime()
    status = await engine.client.wait_for_completion("blk", timeout=20)
    assert status.status == RuntimeStatus.COMPLETED
    assert status.output == 2 and len(runs) == 2


# --- cancellation ---------------------------------------------------------------------------------


async def test_cancel_cascades_to_sub_orchestrations_not_detached(engine: Engine) -> None:
    @engine.registry.orchestration("Waiter")
    async def waiter(ctx: Any, _: Any) -> Any:
        return await ctx.wait_for_event("never")

    @engine.registry.orchestration("Parent")
    async def parent(ctx: Any, _: Any) -> Any:
        ctx.start_orchestration("Waiter", instance_id="detached-child")
        return await ctx.schedule_sub_orchestration("Waiter", instance_id="attached-child")

    await engine.start_runtime()
    await engine.client.start_orchestration("parent", "Parent")

    async def children_running() -> bool:
        a = await engine.client.get_status("attached-child")
        d = await engine.client.get_status("detached-child")
        return bool(a and d and a.status == d.status == RuntimeStatus.RUNNING)

    await engine.until(children_running)
    assert await engine.client.cancel("parent", "operator said stop")
    status = await engine.finish("parent")
    assert status.status == RuntimeStatus.CANCELLED
    assert status.error is not None and "operator said stop" in status.error.message
    child = await engine.finish("attached-child")
    assert child.status == RuntimeStatus.CANCELLED
    detached = await engine.client.get_status("detached-child")
    assert detached is not None and detached.status == RuntimeStatus.RUNNING

    # a cancelled instance runs no more turns
    before = len(await engine.client.get_history("parent"))
    await engine.client.raise_event("parent", "anything", 1)
    await engine.client.raise_event("attached-child", "never", 1)
    for _ in range(10):
        await engine.tick(0.05)
    assert len(await engine.client.get_history("parent")) == before
    child = await engine.finish("attached-child")
    assert child.status == RuntimeStatus.CANCELLED
    assert not await engine.client.cancel("parent")  # already finished: a no-op


async def test_cancelled_child_fails_the_waiting_parent(engine: Engine) -> None:
    @engine.registry.orchestration("Waiter")
    async def waiter(ctx: Any, _: Any) -> Any:
        return await ctx.wait_for_event("never")

    @engine.registry.orchestration("Guardian")
    async def guardian(ctx: Any, _: Any) -> str:
        try:
            await ctx.schedule_sub_orchestration("Waiter", instance_id="ward")
        except SubOrchestrationError as exc:
            return f"child ended: {exc.error_type}"
        return "child completed"

    await engine.start_runtime()
    await engine.client.start_orchestration("guardian", "Guardian")

    async def ward_running() -> bool:
        s = await engine.client.get_status("ward")
        return bool(s and s.status == RuntimeStatus.RUNNING)

    await engine.until(ward_running)
    await engine.client.cancel("ward")
    status = await engine.finish("guardian")
    assert status.output == "child ended: Cancelled"


# --- continue-as-new, history cap, versions ---------------------------------------------------------


async def test_continue_as_new_starts_fresh_history_and_carries_events(engine: Engine) -> None:
    @engine.registry.orchestration("Counter")
    async def counter(ctx: Any, n: int) -> Any:
        await ctx.schedule_timer(timedelta(seconds=0.05))
        if n < 5:
            return ctx.continue_as_new(n + 1)
        return {"n": n, "event": await ctx.wait_for_event("final")}

    await engine.start_runtime()
    await engine.client.start_orchestration("count", "Counter", 0)
    await engine.client.raise_event("count", "final", "kept across executions")
    status = await engine.finish("count", step=0.05)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == {"n": 5, "event": "kept across executions"}
    assert status.execution_id == 6
    history = await engine.client.get_history("count")
    assert _kinds(history)[:2] == ["TurnStarted", "OrchestrationStarted"]
    assert len(history) < 15  # only the last execution is kept


async def test_history_cap_fails_instance_with_clear_error(engine: Engine) -> None:
    @engine.registry.activity("Tick")
    def tick(ctx: Any, i: int) -> int:
        return i

    @engine.registry.orchestration("Chatty")
    async def chatty(ctx: Any, _: Any) -> int:
        for i in range(100):
            await ctx.schedule_activity("Tick", i)
        return 100

    await engine.start_runtime(history_cap=40)
    await engine.client.start_orchestration("chatty", "Chatty")
    status = await engine.finish("chatty")
    assert status.status == RuntimeStatus.FAILED
    assert status.error is not None and status.error.type == "HistoryCapExceeded"
    assert "40" in status.error.message and "continue_as_new" in status.error.message
    assert len(await engine.client.get_history("chatty")) <= 40


async def test_versions_side_by_side(engine: Engine) -> None:
    @engine.registry.orchestration("Greeter", version="1.0.0")
    async def greeter_v1(ctx: Any, _: Any) -> str:
        await ctx.wait_for_event("go")
        return "v1"

    await engine.start_runtime()
    await engine.client.start_orchestration("old", "Greeter")

    async def old_waiting() -> bool:
        s = await engine.client.get_status("old")
        return bool(s and s.status == RuntimeStatus.RUNNING)

    await engine.until(old_waiting)

    @engine.registry.orchestration("Greeter", version="2.0.0")
    async def greeter_v2(ctx: Any, upgrade: bool) -> Any:
        if upgrade:
            return ctx.continue_as_new(False, version="3.0.0")
        return "v2"

    @engine.registry.orchestration("Greeter", version="3.0.0")
    async def greeter_v3(ctx: Any, _: Any) -> str:
        await ctx.wait_for_event("go")
        return "v3"

    await engine.client.start_orchestration("new", "Greeter", False, version="2.0.0")
    await engine.client.start_orchestration("latest", "Greeter")
    await engine.client.start_orchestration("upgrading", "Greeter", True, version="2.0.0")
    await engine.client.raise_event("old", "go")
    await engine.client.raise_event("latest", "go")
    await engine.client.raise_event("upgrading", "go")
    results = {i: await engine.finish(i) for i in ("old", "new", "latest", "upgrading")}
    assert results["old"].output == "v1" and results["old"].version == "1.0.0"
    assert results["new"].output == "v2" and results["new"].version == "2.0.0"
    assert results["latest"].output == "v3" and results["latest"].version == "3.0.0"
    assert results["upgrading"].output == "v3" and results["upgrading"].version == "3.0.0"


# --- failures and bad input ----------------------------------------------------------------------


async def test_unknown_orchestration_and_activity_fail_readably(engine: Engine) -> None:
    attempts: list[int] = []

    @engine.registry.orchestration("CallsGhost")
    async def calls_ghost(ctx: Any, _: Any) -> Any:
        attempts.append(1)
        return await ctx.schedule_activity("Ghost", retry=RetryPolicy(max_attempts=5))

    await engine.start_runtime()
    await engine.client.start_orchestration("nobody", "NoSuchOrchestration")
    await engine.client.start_orchestration("ghost", "CallsGhost")
    nobody = await engine.finish("nobody")
    assert nobody.status == RuntimeStatus.FAILED and nobody.error is not None
    assert nobody.error.category == ErrorCategory.CONFIGURATION
    assert "NoSuchOrchestration" in nobody.error.message and "not registered" in nobody.error.message
    ghost = await engine.finish("ghost")
    assert ghost.status == RuntimeStatus.FAILED and ghost.error is not None
    assert ghost.error.category == ErrorCategory.CONFIGURATION
    assert "'Ghost' is not registered" in ghost.error.message
    history = await engine.client.get_history("ghost")
    assert _kinds(history).count("ActivityScheduled") == 1  # configuration errors are not retried


async def test_bad_inputs_and_raising_code_end_failed_without_hurting_others(engine: Engine) -> None:
    calls: list[int] = []

    @engine.registry.activity("AlwaysFails")
    def always_fails(ctx: Any, _: Any) -> None:
        calls.append(ctx.attempt)
        raise ValueError("disk on fire")

    @engine.registry.activity("BadResult")
    def bad_result(ctx: Any, _: Any) -> Any:
        return object()

    @engine.registry.activity("Fine")
    def fine(ctx: Any, x: int) -> int:
        return x

    @engine.registry.orchestration("Retrier")
    async def retrier(ctx: Any, _: Any) -> Any:
        policy = RetryPolicy(max_attempts=3, backoff="fixed", initial_delay=timedelta(seconds=0.05))
        try:
            return await ctx.schedule_activity("AlwaysFails", retry=policy)
        except ActivityError as exc:
            raise RuntimeError(f"gave up: {exc.error_type}: {exc.error_message}") from exc

    @engine.registry.orchestration("Unserialisable")
    async def unserialisable(ctx: Any, _: Any) -> Any:
        return await ctx.schedule_activity("Fine", {1, 2})

    @engine.registry.orchestration("BadOutput")
    async def bad_output(ctx: Any, _: Any) -> Any:
        return await ctx.schedule_activity("BadResult")

    @engine.registry.orchestration("Raises")
    async def raises(ctx: Any, _: Any) -> Any:
        raise KeyError("missing-key")

    @engine.registry.orchestration("Healthy")
    async def healthy(ctx: Any, x: int) -> int:
        return int(await ctx.schedule_activity("Fine", x))

    with pytest.raises(InvalidInputError, match="JSON"):
        await engine.client.start_orchestration("x", "Healthy", {"bad": {1, 2}})
    assert await engine.client.get_status("x") is None

    await engine.start_runtime()
    for name in ("Retrier", "Unserialisable", "BadOutput", "Raises"):
        await engine.client.start_orchestration(name.lower(), name)
    await engine.client.start_orchestration("healthy", "Healthy", 7)

    retried = await engine.finish("retrier", step=0.05)
    assert retried.status == RuntimeStatus.FAILED and retried.error is not None
    assert retried.error.message == "gave up: ValueError: disk on fire"
    assert len(calls) == 3
    unser = await engine.finish("unserialisable")
    assert unser.error is not None and "not JSON-serialisable" in unser.error.message
    bad = await engine.finish("badoutput")
    assert (
        bad.error is not None
        and "result of activity 'BadResult' is not JSON-serialisable" in bad.error.message
    )
    raised = await engine.finish("raises")
    assert raised.error is not None and raised.error.type == "KeyError"
    assert raised.error.category == ErrorCategory.APPLICATION
    ok = await engine.finish("healthy")
    assert ok.status == RuntimeStatus.COMPLETED and ok.output == 7


async def test_attempt_timeout_and_retries(engine: Engine) -> None:
    @engine.registry.activity("Hangs")
    async def hangs(ctx: Any, _: Any) -> None:
        await asyncio.sleep(3600)

    @engine.registry.orchestration("Impatient")
    async def impatient(ctx: Any, _: Any) -> str:
        policy = RetryPolicy(
            max_attempts=2, attempt_timeout=timedelta(seconds=0.2), initial_delay=timedelta(seconds=0.05)
        )
        try:
            await ctx.schedule_activity("Hangs", retry=policy)
        except ActivityTimeoutError as exc:
            return exc.error_message
        return "finished?"

    await engine.start_runtime(activity_concurrency=4)
    await engine.client.start_orchestration("impatient", "Impatient")
    status = await engine.finish("impatient", step=0.05)
    assert status.status == RuntimeStatus.COMPLETED
    assert "attempt 2 did not complete" in status.output


def test_retry_backoff_delays() -> None:
    exp = RetryPolicy(max_attempts=6, initial_delay=timedelta(seconds=1), max_delay=timedelta(seconds=5))
    assert [exp.delay_before(a).total_seconds() for a in range(2, 7)] == [1, 2, 4, 5, 5]
    lin = RetryPolicy(backoff="linear", initial_delay=timedelta(seconds=2))
    assert [lin.delay_before(a).total_seconds() for a in range(2, 5)] == [2, 4, 6]
    fixed = RetryPolicy(backoff="fixed", initial_delay=timedelta(seconds=3))
    assert {fixed.delay_before(a).total_seconds() for a in range(2, 6)} == {3}
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


async def test_poison_orchestration_messages_fail_the_instance(engine: Engine) -> None:
    @engine.registry.orchestration("Simple")
    async def simple(ctx: Any, _: Any) -> int:
        return 1

    await engine.client.start_orchestration("poison", "Simple")
    for _ in range(3):  # three dispatchers crashed mid-turn
        item = await engine.provider.fetch_orchestration_item(timedelta(seconds=5))
        assert item is not None
        await engine.provider.abandon_orchestration_item(item.lock_token)
    await engine.start_runtime(max_dequeue_count=2)
    status = await engine.finish("poison")
    assert status.status == RuntimeStatus.FAILED and status.error is not None
    assert status.error.type == "PoisonMessage" and status.error.category == ErrorCategory.INFRASTRUCTURE


# --- sub-orchestrations, detached starts, context helpers ---------------------------------------------


async def test_sub_orchestrations_results_errors_and_derived_ids(engine: Engine) -> None:
    @engine.registry.orchestration("Child")
    async def child(ctx: Any, x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * 2

    @engine.registry.orchestration("Parent")
    async def parent(ctx: Any, _: Any) -> Any:
        ok = await ctx.schedule_sub_orchestration("Child", 21)
        try:
            await ctx.schedule_sub_orchestration("Child", -1)
        except SubOrchestrationError as exc:
            return {"ok": ok, "error": exc.error_type, "detached": ctx.start_orchestration("Child", 1)}
        return None

    await engine.start_runtime()
    await engine.client.start_orchestration("p", "Parent")
    status = await engine.finish("p")
    assert status.output["ok"] == 42 and status.output["error"] == "ValueError"
    children = [s for s in (await engine.client.list_instances(name="Child")).items]
    assert len(children) == 3
    assert all(c.instance_id.startswith("p::") for c in children)
    attached = [c for c in children if c.parent_instance_id == "p"]
    assert len(attached) == 2
    detached = await engine.finish(status.output["detached"])
    assert detached.output == 2 and detached.parent_instance_id is None


async def test_context_helpers_are_replay_stable(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    @engine.registry.activity("Record")
    def record(ctx: Any, value: Any) -> Any:
        seen.append(value)
        return value

    @engine.registry.orchestration("Stable")
    async def stable(ctx: Any, _: Any) -> Any:
        ctx.logger.info("starting stable orchestration")
        first_uuid, first_now = ctx.new_uuid(), ctx.utc_now().isoformat()
        replaying_at_start = ctx.is_replaying
        await ctx.schedule_activity("Record", [first_uuid, first_now])
        ctx.set_custom_status({"phase": "middle"})
        await ctx.schedule_activity("Record", "second")
        return {"uuid": first_uuid, "now": first_now, "replaying_at_start": replaying_at_start}

    caplog.set_level(logging.INFO, logger="durable_engine.orchestration")
    await engine.start_runtime()
    await engine.client.start_orchestration("stable", "Stable")
    status = await engine.finish("stable")
    assert status.status == RuntimeStatus.COMPLETED
    # the values computed in turn 1 equal the ones recomputed by the last replay
    assert seen[0] == [status.output["uuid"], status.output["now"]]
    assert status.output["replaying_at_start"] is True  # the final turn replayed the start
    assert status.custom_status == {"phase": "middle"}
    assert [r.getMessage() for r in caplog.records].count("starting stable orchestration") == 1


# --- client ---------------------------------------------------------------------------------------


async def test_client_start_is_idempotent_and_lists_filters_pages_purges(engine: Engine) -> None:
    @engine.registry.orchestration("Noop")
    async def noop(ctx: Any, x: int) -> int:
        return x

    assert await engine.client.start_orchestration("same", "Noop", 1)
    assert not await engine.client.start_orchestration("same", "Noop", 2)
    for i in range(5):
        await engine.client.start_orchestration(f"n{i}", "Noop", i)
    await engine.start_runtime()
    for i in ["same", *[f"n{i}" for i in range(5)]]:
        await engine.finish(i)
    assert (await engine.client.get_status("same")).output == 1  # type: ignore[union-attr]

    seen: list[str] = []
    cursor = None
    while True:
        page = await engine.client.list_instances(status="Completed", limit=4, cursor=cursor)
        seen += [s.instance_id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(["same", "n0", "n1", "n2", "n3", "n4"])
    assert (await engine.client.list_instances(status="Running")).items == []

    with pytest.raises(InstanceNotFoundError):
        await engine.client.raise_event("ghost", "x")
    with pytest.raises(InstanceNotFoundError):
        await engine.client.wait_for_completion("ghost", 0.1)
    assert await engine.client.purge("n0") == 1
    assert await engine.client.get_status("n0") is None
    cutoff = engine.provider.now() + timedelta(seconds=1)
    assert await engine.client.purge(completed_before=cutoff) == 5
    assert (await engine.client.list_instances()).items == []


async def test_wait_for_completion_times_out_on_a_running_instance(engine: Engine) -> None:
    @engine.registry.orchestration("Forever")
    async def forever(ctx: Any, _: Any) -> Any:
        return await ctx.wait_for_event("never")

    await engine.start_runtime()
    await engine.client.start_orchestration("forever", "Forever")
    with pytest.raises(TimeoutError, match="still"):
        await engine.client.wait_for_completion("forever", timeout=0.3)


async def test_duplicate_and_stale_messages_are_consumed_without_growing_history(engine: Engine) -> None:
    from durable_engine import MessageKind, OrchestratorMessage

    @engine.registry.activity("Fast")
    def fast(ctx: Any, _: Any) -> str:
        return "fast"

    @engine.registry.orchestration("OnceThenWait")
    async def once_then_wait(ctx: Any, _: Any) -> Any:
        return [await ctx.schedule_activity("Fast"), await ctx.wait_for_event("go")]

    await engine.start_runtime()
    await engine.client.start_orchestration("dupes", "OnceThenWait")

    async def waiting() -> bool:
        return EventKind.EVENT_SUBSCRIBED in [e.kind for e in await engine.client.get_history("dupes")]

    await engine.until(waiting)
    before = await engine.client.get_history("dupes")
    # a redelivered completion of activity #1, and a completion for an older execution
    for execution_id, corr_id in ((1, 1), (0, 1), (1, 99)):
        await engine.provider.enqueue_orchestrator_message(
            OrchestratorMessage(
                kind=MessageKind.ACTIVITY_COMPLETED,
                instance_id="dupes",
                execution_id=execution_id,
                corr_id=corr_id,
                data="duplicate",
            )
        )
    for _ in range(10):
        await engine.tick(0.05)
    assert len(await engine.client.get_history("dupes")) == len(before)
    await engine.client.raise_event("dupes", "go", "now")
    status = await engine.finish("dupes")
    assert status.output == ["fast", "now"]
