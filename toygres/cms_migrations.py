"""Apply the Toygres metadata (CMS) migrations with the engine's generic migrator.

The SQL files live in ``migrations/cms`` at the repository root (next to the engine's), located
relative to this file: Toygres is deployed from a checkout / Functions package, not as a wheel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from durable_engine.migrate import Migration, apply_migrations, load_migrations, require_migrations

CMS_MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations" / "cms"


def cms_migrations() -> list[Migration]:
    """The CMS migration files, in order."""
    return load_migrations(CMS_MIGRATIONS_DIR)


async def migrate_cms(
    conn_or_dsn: psycopg.AsyncConnection[Any] | str, schema: str = "toygres"
) -> list[Migration]:
    """Create or upgrade the CMS schema; returns the migrations applied by this call.

    Safe to call from several processes at once (the migrator holds an advisory lock per schema)
    and a no-op when everything is applied. A DSN gets its own short-lived connection.
    """
    migrations = cms_migrations()
    lock_key = f"toygres-cms:{schema}"
    if isinstance(conn_or_dsn, str):
        async with await psycopg.AsyncConnection.connect(conn_or_dsn, autocommit=True) as conn:
            return await apply_migrations(conn, migrations, schema=schema, lock_key=lock_key)
    return await apply_migrations(conn_or_dsn, migrations, schema=schema, lock_key=lock_key)


async def require_cms(conn: psycopg.AsyncConnection[Any], schema: str = "toygres") -> None:
    """Refuse to start on a CMS schema that is not current, without running any DDL.

    For deployments whose identity may only read and write rows (``TOYGRES_MIGRATE_ON_START=false``):
    ``toygres migrate`` applies the schema, over a direct connection, as someone who may.
    """
    await require_migrations(conn, cms_migrations(), schema=schema)
