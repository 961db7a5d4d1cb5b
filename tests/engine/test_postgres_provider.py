"""PostgreSQL provider behaviour beyond the shared contract: schemas, wake-ups, races, the listener.

The contract itself (``durable_engine.testing``) runs in ``test_provider_conformance.py``.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import random
import re
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from durable_engine import (
    MessageKind,
    NewInstance,
    OrchestrationItem,
    OrchestratorMessage,
    Provider,
    TurnCommit,
)
from durable_engine.migrate import load_migrations
from durable_engine.postgres import PostgresProvider

pytestmark = pytest.mark.postgres

LONG = timedelta(seconds=30)


def raised(instance_id: str, name: str, data: Any = None) -> OrchestratorMessage:
    return OrchestratorMessage(kind=MessageKind.EVENT_RAISED, instance_id=instance_id, name=name, data=data)


async def start(provider: Provider, instance_id: str) -> None:
    assert await provider.create_instance(NewInstance(instance_id, "Orch", None, None))


async def fetch(provider: Provider) -> OrchestrationItem:
    item = await provider.fetch_orchestration_item(LONG)
    assert item is not None, "expected an orchestration item"
    return item


def commit_for(item: OrchestrationItem) -> TurnCommit:
    """A turn that consumes what it fetched and records nothing."""
    return TurnCommit(item.instance_id, 1, [], [m.id for m in item.messages if m.id is not None], None)


async def test_the_schema_is_the_packaged_migrations_with_unlogged_locks(pg_dsn: str) -> None:
    provider = await PostgresProvider.connect(pg_dsn, schema="eng")
    await provider.close()
    packaged = load_migrations(importlib.resources.files("durable_engine.postgres") / "sql")
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute("SELECT version, name, checksum FROM eng.schema_migrations ORDER BY version")
        assert await cur.fetchall() == [(m.version, m.name, m.checksum) for m in packaged]
        # locks are void after a server crash anyway: they skip the WAL
        cur = await conn.execute(
            "SELECT relpersistence FROM pg_class WHERE oid = 'eng.instance_locks'::regclass"
        )
        assert await cur.fetchone() == ("u",)


async def test_the_schema_holds_each_function_once_and_only_those_the_provider_calls(pg_dsn: str) -> None:
    """No leftover overloads or shims: every server-side function is called (by the provider or
    by another function), exists under one signature, and nothing the provider calls is missing."""
    provider = await PostgresProvider.connect(pg_dsn, schema="fns")
    await provider.close()
    source = importlib.resources.files("durable_engine.postgres").joinpath("_provider.py").read_text()
    called = set(re.findall(r"\{s\}\.([a-z_]+)\(", source))
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cur = await conn.execute(
            "SELECT p.proname, count(*) FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'fns' GROUP BY p.proname"
        )
        defined = dict(await cur.fetchall())
    assert {name for name, overloads in defined.items() if overloads > 1} == set()
    assert called - set(defined) == set(), "the provider calls functions the schema lacks"
    # notify_channel is called by the functions themselves
    assert set(defined) - called == {"notify_channel"}, "functions nothing calls"


async def test_wait_for_work_wakes_when_a_delayed_message_is_due(pg_dsn: str) -> None:
    provider = await PostgresProvider.connect(pg_dsn)
    try:
        await provider.enqueue_orchestrator_message(
            raised("t", "timer"), visible_at=provider.now() + timedelta(seconds=0.5)
        )
        # spurious returns are allowed (the enqueue's own NOTIFY may arrive late), hot polling is not
        began = time.monotonic()
        rounds = 0
        while await provider.fetch_orchestration_item(LONG) is None:
            rounds += 1
            assert rounds < 10, "wait_for_work keeps returning before the message is due"
            await asyncio.wait_for(provider.wait_for_work("orchestrator", 30.0), 10)
        assert time.monotonic() - began < 10
    finally:
        await provider.close()


async def test_concurrent_connect_and_bad_schema(pg_dsn: str) -> None:
    a, b = await asyncio.gather(
        PostgresProvider.connect(pg_dsn, schema="eng"), PostgresProvider.connect(pg_dsn, schema="eng")
    )
    try:
        await start(a, "x")
        item = await fetch(b)
        assert item.instance_id == "x"
    finally:
        await a.close()
        await b.close()
    with pytest.raises(ValueError):
        await PostgresProvider.connect(pg_dsn, schema='bad"; drop')


async def test_schemas_are_isolated(pg_dsn: str) -> None:
    one = await PostgresProvider.connect(pg_dsn, schema="one")
    two = await PostgresProvider.connect(pg_dsn, schema="two")
    try:
        await start(one, "x")
        assert await two.fetch_orchestration_item(LONG) is None
        assert await two.get_instance("x") is None
        assert (await fetch(one)).instance_id == "x"
    finally:
        await one.close()
        await two.close()


async def test_concurrent_fetchers_never_share_an_instance(pg_dsn: str) -> None:
    """Two provider objects (separate pools) race over a few hot instances."""
    providers = [await PostgresProvider.connect(pg_dsn, max_pool=4) for _ in range(2)]
    instances = [f"hot-{n}" for n in range(4)]
    total = 150
    held: set[str] = set()
    consumed: list[int] = []
    overlaps: list[str] = []
    rng = random.Random(7)
    try:

        async def produce() -> None:
            for n in range(total):
                await providers[n % 2].enqueue_orchestrator_message(raised(rng.choice(instances), "m", n))

        async def consume(p: PostgresProvider) -> None:
            idle_since = time.monotonic()
            while len(consumed) < total and time.monotonic() - idle_since < 10:
                item = await p.fetch_orchestration_item(LONG)
                if item is None:
                    await asyncio.sleep(0.005)
                    continue
                idle_since = time.monotonic()
                if item.instance_id in held:
                    overlaps.append(item.instance_id)
                held.add(item.instance_id)
                await asyncio.sleep(rng.random() * 0.01)
                held.discard(item.instance_id)
                consumed.extend(m.data for m in item.messages)
                await p.commit_turn(item.lock_token, commit_for(item))

        await asyncio.wait_for(
            asyncio.gather(produce(), *(consume(p) for p in providers for _ in range(2))), 120
        )
    finally:
        for p in providers:
            await p.close()
    assert overlaps == []
    assert sorted(consumed) == list(range(total)), "every message is delivered and consumed exactly once"


async def test_listener_survives_a_dropped_connection(pg_dsn: str) -> None:
    provider = await PostgresProvider.connect(pg_dsn)
    listen_sql = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
    )
    try:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
            old = [r[0] for r in await (await admin.execute(listen_sql)).fetchall()]
            assert len(old) == 1
            await admin.execute("SELECT pg_terminate_backend(%s)", (old[0],))
            deadline = time.monotonic() + 10
            while True:
                pids = [r[0] for r in await (await admin.execute(listen_sql)).fetchall()]
                if pids and pids != old:
                    break
                assert time.monotonic() < deadline, "the listener did not reconnect"
                await asyncio.sleep(0.05)
        # the new pid shows at its first LISTEN; once all are issued the listener wakes everyone
        # (notifications may have been missed meanwhile): let that spurious wake-up pass first
        await asyncio.sleep(0.5)
        waiter = asyncio.create_task(provider.wait_for_work("orchestrator", 30.0))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await provider.enqueue_orchestrator_message(raised("a", "wake"))
        await asyncio.wait_for(waiter, 10)
    finally:
        await provider.close()
