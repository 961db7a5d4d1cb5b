"""How the kit gets providers to test: a factory per provider implementation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from .._clock import ManualClock
from .._memory import InMemoryProvider
from .._provider import Provider


class ProviderFactory:
    """Makes the providers the conformance cases run against; subclass it for a new provider.

    ``create`` runs inside the event loop of the case that uses the provider, and must return a
    provider over *empty* storage (a fresh database, schema or directory): cases assert that a
    queue is empty. ``advance`` lets time pass on the provider's clock; the default waits on the
    real clock, which suits any provider that reads the wall clock (the cases keep such waits
    under a second).
    """

    async def create(self) -> Provider:
        raise NotImplementedError

    async def advance(self, provider: Provider, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def dispose(self, provider: Provider) -> None:
        await provider.close()


class InMemoryProviderFactory(ProviderFactory):
    """The in-memory provider on a :class:`ManualClock`: time moves when a case says so, at once."""

    async def create(self) -> Provider:
        return InMemoryProvider(ManualClock())

    async def advance(self, provider: Provider, seconds: float) -> None:
        assert isinstance(provider, InMemoryProvider) and isinstance(provider.clock, ManualClock)
        provider.clock.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)  # let the waiters the clock woke run
