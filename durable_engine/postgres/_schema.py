"""The engine's own schema: the migration files packaged with it."""

from __future__ import annotations

import importlib.resources

from ..migrate import Migration, load_migrations


def engine_migrations() -> list[Migration]:
    """The engine schema's migrations, in order, for ``durable_engine.migrate.apply_migrations``.

    Public so that a deployment tool can apply the schema ahead of time (as someone allowed to
    run DDL) while the application connects with ``PostgresProvider.connect(..., migrate=False)``.
    The lock key to use is the schema name, as ``connect`` does.
    """
    return load_migrations(importlib.resources.files("durable_engine.postgres") / "sql")
