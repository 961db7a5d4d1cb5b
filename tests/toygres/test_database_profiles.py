"""The control plane's database as Azure runs it: through PgBouncer, as an identity without DDL.

- Through Debian's PgBouncer in transaction pooling mode (as Azure's built-in one on port 6432):
  a whole instance lifecycle — create, running, health checks, delete — on the local runtime,
  with the engine and the metadata store both going through the pooler.
- With ``TOYGRES_MIGRATE_ON_START=false``: an identity that may only read and write rows starts
  the control plane once someone else applied the schemas (``toygres migrate``), and is refused,
  naming what is missing, before that.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from control_plane.bootstrap import DatabaseAccess, open_control_plane
from durable_engine.migrate import MigrationError, apply_migrations
from durable_engine.postgres import engine_migrations
from tests.toygres.plane import FAST, kill_local_instances, run_lifecycle
from toygres.cms_migrations import migrate_cms
from toygres.models import RuntimeKind
from toygres.runtimes.local import LocalRuntime
from toygres.settings import DatabasePooler, Settings

pytestmark = pytest.mark.postgres


def settings_for(dsn: str, root: Path, **extra: object) -> Settings:
    return Settings(default_runtime=RuntimeKind.LOCAL, local_data_dir=root, database_url=dsn, **extra)


async def test_the_whole_lifecycle_through_pgbouncer_in_transaction_mode(
    pgbouncer_dsn: str, pg_tmp_dir: Path
) -> None:
    root = pg_tmp_dir / "instances"
    settings = settings_for(pgbouncer_dsn, root, database_pooler=DatabasePooler.TRANSACTION)
    try:
        # migrations too go through the pooler: the migrator holds nothing across transactions
        async with open_control_plane(
            settings, runtimes={RuntimeKind.LOCAL: LocalRuntime(root)}, timing=FAST
        ) as plane:
            assert plane.provider is not None
            await run_lifecycle(plane)
    finally:
        kill_local_instances(root)


@pytest.fixture
def identity_dsn(pg_dsn: str, pg_admin_dsn: str) -> Iterator[str]:
    """A login role with row privileges on both schemas (granted after they exist), and no DDL."""
    role = f"identity_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    dbname = conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
        db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        yield make_conninfo(pg_dsn, user=role)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as db:
            db.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def grant_rows(owner_dsn: str, role: str) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as db:
        for schema in ("durable", "toygres"):
            ident, who = sql.Identifier(schema), sql.Identifier(role)
            db.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, who))
            db.execute(
                sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                    ident, who
                )
            )
            db.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(ident, who))
            db.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(ident, who))


async def test_an_identity_without_ddl_starts_once_the_schemas_are_applied(
    pg_dsn: str, identity_dsn: str, pg_tmp_dir: Path
) -> None:
    root = pg_tmp_dir / "instances"
    settings = settings_for(identity_dsn, root, migrate_on_start=False)
    runtimes = {RuntimeKind.LOCAL: LocalRuntime(root)}
    # nothing applied yet: a clear refusal, and no attempt at DDL the identity may not run
    with pytest.raises(MigrationError, match="is missing migrations 0001_"):
        async with open_control_plane(settings, runtimes=runtimes):
            pass
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with open_control_plane(settings_for(identity_dsn, root), runtimes=runtimes):
            pass  # the same identity asked to migrate: the server refuses the DDL

    # the deployer applies both schemas (what `toygres migrate` does), then grants rows only
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await apply_migrations(conn, engine_migrations(), schema="durable")
        await migrate_cms(conn)
    grant_rows(pg_dsn, str(conninfo_to_dict(identity_dsn)["user"]))
    try:
        async with open_control_plane(settings, runtimes=runtimes, timing=FAST) as plane:
            await run_lifecycle(plane)
    finally:
        kill_local_instances(root)


def test_database_access_follows_the_settings(tmp_path: Path) -> None:
    plain = DatabaseAccess.from_settings(Settings(local_data_dir=tmp_path))
    assert (plain.connect_kwargs, plain.pooler, plain.migrate) == (None, "none", True)
    pooled = DatabaseAccess.from_settings(
        Settings(local_data_dir=tmp_path, database_pooler="transaction", migrate_on_start=False)
    )
    assert (pooled.pooler, pooled.migrate) == ("transaction", False)
    kwargs = asyncio.run(pooled.session_kwargs())
    assert kwargs == {"autocommit": True, "prepare_threshold": None}
    entra = DatabaseAccess.from_settings(Settings(local_data_dir=tmp_path, database_auth="entra"))
    assert entra.connect_kwargs is not None  # a token source; the rotation test drives a real one
