"""A turn's time (``ctx.utc_now()``, the TurnStarted timestamp) never goes back.

The runtime stamps a turn with ``provider.now()``. On PostgreSQL that is an estimate (this
host's clock plus a measured offset to the server's), and estimates wobble: the chaos suite
saw, on 2 of 248 histories, a turn stamped ~0.5 ms before the one it followed. So a turn's time
is never earlier than the previous turn's, nor than a timer that fires in it. Here a provider
whose ``now()`` lags its own clock by a set amount makes the wobble large and exact.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from durable_engine import (
    Client,
    EventKind,
    InMemoryProvider,
    ManualClock,
    Registry,
    Runtime,
    RuntimeOptions,
    RuntimeStatus,
)

START = datetime(2030, 1, 1, tzinfo=UTC)


class LaggingNow:
    """A provider whose ``now()`` runs ``lag`` behind the clock it stores and compares on."""

    def __init__(self, inner: InMemoryProvider) -> None:
        self._inner = inner
        self.lag = timedelta(0)

    def now(self) -> datetime:
        return self._inner.now() - self.lag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_turn_time_never_goes_back_nor_before_a_timer_firing_in_the_turn() -> None:
    clock = ManualClock(START)
    provider = LaggingNow(InMemoryProvider(clock))
    registry = Registry()

    @registry.orchestration("Clocked")
    async def clocked(ctx: Any, _: Any) -> list[str]:
        seen = [ctx.utc_now().isoformat()]
        await ctx.wait_for_event("go")
        seen.append(ctx.utc_now().isoformat())
        await ctx.schedule_timer(timedelta(seconds=5))
        seen.append(ctx.utc_now().isoformat())
        return seen

    runtime = Runtime(provider, registry, RuntimeOptions(inline_activities=False))  # type: ignore[arg-type]
    client = Client(provider)  # type: ignore[arg-type]
    await client.start_orchestration("c", "Clocked")
    await runtime.run_until_idle()  # turn 1 at START

    provider.lag = timedelta(seconds=10)  # from now on the turn's clock reads 10 s early
    await client.raise_event("c", "go")
    await runtime.run_until_idle()  # turn 2: not before turn 1; its timer is due at START + 5 s
    status = await client.get_status("c")
    assert status is not None and status.status == RuntimeStatus.RUNNING, "the timer fired early"

    clock.advance(timedelta(seconds=5))
    await runtime.run_until_idle()  # turn 3: the timer fired, so not before START + 5 s
    status = await client.get_status("c")
    assert status is not None and status.status == RuntimeStatus.COMPLETED, status
    seen = [datetime.fromisoformat(t) for t in status.output]
    assert seen == [START, START, START + timedelta(seconds=5)]

    turns = [e.timestamp for e in await client.get_history("c") if e.kind == EventKind.TURN_STARTED]
    stamps = [datetime.fromisoformat(t) for t in turns if t]
    assert len(stamps) == 3
    assert all(a <= b for a, b in itertools.pairwise(stamps)), stamps
