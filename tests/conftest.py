"""Shared fixtures: one PostgreSQL server per test session, one fresh database per test.

Starting a server costs about a second; creating and dropping a database costs a
few tens of milliseconds (see ``pg_dsn``), so every test gets its own empty
database and tests never see each other's rows.

Set ``TOYGRES_TEST_DATABASE_URL`` (a libpq URL with rights to CREATE DATABASE) to
run against an existing server instead of launching one; tests that need the
server object itself (to stop or kill it) are skipped then.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from toygres.pgserver import EmbeddedPostgres, Watchdog, dsn_for_database

pytest_plugins = ["tests.standins.fixtures", "tests.pgbouncer"]

EXTERNAL_URL_ENV = "TOYGRES_TEST_DATABASE_URL"

FAST_TEST_SETTINGS = {
    # Test data is disposable: trade durability for speed on a shared 2-core machine.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


@pytest.fixture
def pg_tmp_dir() -> Iterator[Path]:
    """A scratch directory for data directories of extra servers.

    Not ``tmp_path``: pytest keeps ``/tmp/pytest-of-<user>`` at mode 0700 (and resets it
    at every session start), which the unprivileged PostgreSQL user cannot traverse
    when tests run as root.
    """
    path = Path(tempfile.mkdtemp(prefix="toygres-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """The session's embedded PostgreSQL server (trust auth on 127.0.0.1, fast settings)."""
    if os.environ.get(EXTERNAL_URL_ENV):
        pytest.skip(f"needs the embedded server, but {EXTERNAL_URL_ENV} is set")
    base = Path(tempfile.mkdtemp(prefix="toygres-test-pg-"))
    server = EmbeddedPostgres(base / "data", server_settings=FAST_TEST_SETTINGS)
    watchdog: Watchdog | None = None
    try:
        server.start(timeout=60)
        watchdog = server.stop_when_process_exits()
        yield server
    finally:
        try:
            server.stop(mode="immediate")  # nothing to keep; skip the shutdown checkpoint
        finally:
            if watchdog is not None:
                watchdog.release()
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_dsn(request: pytest.FixtureRequest) -> str:
    """DSN of the maintenance database (``postgres``) on the test server."""
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        return external
    server: EmbeddedPostgres = request.getfixturevalue("pg_server")
    return server.dsn("postgres")


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for this test; dropped (even with open sessions) afterwards.

    Measured on the 2-core dev VM with the fast settings: CREATE DATABASE ≈ 80 ms,
    DROP ... WITH (FORCE) ≈ 8 ms (FILE_COPY strategy is no faster).
    """
    dbname = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield dsn_for_database(pg_admin_dsn, dbname)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
