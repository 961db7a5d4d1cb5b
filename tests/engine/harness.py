"""A small harness over a provider: registry, client, runtimes, and 'run until done'.

On the in-memory provider the clock is manual, so ``finish`` moves virtual time forward while
it waits: a test with a 30-second timer takes milliseconds. On PostgreSQL time is real, so
tests keep their timers well under a second.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from durable_engine import (
    Client,
    ManualClock,
    OrchestrationStatus,
    Provider,
    Registry,
    Runtime,
    RuntimeOptions,
    TurnCommit,
)


@dataclass
class Engine:
    provider: Provider
    registry: Registry = field(default_factory=Registry)
    runtimes: list[Runtime] = field(default_factory=list)
    #: run activities inline in the orchestration dispatch (the default) or only via the queue
    inline: bool = True

    @property
    def client(self) -> Client:
        return Client(self.provider)

    @property
    def manual_clock(self) -> ManualClock | None:
        # through wrappers too (``FaultyProvider``): they forward ``clock`` to the provider inside
        clock = getattr(self.provider, "clock", None)
        return clock if isinstance(clock, ManualClock) else None

    async def start_runtime(self, **options: Any) -> Runtime:
        options.setdefault("inline_activities", self.inline)
        opts = RuntimeOptions(idle_wait=0.5, **options)
        runtime = Runtime(self.provider, self.registry, opts)
        await runtime.start()
        self.runtimes.append(runtime)
        return runtime

    async def stop_all(self) -> None:
        for runtime in self.runtimes:
            await runtime.shutdown(grace=2)
        self.runtimes.clear()

    async def tick(self, seconds: float = 0.25) -> None:
        """Let a little time pass: virtual on the memory provider, real on PostgreSQL."""
        clock = self.manual_clock
        if clock is not None:
            clock.advance(timedelta(seconds=seconds))
            await asyncio.sleep(0.002)
        else:
            await asyncio.sleep(min(seconds, 0.05))

    async def finish(
        self, instance_id: str, timeout: float = 30.0, step: float = 0.25
    ) -> OrchestrationStatus:
        """Wait (moving virtual time if any) until the instance reaches a terminal status."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.client.get_status(instance_id)
            if status is not None and status.is_terminal:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{instance_id} still {status.status if status else 'missing'}")
            await self.tick(step)

    async def until(self, predicate: Any, timeout: float = 30.0, step: float = 0.05) -> None:
        """Wait until an async predicate holds (without moving virtual time much)."""
        deadline = time.monotonic() + timeout
        while not await predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            await self.tick(step)


class FaultyProvider:
    """Delegates to a real provider, but refuses the commits ``fail_commit`` picks (once each).

    A wrapper of our own, not a mock: everything else reaches the real provider, so a refused
    commit leaves the store exactly as a commit that died on the wire would.
    """

    def __init__(self, inner: Provider, fail_commit: Any) -> None:
        self._inner = inner
        self._fail_commit = fail_commit
        self.failed: list[TurnCommit] = []

    async def commit_turn(self, lock_token: str, commit: TurnCommit) -> None:
        if self._fail_commit(commit):
            self.failed.append(commit)
            raise ConnectionError("injected: the commit never reached the database")
        await self._inner.commit_turn(lock_token, commit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
