"""One runtime process of the chaos suite: ``python -m bench.chaos_worker --dsn ... --run-dir ...``.

It runs the chaos workload (``chaos_app.py``) until SIGTERM or SIGKILL; the driver kills and
restarts it at will. It prints ``READY <pid>`` once its runtime dispatches, logs the engine's
warnings (lost locks, failed commits) to stderr, and exits by itself when its parent is gone,
so no worker outlives an interrupted run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

from bench.chaos_app import RunLog, build_registry
from durable_engine import Runtime, RuntimeOptions
from durable_engine.postgres import PostgresProvider


async def _connect(dsn: str, max_pool: int) -> PostgresProvider:
    """Connect, retrying while the database is unreachable (restarting, or cut by the proxy)."""
    while True:
        try:
            return await asyncio.wait_for(PostgresProvider.connect(dsn, max_pool=max_pool), 10)
        except Exception as exc:  # the fault driver is at work: try again shortly
            logging.getLogger("chaos.worker").warning("connecting failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> int:
    log = RunLog(Path(args.run_dir))
    provider = await _connect(args.dsn, args.max_pool)
    options = RuntimeOptions(
        orchestration_concurrency=args.orchestration_concurrency,
        activity_concurrency=args.activity_concurrency,
        lock_timeout=timedelta(seconds=args.lock_timeout),
        activity_lock_timeout=timedelta(seconds=args.activity_lock_timeout),
        idle_wait=args.idle_wait,
        error_backoff=timedelta(seconds=args.error_backoff),
        shutdown_grace=1.0,
    )
    runtime = Runtime(provider, build_registry(log), options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    orphan_watch = asyncio.create_task(_stop_when_orphaned(args.parent_pid, stop))
    await runtime.start()
    print(f"READY {os.getpid()}", flush=True)
    try:
        await stop.wait()
    finally:
        orphan_watch.cancel()
        await runtime.shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(provider.close(), 5)
        log.close()
    print("STOPPED", flush=True)
    return 0


async def _stop_when_orphaned(parent_pid: int | None, stop: asyncio.Event) -> None:
    if not parent_pid:
        return
    while os.getppid() == parent_pid:  # noqa: ASYNC110 - nothing signals a parent's death
        await asyncio.sleep(1.0)
    stop.set()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", required=True)
    p.add_argument("--run-dir", required=True, help="where the activity run log of this process goes")
    p.add_argument("--lock-timeout", type=float, default=4.0)
    p.add_argument("--activity-lock-timeout", type=float, default=4.0)
    p.add_argument("--orchestration-concurrency", type=int, default=8)
    p.add_argument("--activity-concurrency", type=int, default=16)
    p.add_argument("--idle-wait", type=float, default=1.0)
    p.add_argument("--error-backoff", type=float, default=0.5)
    p.add_argument("--max-pool", type=int, default=8)
    p.add_argument("--parent-pid", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
