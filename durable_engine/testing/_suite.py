"""The conformance suite as pytest tests: one test per case, for any provider factory."""

from __future__ import annotations

import asyncio

import pytest

from ._cases import CONFORMANCE_CASES, ConformanceCase
from ._factory import ProviderFactory


async def run_conformance_case(case: ConformanceCase, factory: ProviderFactory) -> None:
    """Run one case against a new provider from ``factory``, and dispose of the provider."""
    provider = await factory.create()
    try:

        async def advance(seconds: float) -> None:
            await factory.advance(provider, seconds)

        await case.run(provider, advance)
    finally:
        await factory.dispose(provider)


class ProviderConformance:
    """Subclass this as ``Test...`` beside a ``provider_factory`` fixture: pytest then runs every
    conformance case as its own test against the providers the factory makes.

    Each case runs in an event loop of its own (``asyncio.run``), so the kit needs no pytest
    plugin for asyncio; the factory's ``create`` runs inside that loop.
    """

    @pytest.mark.parametrize("case", CONFORMANCE_CASES, ids=lambda case: case.name)
    def test_conformance(self, case: ConformanceCase, provider_factory: ProviderFactory) -> None:
        asyncio.run(run_conformance_case(case, provider_factory))
