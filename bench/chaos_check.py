"""The checker of the chaos suite: what must hold after the faults, read from the database and logs.

Pure functions over a :class:`Snapshot` of the engine's tables, the activity run logs of the
runtime processes and the driver's fault log, so they can be tested on hand-made damage
(``tests/engine/test_chaos.py``). What it verifies:

1. Every planned instance completed, with the output its inputs and event values determine;
   every other instance (sub-orchestrations) completed too.
2. Every history (the current execution's) is whole and applied once: event ids 1..n; one
   ``OrchestrationStarted``, in the first turn; one terminal event, last; no
   empty turn; turn times never go back; each correlation id scheduled once and completed at most
   once, by a completion of its own kind, and every scheduled task completed; no external event
   delivered twice (each raise attempt carries a unique ``(token, try)``).
3. Every activity ran at least once: each one a history schedules has a run in the logs, each
   execution scheduled as many as its shape says, and no run belongs to nothing. More than once
   only where a fault interrupted it: between two runs of one activity, the process of the
   earlier run was SIGKILLed, or PostgreSQL restarted, or the proxy cut the connections.
4. Nothing is left: no instance Pending or Running, no queued message or task, no lock row.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.chaos_app import RUN_LOG_PREFIX, SHAPE_OF, InstancePlan, activities_per_execution, expected_output

TERMINAL_EVENTS = ("OrchestrationCompleted", "OrchestrationFailed")
#: completion kind -> the scheduling kind it must answer
COMPLETES = {
    "ActivityCompleted": "ActivityScheduled",
    "ActivityFailed": "ActivityScheduled",
    "TimerFired": "TimerCreated",
    "SubOrchestrationCompleted": "SubOrchestrationScheduled",
    "SubOrchestrationFailed": "SubOrchestrationScheduled",
}
SCHEDULES = frozenset(COMPLETES.values()) | {"EventSubscribed", "OrchestrationDetached"}


@dataclass(frozen=True)
class ActivityRun:
    instance_id: str
    execution_id: int
    corr_id: int
    attempt: int
    name: str
    pid: int
    at: float

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.instance_id, self.execution_id, self.corr_id)


#: how long after a connection fault a process may still learn of it: a pooled connection the fault
#: closed is only found dead when next used, e.g. by the commit of work that started after the cut
CONNECTION_FAULT_GRACE = 2.0


@dataclass
class FaultLog:
    """When the driver did what (``time.time()`` seconds, the clock the run logs use too)."""

    kills: list[tuple[float, int]] = field(default_factory=list)
    restarts: list[tuple[float, float]] = field(default_factory=list)
    cuts: list[tuple[str, float, float]] = field(default_factory=list)

    def cause_between(self, pid: int, start: float, end: float) -> str | None:
        """Why an activity run by ``pid`` at ``start`` may have run again at ``end``."""
        if any(p == pid and start <= t <= end for t, p in self.kills):
            return "kill"
        grace = CONNECTION_FAULT_GRACE
        if any(a <= end and start <= b + grace for a, b in self.restarts):
            return "restart"
        if any(a <= end and start <= b + grace for _, a, b in self.cuts):
            return "cut"
        return None


@dataclass
class Snapshot:
    """The engine's tables after the run (history: the current execution's events)."""

    instances: dict[str, dict[str, Any]]
    histories: dict[str, list[dict[str, Any]]]
    orchestrator_queue: list[dict[str, Any]]
    activity_queue: list[dict[str, Any]]
    locks: list[dict[str, Any]]


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)
    activity_runs: int = 0
    activities: int = 0
    #: extra runs of one activity, by what interrupted the earlier run
    duplicates: Counter[str] = field(default_factory=Counter)
    #: instances to show in full (history, queued messages) because something is wrong with them
    suspects: set[str] = field(default_factory=set)

    def fail(self, instance_id: str | None, message: str) -> None:
        self.problems.append(f"{instance_id}: {message}" if instance_id else message)
        if instance_id:
            self.suspects.add(instance_id)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- reading --------------------------------------------------------------------------------------


def read_runs(run_dir: Path) -> list[ActivityRun]:
    runs = []
    for path in sorted(run_dir.glob(f"{RUN_LOG_PREFIX}*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by SIGKILL mid-write (os.write of one line: unseen so far)
            runs.append(
                ActivityRun(r["i"], int(r["e"]), int(r["c"]), int(r["a"]), r["n"], int(r["p"]), r["t"])
            )
    return runs


def read_snapshot(dsn: str, schema: str = "durable") -> Snapshot:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")

        def rows(query: str) -> list[dict[str, Any]]:
            cur = conn.execute(query)
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        instances = {r["instance_id"]: r for r in rows("SELECT * FROM instances")}
        histories: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows(
            "SELECT h.instance_id, h.event FROM history h JOIN instances i USING (instance_id)"
            " WHERE h.execution_id = i.execution_id ORDER BY h.instance_id, h.event_id"
        ):
            histories[r["instance_id"]].append(r["event"])
        return Snapshot(
            instances=instances,
            histories=dict(histories),
            orchestrator_queue=rows(
                "SELECT *, visible_at > now() AS hidden FROM orchestrator_queue ORDER BY id"
            ),
            activity_queue=rows("SELECT *, visible_at > now() AS hidden FROM activity_queue ORDER BY id"),
            locks=rows("SELECT *, locked_until > now() AS held FROM instance_locks"),
        )


# --- checking -------------------------------------------------------------------------------------


def history_problems(events: list[dict[str, Any]]) -> list[str]:
    """Everything that would betray a turn applied twice (or partly), or an event delivered twice."""
    problems: list[str] = []
    ids = [e.get("event_id") for e in events]
    if ids != list(range(1, len(ids) + 1)):
        problems.append(f"event ids are not 1..{len(ids)}: {ids}")
    kinds = [e["kind"] for e in events]
    # the first turn starts the execution; only external events may come before its start: a new
    # execution's history holds events raised while the previous one ran its continue-as-new turn
    started_at = kinds.index("OrchestrationStarted") if "OrchestrationStarted" in kinds else -1
    if (
        kinds[:1] != ["TurnStarted"]
        or kinds.count("OrchestrationStarted") != 1
        or any(k != "EventRaised" for k in kinds[1:started_at])
    ):
        problems.append(f"expected one OrchestrationStarted in the first turn, got {kinds[:4]}...")
    terminal = [k for k in kinds if k in TERMINAL_EVENTS or k == "ContinuedAsNew"]
    if len(terminal) != 1 or kinds[-1] not in TERMINAL_EVENTS:
        problems.append(f"terminal events {terminal}, last event {kinds[-1] if kinds else None}")
    for current, following in zip(kinds, [*kinds[1:], None], strict=True):
        if current == "TurnStarted" and following in ("TurnStarted", None):
            problems.append("an empty turn (a TurnStarted with nothing after it)")
            break
    turns = [e for e in events if e["kind"] == "TurnStarted"]
    for before, after in itertools.pairwise(turns):
        back = datetime.fromisoformat(before["timestamp"]) - datetime.fromisoformat(after["timestamp"])
        if back.total_seconds() > 0:  # ctx.utc_now() must not go back between turns
            problems.append(
                f"turn time goes back by {back.total_seconds() * 1000:.3f} ms at event {after['event_id']}"
            )
            break
    scheduled: dict[int, str] = {}
    for e in events:
        if e["kind"] in SCHEDULES:
            if e.get("corr_id") in scheduled:
                problems.append(f"corr id {e.get('corr_id')} scheduled twice")
            scheduled[e.get("corr_id", -1)] = e["kind"]
    completed: Counter[int] = Counter()
    for e in events:
        if e["kind"] in COMPLETES:
            corr = e.get("corr_id", -1)
            completed[corr] += 1
            if scheduled.get(corr) != COMPLETES[e["kind"]]:
                problems.append(f"{e['kind']} for corr id {corr}, which is {scheduled.get(corr)}")
    if twice := sorted(c for c, n in completed.items() if n > 1):
        problems.append(f"corr ids completed more than once: {twice}")
    if open_ := sorted(c for c, k in scheduled.items() if k in COMPLETES.values() and c not in completed):
        problems.append(f"scheduled but never completed: corr ids {open_}")
    deliveries = Counter(
        (e["data"].get("token"), e["data"].get("try"))
        for e in events
        if e["kind"] == "EventRaised" and isinstance(e.get("data"), dict)
    )
    if dup := [k for k, n in deliveries.items() if n > 1]:
        problems.append(f"external events delivered twice: {dup}")
    return problems


def check(
    plans: list[InstancePlan],
    snapshot: Snapshot,
    runs: list[ActivityRun],
    faults: FaultLog,
) -> CheckResult:
    result = CheckResult()
    _check_outputs(plans, snapshot, result)
    for iid, events in snapshot.histories.items():
        for problem in history_problems(events):
            result.fail(iid, problem)
    _check_activities(snapshot, runs, faults, result)
    _check_leftovers(snapshot, result)
    return result


def _check_outputs(plans: list[InstancePlan], snapshot: Snapshot, result: CheckResult) -> None:
    planned = {p.instance_id for p in plans}
    for plan in plans:
        row = snapshot.instances.get(plan.instance_id)
        if row is None:
            result.fail(plan.instance_id, "was never created")
        elif row["status"] != "Completed":
            result.fail(plan.instance_id, f"is {row['status']} (error: {row['error']})")
        elif row["output"] != expected_output(plan):
            result.fail(plan.instance_id, f"output {row['output']!r}, expected {expected_output(plan)!r}")
        elif plan.shape == "loop" and row["execution_id"] != plan.input["gens"]:
            result.fail(plan.instance_id, f"ended in execution {row['execution_id']} of {plan.input['gens']}")
    for iid, row in snapshot.instances.items():
        if iid not in planned and row["status"] != "Completed":
            result.fail(iid, f"(a sub-orchestration) is {row['status']} (error: {row['error']})")


def _check_activities(
    snapshot: Snapshot, runs: list[ActivityRun], faults: FaultLog, result: CheckResult
) -> None:
    by_key: dict[tuple[str, int, int], list[ActivityRun]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    result.activity_runs = len(runs)
    result.activities = len(by_key)

    # each activity of each current execution ran; each execution scheduled what its shape says
    for iid, events in snapshot.histories.items():
        row = snapshot.instances[iid]
        execution = int(row["execution_id"])
        scheduled = {e["corr_id"] for e in events if e["kind"] == "ActivityScheduled"}
        want = activities_per_execution(row["name"], row["input"]) if row["name"] in SHAPE_OF else None
        if want is not None and len(scheduled) != want:
            result.fail(iid, f"execution {execution} scheduled {len(scheduled)} activities, expected {want}")
        for corr in sorted(scheduled):
            if (iid, execution, corr) not in by_key:
                result.fail(iid, f"activity corr {corr} of execution {execution} never ran")
    # every run belongs to a scheduled activity; earlier executions (continue-as-new) ran theirs
    earlier: dict[tuple[str, int], set[int]] = defaultdict(set)
    for iid, execution, corr in by_key:
        found = snapshot.instances.get(iid)
        if found is None:
            result.fail(iid, f"activity corr {corr} ran for an instance that does not exist")
            continue
        row = found
        if execution == row["execution_id"]:
            scheduled = {
                e["corr_id"] for e in snapshot.histories.get(iid, []) if e["kind"] == "ActivityScheduled"
            }
            if corr not in scheduled:
                result.fail(iid, f"activity corr {corr} ran but history does not schedule it")
        elif execution > row["execution_id"]:
            result.fail(iid, f"activity ran for execution {execution}, beyond the current one")
        else:
            earlier[(iid, execution)].add(corr)
    for iid, row in snapshot.instances.items():
        for execution in range(1, int(row["execution_id"])):
            got = earlier.get((iid, execution), set())
            if len(got) != 1:  # the only shape that continues as new runs one activity a generation
                result.fail(iid, f"execution {execution} ran activities {sorted(got)}, expected one")

    for key, group in by_key.items():
        group.sort(key=lambda r: r.at)
        for first, again in itertools.pairwise(group):
            cause = faults.cause_between(first.pid, first.at, again.at)
            result.duplicates[cause or "unexplained"] += 1
            if cause is None:
                result.fail(
                    key[0],
                    f"activity corr {key[2]} of execution {key[1]} ran again at {again.at:.3f} "
                    f"(pid {again.pid}, attempt {again.attempt}) after a run at {first.at:.3f} "
                    f"(pid {first.pid}, attempt {first.attempt}) with no fault in between",
                )


def _check_leftovers(snapshot: Snapshot, result: CheckResult) -> None:
    for row in snapshot.orchestrator_queue:
        result.fail(row["instance_id"], f"message left in the orchestrator queue: {row['payload']}")
    for row in snapshot.activity_queue:
        result.fail(row["instance_id"], f"task left in the activity queue: {row['payload']}")
    for row in snapshot.locks:
        result.fail(row["instance_id"], f"lock left behind (held: {row['held']})")


# --- showing --------------------------------------------------------------------------------------


def describe_instance(instance_id: str, snapshot: Snapshot, runs: list[ActivityRun]) -> str:
    """Everything about one instance: its row, history, queued messages and tasks, lock, runs."""
    row = snapshot.instances.get(instance_id)
    lines = [f"=== {instance_id}"]
    if row is None:
        lines.append("  (no instance row)")
    else:
        lines.append(
            f"  {row['name']} status={row['status']} execution={row['execution_id']} "
            f"input={json.dumps(row['input'])} output={json.dumps(row['output'])} error={row['error']}"
        )
    lines.append("  history (current execution):")
    for e in snapshot.histories.get(instance_id, []):
        lines.append("    " + json.dumps(e, sort_keys=True))
    queued = [m for m in snapshot.orchestrator_queue if m["instance_id"] == instance_id]
    lines.append(f"  orchestrator queue ({len(queued)}):")
    for m in queued:
        lines.append(
            f"    id={m['id']} visible_at={m['visible_at']} hidden={m['hidden']} "
            f"lock={m['lock_token']} deliveries={m['delivery_count']} {json.dumps(m['payload'])}"
        )
    tasks = [t for t in snapshot.activity_queue if t["instance_id"] == instance_id]
    lines.append(f"  activity queue ({len(tasks)}):")
    for t in tasks:
        lines.append(
            f"    id={t['id']} visible_at={t['visible_at']} lock={t['lock_token']} {json.dumps(t['payload'])}"
        )
    for lock in snapshot.locks:
        if lock["instance_id"] == instance_id:
            lines.append(f"  lock: {lock['lock_token']} until {lock['locked_until']} (held: {lock['held']})")
    mine = sorted((r for r in runs if r.instance_id == instance_id), key=lambda r: r.at)
    lines.append(f"  activity runs ({len(mine)}):")
    for r in mine:
        lines.append(
            f"    exec={r.execution_id} corr={r.corr_id} attempt={r.attempt} pid={r.pid} at={r.at:.3f}"
        )
    return "\n".join(lines)
