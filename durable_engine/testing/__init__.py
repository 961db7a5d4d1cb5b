"""The provider test kit: proves that a storage provider keeps the engine's contract.

A provider (see :class:`durable_engine.Provider`) passes when every conformance case passes
against it. With pytest, beside a fixture that returns a :class:`ProviderFactory`::

    import pytest
    from durable_engine.testing import ProviderConformance, ProviderFactory

    class MyProviderFactory(ProviderFactory):
        async def create(self) -> Provider:
            return await MyProvider.connect(fresh_empty_store())

    @pytest.fixture
    def provider_factory() -> ProviderFactory:
        return MyProviderFactory()

    class TestMyProvider(ProviderConformance):
        pass

Without pytest's collection, ``run_conformance_case(case, factory)`` runs one case of
``CONFORMANCE_CASES``. :class:`InMemoryProviderFactory` is the reference: the in-memory
provider on a manual clock. This module needs pytest; ``import durable_engine`` never
imports it.
"""

import pytest

# the cases are plain asserts: have pytest rewrite them for readable failures, as in test files
pytest.register_assert_rewrite("durable_engine.testing._cases")

from ._cases import CONFORMANCE_CASES, Advance, ConformanceCase  # noqa: E402
from ._factory import InMemoryProviderFactory, ProviderFactory  # noqa: E402
from ._suite import ProviderConformance, run_conformance_case  # noqa: E402

__all__ = [
    "CONFORMANCE_CASES",
    "Advance",
    "ConformanceCase",
    "InMemoryProviderFactory",
    "ProviderConformance",
    "ProviderFactory",
    "run_conformance_case",
]
