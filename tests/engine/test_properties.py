"""Property: a random orchestration program survives crashes at random points unchanged.

Hypothesis builds programs from activities (some failing, caught), durable timers, external
events, sub-orchestrations (running programs of their own), ``join`` and ``select``, and a fault
plan: at chosen provider calls (fetch, commit, activity completion) a fault strikes —

- ``fail``: the call fails before reaching storage (a cut connection: the turn or activity is
  abandoned and redelivered after a backoff; a fetch that locked an instance loses the item and
  leaves the lock to expire);
- ``ambiguous``: it reaches storage, then fails (the commit applied, the caller thinks not);
- ``kill_before`` / ``kill_after``: the runtime dies there, like a SIGKILL: none of its calls
  reach storage any more, its locks must expire; a fresh ``Runtime`` takes over;
- ``restart``: after the call, the runtime shuts down gracefully and a fresh one starts.

Events are raised at random moments of the run (before the start, during backoffs, after
restarts). The program must produce the same output and the same history as an uninterrupted
run on the in-memory provider, for the instance and for every sub-orchestration. "The same
history" means: the same scheduled actions in the same order (kind, name, correlation id, input,
child id), the same completions, external events and final event — turn boundaries, timestamps
and event ids legitimately differ (after a failed commit the next turn may take more messages).

Outcomes that depend on timing are left out of the programs, not out of the comparison: ``select``
races its winner only against tasks that never finish (an event nobody raises, an hour-long
timer), and failing activities are awaited alone (in a ``join`` the first failure ends the wait,
and whether a sibling's completion lands in history before the instance ends is timing).

Cost: ``TOYGRES_HYPOTHESIS=ci`` (the default) runs 60 examples on the in-memory provider (virtual
time: a lock expiry costs nothing) and 5 on PostgreSQL (real time, 1 s locks), about 15 s in all;
``TOYGRES_HYPOTHESIS=full`` runs 500 and 60, about 3 minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_engine import (
    ActivityContext,
    ActivityError,
    Client,
    DurableFuture,
    EventKind,
    HistoryEvent,
    InMemoryProvider,
    ManualClock,
    OrchestrationContext,
    Provider,
    Registry,
    Runtime,
    RuntimeOptions,
    SubOrchestrationError,
)
from durable_engine.postgres import PostgresProvider

PROFILE = os.environ.get("TOYGRES_HYPOTHESIS", "ci")
EXAMPLES = {"ci": {"memory": 60, "postgres": 5}, "full": {"memory": 500, "postgres": 60}}[PROFILE]
FAULTS = ("fail", "ambiguous", "kill_before", "kill_after", "restart")
SCHEDULING = {
    EventKind.ACTIVITY_SCHEDULED,
    EventKind.TIMER_CREATED,
    EventKind.EVENT_SUBSCRIBED,
    EventKind.SUB_ORCHESTRATION_SCHEDULED,
    EventKind.ORCHESTRATION_DETACHED,
}
COMPLETIONS = {
    EventKind.ACTIVITY_COMPLETED,
    EventKind.ACTIVITY_FAILED,
    EventKind.TIMER_FIRED,
    EventKind.SUB_ORCHESTRATION_COMPLETED,
    EventKind.SUB_ORCHESTRATION_FAILED,
}
TERMINAL = {EventKind.ORCHESTRATION_COMPLETED, EventKind.ORCHESTRATION_FAILED}
ROOT = "prop"
MAX_STEPS = 2000

# --- the programs -----------------------------------------------------------------------------------

act = st.builds(lambda x: {"op": "act", "x": x}, st.integers(0, 99))
fail = st.builds(lambda x: {"op": "fail", "x": x}, st.integers(0, 99))
timer = st.builds(lambda s: {"op": "timer", "s": s}, st.sampled_from([0.1, 0.5, 2.0]))
event = st.builds(lambda n: {"op": "event", "name": n}, st.sampled_from(["a", "b", "c"]))
losers = st.lists(st.sampled_from(["never_event", "hour_timer"]), min_size=1, max_size=2)


def programs(depth: int, events: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Statements awaited one by one; events only at the top (a child's id is not the test's)."""
    leaves = [act, timer, *([event] if events else [])]
    if depth == 0:
        return st.lists(st.one_of(*leaves, fail), min_size=1, max_size=3)
    sub = st.builds(lambda p: {"op": "sub", "prog": p}, programs(depth - 1, events=False))
    item = st.one_of(*leaves, sub)
    join = st.builds(lambda xs: {"op": "join", "items": xs}, st.lists(item, min_size=1, max_size=3))
    select = st.builds(
        lambda w, ls, pos: {"op": "select", "winner": w, "losers": ls, "pos": pos},
        item,
        losers,
        st.integers(0, 2),
    )
    return st.lists(st.one_of(*leaves, fail, sub, join, select), min_size=1, max_size=4 if depth > 1 else 3)


