"""What both benchmark sides share: sizes, statistics, idle-CPU sampling, the result protocol.

Why a protocol on stdout: each system runs in its own subprocess (no shared event loop or GIL,
no mixed background threads), and the driver only needs a JSON document back. The last line
starting with :data:`RESULT_PREFIX` carries it; everything else a library prints is ignored.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

RESULT_PREFIX = "BENCH-RESULT "


@dataclass
class Sizes:
    """How much work each scenario does; ``--quick`` shrinks every number."""

    warmup: int = 20
    seq_n: int = 200
    throughput_n: int = 500
    chain_len: int = 10
    chain_n: int = 30
    fanout_width: int = 100
    fanout_n: int = 5
    idle_seconds: float = 10.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            warmup=5,
            seq_n=40,
            throughput_n=100,
            chain_len=10,
            chain_n=8,
            fanout_width=100,
            fanout_n=2,
            idle_seconds=3.0,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sizes:
        return cls(**json.loads(text))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (``statistics.quantiles``, inclusive)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[int(q) - 1] if 1 <= q <= 99 else (min(values) if q <= 0 else max(values))


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in samples_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "mean_ms": statistics.fmean(ms),
        "n": float(len(ms)),
    }


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError("the benchmark subprocess printed no result line")
    parsed: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return parsed


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def database_backend_pids(dsn: str) -> list[int]:
    """PIDs of the server backends connected to this DSN's database, except the asking one."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(r[0]) for r in rows]


def measure_idle_cpu(dsn: str, seconds: float, sleep: Any) -> dict[str, float]:
    """CPU (% of one core) of this process and of its database's backends over an idle window.

    ``sleep`` is how the caller idles (``time.sleep`` in a thread-based system, a blocking
    wait on the event loop's thread otherwise); the runtime's own threads/tasks keep running.
    Backends that appear during the window are not counted (idle runtimes open none).
    """
    me = psutil.Process(os.getpid())
    backends: list[psutil.Process] = []
    for pid in database_backend_pids(dsn):
        try:
            backends.append(psutil.Process(pid))
        except psutil.Error:
            pass
    before_me = _cpu_seconds(me)
    before_be: dict[int, float] = {}
    for b in backends:
        try:
            before_be[b.pid] = _cpu_seconds(b)
        except psutil.Error:
            pass
    t0 = time.monotonic()
    sleep(seconds)
    wall = time.monotonic() - t0
    used_me = _cpu_seconds(me) - before_me
    used_be = 0.0
    for b in backends:
        if b.pid not in before_be:
            continue
        try:
            used_be += _cpu_seconds(b) - before_be[b.pid]
        except psutil.Error:
            pass
    return {
        "process_pct": 100.0 * used_me / wall,
        "backends_pct": 100.0 * used_be / wall,
        "total_pct": 100.0 * (used_me + used_be) / wall,
        "backends": float(len(before_be)),
        "window_s": wall,
    }
