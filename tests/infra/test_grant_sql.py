"""scripts/azure/grant-control-plane.sql against a real PostgreSQL, the way deploy.sh uses it.

In Azure, deploy.sh runs ``toygres migrate`` as the deployer (an Entra admin), so the deployer owns
the schemas; the SQL then grants the control plane's identity what it needs. Here: a deployer role
migrates with the real CLI, psql runs the real file, and the identity role works with the metadata
store, may call every engine function, gets privileges on objects later migrations add, and still
cannot drop anything (it is not the owner).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from tests.infra.bicep import ROOT
from toygres.metadata import MetadataRepository
from toygres.pgserver import postgres_bin_dir

pytestmark = pytest.mark.postgres

GRANTS = ROOT / "scripts" / "azure" / "grant-control-plane.sql"


@pytest.fixture
def roles(pg_admin_dsn: str, pg_dsn: str) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    deployer, identity = f"deployer_{suffix}", f"id-toygres-{suffix}"
    dbname = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        for role in (deployer, identity):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(deployer)
            )
        )
    try:
        yield deployer, identity
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as db:
            for role in (identity, deployer):
                db.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            for role in (identity, deployer):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def as_role(dsn: str, role: str) -> str:
    return make_conninfo(dsn, user=role)


def test_identity_can_run_the_control_plane_after_the_grants(pg_dsn: str, roles: tuple[str, str]) -> None:
    deployer, identity = roles
    deployer_dsn, identity_dsn = as_role(pg_dsn, deployer), as_role(pg_dsn, identity)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOYGRES_")}

    migrate = subprocess.run(
        [sys.executable, "-m", "cli", "migrate"],
        env=env | {"TOYGRES_DATABASE_URL": deployer_dsn},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    def grant() -> None:
        done = subprocess.run(
            [
                str(postgres_bin_dir() / "psql"),
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"identity={identity}",
                "-v",
                "engine_schema=durable",
                "-v",
                "cms_schema=toygres",
                "-f",
                str(GRANTS),
                deployer_dsn,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    grant()
    grant()  # deploy.sh runs it on every deploy: idempotent

    with psycopg.connect(identity_dsn, autocommit=True) as conn:
        missing = conn.execute(
            """
            SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('durable', 'toygres') AND c.relkind IN ('r', 'p')
              AND NOT has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')
            UNION ALL
            SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname IN ('durable', 'toygres') AND NOT has_function_privilege(p.oid, 'EXECUTE')
            """
        ).fetchall()
        assert missing == []
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('durable', 'toygres')"
        ).fetchone()
        assert tables is not None and tables[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE toygres.instances")

    async def list_as_identity() -> list[object]:
        pool: AsyncConnectionPool = AsyncConnectionPool(identity_dsn, min_size=1, max_size=2, open=False)
        await pool.open()
        try:
            return list(await MetadataRepository(pool, schema="toygres").list_running_instances())
        finally:
            await pool.close()

    assert asyncio.run(list_as_identity()) == []

    # a later migration (as the deployer) adds objects: the default privileges cover them
    with psycopg.connect(deployer_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE toygres.later_table (id int)")
        conn.execute("CREATE FUNCTION durable.later_function() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    with psycopg.connect(identity_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO toygres.later_table VALUES (1)")
        row = conn.execute("SELECT durable.later_function()").fetchone()
        assert row == (1,)
