"""Crash safety of the engine on PostgreSQL, proven with real OS processes.

Each runtime runs in its own process (``crash_worker.py``); the tests SIGKILL them in the
middle of an activity or of an orchestration turn and check, from the engine's tables, that
peek-lock expiry hands the work to another process, that activities run at least once (and
exactly once when nothing crashes), and that every turn is applied exactly once: no duplicated
or missing history event ids, no completion recorded twice. SIGTERM must shut a process down
promptly and hand its running activities straight back.

Only client processes are killed; the session's PostgreSQL server (which runs with
``fsync=off``) survives every test.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from durable_engine import (
    ActivityContext,
    Client,
    EventKind,
    InMemoryProvider,
    OrchestrationContext,
    Registry,
    Runtime,
    RuntimeOptions,
    RuntimeStatus,
)
from durable_engine.postgres import PostgresProvider

from .crash_worker import EFFECTS_DDL

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: generous: the machine is shared and noisy; the happy path takes a fraction of these
START_DEADLINE = 60.0
STEP_DEADLINE = 60.0
LOAD_DEADLINE = 150.0


# --- worker processes ------------------------------------------------------------------------


class WorkerProcess:
    """One ``crash_worker`` process; its stdout and stderr go to a log file (no pipe to fill)."""

    def __init__(self, name: str, dsn: str, log_dir: Path, args: list[str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.engine.crash_worker",
                    "--dsn",
                    dsn,
                    "--parent-pid",
                    str(os.getpid()),
                    *args,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if not self.killed and self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}")

    async def ready(self, timeout: float = START_DEADLINE) -> None:
        await eventually(lambda: _ready(self), timeout, f"worker {self.name} ready", [self])

    def freeze(self) -> None:
        """SIGSTOP: the whole process stops, like a host frozen by a long pause or a VM snapshot."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def sigkill(self) -> None:
        """SIGKILL: no cleanup at all, exactly like a crashed host."""
        self.killed = True
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    async def sigterm(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        self.killed = True
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} ignored SIGTERM for {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _ready(worker: WorkerProcess) -> bool:
    return f"READY {worker.pid}" in worker.log()


Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def spawn(pg_dsn: str, pg_tmp_dir: Path) -> Iterator[Spawn]:
    """Start worker processes; every one still running is killed when the test ends."""
    workers: list[WorkerProcess] = []

    def _spawn(name: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(name, pg_dsn, pg_tmp_dir, list(args))
        workers.append(worker)
        return worker

    try:
        yield _spawn
    finally:
        for worker in workers:
            worker.reap()


# --- database helpers --------------------------------------------------------------------------


@pytest.fixture
async def client(pg_dsn: str) -> AsyncIterator[Client]:
    """A client in the test process (this also creates the engine schema)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)
    provider = await PostgresProvider.connect(pg_dsn, max_pool=4)
    try:
        yield Client(provider)
    finally:
        await provider.close()


async def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def effects(dsn: str, instance_id: str) -> list[tuple[int, int, int]]:
    """(corr_id, attempt, pid) of every recorded activity side effect of an instance."""
    rows = await query(
        dsn,
        "SELECT corr_id, attempt, pid FROM crash_effects WHERE instance_id = %s ORDER BY corr_id, attempt",
        (instance_id,),
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    timeout: float,
    what: str,
    workers: Sequence[WorkerProcess] = (),
) -> T:
    """Poll ``probe`` (sync or async) until it returns something truthy; fail early if a worker died."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name}\n{w.log()}" for w in workers)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        await asyncio.sleep(0.05)


def history_problems(instance_id: str, events: list[dict[str, Any]]) -> list[str]:
    """Everything that would betray a turn applied twice (or partly) in one execution's history."""
    problems: list[str] = []
    ids = [e["event_id"] for e in events]
    if ids != list(range(1, len(ids) + 1)):
        problems.append(f"event ids are not 1..n: {ids}")
    kinds = Counter(e["kind"] for e in events)
    for kind in (EventKind.ORCHESTRATION_STARTED, EventKind.ORCHESTRATION_COMPLETED):
        if kinds[kind] != 1:
            problems.append(f"{kinds[kind]} {kind} events")
    if events and events[-1]["kind"] != EventKind.ORCHESTRATION_COMPLETED:
        problems.append(f"last event is {events[-1]['kind']}")
    for scheduled, completed in (
        (EventKind.ACTIVITY_SCHEDULED, EventKind.ACTIVITY_COMPLETED),
        (EventKind.TIMER_CREATED, EventKind.TIMER_FIRED),
    ):
        made = [e["corr_id"] for e in events if e["kind"] == scheduled]
        done = [e["corr_id"] for e in events if e["kind"] == completed]
        if len(set(made)) != len(made) or len(set(done)) != len(done) or set(made) != set(done):
            problems.append(f"{scheduled} corr ids {made} vs {completed} corr ids {done}")
    for current, following in zip(events, [*events[1:], None], strict=True):
        # a turn always records what it consumed: a lone TurnStarted means a half-applied turn
        if current["kind"] == EventKind.TURN_STARTED and (
            following is None or following["kind"] == EventKind.TURN_STARTED
        ):
            problems.append(f"empty turn at event {current['event_id']}")
    return [f"{instance_id}: {p}" for p in problems]


async def all_histories(dsn: str) -> dict[str, list[dict[str, Any]]]:
    rows = await query(dsn, "SELECT instance_id, event FROM durable.history ORDER BY instance_id, event_id")
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for instance_id, event in rows:
        out[instance_id].append(event)
    return out


# --- (a) a worker dies during an activity ------------------------------------------------------


async def test_activity_is_redelivered_after_its_worker_is_killed(
    pg_dsn: str, client: Client, spawn: Spawn
) -> None:
    first = spawn("first", "--hang-activities", "--activity-lock-timeout", "3")
    await first.ready()
    await client.start_orchestration("act-crash", "OneActivity", 21)
    await eventually(lambda: effects(pg_dsn, "act-crash"), STEP_DEADLINE, "attempt 1 to start", [first])

    second = spawn("second", "--activity-lock-timeout", "1")
    await second.ready()
    # while the first worker lives it renews the lock (every second): nobody takes the activity,
    # even well past the 3 s lock it fetched with
    await asyncio.sleep(4.5)
    assert await effects(pg_dsn, "act-crash") == [(1, 1, first.pid)]
    assert (await client.get_status("act-crash")).status == RuntimeStatus.RUNNING  # type: ignore[union-attr]

    first.sigkill()
    status = await client.wait_for_completion("act-crash", STEP_DEADLINE)

    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == {"value": 42, "attempt": 2, "pid": second.pid}
    assert await effects(pg_dsn, "act-crash") == [(1, 1, first.pid), (1, 2, second.pid)]
    history = [e.to_dict() for e in await client.get_history("act-crash")]
    assert history_problems("act-crash", history) == []
    kinds = Counter(e["kind"] for e in history)
    assert kinds[EventKind.ORCHESTRATION_COMPLETED] == 1
    assert kinds[EventKind.ACTIVITY_SCHEDULED] == kinds[EventKind.ACTIVITY_COMPLETED] == 1
    assert history[-1]["data"] == status.output

    assert await second.sigterm() == 0
    assert "STOPPED" in second.log()


# --- (b) a dispatcher dies in the middle of a turn ----------------------------------------------


async def test_turn_of_a_killed_dispatcher_is_redone_exactly_once(
    pg_dsn: str, client: Client, spawn: Spawn, pg_tmp_dir: Path
) -> None:
    block_dir = pg_tmp_dir / "turn"
    block_dir.mkdir()
    first = spawn("first", "--block-turn-dir", str(block_dir), "--lock-timeout", "1")
    await first.ready()
    await client.start_orchestration("turn-crash", "BlockingTurn", 7)
    await eventually((block_dir / "blocked").exists, STEP_DEADLINE, "the turn to block", [first])

    # mid-turn: the first worker holds the instance, and nothing of its turn is visible
    await _assert_turn_uncommitted(pg_dsn, "turn-crash")
    first.sigkill()
    killed_at = datetime.now(UTC)
    await _assert_turn_uncommitted(pg_dsn, "turn-crash")

    second = spawn("second", "--lock-timeout", "1")
    await second.ready()
    status = await client.wait_for_completion("turn-crash", STEP_DEADLINE)

    assert status.status == RuntimeStatus.COMPLETED, status.error
    # the activity ran once: the killed turn never enqueued it. The redone turn runs it inline,
    # and an inline activity's attempt is the delivery count of the turn that scheduled it
    # (here 2: the start message was delivered to the killed dispatcher first)
    assert status.output == {"value": 7, "attempt": 2, "pid": second.pid}
    assert await effects(pg_dsn, "turn-crash") == [(1, 2, second.pid)]
    history = [e.to_dict() for e in await client.get_history("turn-crash")]
    assert history_problems("turn-crash", history) == []
    assert [e["corr_id"] for e in history if e["kind"] == EventKind.ACTIVITY_SCHEDULED] == [1]
    # every turn in history was planned after the kill: no row comes from the killed turn
    turn_times = [
        datetime.fromisoformat(e["timestamp"]) for e in history if e["kind"] == EventKind.TURN_STARTED
    ]
    assert turn_times and all(t >= killed_at for t in turn_times), (turn_times, killed_at)

    assert await second.sigterm() == 0


async def test_late_commit_of_a_stalled_dispatcher_is_rejected(
    pg_dsn: str, client: Client, spawn: Spawn, pg_tmp_dir: Path
) -> None:
    """A dispatcher that outlives its lock (a long GC pause, a frozen VM) must not apply its turn."""
    block_dir = pg_tmp_dir / "turn"
    block_dir.mkdir()
    stalled = spawn("stalled", "--block-turn-dir", str(block_dir), "--lock-timeout", "1")
    await stalled.ready()
    await client.start_orchestration("turn-stall", "BlockingTurn", 5)
    await eventually((block_dir / "blocked").exists, STEP_DEADLINE, "the turn to block", [stalled])
    # the whole process stalls mid-turn (a blocked turn alone would not do: the process keeps
    # renewing the instance lock of a turn that runs long)
    stalled.freeze()

    other = spawn("other", "--lock-timeout", "1")
    await other.ready()
    status = await client.wait_for_completion("turn-stall", STEP_DEADLINE)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    # redone inline by "other": the start message's second delivery, so attempt 2
    assert status.output == {"value": 5, "attempt": 2, "pid": other.pid}
    before = [e.to_dict() for e in await client.get_history("turn-stall")]

    (block_dir / "release").write_text("go")
    stalled.thaw()
    await eventually(
        lambda: "lost the lock on turn-stall" in stalled.log(),
        STEP_DEADLINE,
        "the stalled commit to be rejected",
        [stalled, other],
    )
    after = [e.to_dict() for e in await client.get_history("turn-stall")]
    assert after == before
    assert history_problems("turn-stall", after) == []
    # the stalled dispatcher ran nothing inline past its lock: the only run is "other"'s
    assert await effects(pg_dsn, "turn-stall") == [(1, 2, other.pid)]
    assert await query(pg_dsn, "SELECT count(*) FROM durable.activity_queue") == [(0,)]
    assert await query(pg_dsn, "SELECT count(*) FROM durable.orchestrator_queue") == [(0,)]

    assert await stalled.sigterm() == 0
    assert await other.sigterm() == 0


async def _assert_turn_uncommitted(dsn: str, iid: str) -> None:
    assert await query(dsn, "SELECT count(*) FROM durable.history WHERE instance_id = %s", (iid,)) == [(0,)]
    assert await query(dsn, "SELECT count(*) FROM durable.activity_queue WHERE instance_id = %s", (iid,)) == [
        (0,)
    ]
    assert await query(dsn, "SELECT status FROM durable.instances WHERE instance_id = %s", (iid,)) == [
        ("Pending",)
    ]
    # the Start message is still queued, fetched once, waiting for the lock to expire
    assert await query(
        dsn, "SELECT delivery_count FROM durable.orchestrator_queue WHERE instance_id = %s", (iid,)
    ) == [(1,)]
    assert await effects(dsn, iid) == []


# --- (c) three runtimes, three processes, one database -----------------------------------------

LOAD_INSTANCES = 300
ACTIVITIES_PER_INSTANCE = 4


def _expected_output(i: int) -> dict[str, Any]:
    a = i + 1
    b = a * 2
    return {"i": i, "a": a, "b": b, "fan": [b * b, -b]}


async def _start_pipelines(client: Client) -> list[str]:
    ids = [f"load-{i:03d}" for i in range(LOAD_INSTANCES)]
    created = await asyncio.gather(
        *(client.start_orchestration(iid, "Pipeline", i) for i, iid in enumerate(ids))
    )
    assert all(created)
    return ids


async def _finished(dsn: str) -> int:
    rows = await query(
        dsn, "SELECT count(*) FROM durable.instances WHERE status <> ALL(%s)", (["Pending", "Running"],)
    )
    return int(rows[0][0])


async def _check_all_completed_once(dsn: str, ids: list[str]) -> list[tuple[str, int, int, int]]:
    """Outputs and histories of every instance; returns the effect rows for further checks."""
    rows = await query(dsn, "SELECT instance_id, status, output, error FROM durable.instances")
    by_id = {r[0]: r for r in rows}
    wrong = [
        (iid, by_id[iid][1], by_id[iid][3])
        for i, iid in enumerate(ids)
        if by_id[iid][1] != "Completed" or by_id[iid][2] != _expected_output(i)
    ]
    assert wrong == [], wrong[:5]

    histories = await all_histories(dsn)
    problems = [p for iid in ids for p in history_problems(iid, histories[iid])]
    assert problems == [], problems[:10]

    effect_rows = await query(dsn, "SELECT instance_id, corr_id, attempt, pid FROM crash_effects")
    recorded: dict[str, set[int]] = defaultdict(set)
    for iid, corr, _, _ in effect_rows:
        recorded[iid].add(corr)
    for iid in ids:
        scheduled = {e["corr_id"] for e in histories[iid] if e["kind"] == EventKind.ACTIVITY_SCHEDULED}
        assert len(scheduled) == ACTIVITIES_PER_INSTANCE
        assert recorded[iid] == scheduled, (iid, recorded[iid], scheduled)
    return [(r[0], r[1], r[2], r[3]) for r in effect_rows]


async def test_three_processes_run_300_orchestrations_exactly_once(
    pg_dsn: str, client: Client, spawn: Spawn
) -> None:
    # locks far longer than any turn or activity here: nothing may be redelivered
    lock_args = ("--lock-timeout", "20", "--activity-lock-timeout", "20")
    workers = [spawn(f"w{n}", *lock_args) for n in range(3)]
    for worker in workers:
        await worker.ready()
    ids = await _start_pipelines(client)
    await eventually(
        lambda: _finished_all(pg_dsn), LOAD_DEADLINE, f"{LOAD_INSTANCES} instances to finish", workers
    )

    effect_rows = await _check_all_completed_once(pg_dsn, ids)
    # no crash, so at-least-once is exactly once: one first-delivery effect per activity
    assert len(effect_rows) == LOAD_INSTANCES * ACTIVITIES_PER_INSTANCE
    assert {attempt for _, _, attempt, _ in effect_rows} == {1}
    pids = Counter(pid for *_, pid in effect_rows)
    assert set(pids) <= {w.pid for w in workers}
    assert len(pids) >= 2, pids  # the work really was shared between processes

    for worker in workers:
        assert await worker.sigterm() == 0, worker.log()
        assert "STOPPED" in worker.log()


async def _finished_all(dsn: str) -> bool:
    return await _finished(dsn) >= LOAD_INSTANCES


async def test_300_orchestrations_survive_killing_one_of_three_processes(
    pg_dsn: str, client: Client, spawn: Spawn
) -> None:
    lock_args = ("--lock-timeout", "2", "--activity-lock-timeout", "2")
    # the victim works normally for a while, then its activity slots fill with activities that
    # recorded their effect and never finish: when it dies, those are in flight for sure
    victim = spawn("victim", *lock_args, "--hang-after", "60")
    survivors = [spawn(f"w{n}", *lock_args) for n in range(2)]
    workers = [victim, *survivors]
    for worker in workers:
        await worker.ready()
    ids = await _start_pipelines(client)

    async def half_done_and_victim_stuck() -> bool:
        victim_runs = await query(pg_dsn, "SELECT count(*) FROM crash_effects WHERE pid = %s", (victim.pid,))
        return victim_runs[0][0] > 60 and await _finished(pg_dsn) >= LOAD_INSTANCES // 2

    await eventually(half_done_and_victim_stuck, LOAD_DEADLINE, "half of the instances to finish", workers)
    victim.sigkill()
    await eventually(
        lambda: _finished_all(pg_dsn), LOAD_DEADLINE, f"{LOAD_INSTANCES} instances to finish", survivors
    )

    effect_rows = await _check_all_completed_once(pg_dsn, ids)
    runs: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for iid, corr, attempt, pid in effect_rows:
        runs[(iid, corr)].append((attempt, pid))
    victim_runs = sum(1 for *_, pid in effect_rows if pid == victim.pid)
    assert victim_runs > 60, victim_runs  # it took part, then got stuck
    repeated = {key: sorted(r) for key, r in runs.items() if len(r) > 1}
    # what ran again elsewhere is what the victim had in flight, and only that: activities stuck
    # in its worker loop or inline (each capped by its activity concurrency, 8), plus inline
    # results of dispatches it had not committed yet (at most 4 dispatches x 4 activities)
    assert 1 <= len(repeated) <= 8 + 8 + 4 * 4, repeated
    for key, attempts in repeated.items():
        # run once by the victim, then once more by a survivor after the lock expired
        (first, first_pid), (second, second_pid) = attempts
        assert (first, second) == (1, 2) and first_pid == victim.pid, (key, attempts)
        assert second_pid in {w.pid for w in survivors}, (key, attempts)
    # an activity runs again only because its worker died
    assert all(len(r) == 1 for key, r in runs.items() if key not in repeated)

    for worker in survivors:
        assert await worker.sigterm() == 0, worker.log()


def test_history_checker_catches_duplicated_and_missing_turns() -> None:
    """The checker the load tests rely on must see the damage a twice-applied turn would do."""
    good = [
        {"event_id": 1, "kind": "TurnStarted"},
        {"event_id": 2, "kind": "OrchestrationStarted"},
        {"event_id": 3, "kind": "ActivityScheduled", "corr_id": 1},
        {"event_id": 4, "kind": "TurnStarted"},
        {"event_id": 5, "kind": "ActivityCompleted", "corr_id": 1},
        {"event_id": 6, "kind": "OrchestrationCompleted"},
    ]
    assert history_problems("x", good) == []
    twice = [*good[:5], {"event_id": 6, "kind": "TurnStarted"}, {**good[4], "event_id": 7}, good[5]]
    twice[-1] = {**twice[-1], "event_id": 8}
    assert history_problems("x", twice)
    assert history_problems("x", [good[0], *good[2:]])  # a gap in the ids
    assert history_problems("x", [*good[:3], good[3], {**good[3], "event_id": 5}])  # empty turn
    assert history_problems("x", [*good[:5]])  # never completed


# --- graceful shutdown ---------------------------------------------------------------------------


@pytest.mark.parametrize("orchestration", ["OneActivity", "BlockingActivity"])
async def test_sigterm_abandons_running_activity(
    pg_dsn: str, client: Client, spawn: Spawn, orchestration: str
) -> None:
    """SIGTERM mid-activity: the process exits promptly and hands the activity straight back.

    The lock is long (60 s), so redelivery before it expires proves the shutdown released it.
    """
    lock_args = ("--activity-lock-timeout", "60", "--shutdown-grace", "0.5")
    first = spawn("first", "--hang-activities", *lock_args)
    await first.ready()
    await client.start_orchestration("term", orchestration, 4)
    await eventually(lambda: effects(pg_dsn, "term"), STEP_DEADLINE, "attempt 1 to start", [first])

    assert await first.sigterm(timeout=20) == 0, first.log()
    assert "STOPPED" in first.log()
    second = spawn("second", *lock_args)
    await second.ready()
    status = await client.wait_for_completion("term", 30)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output["attempt"] == 2
    assert await second.sigterm() == 0


async def test_restarted_runtime_still_runs_sync_activities() -> None:
    """Regression: ``shutdown`` used to shut the sync-activity thread pool for good, so a runtime
    started again failed every sync activity with "cannot schedule new futures after shutdown"."""
    registry = Registry()

    @registry.activity("Inc")
    def inc(ctx: ActivityContext, x: int) -> int:
        return x + 1

    @registry.orchestration("Once")
    async def once(ctx: OrchestrationContext, x: int) -> int:
        result: int = await ctx.schedule_activity("Inc", x)
        return result

    provider = InMemoryProvider()
    runtime = Runtime(provider, registry, RuntimeOptions(idle_wait=0.1))
    await runtime.start()
    await runtime.shutdown()
    await runtime.start()
    try:
        await Client(provider).start_orchestration("again", "Once", 1)
        status = await Client(provider).wait_for_completion("again", 30)
    finally:
        await runtime.shutdown()
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == 2
