"""Provider conformance: the kit's cases (``durable_engine.testing``) on both providers.

The cases live in the kit, so a provider outside this repository runs the same ones; the
``provider_factory`` fixture (conftest) runs each on the in-memory provider and on
PostgreSQL. PostgreSQL-only behaviour is in ``test_postgres_provider.py``.
"""

from __future__ import annotations

from durable_engine.testing import ProviderConformance


class TestProviderConformance(ProviderConformance):
    pass
