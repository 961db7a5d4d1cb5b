"""Engine fixtures: a ``provider`` parametrised over the in-memory and PostgreSQL providers.

Tests that need time to pass call the ``advance`` fixture: the in-memory provider runs on a
:class:`ManualClock` (time jumps instantly), the PostgreSQL provider on the real clock (the
tests keep those waits short, well under a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from durable_engine import InMemoryProvider, ManualClock, Provider
from durable_engine.postgres import PostgresProvider

Advance = Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    if request.param == "memory":
        mem = InMemoryProvider(ManualClock())
        yield mem
        await mem.close()
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    pg = await PostgresProvider.connect(dsn, max_pool=4)
    try:
        yield pg
    finally:
        await pg.close()


@pytest.fixture
def advance(provider: Provider) -> Advance:
    """Let ``seconds`` pass on the provider's clock."""

    async def _advance(seconds: float) -> None:
        if isinstance(provider, InMemoryProvider) and isinstance(provider.clock, ManualClock):
            provider.clock.advance(timedelta(seconds=seconds))
        else:
            await asyncio.sleep(seconds)

    return _advance