def events_of(program: list[dict[str, Any]]) -> list[str]:
    """The event names a (top-level) program waits for, once per wait."""
    names: list[str] = []

    def walk(stmt: dict[str, Any]) -> None:
        if stmt["op"] == "event":
            names.append(stmt["name"])
        for child in stmt.get("items", []):
            walk(child)
        if "winner" in stmt:
            walk(stmt["winner"])

    for stmt in program:
        walk(stmt)
    return names


def build_registry() -> Registry:
    registry = Registry()

    @registry.activity("Prop.Double")
    async def double(ctx: ActivityContext, x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x + 1

    @registry.activity("Prop.Fail")
    def fails(ctx: ActivityContext, x: int) -> int:
        raise ValueError(f"planned failure {x}")

    def future(ctx: OrchestrationContext, stmt: dict[str, Any]) -> DurableFuture[Any]:
        op = stmt["op"]
        if op == "act":
            return ctx.schedule_activity("Prop.Double", stmt["x"])
        if op == "fail":
            return ctx.schedule_activity("Prop.Fail", stmt["x"])
        if op == "timer":
            return ctx.schedule_timer(timedelta(seconds=stmt["s"]))
        if op == "event":
            return ctx.wait_for_event(stmt["name"])
        if op == "sub":
            return ctx.schedule_sub_orchestration("Prop.Run", stmt["prog"])
        if op == "join":
            return ctx.join([future(ctx, item) for item in stmt["items"]])
        assert op == "select"
        never = [
            ctx.wait_for_event("never") if kind == "never_event" else ctx.schedule_timer(timedelta(hours=1))
            for kind in stmt["losers"]
        ]
        never.insert(min(stmt["pos"], len(never)), future(ctx, stmt["winner"]))
        return ctx.select(never)

    @registry.orchestration("Prop.Run")
    async def run(ctx: OrchestrationContext, program: list[dict[str, Any]]) -> list[Any]:
        out: list[Any] = []
        for stmt in program:
            try:
                out.append(await future(ctx, stmt))
            except (ActivityError, SubOrchestrationError) as exc:
                out.append(f"error:{exc.error_type}")
        return out

    return registry


# --- faults -----------------------------------------------------------------------------------------


@dataclass
class FaultPlan:
    """Which fault strikes at which provider call (counted over all runtimes of one run)."""

    plan: dict[int, str]
    calls: int = 0
    struck: list[str] = field(default_factory=list)

    def next(self) -> str | None:
        self.calls += 1
        fault = self.plan.get(self.calls)
        if fault is not None:
            self.struck.append(fault)
        return fault


class Injected(ConnectionError):
    pass


class FaultyProvider:
    """One runtime's view of the shared provider: faults strike here; a killed one reaches nothing."""

    def __init__(self, inner: Provider, faults: FaultPlan) -> None:
        self._inner = inner
        self._faults = faults
        self.dead = False
        self.restart_requested = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "now" or not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                if name == "wait_for_work":  # a dead process does nothing, quietly
                    await asyncio.sleep(0.05)
                    return None
                raise Injected(f"{name}: this runtime was killed")
            return await attr(*args, **kwargs)

        return call

    async def _struck(self, call: Callable[[], Awaitable[Any]]) -> Any:
        if self.dead:
            raise Injected("this runtime was killed")
        fault = self._faults.next()
        if fault == "fail":
            raise Injected("the connection broke before the call")
        if fault == "kill_before":
            self.dead = True
            raise Injected("killed before the call")
        result = await call()
        if fault == "ambiguous":
            raise Injected("the connection broke after the call")
        if fault == "kill_after":
            self.dead = True
            raise Injected("killed after the call")
        if fault == "restart":
            self.restart_requested = True
        return result

    async def fetch_orchestration_item(self, lock_timeout: timedelta) -> Any:
        """Only fetches that lock something count; a fault on one loses the item with its lock
        held (a fetch that happened, and whose answer never arrived). The runtime sees "nothing
        to do" rather than an error: its retry after a failed fetch waits on the real clock,
        which would stall a run on virtual time."""
        if self.dead:
            raise Injected("this runtime was killed")
        item = await self._inner.fetch_orchestration_item(lock_timeout)
        if item is None:
            return None
        fault = self._faults.next()
        if fault in ("kill_before", "kill_after"):
            self.dead = True
        if fault in ("fail", "ambiguous", "kill_before", "kill_after"):
            return None
        if fault == "restart":
            self.restart_requested = True
        return item

    async def commit_turn(self, lock_token: str, commit: Any) -> None:
        await self._struck(lambda: self._inner.commit_turn(lock_token, commit))

    async def complete_activity(self, lock_token: str, completion: Any) -> bool:
        return bool(await self._struck(lambda: self._inner.complete_activity(lock_token, completion)))


# --- running ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    output: Any
    histories: dict[str, Any]
    struck: list[str]


async def run_program(
    provider: Provider,
    program: list[dict[str, Any]],
    *,
    faults: FaultPlan | None,
    raise_at: list[int],
    inline: bool,
    lock_seconds: float,
) -> Outcome:
    """Run ``program`` to its end, replacing runtimes that the fault plan kills or restarts."""
    registry = build_registry()
    options = RuntimeOptions(
        lock_timeout=timedelta(seconds=lock_seconds),
        activity_lock_timeout=timedelta(seconds=lock_seconds),
        idle_wait=0.2,
        # many steps of virtual time, so events often arrive while a turn backs off
        error_backoff=timedelta(seconds=lock_seconds * 0.6),
        inline_activities=inline,
        shutdown_grace=0.5,
    )
    clock = provider.clock if isinstance(provider, InMemoryProvider) else None
    plan = faults or FaultPlan({})
    client = Client(provider)

    async def fresh_runtime() -> tuple[Runtime, FaultyProvider]:
        view = FaultyProvider(provider, plan)
        runtime = Runtime(view, registry, options)  # type: ignore[arg-type]
        await runtime.start()
        return runtime, view

    names = events_of(program)
    pending = sorted(zip(raise_at, range(len(names)), strict=True))
    raised: Counter[str] = Counter()
    await client.start_orchestration(ROOT, "Prop.Run", program)
    runtime, view = await fresh_runtime()
    try:
        for step in range(MAX_STEPS):
            while pending and pending[0][0] <= step:
                _, k = pending.pop(0)
                # the n-th raise of a name carries n: waits for one name get them in raise order
                await client.raise_event(ROOT, names[k], f"{names[k]}#{raised[names[k]]}")
                raised[names[k]] += 1
            for _ in range(5):  # let the runtime see what was raised before time moves on
                await asyncio.sleep(0)
            status = await client.get_status(ROOT)
            if status is not None and status.is_terminal and not pending:
                break
            if view.dead or view.restart_requested:
                await runtime.shutdown(grace=0 if view.dead else 0.5)
                runtime, view = await fresh_runtime()
            if isinstance(clock, ManualClock):
                clock.advance(timedelta(seconds=0.25))
                for _ in range(5):
                    await asyncio.sleep(0)
                await asyncio.sleep(0.001)
            else:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{ROOT} did not finish: {status}, struck {plan.struck}")
    finally:
        await runtime.shutdown(grace=0.5)
    assert status is not None
    return Outcome(status.output, await all_histories(client), plan.struck)


async def all_histories(client: Client) -> dict[str, Any]:
    page = await client.list_instances(limit=1000)
    return {s.instance_id: normalized(await client.get_history(s.instance_id)) for s in page.items}


def normalized(events: list[HistoryEvent]) -> dict[str, Any]:
    """A history without what legitimately differs between runs: turns, times, event ids."""
    ids = [e.event_id for e in events]
    assert ids == list(range(1, len(ids) + 1)), f"event ids {ids}"

    def err(e: HistoryEvent) -> Any:
        return None if e.error is None else (e.error.get("type"), e.error.get("message"))

    return {
        "scheduled": [
            (e.kind.value, e.name, e.corr_id, e.data, e.instance) for e in events if e.kind in SCHEDULING
        ],
        "completed": sorted(
            json.dumps([e.kind.value, e.corr_id, e.data, err(e)], sort_keys=True)
            for e in events
            if e.kind in COMPLETIONS
        ),
        "raised": sorted(json.dumps([e.name, e.data]) for e in events if e.kind == EventKind.EVENT_RAISED),
        "started": sum(1 for e in events if e.kind == EventKind.ORCHESTRATION_STARTED),
        "end": [(e.kind.value, e.data, err(e)) for e in events if e.kind in TERMINAL]
        + [events[-1].kind.value],
    }


async def reference(program: list[dict[str, Any]]) -> Outcome:
    provider = InMemoryProvider(ManualClock())
    names = events_of(program)
    return await run_program(
        provider, program, faults=None, raise_at=[0] * len(names), inline=True, lock_seconds=5
    )


def assert_same(expected: Outcome, got: Outcome) -> None:
    assert got.output == expected.output, f"faults struck: {got.struck}"
    assert set(got.histories) == set(expected.histories), f"faults struck: {got.struck}"
    for iid, history in expected.histories.items():
        assert got.histories[iid] == history, f"{iid} differs; faults struck: {got.struck}"


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[int, str], list[int], bool]:
    program = draw(programs(2, events=True))
    # small programs make a few dozen provider calls, and the first turns are where a lost or
    # reordered message does the most harm: aim faults and events early
    calls = st.one_of(st.integers(1, 3), st.integers(1, 16))
    kinds = st.sampled_from((*FAULTS, "fail"))  # a failed commit (abandon and back off) twice as often
    faults = draw(st.dictionaries(calls, kinds, max_size=4))
    n_events = len(events_of(program))
    moment = st.one_of(st.integers(0, 4), st.integers(0, 12))
    raise_at = draw(st.lists(moment, min_size=n_events, max_size=n_events))
    return program, faults, raise_at, draw(st.booleans())


