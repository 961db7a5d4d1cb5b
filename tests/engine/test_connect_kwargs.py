"""Fresh credentials for every new connection (``PostgresProvider.connect(connect_kwargs=...)``).

Microsoft Entra tokens (the password of a passwordless Azure Database for PostgreSQL login)
expire and rotate: an open connection stays valid, a new one needs the current token. The
engine knows nothing of Entra; it calls ``connect_kwargs`` for every new connection of its
pool, its LISTEN connection and its migration connection. Proven against a real server that
checks passwords (SCRAM): the role's password rotates, the old one stops working, and the
engine keeps going on new connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from durable_engine import Client, Registry, Runtime, RuntimeOptions, RuntimeStatus
from durable_engine.postgres import PostgresProvider
from tests.conftest import FAST_TEST_SETTINGS
from toygres.pgserver import EmbeddedPostgres

pytestmark = pytest.mark.postgres

T = TypeVar("T")


@pytest.fixture
def password_server(pg_tmp_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A server of its own that checks passwords (the session's test server trusts everyone)."""
    server = EmbeddedPostgres(
        pg_tmp_dir / "data", password="admin-secret", server_settings=FAST_TEST_SETTINGS
    )
    server.start(timeout=120)
    watchdog = server.stop_when_process_exits()
    try:
        yield server
    finally:
        try:
            server.stop(mode="immediate")
        finally:
            watchdog.release()


class RotatingToken:
    """Stands in for a token credential: the current token, and who asked for it."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.handed_out: list[str] = []

    async def __call__(self) -> dict[str, Any]:  # async, as a real token fetch would be
        await asyncio.sleep(0)
        self.handed_out.append(self.token)
        return {"password": self.token}


async def admin(server: EmbeddedPostgres, statement: sql.Composable) -> None:
    async with await psycopg.AsyncConnection.connect(server.dsn(with_password=True), autocommit=True) as conn:
        await conn.execute(statement)


async def set_token(server: EmbeddedPostgres, token: str) -> None:
    await admin(server, sql.SQL("ALTER ROLE engine PASSWORD {}").format(sql.Literal(token)))


async def retrying(call: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    """A client call right after the server dropped every connection may meet a dead one once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
async def engine_login(password_server: EmbeddedPostgres) -> AsyncIterator[str]:
    await admin(password_server, sql.SQL("CREATE ROLE engine LOGIN PASSWORD 'token-1'"))
    await admin(password_server, sql.SQL("CREATE DATABASE engine OWNER engine"))
    yield f"postgresql://engine@127.0.0.1:{password_server.port}/engine"  # no password in the DSN


async def test_every_new_connection_gets_the_current_token(
    password_server: EmbeddedPostgres, engine_login: str
) -> None:
    with pytest.raises(psycopg.OperationalError):  # the DSN alone does not log in
        await PostgresProvider.connect(engine_login)

    tokens = RotatingToken("token-1")
    provider = await PostgresProvider.connect(engine_login, connect_kwargs=tokens, max_pool=2)
    registry = Registry()

    @registry.activity("Echo")
    def echo(ctx: Any, value: str) -> str:
        return value

    @registry.orchestration("UsesEcho")
    async def uses_echo(ctx: Any, value: str) -> str:
        return str(await ctx.schedule_activity("Echo", value))

    runtime = Runtime(provider, registry, RuntimeOptions(idle_wait=0.5, error_backoff=timedelta(seconds=0.2)))
    client = Client(provider)
    await runtime.start()
    try:
        await client.start_orchestration("before", "UsesEcho", "before rotation")
        assert (await client.wait_for_completion("before", 30)).output == "before rotation"
        # migrations, the pool's connection and the LISTEN connection each asked for a token
        assert len(tokens.handed_out) >= 3 and set(tokens.handed_out) == {"token-1"}

        # rotation: the old token stops working, and the server drops every session of the role
        await set_token(password_server, "token-2")
        tokens.token = "token-2"
        await admin(
            password_server,
            sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'engine'"),
        )
        with pytest.raises(psycopg.OperationalError):
            await psycopg.AsyncConnection.connect(engine_login, password="token-1")

        await retrying(lambda: client.start_orchestration("after", "UsesEcho", "after rotation"))
        status = await retrying(lambda: client.wait_for_completion("after", 30))
        assert status.status == RuntimeStatus.COMPLETED and status.output == "after rotation"
        assert "token-2" in tokens.handed_out
        # the LISTEN connection came back with the new token too
        deadline = time.monotonic() + 30
        while True:
            async with await psycopg.AsyncConnection.connect(
                password_server.dsn(with_password=True), autocommit=True
            ) as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'engine' AND query LIKE 'LISTEN%%'"
                )
                row = await cur.fetchone()
            if row == (1,):
                break
            assert time.monotonic() < deadline, "the listener did not reconnect with the new token"
            await asyncio.sleep(0.1)
    finally:
        await runtime.shutdown(grace=2)
        await provider.close()
