"""The chaos suite: the engine under SIGKILLs, PostgreSQL restarts and cut connections.

```
python -m bench.chaos              # full: 1,000 orchestrations, 3 processes, SIGKILL every ~0.5 s
                                   # for 60 s, two immediate PostgreSQL restarts, four cuts
python -m bench.chaos --ci         # CI-sized: 200 orchestrations, ~20 kills, one restart, two cuts
python -m bench.chaos --ci --repeat 5     # hunt rare faults: five runs, a fresh database each
```

One embedded PostgreSQL; ``--workers`` runtime processes (``chaos_worker.py``) reach it only
through a TCP proxy the driver controls (``chaos_proxy.py``); the driver's own client connects
directly. The driver starts the planned orchestrations (``chaos_app.py``: activity chains,
fan-out/fan-in, durable timers, external events, sub-orchestrations, continue-as-new loops,
retried failing activities) spread over the fault period, raises their events right after the
start or a little later, and meanwhile:

- SIGKILLs a random runtime process every ``--kill-interval`` seconds (±40 %) and starts a new one;
- restarts PostgreSQL with an immediate shutdown (a crash: unlogged tables are emptied,
  unflushed asynchronous commits lost) ``--pg-restarts`` times. Right before each, it starts a
  burst of event-waiting instances, and raises their events while the server is down: each
  raise is retried until it lands, right after the server is back;
- cuts the runtimes' connections ``--cuts`` times, in turn: drops them all; black-holes them for
  ``--blackhole-seconds`` and heals; black-holes them and then drops them.

When the fault period is over it heals everything, waits until the work drains, stops the
processes and checks the database and the activity run logs (``chaos_check.py``: outputs,
histories, activity runs and their duplicates, leftovers). It prints a report table, and for
any instance that is not right its row, history, queued messages and activity runs. Exit status
1 if anything is wrong.

PostgreSQL runs with ``fsync=off``: an immediate shutdown kills the server, not the machine, so
the operating system keeps every write and fsync changes nothing here; ``synchronous_commit``
keeps its default (on), so a commit the engine was told about survives the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.chaos_app import EVENT_SHAPES, SHAPES, InstancePlan, plan_instance
from bench.chaos_check import CheckResult, FaultLog, check, describe_instance, read_runs, read_snapshot
from bench.chaos_proxy import ChaosProxy
from durable_engine import Client
from durable_engine.postgres import PostgresProvider
from toygres.pgserver import EmbeddedPostgres, dsn_for_database

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "300"}
CUT_KINDS = ("drop", "blackhole-heal", "blackhole-drop")
T = TypeVar("T")
Out = Callable[[str], None]


@dataclass
class ChaosConfig:
    instances: int = 1000
    workers: int = 3
    #: how long the faults go on; starts are spread over the first 80 % of it
    fault_seconds: float = 60.0
    kill_interval: float = 0.5
    pg_restarts: int = 2
    cuts: int = 4
    blackhole_seconds: float = 3.0
    #: event-waiting instances started right before each restart, their events raised during it
    restart_burst: int = 20
    lock_timeout: float = 4.0
    activity_lock_timeout: float = 4.0
    drain_timeout: float = 300.0
    repeat: int = 1
    seed: int | None = None

    @classmethod
    def ci(cls) -> ChaosConfig:
        return cls(
            instances=200,
            fault_seconds=10.0,
            pg_restarts=1,
            cuts=3,
            blackhole_seconds=2.0,
            restart_burst=10,
            drain_timeout=90.0,
        )


@dataclass
class RunReport:
    run: int
    seed: int
    planned: int = 0
    sub_orchestrations: int = 0
    completed: int = 0
    kills: int = 0
    restarts: int = 0
    cuts: Counter[str] = field(default_factory=Counter)
    events_raised: int = 0
    client_retries: int = 0
    #: messages a crash left hidden under erased locks (the setting of the lost-event bug)
    orphaned_messages: int = 0
    activities: int = 0
    activity_runs: int = 0
    duplicates: Counter[str] = field(default_factory=Counter)
    fault_seconds: float = 0.0
    drain_seconds: float | None = None
    total_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    details: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and self.drain_seconds is not None


# --- worker processes ---------------------------------------------------------------------------


class WorkerSlot:
    """One of the runtime processes; a killed one is replaced by a new incarnation."""

    def __init__(self, index: int, dsn: str, run_dir: Path, config: ChaosConfig) -> None:
        self.index = index
        self.dsn = dsn
        self.run_dir = run_dir
        self.config = config
        self.incarnation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = run_dir / "none.log"

    def spawn(self) -> None:
        self.incarnation += 1
        self.log_path = self.run_dir / f"worker-{self.index}-{self.incarnation}.log"
        args = [
            sys.executable,
            "-m",
            "bench.chaos_worker",
            "--dsn",
            self.dsn,
            "--run-dir",
            str(self.run_dir),
            "--parent-pid",
            str(os.getpid()),
            "--lock-timeout",
            str(self.config.lock_timeout),
            "--activity-lock-timeout",
            str(self.config.activity_lock_timeout),
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ready(self) -> bool:
        return self.proc is not None and f"READY {self.proc.pid}" in self.log_path.read_text(errors="replace")

    async def sigkill(self) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 30)
        return pid

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            await self.sigkill()


# --- one run ---------------------------------------------------------------------------------------


class ChaosRun:
    def __init__(
        self,
        config: ChaosConfig,
        server: EmbeddedPostgres,
        dsn: str,
        run_dir: Path,
        run: int,
        seed: int,
        out: Out,
    ) -> None:
        self.config = config
        self.server = server
        self.dsn = dsn
        self.run_dir = run_dir
        self.rng = random.Random(seed)
        self.out = out
        self.report = RunReport(run=run, seed=seed)
        self.faults = FaultLog()
        self.plans: list[InstancePlan] = []
        self.client: Client | None = None
        self.proxy: ChaosProxy | None = None
        self.workers: list[WorkerSlot] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._t0 = time.monotonic()

    def log(self, message: str) -> None:
        self.out(f"[run {self.report.run} {time.monotonic() - self._t0:7.2f}s] {message}")

    async def execute(self) -> RunReport:
        started = time.monotonic()
        provider = await PostgresProvider.connect(self.dsn, max_pool=10)
        self.client = Client(provider)
        self.proxy = ChaosProxy("127.0.0.1", self.server.port)
        await self.proxy.start()
        worker_dsn = make_conninfo(self.dsn, host="127.0.0.1", port=str(self.proxy.port))
        self.workers = [
            WorkerSlot(i, worker_dsn, self.run_dir, self.config) for i in range(self.config.workers)
        ]
        try:
            for worker in self.workers:
                worker.spawn()
            await self._until(lambda: all(w.ready() for w in self.workers), 60, "the workers to start")
            self.log(f"{len(self.workers)} workers ready; faults for {self.config.fault_seconds:.0f} s")
            fault_start = time.monotonic()
            await asyncio.gather(self._load(), self._kill_loop(), self._disruptions())
            self.report.fault_seconds = time.monotonic() - fault_start
            self.proxy.heal()
            for worker in self.workers:
                if worker.proc is not None and worker.proc.poll() is not None:
                    worker.spawn()
            await self._settle_background()
            self.log(f"faults over (kills {self.report.kills}, restarts {self.report.restarts}); draining")
            drain_start = time.monotonic()
            if await self._drained_within(self.config.drain_timeout):
                self.report.drain_seconds = time.monotonic() - drain_start
                self.log(f"drained in {self.report.drain_seconds:.1f} s")
            else:
                self.log(f"NOT drained after {self.config.drain_timeout:.0f} s")
        finally:
            await asyncio.gather(*(w.stop() for w in self.workers))
            await self.proxy.close()
            await provider.close()
        self._check()
        self.report.total_seconds = time.monotonic() - started
        return self.report

    # --- load ------------------------------------------------------------------------------------
    async def _load(self) -> None:
        n = self.config.instances - self.config.restart_burst * self.config.pg_restarts
        window = self.config.fault_seconds * 0.8
        shapes = [SHAPES[i % len(SHAPES)] for i in range(max(n, 0))]
        self.rng.shuffle(shapes)
        begin = time.monotonic()
        for i, shape in enumerate(shapes):
            due = begin + window * i / max(len(shapes), 1)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            plan = plan_instance(f"r{self.report.run}-{shape}-{i:04d}", shape, i, self.rng)
            mode = self.rng.choice(("immediate", "later")) if shape in EVENT_SHAPES else None
            self._spawn(self._start(plan, mode))

    async def _start(self, plan: InstancePlan, event_mode: str | None) -> None:
        assert self.client is not None
        client = self.client
        self.plans.append(plan)

        async def attempt(tries: int) -> bool:
            return await client.start_orchestration(plan.instance_id, plan.orchestration, plan.input)

        created = await self._retrying(attempt)
        if not created[0] and created[1] == 1:
            self.report.problems.append(f"{plan.instance_id}: the id already existed")
        if event_mode == "immediate":
            await self._raise(plan)
        elif event_mode == "later":
            await asyncio.sleep(self.rng.uniform(0.05, 3.0))
            await self._raise(plan)

    async def _raise(self, plan: InstancePlan) -> None:
        assert self.client is not None and plan.event_value is not None
        client = self.client
        token = uuid.uuid4().hex[:12]

        async def attempt(tries: int) -> None:
            data = {"value": plan.event_value, "token": token, "try": tries}
            await client.raise_event(plan.instance_id, "go", data)

        await self._retrying(attempt)
        self.report.events_raised += 1

    async def _retrying(self, call: Callable[[int], Awaitable[T]]) -> tuple[T, int]:
        """``call(tries)`` until it succeeds: the database may be restarting (the client is direct)."""
        deadline = time.monotonic() + 120
        tries = 0
        while True:
            tries += 1
            try:
                return await call(tries), tries
            except Exception:
                if time.monotonic() > deadline:
                    raise
                self.report.client_retries += 1
                await asyncio.sleep(0.1)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle_background(self) -> None:
        while self._background:
            done = await asyncio.gather(*list(self._background), return_exceptions=True)
            for outcome in done:
                if isinstance(outcome, BaseException):
                    self.report.problems.append(f"the driver's client failed: {outcome!r}")

    # --- faults ---------------------------------------------------------------------------------
    async def _kill_loop(self) -> None:
        end = time.monotonic() + self.config.fault_seconds
        while True:
            await asyncio.sleep(self.config.kill_interval * self.rng.uniform(0.6, 1.4))
            if time.monotonic() >= end or self.config.kill_interval <= 0:
                return
            worker = self.rng.choice(self.workers)
            pid = await worker.sigkill()
            self.faults.kills.append((time.time(), pid))
            self.report.kills += 1
            worker.spawn()

    async def _disruptions(self) -> None:
        """PostgreSQL restarts and connection cuts, spread over the fault period, one at a time."""
        cfg = self.config
        plan = [((k + 1) / (cfg.pg_restarts + 1), "restart") for k in range(cfg.pg_restarts)]
        plan += [((k + 0.5) / max(cfg.cuts, 1), CUT_KINDS[k % len(CUT_KINDS)]) for k in range(cfg.cuts)]
        begin = time.monotonic()
        for fraction, kind in sorted(plan):
            await asyncio.sleep(max(0.0, begin + fraction * cfg.fault_seconds - time.monotonic()))
            if kind == "restart":
                await self._restart_postgres()
            else:
                await self._cut(kind)
        await asyncio.sleep(max(0.0, begin + cfg.fault_seconds - time.monotonic()))

    async def _restart_postgres(self) -> None:
        burst = []
        for k in range(self.config.restart_burst):
            shape = ("event_first", "event")[k % 2]
            n = 10_000 + self.report.restarts * 1000 + k
            iid = f"r{self.report.run}-restart{self.report.restarts}-{shape}-{k:03d}"
            # "event" instances are mid-turn at the crash (a slow first activity, run inline)
            plan = plan_instance(iid, shape, n, self.rng, slow=1.0)
            burst.append(plan)
            self._spawn(self._start(plan, None))
        # let dispatchers fetch the burst's first turns (and the WAL writer flush those fetches)
        await asyncio.sleep(0.4)
        began = time.time()
        self.log(f"PostgreSQL immediate shutdown ({len(burst)} events to raise while it is down)")
        await asyncio.to_thread(self.server.stop, "immediate")
        for plan in burst:  # raised while the server is down: each lands right after it is back
            self._spawn(self._raise(plan))
        await asyncio.to_thread(self.server.start, 60)
        self.faults.restarts.append((began, time.time()))
        self.report.restarts += 1
        orphans = await self._orphans()
        self.report.orphaned_messages += max(orphans, 0)
        self.log(f"PostgreSQL is back; {orphans} messages hidden under locks lost in the crash")

    async def _orphans(self) -> int:
        """Messages still hidden by a fetch whose lock the crash erased (the setting of the lost event)."""
        query = (
            "SELECT count(*) FROM durable.orchestrator_queue q WHERE q.lock_token IS NOT NULL"
            " AND q.visible_at > now() AND NOT EXISTS"
            " (SELECT 1 FROM durable.instance_locks l WHERE l.lock_token = q.lock_token)"
        )
        try:
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                cur = await conn.execute(query)
                row = await cur.fetchone()
                return int(row[0]) if row else 0
        except psycopg.Error:
            return -1

    async def _cut(self, kind: str) -> None:
        assert self.proxy is not None
        began = time.time()
        if kind == "drop":
            dropped = self.proxy.drop()
            self.log(f"cut: dropped {dropped} connections")
        else:
            self.proxy.blackhole()
            self.log(f"cut: black hole for {self.config.blackhole_seconds:.1f} s, then {kind.split('-')[1]}")
            await asyncio.sleep(self.config.blackhole_seconds)
            if kind == "blackhole-drop":
                self.proxy.drop()
            self.proxy.heal()
        self.faults.cuts.append((kind, began, time.time()))
        self.report.cuts[kind] += 1

    # --- drain and check --------------------------------------------------------------------------
    async def _drained_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        query = (
            "SELECT (SELECT count(*) FROM durable.instances WHERE status IN ('Pending', 'Running'))"
            " + (SELECT count(*) FROM durable.orchestrator_queue)"
            " + (SELECT count(*) FROM durable.activity_queue)"
            " + (SELECT count(*) FROM durable.instance_locks)"
        )
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            while True:
                cur = await conn.execute(query)
                row = await cur.fetchone()
                if row is not None and row[0] == 0:
                    return True
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.25)

    def _check(self) -> None:
        snapshot = read_snapshot(self.dsn)
        runs = read_runs(self.run_dir)
        result: CheckResult = check(self.plans, snapshot, runs, self.faults)
        planned = {p.instance_id for p in self.plans}
        report = self.report
        report.planned = len(self.plans)
        report.sub_orchestrations = len(set(snapshot.instances) - planned)
        report.completed = sum(
            1 for iid in planned if snapshot.instances.get(iid, {}).get("status") == "Completed"
        )
        report.activities = result.activities
        report.activity_runs = result.activity_runs
        report.duplicates = result.duplicates
        report.problems += result.problems
        report.details = "\n".join(
            describe_instance(iid, snapshot, runs) for iid in sorted(result.suspects)[:20]
        )

    async def _until(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {w.log_path}\n{w.log_path.read_text(errors='replace')[-2000:]}"
                    for w in self.workers
                )
                raise RuntimeError(f"timed out waiting for {what}\n{logs}")
            await asyncio.sleep(0.05)


# --- the whole thing ------------------------------------------------------------------------------


async def run_chaos(config: ChaosConfig, out: Out = print, keep: bool = False) -> list[RunReport]:
    """Start a server, do ``config.repeat`` runs (a fresh database each), return their reports."""
    base = Path(tempfile.mkdtemp(prefix="toygres-chaos-"))
    os.chmod(base, 0o755)  # the server may run as another OS user (when we are root)
    server = EmbeddedPostgres(base / "data", server_settings=SERVER_SETTINGS)
    seed = config.seed if config.seed is not None else random.randrange(1 << 30)
    reports: list[RunReport] = []
    await asyncio.to_thread(server.start, 60)
    try:
        for run in range(1, config.repeat + 1):
            dbname = f"chaos_{run}"
            with psycopg.connect(server.dsn(), autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            run_dir = base / f"run-{run}"
            run_dir.mkdir()
            chaos = ChaosRun(
                config, server, dsn_for_database(server.dsn(), dbname), run_dir, run, seed + run, out
            )
            report = await chaos.execute()
            reports.append(report)
            out(format_report([report]))
            if not report.ok:
                out("\n".join(report.problems[:50]))
                out(report.details)
                out(f"run directory kept: {run_dir}")
                keep = True
    finally:
        await asyncio.to_thread(server.stop, "immediate")
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    return reports


def format_report(reports: list[RunReport]) -> str:
    header = (
        "| run | orchestrations (+subs) | completed | kills | PG restarts (orphaned msgs) "
        "| cuts (drop/bh-heal/bh-drop) | events raised (client retries) | activities | runs "
        "| duplicate runs (kill/restart/cut/unexplained) | fault s | drain s | total s | problems |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in reports:
        cuts = "/".join(str(r.cuts[k]) for k in CUT_KINDS)
        dup = r.duplicates
        dups = f"{sum(dup.values())} ({dup['kill']}/{dup['restart']}/{dup['cut']}/{dup['unexplained']})"
        drain = f"{r.drain_seconds:.1f}" if r.drain_seconds is not None else "never"
        lines.append(
            f"| {r.run} | {r.planned} (+{r.sub_orchestrations}) | {r.completed} | {r.kills} "
            f"| {r.restarts} ({r.orphaned_messages}) "
            f"| {cuts} | {r.events_raised} ({r.client_retries}) | {r.activities} | {r.activity_runs} "
            f"| {dups} | {r.fault_seconds:.1f} | {drain} | {r.total_seconds:.1f} | {len(r.problems)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[ChaosConfig, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ci", action="store_true", help="the CI-sized configuration (the defaults below change)")
    p.add_argument("--instances", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--fault-seconds", type=float)
    p.add_argument("--kill-interval", type=float, help="seconds between SIGKILLs (0: none)")
    p.add_argument("--pg-restarts", type=int)
    p.add_argument("--cuts", type=int)
    p.add_argument("--blackhole-seconds", type=float)
    p.add_argument("--restart-burst", type=int)
    p.add_argument("--lock-timeout", type=float)
    p.add_argument("--activity-lock-timeout", type=float)
    p.add_argument("--drain-timeout", type=float)
    p.add_argument("--repeat", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--keep", action="store_true", help="keep the run directory (logs, data) even if all is well"
    )
    args = p.parse_args(argv)
    config = ChaosConfig.ci() if args.ci else ChaosConfig()
    overrides = {k: v for k, v in vars(args).items() if k not in ("ci", "keep") and v is not None}
    return replace(config, **overrides), args.keep


def main(argv: list[str] | None = None) -> int:
    config, keep = parse_args(argv)
    # the driver's client meets the faults too (a restarting server): its retries are counted,
    # its connection warnings are noise here
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("psycopg.pool", "durable_engine"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    print(f"chaos: {config}", flush=True)
    reports = asyncio.run(run_chaos(config, out=lambda s: print(s, flush=True), keep=keep))
    print("\nsummary\n" + format_report(reports), flush=True)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
