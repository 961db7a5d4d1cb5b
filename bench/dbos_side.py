"""The DBOS Transact side of the benchmark: runs in its own process, prints one JSON result.

DBOS is used the way its documentation shows: synchronous ``@DBOS.workflow()`` functions
calling ``@DBOS.step()`` functions, started in-process with ``DBOS.start_workflow`` and
awaited with ``handle.get_result()``. Fan-out uses child workflows started from the parent
(``DBOS.start_workflow`` inside a workflow, the documented way to run work in parallel
without queue polling); ``--fanout-mode queue`` uses a DBOS queue instead, and
``--throughput-mode queue`` enqueues the 500 workflows on a queue with a worker concurrency
limit instead of starting them directly.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from dbos import DBOS, SetWorkflowID

from bench.common import Sizes, emit, latency_summary, measure_idle_cpu

QUEUE_NAME = "bench"


@dataclass
class DbosConfig:
    pool_size: int = 20
    throughput_mode: str = "direct"  # direct | queue
    fanout_mode: str = "child"  # child | queue
    queue_concurrency: int = 16
    queue_polling_s: float = 0.05


@DBOS.step()
def inc(x: int) -> int:
    return x + 1


@DBOS.workflow()
def inc_workflow(x: int) -> int:
    return inc(x)


@DBOS.workflow()
def one(x: int) -> int:
    return inc(x)


@DBOS.workflow()
def chain(n: int) -> int:
    value = 0
    for _ in range(n):
        value = inc(value)
    return value


@DBOS.workflow()
def fan_out_children(n: int) -> int:
    handles = [DBOS.start_workflow(inc_workflow, i) for i in range(n)]
    return sum(h.get_result() for h in handles)


@DBOS.workflow()
def fan_out_queue(n: int) -> int:
    queue = DBOS.retrieve_queue(QUEUE_NAME)
    assert queue is not None, "the bench queue is registered before fan-out runs"
    handles = [queue.enqueue(inc, i) for i in range(n)]
    return sum(h.get_result() for h in handles)


class DbosBench:
    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:8]
        self.counter = 0

    def _wid(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}-{kind}-{self.counter}"

    def run_one(self, fn: Any, arg: Any, expected: Any) -> float:
        t0 = time.perf_counter()
        with SetWorkflowID(self._wid(fn.__name__)):
            handle = DBOS.start_workflow(fn, arg)
        result = handle.get_result()
        elapsed = time.perf_counter() - t0
        if result != expected:
            raise RuntimeError(f"{fn.__name__} returned {result!r}, expected {expected!r}")
        return elapsed

    def throughput(self, n: int, mode: str) -> dict[str, float]:
        queue = DBOS.retrieve_queue(QUEUE_NAME) if mode == "queue" else None
        t0 = time.perf_counter()
        handles = []
        for _ in range(n):
            with SetWorkflowID(self._wid("tp")):
                handles.append(queue.enqueue(one, 1) if queue is not None else DBOS.start_workflow(one, 1))
        started = time.perf_counter() - t0
        results = [h.get_result() for h in handles]
        wall = time.perf_counter() - t0
        if any(r != 2 for r in results):
            raise RuntimeError("a throughput workflow returned a wrong result")
        return {"per_s": n / wall, "wall_s": wall, "start_s": started}


def run(dsn: str, sizes: Sizes, cfg: DbosConfig, scenario: str) -> dict[str, Any]:
    DBOS(
        config={
            "name": "engine-bench",
            "system_database_url": dsn,
            "sys_db_pool_size": cfg.pool_size,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    if "queue" in (cfg.throughput_mode, cfg.fanout_mode):
        # only when used: a 50 ms polling queue costs idle CPU the default setup does not pay
        DBOS.register_queue(
            QUEUE_NAME, worker_concurrency=cfg.queue_concurrency, polling_interval_sec=cfg.queue_polling_s
        )
    bench = DbosBench()
    out: dict[str, Any] = {"system": "dbos", "config": asdict(cfg)}
    try:
        for _ in range(sizes.warmup):
            bench.run_one(one, 1, 2)
        if scenario == "idle":
            time.sleep(2.0)
            out["idle"] = measure_idle_cpu(dsn, sizes.idle_seconds, time.sleep)
            return out
        out["seq"] = latency_summary([bench.run_one(one, 1, 2) for _ in range(sizes.seq_n)])
        out["throughput"] = bench.throughput(sizes.throughput_n, cfg.throughput_mode)
        bench.run_one(chain, sizes.chain_len, sizes.chain_len)
        out["chain"] = latency_summary(
            [bench.run_one(chain, sizes.chain_len, sizes.chain_len) for _ in range(sizes.chain_n)]
        )
        fan = fan_out_queue if cfg.fanout_mode == "queue" else fan_out_children
        width = sizes.fanout_width
        expected = sum(range(1, width + 1))
        bench.run_one(fan, width, expected)
        out["fanout"] = latency_summary([bench.run_one(fan, width, expected) for _ in range(sizes.fanout_n)])
        return out
    finally:
        DBOS.destroy(destroy_registry=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DBOS side of the engine benchmark (run by the driver)")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--sizes", required=True, help="JSON of bench.common.Sizes")
    parser.add_argument("--scenario", choices=["all", "idle"], default="all")
    parser.add_argument("--pool-size", type=int, default=DbosConfig.pool_size)
    parser.add_argument("--throughput-mode", choices=["direct", "queue"], default=DbosConfig.throughput_mode)
    parser.add_argument("--fanout-mode", choices=["child", "queue"], default=DbosConfig.fanout_mode)
    parser.add_argument("--queue-concurrency", type=int, default=DbosConfig.queue_concurrency)
    parser.add_argument("--queue-polling", type=float, default=DbosConfig.queue_polling_s)
    args = parser.parse_args(argv)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    cfg = DbosConfig(
        args.pool_size, args.throughput_mode, args.fanout_mode, args.queue_concurrency, args.queue_polling
    )
    emit(run(args.dsn, Sizes.from_json(args.sizes), cfg, args.scenario))


if __name__ == "__main__":
    main()
