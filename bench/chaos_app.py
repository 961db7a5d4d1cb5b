"""The workload of the chaos suite: orchestrations of mixed shapes whose outputs are known ahead.

Shared by the runtime processes (``chaos_worker.py``, which registers it) and the driver
(``chaos.py``, which plans instances and checks outputs with :func:`expected_output`). Every
output is a pure function of the input and of the event values the driver raises, so a wrong
or missing step shows up as a wrong output, whatever the faults did to the timing.

Activities append one line per run (at its start) to a per-process log, through ``os.write`` on
an ``O_APPEND`` descriptor: the line is in the kernel as soon as the call returns, so it survives
a SIGKILL, and it does not depend on the database the faults are aimed at. The driver counts
activity executions from these logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from durable_engine import ActivityContext, OrchestrationContext, Registry, RetryPolicy

SHAPES = ("chain", "fanout", "timer", "event", "event_first", "sub", "loop", "retry")
#: shapes that wait for the external event "go" (the driver raises it)
EVENT_SHAPES = frozenset({"event", "event_first", "loop"})
ORCHESTRATION = {
    "chain": "Chaos.Chain",
    "fanout": "Chaos.FanOut",
    "timer": "Chaos.Timer",
    "event": "Chaos.Event",
    "event_first": "Chaos.EventFirst",
    "sub": "Chaos.Parent",
    "loop": "Chaos.Loop",
    "retry": "Chaos.Retry",
}
RUN_LOG_PREFIX = "runs-"


def step(x: int, op: int) -> int:
    """What the ``Chaos.Step`` activity computes (op picks one of three functions)."""
    return (x + 1, (x * 2) % 1_000_003, x - 3)[op % 3]


@dataclass(frozen=True)
class InstancePlan:
    """One top-level instance the driver starts: its shape, input and event value."""

    instance_id: str
    shape: str
    input: dict[str, Any]
    #: the value of the "go" event (event shapes only)
    event_value: int | None = None

    @property
    def orchestration(self) -> str:
        return ORCHESTRATION[self.shape]


def plan_instance(
    instance_id: str, shape: str, n: int, rng: random.Random, slow: float | None = None
) -> InstancePlan:
    """``slow`` (shape "event" only): seconds the first activity takes."""
    x = n * 7 + 1
    if shape == "event" and slow is not None:
        return InstancePlan(instance_id, shape, {"x": x, "slow": slow}, event_value=n % 97)
    if shape == "chain":
        return InstancePlan(instance_id, shape, {"x": x, "len": rng.randint(2, 5)})
    if shape == "fanout":
        return InstancePlan(instance_id, shape, {"x": x, "width": rng.randint(3, 8)})
    if shape == "timer":
        return InstancePlan(instance_id, shape, {"x": x, "delay": round(rng.uniform(0.2, 1.5), 2)})
    if shape in ("event", "event_first"):
        return InstancePlan(instance_id, shape, {"x": x}, event_value=n % 97)
    if shape == "sub":
        return InstancePlan(instance_id, shape, {"x": x})
    if shape == "loop":
        return InstancePlan(
            instance_id, shape, {"x": x, "gen": 0, "gens": rng.randint(2, 4), "acc": 0}, n % 89
        )
    if shape == "retry":
        return InstancePlan(instance_id, shape, {"x": x, "failures": rng.randint(1, 2)})
    raise ValueError(f"unknown shape {shape!r}")


def expected_output(plan: InstancePlan) -> Any:
    spec = plan.input
    x = int(spec["x"])
    if plan.shape == "chain":
        for j in range(spec["len"]):
            x = step(x, j)
        return x
    if plan.shape == "fanout":
        return sum(step(x + j, j) for j in range(spec["width"]))
    if plan.shape == "timer":
        return step(step(x, 0), 1)
    if plan.shape == "event":
        assert plan.event_value is not None
        return step(step(x, 0) + plan.event_value, 1)
    if plan.shape == "event_first":
        assert plan.event_value is not None
        return step(x + plan.event_value, 2)
    if plan.shape == "sub":
        return [
            expected_output(InstancePlan("", "chain", {"x": x, "len": 2})),
            expected_output(InstancePlan("", "fanout", {"x": x + 1, "width": 3})),
        ]
    if plan.shape == "loop":
        assert plan.event_value is not None
        acc = sum(step(x + gen, gen) for gen in range(spec["gens"]))
        return acc + plan.event_value
    if plan.shape == "retry":
        return step(x, 1)
    raise ValueError(f"unknown shape {plan.shape!r}")


SHAPE_OF = {name: shape for shape, name in ORCHESTRATION.items()}


def activities_per_execution(orchestration: str, spec: dict[str, Any]) -> int:
    """Distinct activities one execution of ``orchestration`` with input ``spec`` schedules."""
    shape = SHAPE_OF[orchestration]
    if shape == "chain":
        return int(spec["len"])
    if shape == "fanout":
        return int(spec["width"])
    if shape == "retry":
        return int(spec["failures"]) + 1
    return {"timer": 2, "event": 2, "event_first": 1, "sub": 0, "loop": 1}[shape]


class RunLog:
    """Append-only log of activity runs of this process (one JSON line per run)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{RUN_LOG_PREFIX}{os.getpid()}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, ctx: ActivityContext) -> None:
        line = {
            "i": ctx.instance_id,
            "e": ctx.execution_id,
            "c": ctx.corr_id,
            "a": ctx.attempt,
            "n": ctx.activity_name,
            "p": os.getpid(),
            "t": time.time(),
        }
        os.write(self._fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


def build_registry(log: RunLog) -> Registry:
    registry = Registry()

    @registry.activity("Chaos.Step")
    async def step_activity(ctx: ActivityContext, req: dict[str, Any]) -> int:
        log.record(ctx)
        # long enough that kills and cuts land while activities run, short enough to keep going
        await asyncio.sleep(float(req.get("sleep", random.uniform(0.0, 0.04))))
        return step(int(req["x"]), int(req["op"]))

    @registry.activity("Chaos.Flaky")
    def flaky(ctx: ActivityContext, req: dict[str, Any]) -> int:
        """Sync (runs on a thread); fails while its correlation id is below ``fail_below``.

        The retry loop schedules attempts at correlation ids 1, 3, 5, ... (a backoff timer takes
        each even one), so ``fail_below = 2k`` makes exactly the first k attempts fail, on every
        delivery of them.
        """
        log.record(ctx)
        time.sleep(random.uniform(0.0, 0.02))
        if ctx.corr_id < int(req["fail_below"]):
            raise ValueError(f"planned failure of attempt at corr {ctx.corr_id}")
        return step(int(req["x"]), 1)

    async def call_step(ctx: OrchestrationContext, x: int, op: int, sleep: float | None = None) -> int:
        req: dict[str, Any] = {"x": x, "op": op} if sleep is None else {"x": x, "op": op, "sleep": sleep}
        result: int = await ctx.schedule_activity("Chaos.Step", req)
        return result

    @registry.orchestration("Chaos.Chain")
    async def chain(ctx: OrchestrationContext, spec: dict[str, Any]) -> int:
        x = int(spec["x"])
        for j in range(int(spec["len"])):
            x = await call_step(ctx, x, j)
        return x

    @registry.orchestration("Chaos.FanOut")
    async def fan_out(ctx: OrchestrationContext, spec: dict[str, Any]) -> int:
        x = int(spec["x"])
        tasks = [
            ctx.schedule_activity("Chaos.Step", {"x": x + j, "op": j}) for j in range(int(spec["width"]))
        ]
        return sum(await ctx.join(tasks))

    @registry.orchestration("Chaos.Timer")
    async def timer(ctx: OrchestrationContext, spec: dict[str, Any]) -> int:
        a = await call_step(ctx, int(spec["x"]), 0)
        await ctx.schedule_timer(timedelta(seconds=float(spec["delay"])))
        return await call_step(ctx, a, 1)

    @registry.orchestration("Chaos.Event")
    async def event(ctx: OrchestrationContext, spec: dict[str, Any]) -> int:
        """``slow``: the first activity takes that long, so its turn (which runs it inline) is
        still uncommitted when the driver restarts PostgreSQL right after starting it."""
        a = await call_step(ctx, int(spec["x"]), 0, spec.get("slow"))
        go = await ctx.wait_for_event("go")
        return await call_step(ctx, a + int(go["value"]), 1)

    @registry.orchestration("Chaos.EventFirst")
    async def event_first(ctx: OrchestrationContext, spec: dict[str, Any]) -> int:
        go = await ctx.wait_for_event("go")
        return await call_step(ctx, int(spec["x"]) + int(go["value"]), 2)

    @registry.orchestration("Chaos.Parent")
    async def parent(ctx: OrchestrationContext, spec: dict[str, Any]) -> list[int]:
        x = int(spec["x"])
        children = [
            ctx.schedule_sub_orchestration("Chaos.Chain", {"x": x, "len": 2}),
            ctx.schedule_sub_orchestration("Chaos.FanOut", {"x": x + 1, "width": 3}),
        ]
        return list(await ctx.join(children))

    @registry.orchestration("Chaos.Loop")
    async def loop(ctx: OrchestrationContext, spec: dict[str, Any]) -> Any:
        """Continue-as-new once per generation; the last one consumes the "go" event, which
        (raised early) was carried across every generation before it."""
        gen, gens = int(spec["gen"]), int(spec["gens"])
        acc = int(spec["acc"]) + await call_step(ctx, int(spec["x"]) + gen, gen)
        if gen + 1 < gens:
            return ctx.continue_as_new({**spec, "gen": gen + 1, "acc": acc})
        go = await ctx.wait_for_event("go")
        return acc + int(go["value"])

    @registry.orchestration("Chaos.Retry")
    async def retry(ctx: OrchestrationContext, spec: dict[str, Any]) -> int:
        failures = int(spec["failures"])
        policy = RetryPolicy(max_attempts=failures + 2, backoff="fixed", initial_delay=timedelta(seconds=0.2))
        req = {"x": int(spec["x"]), "fail_below": 2 * failures}
        result: int = await ctx.schedule_activity("Chaos.Flaky", req, retry=policy)
        return result

    return registry