# --- the properties ---------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES["memory"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_memory_programs_survive_crashes_unchanged(
    scenario: tuple[list[dict[str, Any]], dict[int, str], list[int], bool],
) -> None:
    program, plan, raise_at, inline = scenario

    async def check() -> None:
        expected = await reference(program)
        provider = InMemoryProvider(ManualClock())
        got = await run_program(
            provider, program, faults=FaultPlan(plan), raise_at=raise_at, inline=inline, lock_seconds=5
        )
        assert_same(expected, got)

    asyncio.run(check())


@pytest.mark.postgres
@settings(
    max_examples=EXAMPLES["postgres"],
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenarios())
def test_postgres_programs_survive_crashes_unchanged(
    pg_dsn: str, scenario: tuple[list[dict[str, Any]], dict[int, str], list[int], bool]
) -> None:
    """Each example gets a schema of its own in the test's database: fresh storage, cheaply."""
    program, plan, raise_at, inline = scenario

    async def check() -> None:
        expected = await reference(program)
        provider = await PostgresProvider.connect(pg_dsn, schema=f"p_{uuid.uuid4().hex[:12]}", max_pool=4)
        try:
            got = await run_program(
                provider, program, faults=FaultPlan(plan), raise_at=raise_at, inline=inline, lock_seconds=1
            )
        finally:
            await provider.close()
        assert_same(expected, got)

    asyncio.run(check())


def test_the_fault_plan_really_strikes() -> None:
    """Guard against a vacuous property: a plan on early calls strikes, and the run still matches."""
    program = [
        {"op": "act", "x": 1},
        {"op": "event", "name": "a"},
        {"op": "timer", "s": 0.5},
        {"op": "act", "x": 2},
    ]

    async def check() -> None:
        expected = await reference(program)
        plan = FaultPlan(
            {1: "kill_after", 2: "fail", 3: "kill_before", 4: "ambiguous", 5: "restart", 7: "fail"}
        )
        got = await run_program(
            InMemoryProvider(ManualClock()), program, faults=plan, raise_at=[3], inline=True, lock_seconds=5
        )
        assert got.struck == ["kill_after", "fail", "kill_before", "ambiguous", "restart", "fail"]
        assert got.output == [3, "a#0", None, 5]
        assert_same(expected, got)

    asyncio.run(check())
