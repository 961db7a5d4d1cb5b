"""Typed results: ``result_type=`` delivers activity results and child outputs as validated types.

History keeps the raw JSON; the conversion runs whenever a result reaches the code, on the first
run and on every replay, so multi-turn orchestrations below replay typed results many times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from durable_engine import (
    ActivityError,
    ErrorCategory,
    EventKind,
    OrchestrationContext,
    RetryPolicy,
    RuntimeStatus,
    SubOrchestrationError,
)

from .harness import Engine


class Deployment(BaseModel):
    endpoint: str
    ready: bool
    replicas: int = 1


@dataclass
class Probe:
    healthy: bool
    latency_ms: float


async def test_activity_results_arrive_as_models_and_dataclasses_while_history_keeps_json(
    engine: Engine,
) -> None:
    attempts = {"Deploy": 0}

    @engine.registry.activity("Deploy")
    def deploy(ctx: Any, name: str) -> dict[str, Any]:
        attempts["Deploy"] += 1
        if attempts["Deploy"] == 1:
            raise RuntimeError("flaky")
        return {"endpoint": f"{name}:5432", "ready": "true"}  # lax JSON, as a real API answers

    @engine.registry.activity("Probe")
    def probe(ctx: Any, n: int) -> dict[str, Any]:
        return {"healthy": n % 2 == 0, "latency_ms": n * 1.5}

    @engine.registry.orchestration("Typed")
    async def typed(ctx: OrchestrationContext, name: str) -> dict[str, Any]:
        retry = RetryPolicy(max_attempts=2, initial_delay=timedelta(milliseconds=10))
        deployment = await ctx.schedule_activity("Deploy", name, retry=retry, result_type=Deployment)
        assert isinstance(deployment, Deployment)
        await ctx.schedule_timer(timedelta(milliseconds=20))  # one more turn: everything replays
        probes = await ctx.join([ctx.schedule_activity("Probe", n, result_type=Probe) for n in (1, 2)])
        assert all(isinstance(p, Probe) for p in probes)
        index, first = await ctx.select(
            [ctx.schedule_activity("Probe", 4, result_type=Probe), ctx.schedule_timer(timedelta(hours=1))]
        )
        assert index == 0 and isinstance(first, Probe)
        return {
            "deployment": deployment.model_dump(),
            "healthy": [p.healthy for p in probes],
            "latency": first.latency_ms,
        }

    await engine.start_runtime()
    await engine.client.start_orchestration("t1", "Typed", "pg1")
    status = await engine.finish("t1", step=0.01)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == {
        "deployment": {"endpoint": "pg1:5432", "ready": True, "replicas": 1},
        "healthy": [False, True],
        "latency": 6.0,
    }
    history = await engine.client.get_history("t1")
    results = [e.data for e in history if e.kind == EventKind.ACTIVITY_COMPLETED]
    assert {"endpoint": "pg1:5432", "ready": "true"} in results, "history keeps what the activity returned"
    assert {"healthy": True, "latency_ms": 3.0} in results


async def test_a_result_that_does_not_fit_raises_a_catchable_activity_error(engine: Engine) -> None:
    @engine.registry.activity("Deploy")
    def deploy(ctx: Any, _: Any) -> dict[str, Any]:
        return {"endpoint": 7, "ready": "maybe"}

    @engine.registry.orchestration("Catches")
    async def catches(ctx: OrchestrationContext, _: Any) -> dict[str, Any]:
        try:
            await ctx.schedule_activity("Deploy", result_type=Deployment)
        except ActivityError as exc:
            return {"type": exc.error_type, "category": exc.category.value, "message": exc.error_message}
        return {"type": None}

    @engine.registry.orchestration("LetsItFail")
    async def lets_it_fail(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.schedule_activity("Deploy", result_type=Deployment)

    await engine.start_runtime()
    await engine.client.start_orchestration("catch", "Catches")
    await engine.client.start_orchestration("fail", "LetsItFail")

    caught = await engine.finish("catch")
    assert caught.status == RuntimeStatus.COMPLETED, caught.error
    assert caught.output["type"] == "ResultValidationError"
    assert caught.output["category"] == "application"
    assert "the result of activity 'Deploy' is not a valid Deployment" in caught.output["message"]
    assert "endpoint: Input should be a valid string" in caught.output["message"]
    assert "ready: Input should be a valid boolean" in caught.output["message"]

    failed = await engine.finish("fail")
    assert failed.status == RuntimeStatus.FAILED
    assert failed.error is not None and failed.error.category == ErrorCategory.APPLICATION
    assert failed.error.type == "ActivityError"
    assert failed.error.details is not None
    cause = failed.error.details["cause"]
    assert cause["type"] == "ResultValidationError"
    assert [e["loc"] for e in cause["details"]["errors"]] == [["endpoint"], ["ready"]]
    # the activity itself succeeded: it ran once and was not retried
    history = await engine.client.get_history("fail")
    assert [e.kind for e in history].count(EventKind.ACTIVITY_COMPLETED) == 1


async def test_sub_orchestration_outputs_are_typed_too(engine: Engine) -> None:
    @engine.registry.orchestration("Child")
    async def child(ctx: OrchestrationContext, ready: Any) -> dict[str, Any]:
        return {"endpoint": "child:5432", "ready": ready}

    @engine.registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, _: Any) -> dict[str, Any]:
        good = await ctx.schedule_sub_orchestration("Child", True, result_type=Deployment)
        try:
            await ctx.schedule_sub_orchestration("Child", "perhaps", result_type=Deployment)
        except SubOrchestrationError as exc:
            return {"good": good.endpoint, "bad": exc.error_type}
        return {"good": good.endpoint, "bad": None}

    await engine.start_runtime()
    await engine.client.start_orchestration("parent", "Parent")
    status = await engine.finish("parent")
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == {"good": "child:5432", "bad": "ResultValidationError"}


async def test_a_type_pydantic_cannot_validate_fails_as_configuration_before_scheduling(
    engine: Engine,
) -> None:
    class Opaque:
        def __init__(self, handle: object) -> None:
            self.handle = handle

    @engine.registry.activity("Deploy")
    def deploy(ctx: Any, _: Any) -> str:
        return "never"

    @engine.registry.orchestration("Misconfigured")
    async def misconfigured(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.schedule_activity("Deploy", result_type=Opaque)

    await engine.start_runtime()
    await engine.client.start_orchestration("bad", "Misconfigured")
    status = await engine.finish("bad")
    assert status.status == RuntimeStatus.FAILED
    assert status.error is not None
    assert (status.error.category, status.error.type) == (ErrorCategory.CONFIGURATION, "InvalidResultType")
    assert "Opaque" in status.error.message
    history = await engine.client.get_history("bad")
    assert EventKind.ACTIVITY_SCHEDULED not in [e.kind for e in history]
