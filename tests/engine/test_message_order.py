"""Messages of one instance are never processed without the ones that arrived before them.

Regression tests for the instance the chaos suite found stuck: an orchestration waiting on an
external event stayed Running forever when the event was raised right after the start and the
Start message was out of sight at that moment — hidden by an abandoned turn's backoff, or by a
lock that vanished when PostgreSQL restarted (``instance_locks`` is UNLOGGED, so crash recovery
empties it while the fetched messages stay hidden until the lost lock's expiry). The event was
then fetched alone, met an instance with no history, was dropped as stale, and the
orchestration, started later, waited for it forever.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from durable_engine import (
    Client,
    MessageKind,
    OrchestrationContext,
    Provider,
    Registry,
    Runtime,
    RuntimeOptions,
    RuntimeStatus,
    TurnCommit,
)
from durable_engine.postgres import PostgresProvider
from toygres.pgserver import EmbeddedPostgres

from .harness import Engine

LONG = timedelta(seconds=30)


def waits_for_go(registry: Registry) -> None:
    @registry.orchestration("WaitsForGo")
    async def waits_for_go(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")


class FailsFirstCommit:
    """The provider, except that its first ``commit_turn`` fails (a connection cut mid-commit)
    and, in that very moment, a client raises an event: it arrives while the turn backs off."""

    def __init__(self, inner: Provider, on_failure: Any) -> None:
        self._inner = inner
        self._on_failure = on_failure
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit_turn(self, lock_token: str, commit: TurnCommit) -> None:
        if not self.failed:
            self.failed = True
            await self._on_failure()
            raise ConnectionError("injected: the connection broke during commit_turn")
        await self._inner.commit_turn(lock_token, commit)


async def test_event_raised_while_the_first_turn_backs_off_is_not_lost(engine: Engine) -> None:
    waits_for_go(engine.registry)
    client = engine.client
    faulty = FailsFirstCommit(engine.provider, lambda: client.raise_event("x", "go", 42))
    runtime = Runtime(
        faulty,  # type: ignore[arg-type]
        engine.registry,
        RuntimeOptions(idle_wait=0.5, error_backoff=timedelta(seconds=0.3), inline_activities=engine.inline),
    )
    engine.runtimes.append(runtime)
    await runtime.start()
    await client.start_orchestration("x", "WaitsForGo")

    status = await engine.finish("x", timeout=20, step=0.1)

    assert faulty.failed
    assert status.status == RuntimeStatus.COMPLETED, status.error
    assert status.output == 42


@pytest.mark.postgres
async def test_messages_of_a_lock_lost_in_a_crash_come_with_the_next_fetch(pg_dsn: str) -> None:
    """What crash recovery does to the UNLOGGED lock table, done by hand: fast and exact."""
    provider = await PostgresProvider.connect(pg_dsn, max_pool=2)
    try:
        client = Client(provider)
        await client.start_orchestration("x", "WaitsForGo")
        first = await provider.fetch_orchestration_item(LONG)
        assert first is not None and [m.kind for m in first.messages] == [MessageKind.START]
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute("DELETE FROM durable.instance_locks")  # the crash
        await client.raise_event("x", "go", 42)

        item = await provider.fetch_orchestration_item(LONG)

        assert item is not None
        assert [m.kind for m in item.messages] == [MessageKind.START, MessageKind.EVENT_RAISED]
        assert item.dequeue_count == 2
        assert await provider.fetch_orchestration_item(LONG) is None
    finally:
        await provider.close()


@pytest.mark.slow
@pytest.mark.postgres
async def test_event_raised_after_an_immediate_restart_reaches_the_orchestration(pg_tmp_dir: Path) -> None:
    """The real thing: a dispatcher fetched the Start, the server restarted (immediate shutdown)
    before the turn committed, and the client raised the event as soon as it was back."""
    registry = Registry()
    waits_for_go(registry)
    server = EmbeddedPostgres(pg_tmp_dir / "data", server_settings={"fsync": "off"})
    await asyncio.to_thread(server.start)
    try:
        dsn = server.dsn()
        provider = await PostgresProvider.connect(dsn, max_pool=2)
        await Client(provider).start_orchestration("x", "WaitsForGo")
        fetched = await provider.fetch_orchestration_item(LONG)  # ... its dispatcher dies with the server
        assert fetched is not None
        await asyncio.sleep(0.5)  # the WAL writer flushes the (asynchronously committed) fetch
        await provider.close()
        await asyncio.to_thread(server.stop, "immediate")
        await asyncio.to_thread(server.start)

        provider = await PostgresProvider.connect(dsn, max_pool=2)
        client = Client(provider)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE visible_at > now()),"
                " (SELECT count(*) FROM durable.instance_locks) FROM durable.orchestrator_queue"
            )
            # the setting of the bug: the Start is still hidden, its lock is gone
            assert await cur.fetchone() == (1, 0)
        await client.raise_event("x", "go", 42)
        runtime = Runtime(provider, registry, RuntimeOptions(idle_wait=0.5))
        await runtime.start()
        try:
            status = await client.wait_for_completion("x", timeout=20)
        finally:
            await runtime.shutdown(grace=2)
            await provider.close()
        assert status.status == RuntimeStatus.COMPLETED, status.error
        assert status.output == 42
    finally:
        await asyncio.to_thread(server.stop, "immediate")
        shutil.rmtree(pg_tmp_dir / "data", ignore_errors=True)
