"""Observable cancellation: the code sees ``OrchestrationCancelledError`` and may clean up.

As in Temporal and Durable Functions: a cancelled orchestration gets the error at the await it
is blocked on, may schedule (and await) cleanup work, and ends Cancelled. Running
sub-orchestrations are cancelled with it at once; detached ones are not. Both providers, inline
and queued (the ``engine`` fixture).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durable_engine import (
    ActivityError,
    EventKind,
    OrchestrationCancelledError,
    RetryPolicy,
    RuntimeStatus,
    SubOrchestrationError,
)

from .harness import Engine


async def _until_waiting(engine: Engine, instance_id: str, event: str) -> None:
    async def waiting() -> bool:
        if await engine.client.get_status(instance_id) is None:
            return False  # not created yet
        history = await engine.client.get_history(instance_id)
        return any(e.kind == EventKind.EVENT_SUBSCRIBED and e.name == event for e in history)

    await engine.until(waiting)


async def test_a_cancelled_orchestration_cleans_up_then_ends_cancelled(engine: Engine) -> None:
    cleaned: list[str] = []

    @engine.registry.activity("Provision")
    def provision(ctx: Any, what: str) -> str:
        return f"provisioned {what}"

    @engine.registry.activity("Cleanup")
    def cleanup(ctx: Any, what: str) -> str:
        cleaned.append(what)
        return f"cleaned {what}"

    @engine.registry.orchestration("Provisioner")
    async def provisioner(ctx: Any, what: str) -> str:
        await ctx.schedule_activity("Provision", what)
        try:
            await ctx.wait_for_event("done")
        except OrchestrationCancelledError as cancelled:
            ctx.set_custom_status({"cleaning up": cancelled.reason})
            report = await ctx.schedule_activity("Cleanup", what)
            ctx.set_custom_status({"cleanup": report})
            raise
        return "done"

    await engine.start_runtime()
    await engine.client.start_orchestration("prov", "Provisioner", "db-1")
    await _until_waiting(engine, "prov", "done")
    assert await engine.client.cancel("prov", "operator said stop")
    assert await engine.client.cancel("prov", "and again"), "still running: its cleanup has not ended"
    status = await engine.finish("prov")
    assert status.status == RuntimeStatus.CANCELLED, status.error
    assert status.error is not None and status.error.type == "Cancelled"
    assert status.error.message == "operator said stop"
    assert status.custom_status == {"cleanup": "cleaned db-1"}
    assert cleaned == ["db-1"], "the cleanup ran once; the second cancel changed nothing"
    kinds = [(e.kind, e.name) for e in await engine.client.get_history("prov")]
    cancel_at = kinds.index((EventKind.CANCEL_REQUESTED, None))
    assert (EventKind.ACTIVITY_SCHEDULED, "Cleanup") in kinds[cancel_at:]
    assert not await engine.client.cancel("prov"), "finished: cancel is a no-op"


async def test_returning_after_cancellation_still_ends_cancelled_and_a_failing_cleanup_fails(
    engine: Engine,
) -> None:
    @engine.registry.activity("Cleanup")
    def cleanup(ctx: Any, ok: bool) -> str:
        if not ok:
            raise RuntimeError("the volume is gone already")
        return "cleaned"

    @engine.registry.orchestration("Tidy")
    async def tidy(ctx: Any, ok: bool) -> Any:
        try:
            await ctx.wait_for_event("never")
        except OrchestrationCancelledError:
            return {"cleanup": await ctx.schedule_activity("Cleanup", ok)}
        return "not cancelled"

    @engine.registry.orchestration("Stubborn")
    async def stubborn(ctx: Any, _: Any) -> Any:
        return await ctx.wait_for_event("never")  # does not catch it: ends Cancelled at once

    await engine.start_runtime()
    for instance_id, name, arg in (("ok", "Tidy", True), ("bad", "Tidy", False), ("plain", "Stubborn", 0)):
        await engine.client.start_orchestration(instance_id, name, arg)
        await _until_waiting(engine, instance_id, "never")
        await engine.client.cancel(instance_id, f"stop {instance_id}")

    ok = await engine.finish("ok")
    assert ok.status == RuntimeStatus.CANCELLED and ok.output == {"cleanup": "cleaned"}
    assert ok.error is not None and ok.error.message == "stop ok"
    bad = await engine.finish("bad")
    assert bad.status == RuntimeStatus.FAILED, "a cleanup that fails is a failure, not a cancellation"
    assert bad.error is not None and bad.error.type == ActivityError.__name__
    assert "the volume is gone already" in bad.error.message
    plain = await engine.finish("plain")
    assert plain.status == RuntimeStatus.CANCELLED and plain.error is not None
    assert plain.error.message == "stop plain"


async def test_cancellation_cascades_to_sub_orchestrations_which_clean_up_too(engine: Engine) -> None:
    cleaned: list[str] = []

    @engine.registry.activity("Cleanup")
    def cleanup(ctx: Any, who: str) -> str:
        cleaned.append(who)
        return who

    @engine.registry.orchestration("Child")
    async def child(ctx: Any, _: Any) -> Any:
        try:
            return await ctx.wait_for_event("never")
        except OrchestrationCancelledError:
            await ctx.schedule_activity("Cleanup", ctx.instance_id)
            raise

    @engine.registry.orchestration("Parent")
    async def parent(ctx: Any, _: Any) -> Any:
        ctx.start_orchestration("Child", instance_id="detached")
        attached = ctx.schedule_sub_orchestration("Child", instance_id="attached")
        try:
            return await attached
        except OrchestrationCancelledError:
            try:  # the child was cancelled with the parent: wait for its cleanup to end
                await attached
            except SubOrchestrationError as exc:
                await ctx.schedule_activity("Cleanup", f"parent after child {exc.error_type}")
            raise

    await engine.start_runtime()
    await engine.client.start_orchestration("parent", "Parent")
    await _until_waiting(engine, "attached", "never")
    await _until_waiting(engine, "detached", "never")
    await engine.client.cancel("parent", "tear it all down")
    status = await engine.finish("parent")
    assert status.status == RuntimeStatus.CANCELLED, status.error
    attached_status = await engine.finish("attached")
    assert attached_status.status == RuntimeStatus.CANCELLED
    assert attached_status.error is not None and "parent cancelled" in attached_status.error.message
    assert cleaned == ["attached", "parent after child Cancelled"]
    detached = await engine.client.get_status("detached")
    assert detached is not None and detached.status == RuntimeStatus.RUNNING, "detached: not cancelled"


async def test_a_cancel_before_the_first_turn_runs_no_code(engine: Engine) -> None:
    ran: list[str] = []

    @engine.registry.activity("Provision")
    def provision(ctx: Any, _: Any) -> str:
        ran.append("provision")
        return "provisioned"

    @engine.registry.orchestration("Provisioner")
    async def provisioner(ctx: Any, _: Any) -> Any:
        return await ctx.schedule_activity("Provision")

    await engine.client.start_orchestration("early", "Provisioner")
    await engine.client.cancel("early", "changed my mind")
    await engine.start_runtime()
    status = await engine.finish("early")
    assert status.status == RuntimeStatus.CANCELLED and status.error is not None
    assert status.error.message == "changed my mind"
    assert ran == []
    kinds = [e.kind for e in await engine.client.get_history("early")]
    assert EventKind.ACTIVITY_SCHEDULED not in kinds


async def test_a_cancelled_orchestration_stops_retrying(engine: Engine) -> None:
    attempts: list[int] = []

    @engine.registry.activity("Flaky")
    def flaky(ctx: Any, _: Any) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("not yet")

    @engine.registry.orchestration("Persistent")
    async def persistent(ctx: Any, _: Any) -> Any:
        policy = RetryPolicy(max_attempts=100, backoff="fixed", initial_delay=timedelta(seconds=1))
        try:
            return await ctx.schedule_activity("Flaky", retry=policy)
        except OrchestrationCancelledError:
            await ctx.schedule_timer(timedelta(seconds=2))  # a cleanup that outlasts a retry delay
            ctx.set_custom_status("cleaned up")
            raise

    await engine.start_runtime()
    await engine.client.start_orchestration("persistent", "Persistent")

    async def retrying() -> bool:
        return any(e.kind == EventKind.TIMER_CREATED for e in await engine.client.get_history("persistent"))

    await engine.until(retrying)
    await engine.client.cancel("persistent", "enough")
    status = await engine.finish("persistent")
    assert status.status == RuntimeStatus.CANCELLED and status.custom_status == "cleaned up"
    history = await engine.client.get_history("persistent")
    cancel_at = next(i for i, e in enumerate(history) if e.kind == EventKind.CANCEL_REQUESTED)
    after = [e.kind for e in history[cancel_at:]]
    assert EventKind.ACTIVITY_SCHEDULED not in after, "no attempt after the cancellation"
    assert after.count(EventKind.TIMER_CREATED) == 1, "only the cleanup's timer, no retry delay"
