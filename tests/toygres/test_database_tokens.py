"""Entra tokens as database passwords: cached until due, rotated without an outage.

The rotation test runs a real PostgreSQL that checks SCRAM passwords. The credential stand-in
plays Entra and the server's Entra integration at once: each token it issues becomes the role's
password and the previous one stops working, as an expired token would.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from azure.core.credentials import AccessToken
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from control_plane.bootstrap import DatabaseAccess, open_control_plane
from tests.toygres.plane import FAST, kill_local_instances, run_lifecycle
from toygres.database_tokens import POSTGRES_SCOPE, EntraPasswordSource
from toygres.models import RuntimeKind
from toygres.pgserver import EmbeddedPostgres
from toygres.runtimes.local import LocalRuntime
from toygres.settings import Settings

ROLE = "toygres_identity"


class CountingCredential:
    """Hands out numbered tokens valid for ``lifetime`` seconds; can be told to fail."""

    def __init__(self, clock: list[float], lifetime: float) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[str] = []
        self.fail = False

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.calls.append(scopes[0])
        if self.fail:
            raise RuntimeError("the identity endpoint is down")
        return AccessToken(f"token-{len(self.calls)}", int(self.clock[0] + self.lifetime))


async def test_tokens_are_reused_until_due_and_fetched_once_for_concurrent_connects() -> None:
    now = [1_000_000.0]
    credential = CountingCredential(now, lifetime=3600)
    source = EntraPasswordSource(credential, refresh_before=timedelta(minutes=5), clock=lambda: now[0])
    passwords = await asyncio.gather(*(source.password() for _ in range(20)))
    assert set(passwords) == {"token-1"} and credential.calls == [POSTGRES_SCOPE]
    now[0] += 3600 - 301  # not yet within five minutes of expiry
    assert await source.password() == "token-1"
    now[0] += 2  # now it is
    assert (await source.connect_kwargs()) == {"password": "token-2"}


async def test_a_failed_refresh_keeps_the_valid_token_and_an_expired_one_raises() -> None:
    now = [1_000_000.0]
    credential = CountingCredential(now, lifetime=600)
    source = EntraPasswordSource(credential, refresh_before=timedelta(minutes=5), clock=lambda: now[0])
    assert await source.password() == "token-1"
    credential.fail = True
    now[0] += 400  # due for refresh, still valid
    assert await source.password() == "token-1"
    now[0] += 300  # expired
    with pytest.raises(RuntimeError, match="identity endpoint is down"):
        await source.password()


class RotatingEntra:
    """A credential whose every token becomes the role's only valid password."""

    def __init__(self, admin_dsn: str, lifetime: float) -> None:
        self.admin_dsn = admin_dsn
        self.lifetime = lifetime
        self.issued: list[str] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        assert scopes == (POSTGRES_SCOPE,)
        token = secrets.token_urlsafe(32)
        with self._lock, psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(token))
            )
            self.issued.append(token)
        return AccessToken(token, int(time.time() + self.lifetime))


@pytest.fixture(scope="module")
def scram_server() -> Iterator[EmbeddedPostgres]:
    base = Path(tempfile.mkdtemp(prefix="toygres-scram-"))
    server = EmbeddedPostgres(base / "data", password="admin-password-for-the-test")
    server.start(timeout=60)
    watchdog = server.stop_when_process_exits()
    try:
        with psycopg.connect(server.dsn(with_password=True), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        yield server
    finally:
        server.stop(mode="immediate")
        watchdog.release()


@pytest.mark.postgres
async def test_connections_keep_working_across_token_rotations(scram_server: EmbeddedPostgres) -> None:
    admin_dsn = scram_server.dsn(with_password=True)
    entra = RotatingEntra(admin_dsn, lifetime=301.0)  # due one second after it is issued
    source = EntraPasswordSource(entra, refresh_before=timedelta(minutes=5))
    dsn = f"postgresql://{ROLE}@127.0.0.1:{scram_server.port}/postgres"

    async def kwargs() -> dict[str, Any]:
        return {"autocommit": True, **(await source.connect_kwargs())}

    # short-lived connections, so new ones (with new tokens) are opened while the test runs
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, kwargs=kwargs, min_size=2, max_size=4, max_lifetime=1.0, open=False
    )
    await pool.open(wait=True)
    failures: list[BaseException] = []
    queries = 0
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT current_user")
                    assert (await cur.fetchone()) == (ROLE,)
                queries += 1
            except Exception as exc:
                failures.append(exc)
            await asyncio.sleep(0.02)
    finally:
        await pool.close()
    assert failures == []
    assert queries > 100
    assert len(entra.issued) >= 3, "the token should have rotated several times"
    # the old tokens were revoked: only the newest one still opens a connection
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn, password=entra.issued[0]).close()
    psycopg.connect(dsn, password=entra.issued[-1]).close()


@pytest.mark.postgres
async def test_the_control_plane_connects_with_tokens_only(
    scram_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Both pools, the listener and the migrations use the token source: the role has no other password."""
    admin_dsn = scram_server.dsn(with_password=True)
    database = f"toygres_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(ROLE))
        )
    entra = RotatingEntra(admin_dsn, lifetime=302.0)  # due two seconds after it is issued
    access = DatabaseAccess(EntraPasswordSource(entra).connect_kwargs, "none", migrate=True)
    url = f"postgresql://{ROLE}@127.0.0.1:{scram_server.port}/{database}"
    settings = Settings(default_runtime=RuntimeKind.LOCAL, local_data_dir=tmp_path, database_url=url)
    runtimes = {RuntimeKind.LOCAL: LocalRuntime(tmp_path)}
    try:
        for _ in range(2):  # a second start, after the token rotated, opens every connection anew
            async with open_control_plane(settings, runtimes=runtimes, timing=FAST, access=access) as plane:
                await run_lifecycle(plane)
            await asyncio.sleep(2.5)
    finally:
        kill_local_instances(tmp_path)
    assert len(entra.issued) >= 2
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url, password=entra.issued[0]).close()
