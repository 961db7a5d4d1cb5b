"""A runtime in its own OS process, for the crash-safety tests (``test_crash_safety.py``).

Run as ``python -m tests.engine.crash_worker --dsn ...``. The tests SIGKILL it mid-activity or
mid-turn, start more of it, and SIGTERM it to check graceful shutdown. It prints ``READY <pid>``
once its runtime dispatches and ``STOPPED`` after a graceful shutdown.

Activities record their side effect in ``public.crash_effects`` (created by the test), whose
unique ``(instance_id, corr_id, attempt)`` key makes a duplicated delivery visible: the second
insert fails, the activity fails and so does its orchestration.

Crash points are switched on per process, never by input, so the same instance behaves
differently in the killed process and in the one that takes over:
- ``--hang-activities``: every ``Mark``/``SyncMark`` call records its effect, then blocks.
- ``--hang-after N``: ``Compute`` calls after the first N record their effect, then block (a
  process that dies with activities in flight, while its other work went fine).
- ``--block-turn-dir DIR``: ``BlockingTurn``'s first (non-replaying) turn schedules its activity,
  writes ``DIR/blocked``, then blocks *inside the turn*, before the commit, until
  ``DIR/release`` appears (or for two minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from durable_engine import ActivityContext, OrchestrationContext, Registry, Runtime, RuntimeOptions
from durable_engine.postgres import PostgresProvider

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS public.crash_effects (
    instance_id text NOT NULL,
    corr_id     integer NOT NULL,
    attempt     integer NOT NULL,
    activity    text NOT NULL,
    pid         integer NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (instance_id, corr_id, attempt)
)
"""
_INSERT = (
    "INSERT INTO public.crash_effects (instance_id, corr_id, attempt, activity, pid)"
    " VALUES (%s, %s, %s, %s, %s)"
)
HANG_SECONDS = 3600.0
TURN_BLOCK_SECONDS = 120.0


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pool: AsyncConnectionPool[Any] | None = None
        self.registry = Registry()
        self.computed = 0
        self._register()

    # --- activities -----------------------------------------------------------------------
    async def _record(self, ctx: ActivityContext) -> None:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            await conn.execute(
                _INSERT, (ctx.instance_id, ctx.corr_id, ctx.attempt, ctx.activity_name, os.getpid())
            )

    def _register(self) -> None:
        reg = self.registry
        hang = self.args.hang_activities
        block_dir = Path(self.args.block_turn_dir) if self.args.block_turn_dir else None

        @reg.activity("Mark")
        async def mark(ctx: ActivityContext, value: Any) -> dict[str, Any]:
            """Async activity: effect first, then (in a crash-marked process) hang."""
            await self._record(ctx)
            if hang:
                await asyncio.sleep(HANG_SECONDS)
            return {"value": value, "attempt": ctx.attempt, "pid": os.getpid()}

        @reg.activity("SyncMark")
        def sync_mark(ctx: ActivityContext, value: Any) -> dict[str, Any]:
            """Sync activity (runs on the runtime's thread pool), same contract as ``Mark``."""
            with psycopg.connect(self.args.dsn, autocommit=True) as conn:
                conn.execute(
                    _INSERT, (ctx.instance_id, ctx.corr_id, ctx.attempt, ctx.activity_name, os.getpid())
                )
            if hang:
                time.sleep(HANG_SECONDS)
            return {"value": value, "attempt": ctx.attempt, "pid": os.getpid()}

        @reg.activity("Compute")
        async def compute(ctx: ActivityContext, req: dict[str, Any]) -> int:
            await self._record(ctx)
            self.computed += 1
            if self.args.hang_after is not None and self.computed > self.args.hang_after:
                await asyncio.sleep(HANG_SECONDS)
            v = int(req["v"])
            ops = {"inc": v + 1, "double": v * 2, "square": v * v, "neg": -v}
            return ops[req["op"]]

        @reg.orchestration("OneActivity")
        async def one_activity(ctx: OrchestrationContext, value: int) -> dict[str, Any]:
            out: dict[str, Any] = await ctx.schedule_activity("SyncMark", value * 2)
            return out

        @reg.orchestration("BlockingActivity")
        async def blocking_activity(ctx: OrchestrationContext, value: int) -> dict[str, Any]:
            out: dict[str, Any] = await ctx.schedule_activity("Mark", value * 2)
            return out

        @reg.orchestration("BlockingTurn")
        async def blocking_turn(ctx: OrchestrationContext, value: int) -> dict[str, Any]:
            pending = ctx.schedule_activity("Mark", value)
            if block_dir is not None and not ctx.is_replaying:
                # holds a dispatcher after running the orchestration code and before committing
                # the turn, so a test can kill it (or SIGSTOP it: a frozen host) right here; the
                # turn runs on a thread of its own, so the process's event loop is not blocked
                (block_dir / "blocked").write_text(str(os.getpid()))
                deadline = time.monotonic() + TURN_BLOCK_SECONDS
                while not (block_dir / "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)  # noqa: ASYNC251 - blocking the turn is the point
            out: dict[str, Any] = await pending
            return out

        @reg.orchestration("Pipeline")
        async def pipeline(ctx: OrchestrationContext, i: int) -> dict[str, Any]:
            a = await ctx.schedule_activity("Compute", {"op": "inc", "v": i})
            b = await ctx.schedule_activity("Compute", {"op": "double", "v": a})
            fan = await ctx.join(
                [
                    ctx.schedule_activity("Compute", {"op": "square", "v": b}),
                    ctx.schedule_activity("Compute", {"op": "neg", "v": b}),
                ]
            )
            await ctx.schedule_timer(timedelta(seconds=0.2))
            return {"i": i, "a": a, "b": b, "fan": fan}

    # --- process lifecycle ----------------------------------------------------------------
    async def run(self) -> int:
        args = self.args
        provider = await PostgresProvider.connect(args.dsn, max_pool=6)
        self.pool = AsyncConnectionPool(
            args.dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await self.pool.open(wait=True)
        options = RuntimeOptions(
            orchestration_concurrency=args.orchestration_concurrency,
            activity_concurrency=args.activity_concurrency,
            lock_timeout=timedelta(seconds=args.lock_timeout),
            activity_lock_timeout=timedelta(seconds=args.activity_lock_timeout),
            idle_wait=0.5,
            shutdown_grace=args.shutdown_grace,
        )
        runtime = Runtime(provider, self.registry, options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        orphan_watch = asyncio.create_task(self._exit_when_orphaned(args.parent_pid, stop))
        await runtime.start()
        print(f"READY {os.getpid()}", flush=True)
        try:
            await stop.wait()
        finally:
            orphan_watch.cancel()
            await runtime.shutdown()
            await self.pool.close()
            await provider.close()
        print("STOPPED", flush=True)
        return 0

    @staticmethod
    async def _exit_when_orphaned(parent_pid: int | None, stop: asyncio.Event) -> None:
        """Stop if the test process died without cleaning up, so no worker outlives it."""
        if not parent_pid:
            return
        while os.getppid() == parent_pid:
            await asyncio.sleep(1.0)
        stop.set()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", required=True)
    p.add_argument("--lock-timeout", type=float, default=2.0)
    p.add_argument("--activity-lock-timeout", type=float, default=2.0)
    p.add_argument("--orchestration-concurrency", type=int, default=4)
    p.add_argument("--activity-concurrency", type=int, default=8)
    p.add_argument("--shutdown-grace", type=float, default=2.0)
    p.add_argument("--hang-activities", action="store_true")
    p.add_argument("--hang-after", type=int, default=None)
    p.add_argument("--block-turn-dir", default=None)
    p.add_argument("--parent-pid", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # warnings (a lost lock, a failed renewal) land in the log file the tests read
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(Worker(args).run())
    return 130


if __name__ == "__main__":
    sys.exit(main())
