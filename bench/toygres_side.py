"""The Toygres engine side of the benchmark: runs in its own process, prints one JSON result.

Runtime and client share one event loop in one process, like ``toygres serve``; the client
goes through PostgreSQL (``create_instances``) and is woken by LISTEN/NOTIFY, as any client
of the engine is.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from bench.common import Sizes, emit, latency_summary, measure_idle_cpu
from durable_engine import (
    ActivityContext,
    Client,
    OrchestrationContext,
    Registry,
    Runtime,
    RuntimeOptions,
    RuntimeStatus,
)
from durable_engine.postgres import PostgresProvider


@dataclass
class ToygresConfig:
    """The tuning knobs the benchmark exposes (documented in docs/performance.md)."""

    orchestration_concurrency: int = 8
    activity_concurrency: int = 16
    max_pool: int = 20
    async_activities: bool = False


def build_registry(async_activities: bool) -> Registry:
    registry = Registry()

    if async_activities:

        @registry.activity("Inc")
        async def inc_async(ctx: ActivityContext, x: int) -> int:
            return x + 1

    else:

        @registry.activity("Inc")
        def inc(ctx: ActivityContext, x: int) -> int:
            return x + 1

    @registry.orchestration("One")
    async def one(ctx: OrchestrationContext, x: int) -> int:
        result: int = await ctx.schedule_activity("Inc", x)
        return result

    @registry.orchestration("Chain")
    async def chain(ctx: OrchestrationContext, n: int) -> int:
        value = 0
        for _ in range(n):
            value = await ctx.schedule_activity("Inc", value)
        return value

    @registry.orchestration("FanOut")
    async def fan_out(ctx: OrchestrationContext, n: int) -> int:
        results = await ctx.join([ctx.schedule_activity("Inc", i) for i in range(n)])
        return sum(results)

    return registry


class ToygresBench:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.prefix = uuid.uuid4().hex[:8]
        self.counter = 0

    def _iid(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}-{kind}-{self.counter}"

    async def run_one(self, name: str, arg: Any, expected: Any) -> float:
        iid = self._iid(name)
        t0 = time.perf_counter()
        await self.client.start_orchestration(iid, name, arg)
        status = await self.client.wait_for_completion(iid, 120)
        elapsed = time.perf_counter() - t0
        if status.status != RuntimeStatus.COMPLETED or status.output != expected:
            raise RuntimeError(f"{iid} ended {status.status}: {status.output!r} {status.error}")
        return elapsed

    async def throughput(self, n: int) -> dict[str, float]:
        ids = [self._iid("tp") for _ in range(n)]
        t0 = time.perf_counter()
        await asyncio.gather(*(self.client.start_orchestration(i, "One", 1) for i in ids))
        started = time.perf_counter() - t0
        statuses = await asyncio.gather(*(self.client.wait_for_completion(i, 300) for i in ids))
        wall = time.perf_counter() - t0
        bad = [s for s in statuses if s.status != RuntimeStatus.COMPLETED]
        if bad:
            raise RuntimeError(f"{len(bad)} throughput instances did not complete: {bad[0].error}")
        return {"per_s": n / wall, "wall_s": wall, "start_s": started}


async def run(dsn: str, sizes: Sizes, cfg: ToygresConfig, scenario: str) -> dict[str, Any]:
    # a pre-opened pool: the throughput burst should not pay for connection set-up (DBOS's
    # SQLAlchemy pool is warmed by the same warm-up runs)
    provider = await PostgresProvider.connect(dsn, min_pool=cfg.max_pool, max_pool=cfg.max_pool)
    runtime = Runtime(
        provider,
        build_registry(cfg.async_activities),
        RuntimeOptions(
            orchestration_concurrency=cfg.orchestration_concurrency,
            activity_concurrency=cfg.activity_concurrency,
        ),
    )
    await runtime.start()
    # the client shares the process with the runtime, as DBOS's caller shares it with DBOS
    bench = ToygresBench(Client(provider, runtime=runtime))
    out: dict[str, Any] = {"system": "toygres", "config": asdict(cfg)}
    try:
        for _ in range(sizes.warmup):
            await bench.run_one("One", 1, 2)
        if scenario == "idle":
            await asyncio.sleep(2.0)  # let post-warm-up notifications and pool trims settle
            out["idle"] = await asyncio.to_thread(measure_idle_cpu, dsn, sizes.idle_seconds, time.sleep)
            return out
        seq = [await bench.run_one("One", 1, 2) for _ in range(sizes.seq_n)]
        out["seq"] = latency_summary(seq)
        out["throughput"] = await bench.throughput(sizes.throughput_n)
        await bench.run_one("Chain", sizes.chain_len, sizes.chain_len)
        chain = [await bench.run_one("Chain", sizes.chain_len, sizes.chain_len) for _ in range(sizes.chain_n)]
        out["chain"] = latency_summary(chain)
        width = sizes.fanout_width
        expected = sum(range(1, width + 1))
        await bench.run_one("FanOut", width, expected)
        fan = [await bench.run_one("FanOut", width, expected) for _ in range(sizes.fanout_n)]
        out["fanout"] = latency_summary(fan)
        return out
    finally:
        await runtime.shutdown(grace=5)
        await provider.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Toygres side of the engine benchmark (run by the driver)")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--sizes", required=True, help="JSON of bench.common.Sizes")
    parser.add_argument("--scenario", choices=["all", "idle"], default="all")
    parser.add_argument(
        "--orchestration-concurrency", type=int, default=ToygresConfig.orchestration_concurrency
    )
    parser.add_argument("--activity-concurrency", type=int, default=ToygresConfig.activity_concurrency)
    parser.add_argument("--max-pool", type=int, default=ToygresConfig.max_pool)
    parser.add_argument("--async-activities", action="store_true")
    args = parser.parse_args(argv)
    cfg = ToygresConfig(
        args.orchestration_concurrency, args.activity_concurrency, args.max_pool, args.async_activities
    )
    emit(asyncio.run(run(args.dsn, Sizes.from_json(args.sizes), cfg, args.scenario)))


if __name__ == "__main__":
    main()
