"""Engine fixtures: providers from the kit's factories, over in-memory and PostgreSQL storage.

``provider_factory`` is parametrised over the two providers; the conformance suite
(``durable_engine.testing``) and the ``provider`` fixture of the semantics tests both take
their providers from it. The in-memory provider runs on a :class:`ManualClock` (time jumps
instantly), the PostgreSQL provider on the real clock (tests keep those waits short).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from durable_engine import Provider
from durable_engine.postgres import PostgresProvider
from durable_engine.testing import InMemoryProviderFactory, ProviderFactory

from .harness import Engine


class PostgresProviderFactory(ProviderFactory):
    """A provider on the test's own fresh database (``pg_dsn``), on the real clock."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def create(self) -> Provider:
        return await PostgresProvider.connect(self.dsn, max_pool=4)


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def provider_factory(request: pytest.FixtureRequest) -> ProviderFactory:
    if request.param == "memory":
        return InMemoryProviderFactory()
    return PostgresProviderFactory(request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def provider(provider_factory: ProviderFactory) -> AsyncIterator[Provider]:
    provider = await provider_factory.create()
    try:
        yield provider
    finally:
        await provider_factory.dispose(provider)


@pytest.fixture(params=[True, False], ids=["inline", "queued"])
async def engine(provider: Provider, request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    """Every semantic holds whether activities run inline in the dispatch or via the queue."""
    eng = Engine(provider, inline=request.param)
    try:
        yield eng
    finally:
        await eng.stop_all()
