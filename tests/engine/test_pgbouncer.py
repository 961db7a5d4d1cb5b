"""The engine through a real PgBouncer in transaction pooling mode (``tests/pgbouncer.py``).

The conformance kit and a subset of the runtime semantics run with every connection of the
provider going through the pooler, as on Azure Database for PostgreSQL's built-in PgBouncer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from durable_engine import MessageKind, OrchestratorMessage, Provider
from durable_engine.migrate import Migration, apply_migrations, load_migrations
from durable_engine.postgres import PostgresProvider
from durable_engine.testing import ProviderConformance, ProviderFactory

pytestmark = pytest.mark.postgres


class PooledProviderFactory(ProviderFactory):
    """Every connection through the pooler: the pool, the migrations, and no LISTEN (polling)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.connections = 0

    def connect_kwargs(self) -> dict[str, str]:
        self.connections += 1
        return {"application_name": "engine-through-pgbouncer"}

    async def create(self) -> Provider:
        return await PostgresProvider.connect(
            self.dsn, max_pool=4, pooler="transaction", poll_interval=0.1, connect_kwargs=self.connect_kwargs
        )


@pytest.fixture
def provider_factory(pgbouncer_dsn: str) -> ProviderFactory:
    return PooledProviderFactory(pgbouncer_dsn)


class TestConformanceThroughPgBouncer(ProviderConformance):
    pass


def test_every_new_pooled_connection_asked_connect_kwargs(provider_factory: PooledProviderFactory) -> None:
    async def run() -> None:
        provider = await provider_factory.create()
        await provider_factory.dispose(provider)

    asyncio.run(run())
    # the migration connection and the pool's first connection; no listener behind the pooler
    assert provider_factory.connections >= 2


async def _listening_backends(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_behind_the_pooler_listen_needs_a_direct_connection(pgbouncer_dsn: str, pg_dsn: str) -> None:
    polled = await PostgresProvider.connect(pgbouncer_dsn, pooler="transaction", max_pool=2)
    try:
        assert await _listening_backends(pg_dsn) == 0, "no LISTEN through a transaction-mode pooler"
    finally:
        await polled.close()
    direct = await PostgresProvider.connect(
        pgbouncer_dsn, pooler="transaction", direct_dsn=pg_dsn, max_pool=2
    )
    try:
        assert await _listening_backends(pg_dsn) == 1, "LISTEN on the direct connection"
        waiter = asyncio.create_task(direct.wait_for_work("orchestrator", 30.0))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        other = await PostgresProvider.connect(pgbouncer_dsn, pooler="transaction", max_pool=2)
        try:  # another process's enqueue: only a NOTIFY (or a poll) can tell this one
            await other.enqueue_orchestrator_message(
                OrchestratorMessage(kind=MessageKind.EVENT_RAISED, instance_id="a", name="wake")
            )
        finally:
            await other.close()
        await asyncio.wait_for(waiter, 10)
    finally:
        await direct.close()


async def test_concurrent_migrators_through_the_pooler_apply_each_file_once(
    tmp_path: Path, pgbouncer_dsn: str, pg_dsn: str
) -> None:
    """No session lock, no named prepared statements: safe through PgBouncer, even for many files."""
    for n in range(1, 9):
        body = "CREATE TABLE log (n int);" if n == 1 else ""
        (tmp_path / f"{n:04d}_step.sql").write_text(
            body + f"\nSELECT pg_sleep(0.02);\nINSERT INTO log VALUES ({n});\n"
        )
    migrations = load_migrations(tmp_path)

    async def run() -> list[Migration]:
        # psycopg's default prepare_threshold: the migrator itself must not prepare statements
        async with await psycopg.AsyncConnection.connect(pgbouncer_dsn) as conn:
            return await apply_migrations(conn, migrations, schema="app")

    results = await asyncio.wait_for(asyncio.gather(*(run() for _ in range(3))), timeout=120)
    assert sorted(m.version for r in results for m in r) == list(range(1, 9))
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        rows = await (await conn.execute("SELECT n FROM app.log")).fetchall()
        assert [r[0] for r in rows] == list(range(1, 9)), "in order, each once"
        locks = await (
            await conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        ).fetchone()
        assert locks == (0,), "no advisory lock outlives its migration"


# --- runtime semantics through the pooler (the ``engine`` fixture takes its provider from the
# ``provider_factory`` above): imported, so pytest runs them here too --------------------------
from .test_cancellation import (  # noqa: E402, F401
    test_a_cancelled_orchestration_cleans_up_then_ends_cancelled,
    test_cancellation_cascades_to_sub_orchestrations_which_clean_up_too,
)
from .test_faults import (  # noqa: E402, F401
    faulty,
    test_a_message_arriving_while_continue_as_new_backs_off_waits_for_the_new_execution,
    test_sub_orchestration_whose_instance_id_exists_fails_the_parent_catchably,
)
from .test_semantics import (  # noqa: E402, F401
    test_client_start_is_idempotent_and_lists_filters_pages_purges,
    test_continue_as_new_starts_fresh_history_and_carries_events,
    test_crashed_dispatcher_item_comes_back_after_lock_expiry,
    test_external_event_raised_before_wait_is_kept,
    test_join_returns_results_in_argument_order,
    test_long_activity_renews_its_lock_and_runs_once,
    test_sub_orchestrations_results_errors_and_derived_ids,
    test_timers_fire_at_their_time_and_survive_a_runtime_restart,
    test_wait_for_completion_times_out_on_a_running_instance,
)
