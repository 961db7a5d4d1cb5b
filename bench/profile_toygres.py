"""Where a Toygres orchestration's time goes: provider calls, round trips, wake-up latency.

Wraps the provider's public coroutine methods (on the instance, the engine's code is not
changed) and the LISTEN dispatcher to timestamp every call and every NOTIFY, runs
sequential 1-activity orchestrations, and prints:

- provider calls per orchestration and the mean time of each call (each call is one round
  trip: one ``SELECT fn(...)`` or one statement),
- a timeline of one orchestration (client start -> result), so the gaps between a NOTIFY and
  the dispatcher's next fetch (wake-up latency) are visible.

Run: ``python -m bench.profile_toygres [--n 200] [--dsn URL]`` (without ``--dsn`` it starts
an embedded PostgreSQL with durable default settings, like the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.toygres_side import ToygresConfig, build_registry
from durable_engine import Client, Runtime, RuntimeOptions, RuntimeStatus
from durable_engine.postgres import PostgresProvider

Event = tuple[float, float, str, str]  # start, end, what, detail

_TRACED = [
    "create_instance",
    "create_instance_locked",
    "fetch_orchestration_item",
    "commit_turn",
    "fetch_activity",
    "complete_activity",
    "get_instance",
    "wait_for_work",
    "wait_for_instance_change",
    "renew_activity_lock",
    "abandon_orchestration_item",
    "abandon_activity",
]


class Tracer:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            result = await fn(*args, **kwargs)
            detail = "empty" if result is None and name.startswith("fetch") else ""
            self.events.append((t0, time.perf_counter(), name, detail))
            return result

        return traced

    def install(self, provider: PostgresProvider) -> None:
        for name in _TRACED:
            setattr(provider, name, self.wrap(name, getattr(provider, name)))
        listener = provider._listener
        original = listener._dispatch

        def dispatch(channel: str, payload: str) -> None:
            now = time.perf_counter()
            self.events.append((now, now, "NOTIFY", channel.split(".")[-1]))
            original(channel, payload)

        listener._dispatch = dispatch  # type: ignore[method-assign]


def summarize(events: list[Event], n: int, wall: float, label: str = "One(1)") -> str:
    by: dict[str, list[float]] = collections.defaultdict(list)
    for t0, t1, what, detail in events:
        if what == "NOTIFY":
            by[f"NOTIFY {detail}"].append(0.0)
            continue
        key = f"{what} ({detail})" if detail else what
        by[key].append(t1 - t0)
    lines = [
        f"{n} sequential {label} orchestrations in {wall:.2f} s ({1000 * wall / n:.2f} ms each)",
        f"{'call':44s} {'per orch':>9s} {'mean ms':>9s} {'p50 ms':>9s}",
    ]
    for key, durations in sorted(by.items(), key=lambda kv: -len(kv[1])):
        mean = statistics.fmean(durations) * 1000
        p50 = statistics.median(durations) * 1000
        lines.append(f"{key:44s} {len(durations) / n:9.2f} {mean:9.3f} {p50:9.3f}")
    return "\n".join(lines)


def wakeup_latency(events: list[Event]) -> str:
    """Median gap between a NOTIFY and the start of the next fetch on that queue."""
    fetch_of = {"orchestrator": "fetch_orchestration_item", "worker": "fetch_activity"}
    ordered = sorted(events)
    lines = []
    for channel, fetch in fetch_of.items():
        gaps = []
        for i, (t0, _, what, detail) in enumerate(ordered):
            if what != "NOTIFY" or detail != channel:
                continue
            nxt = next((e[0] for e in ordered[i + 1 :] if e[2] == fetch), None)
            if nxt is not None and nxt - t0 < 0.5:
                gaps.append((nxt - t0) * 1000)
        if gaps:
            median = statistics.median(gaps)
            lines.append(
                f"wake-up latency NOTIFY {channel} -> next {fetch}: median {median:.3f} ms,"
                f" p95 {sorted(gaps)[int(0.95 * (len(gaps) - 1))]:.3f} ms ({len(gaps)} samples)"
            )
    return "\n".join(lines)


def timeline(events: list[Event], start: float, end: float) -> str:
    lines = ["timeline of one orchestration (ms since client start; start..end of each call):"]
    for t0, t1, what, detail in sorted(events):
        if start <= t0 <= end:
            lines.append(f"  {1000 * (t0 - start):8.3f} .. {1000 * (t1 - start):8.3f}  {what} {detail}")
    return "\n".join(lines)


SHAPES: dict[str, tuple[str, Any]] = {"one": ("One", 1), "chain": ("Chain", 10), "fanout": ("FanOut", 100)}


async def profile(dsn: str, n: int, cfg: ToygresConfig, shape: str = "one") -> None:
    name, arg = SHAPES[shape]
    provider = await PostgresProvider.connect(dsn, min_pool=cfg.max_pool, max_pool=cfg.max_pool)
    tracer = Tracer()
    tracer.install(provider)
    runtime = Runtime(
        provider,
        build_registry(cfg.async_activities),
        RuntimeOptions(
            orchestration_concurrency=cfg.orchestration_concurrency,
            activity_concurrency=cfg.activity_concurrency,
        ),
    )
    await runtime.start()
    client = Client(provider, runtime=runtime)  # as in the benchmark: local dispatch
    try:
        for i in range(10):
            await client.start_orchestration(f"warm-{i}-{time.time_ns()}", "One", 1)
        await asyncio.sleep(0.5)
        t_rt = time.perf_counter()
        for _ in range(200):
            await provider._scalar("SELECT 1")
        bare_ms = (time.perf_counter() - t_rt) * 5
        print(f"bare round trip (SELECT 1 through the provider's pool): {bare_ms:.3f} ms")
        tracer.events.clear()
        spans: list[tuple[float, float]] = []
        t_all = time.perf_counter()
        for i in range(n):
            iid = f"prof-{i}-{time.time_ns()}"
            t0 = time.perf_counter()
            await client.start_orchestration(iid, name, arg)
            status = await client.wait_for_completion(iid, 60)
            spans.append((t0, time.perf_counter()))
            assert status.status == RuntimeStatus.COMPLETED, status.error
        wall = time.perf_counter() - t_all
        events = list(tracer.events)
        print(summarize(events, n, wall, f"{name}({arg})"))
        print(wakeup_latency(events))
        waits = sorted(((e[1] - e[0]) * 1000 for e in events if e[2] == "wait_for_work"), reverse=True)
        print("longest idle waits of the dispatchers (ms):", [round(w, 1) for w in waits[:5]])
        if shape != "one":
            return
        mid = spans[len(spans) // 2]
        print(timeline(events, mid[0], mid[1] + 0.002))
    finally:
        await runtime.shutdown(grace=5)
        await provider.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="one")
    parser.add_argument("--async-activities", action="store_true")
    args = parser.parse_args()
    cfg = ToygresConfig(async_activities=args.async_activities)
    if args.dsn:
        asyncio.run(profile(args.dsn, args.n, cfg, args.shape))
        return
    from bench.engine_bench import embedded_server

    with embedded_server(fast=False) as dsns:
        asyncio.run(profile(dsns["toygres"], args.n, cfg, args.shape))


if __name__ == "__main__":
    main()
