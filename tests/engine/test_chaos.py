"""The chaos suite in CI: its CI-sized run, and the parts it relies on (proxy, checker).

``python -m bench.chaos`` is the full run (docs/engine.md, "Proven under faults"); here the
CI configuration runs once: 200 orchestrations, 3 runtime processes SIGKILLed every ~0.5 s for
10 s, one immediate PostgreSQL restart, three connection cuts. Deselect with ``-m "not chaos"``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bench.chaos import ChaosConfig, format_report, run_chaos
from bench.chaos_app import InstancePlan, expected_output, plan_instance, step
from bench.chaos_check import ActivityRun, FaultLog, Snapshot, check, history_problems
from bench.chaos_proxy import ChaosProxy

# --- the CI run ------------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.postgres
async def test_ci_chaos_run_loses_nothing_and_repeats_only_interrupted_work() -> None:
    lines: list[str] = []
    config = ChaosConfig.ci()
    [report] = await run_chaos(config, out=lines.append)

    log = "\n".join(lines)
    assert report.ok, f"{len(report.problems)} problems:\n" + "\n".join(report.problems[:30]) + "\n" + log
    assert report.planned == report.completed == config.instances
    assert report.sub_orchestrations > 0
    assert report.kills >= 12, log  # ~20 at 0.5 s ± 40 %; fewer only if the machine crawls
    assert report.restarts == config.pg_restarts
    assert sum(report.cuts.values()) == config.cuts
    assert report.events_raised > 0
    assert report.activity_runs >= report.activities > config.instances
    assert report.duplicates["unexplained"] == 0
    assert report.drain_seconds is not None
    print(format_report([report]))  # shown with -s: the figures of this run


# --- the proxy -------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_proxy_forwards_black_holes_heals_and_drops(pg_dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    proxy = ChaosProxy(str(info["host"]), int(str(info["port"])))
    await proxy.start()
    via_proxy = psycopg.conninfo.make_conninfo(pg_dsn, port=str(proxy.port))
    try:
        conn = await psycopg.AsyncConnection.connect(via_proxy, autocommit=True)
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
        assert proxy.open_connections == 1

        proxy.blackhole()
        query = asyncio.ensure_future(conn.execute("SELECT 2"))
        connecting = asyncio.ensure_future(psycopg.AsyncConnection.connect(via_proxy, autocommit=True))
        await asyncio.sleep(0.5)
        assert not query.done() and not connecting.done(), "a black hole lets nothing through"
        proxy.heal()
        assert await (await query).fetchone() == (2,)  # the partition healed in time: it just finishes
        late = await asyncio.wait_for(connecting, 10)
        await late.close()

        assert proxy.drop() >= 1
        with pytest.raises(psycopg.OperationalError):
            await conn.execute("SELECT 3")
        await conn.close()
        again = await psycopg.AsyncConnection.connect(via_proxy, autocommit=True)  # new ones work
        assert await (await again.execute("SELECT 4")).fetchone() == (4,)
        await again.close()
    finally:
        await proxy.close()


# --- the checker -----------------------------------------------------------------------------------

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def timer_history() -> list[dict[str, Any]]:
    """A clean history of Chaos.Timer {"x": 1}: step, durable timer, step."""
    a = step(1, 0)
    return [
        {"event_id": 1, "kind": "TurnStarted", "timestamp": ts(0)},
        {"event_id": 2, "kind": "OrchestrationStarted", "data": {"x": 1, "delay": 0.5}},
        {"event_id": 3, "kind": "ActivityScheduled", "corr_id": 1, "name": "Chaos.Step"},
        {"event_id": 4, "kind": "TurnStarted", "timestamp": ts(1)},
        {"event_id": 5, "kind": "ActivityCompleted", "corr_id": 1, "data": a},
        {"event_id": 6, "kind": "TimerCreated", "corr_id": 2, "name": "timer"},
        {"event_id": 7, "kind": "TurnStarted", "timestamp": ts(2)},
        {"event_id": 8, "kind": "TimerFired", "corr_id": 2},
        {"event_id": 9, "kind": "ActivityScheduled", "corr_id": 3, "name": "Chaos.Step"},
        {"event_id": 10, "kind": "TurnStarted", "timestamp": ts(3)},
        {"event_id": 11, "kind": "ActivityCompleted", "corr_id": 3, "data": step(a, 1)},
        {"event_id": 12, "kind": "OrchestrationCompleted", "data": step(a, 1)},
    ]


def renumbered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "event_id": n} for n, e in enumerate(events, 1)]


def test_history_checker_accepts_a_clean_history_and_sees_every_kind_of_damage() -> None:
    good = timer_history()
    assert history_problems(good) == []
    damaged = {
        "a turn applied twice": renumbered([*good[:5], good[3], good[4], *good[5:]]),
        "a gap in event ids": [*good[:4], *good[5:]],
        "an empty turn": renumbered([*good[:6], good[6], *good[6:]]),
        "a completion twice": renumbered([*good[:8], good[7], *good[8:]]),
        "a completion of the wrong kind": renumbered(
            [*good[:7], {**good[7], "kind": "ActivityCompleted"}, *good[8:]]
        ),
        "never completed": renumbered([*good[:-3], good[-1]]),
        "no terminal event": good[:-1],
        "started twice": renumbered([*good[:2], good[1], *good[2:]]),
        "turn times going back": [*good[:3], {**good[3], "timestamp": ts(-1)}, *good[4:]],
        "an event delivered twice": renumbered(
            [
                *good[:5],
                *[{"kind": "EventRaised", "name": "go", "data": {"token": "t", "try": 1}}] * 2,
                *good[5:],
            ]
        ),
    }
    for what, events in damaged.items():
        assert history_problems(events), f"the checker missed {what}"
    # an event raised during the continue-as-new turn opens the new execution's history: fine
    carried = renumbered([good[0], {"kind": "EventRaised", "name": "go", "data": {"token": "t"}}, *good[1:]])
    assert history_problems(carried) == []
    # and one client raise retried after an ambiguous failure is two deliveries, not a duplicate
    retried = [{"kind": "EventRaised", "name": "go", "data": {"token": "t", "try": n}} for n in (1, 2)]
    assert history_problems(renumbered([*good[:5], *retried, *good[5:]])) == []


def snapshot_of(plan: InstancePlan, history: list[dict[str, Any]], **tables: Any) -> Snapshot:
    row = {
        "instance_id": plan.instance_id,
        "name": plan.orchestration,
        "status": "Completed",
        "execution_id": 1,
        "input": plan.input,
        "output": expected_output(plan),
        "error": None,
    }
    return Snapshot(
        instances={plan.instance_id: row},
        histories={plan.instance_id: history},
        orchestrator_queue=tables.get("orchestrator_queue", []),
        activity_queue=tables.get("activity_queue", []),
        locks=tables.get("locks", []),
    )


def test_checker_attributes_duplicate_runs_to_faults_and_flags_the_rest() -> None:
    plan = InstancePlan("i", "timer", {"x": 1, "delay": 0.5})
    snap = snapshot_of(plan, timer_history())
    once = [
        ActivityRun("i", 1, 1, 1, "Chaos.Step", 100, 10.0),
        ActivityRun("i", 1, 3, 1, "Chaos.Step", 100, 20.0),
    ]
    assert check([plan], snap, once, FaultLog()).ok

    again = ActivityRun("i", 1, 1, 2, "Chaos.Step", 200, 15.0)
    unexplained = check([plan], snap, [*once, again], FaultLog())
    assert unexplained.duplicates == Counter(unexplained=1) and not unexplained.ok
    # the first run's process was killed in between (a kill of another process explains nothing)
    assert check([plan], snap, [*once, again], FaultLog(kills=[(12.0, 999)])).duplicates == Counter(
        unexplained=1
    )
    killed = check([plan], snap, [*once, again], FaultLog(kills=[(12.0, 100)]))
    assert killed.ok and killed.duplicates == Counter(kill=1)
    restarted = check([plan], snap, [*once, again], FaultLog(restarts=[(14.0, 16.0)]))
    assert restarted.ok and restarted.duplicates == Counter(restart=1)
    cut = check([plan], snap, [*once, again], FaultLog(cuts=[("drop", 11.0, 11.0)]))
    assert cut.ok and cut.duplicates == Counter(cut=1)
    # a fault after both runs explains nothing
    assert not check([plan], snap, [*once, again], FaultLog(kills=[(16.0, 100)])).ok


def test_checker_sees_lost_work_wrong_outputs_and_leftovers() -> None:
    plan = InstancePlan("i", "timer", {"x": 1, "delay": 0.5})
    runs = [
        ActivityRun("i", 1, 1, 1, "Chaos.Step", 100, 10.0),
        ActivityRun("i", 1, 3, 1, "Chaos.Step", 100, 20.0),
    ]
    assert not check([plan], snapshot_of(plan, timer_history()), runs[:1], FaultLog()).ok  # never ran
    stray = ActivityRun("i", 1, 9, 1, "Chaos.Step", 100, 21.0)
    assert not check([plan], snapshot_of(plan, timer_history()), [*runs, stray], FaultLog()).ok
    wrong = snapshot_of(plan, timer_history())
    wrong.instances["i"]["output"] = 0
    assert not check([plan], wrong, runs, FaultLog()).ok
    running = snapshot_of(plan, timer_history())
    running.instances["i"]["status"] = "Running"
    assert not check([plan], running, runs, FaultLog()).ok
    for table in ("orchestrator_queue", "activity_queue", "locks"):
        left = snapshot_of(
            plan, timer_history(), **{table: [{"instance_id": "i", "payload": {}, "held": False}]}
        )
        result = check([plan], left, runs, FaultLog())
        assert not result.ok and result.suspects == {"i"}, table
    missing = check(
        [plan, InstancePlan("j", "chain", {"x": 1, "len": 2})],
        snapshot_of(plan, timer_history()),
        runs,
        FaultLog(),
    )
    assert [p for p in missing.problems if p.startswith("j:")]


def test_planned_outputs_follow_the_shapes() -> None:
    import random

    rng = random.Random(1)
    plans = [
        plan_instance(f"p{n}", shape, n, rng) for n, shape in enumerate(("chain", "fanout", "event", "loop"))
    ]
    chain, fanout, event, loop = plans
    x = chain.input["x"]
    want = x
    for j in range(chain.input["len"]):
        want = step(want, j)
    assert expected_output(chain) == want
    assert expected_output(fanout) == sum(
        step(fanout.input["x"] + j, j) for j in range(fanout.input["width"])
    )
    assert expected_output(event) == step(step(event.input["x"], 0) + event.event_value, 1)  # type: ignore[operator]
    gens = loop.input["gens"]
    assert expected_output(loop) == sum(step(loop.input["x"] + g, g) for g in range(gens)) + loop.event_value


def test_a_connection_cut_explains_a_rerun_of_work_that_started_just_after_it() -> None:
    # seen in CI: a cut at .370 closed the pooled connections; an inline run at .389 finished, but
    # its commit found the connection dead and the turn ran again at .940
    faults = FaultLog(cuts=[("drop", 100.370, 100.370)], restarts=[(200.0, 201.0)], kills=[(300.0, 7)])
    assert faults.cause_between(7, 100.389, 100.940) == "cut"
    assert faults.cause_between(7, 201.5, 202.0) == "restart"
    assert faults.cause_between(7, 299.0, 301.0) == "kill"
    # long after the fault, nothing is explained any more: an unexplained rerun stays a problem
    assert faults.cause_between(7, 105.0, 106.0) is None
    assert faults.cause_between(8, 299.0, 301.0) is None  # another process was killed
