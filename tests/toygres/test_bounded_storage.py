"""Invariant 9: bounded storage.

Health-check history and deleted rows (with their finished operations) are pruned on a schedule
with configurable retention; the list query uses its indexes, shown by EXPLAIN on a table with
50,000 deleted rows, so the default page costs the same on day one and after years of churn.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import ManualClock, Runtime, RuntimeStatus
from toygres.cms_migrations import migrate_cms
from toygres.metadata import MetadataRepository
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind
from toygres.runtimes.local import LocalRuntime
from toygres.settings import Settings

from .plane import local_settings, stepped_plane

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

DELETED_ROWS = 50_000


@pytest.fixture
async def virtual(pg_dsn: str, local_root: Path) -> AsyncIterator[tuple[ControlPlane, Runtime, ManualClock]]:
    timing = LifecycleTiming(
        health_interval_seconds=30,
        readiness_deadline_seconds=600,
        readiness_poll_seconds=5,
        health_check_retention_seconds=3600,
        deleted_retention_seconds=86400,
    )
    async with stepped_plane(
        pg_dsn,
        {RuntimeKind.LOCAL: LocalRuntime(local_root)},
        settings=local_settings(local_root),
        timing=timing,
        clock=ManualClock(datetime.now(UTC)),
    ) as (cp, engine, clock):
        yield cp, engine, clock


def test_retention_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOYGRES_HEALTH_CHECK_RETENTION_DAYS", "2")
    monkeypatch.setenv("TOYGRES_DELETED_INSTANCE_RETENTION_DAYS", "0.5")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    timing = LifecycleTiming.from_settings(settings)
    assert timing.health_check_retention_seconds == 2 * 86400
    assert timing.deleted_retention_seconds == 43200


async def test_the_reconciler_prunes_old_health_checks_and_deleted_instances(
    virtual: tuple[ControlPlane, Runtime, ManualClock], pg_dsn: str
) -> None:
    cp, engine, clock = virtual
    kept = await cp.create_instance(CreateInstanceRequest(name="kept"))
    gone = await cp.create_instance(CreateInstanceRequest(name="gone"))
    await engine.run_until_idle()
    for _ in range(3):  # three rounds of checks
        clock.advance(timedelta(seconds=31))
        await engine.run_until_idle()
    assert len(await cp.metadata.list_health_checks(kept.instance_id)) >= 3
    delete_op = await cp.delete_instance(gone.instance_id)
    await engine.run_until_idle()
    assert (await cp.get_instance(gone.instance_id)).state is InstanceState.DELETED
    # age what is there: checks two hours old, the deletion two days old
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("UPDATE toygres.health_checks SET checked_at = checked_at - interval '2 hours'")
        await conn.execute("ALTER TABLE toygres.instances DISABLE TRIGGER instances_0_enforce_lifecycle")
        await conn.execute(
            "UPDATE toygres.instances SET deleted_at = deleted_at - interval '2 days' WHERE id = %s",
            (gone.instance_id,),
        )
        await conn.execute("ALTER TABLE toygres.instances ENABLE TRIGGER instances_0_enforce_lifecycle")

    clock.advance(timedelta(minutes=5))
    reconciler_id = await cp.run_reconciler(now=clock.now())
    await engine.run_until_idle()
    status = await cp.client.get_status(reconciler_id)
    assert status is not None and status.status == RuntimeStatus.COMPLETED, status.error
    pruned: dict[str, Any] = status.output["pruned"]
    assert pruned["instances"] == 1 and pruned["health_checks"] >= 3
    with pytest.raises(Exception, match="not found"):
        await cp.get_instance(gone.instance_id)
    # the deleted instance's finished operations went with it
    for operation in (gone.operation_id, delete_op):
        assert await cp.client.get_status(operation) is None
    # the live instance stays, with its newest checks
    assert (await cp.get_instance(kept.instance_id)).state is InstanceState.RUNNING
    assert all(
        c.checked_at > datetime.now(UTC) - timedelta(hours=1)
        for c in await cp.metadata.list_health_checks(kept.instance_id)
    )


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


async def test_the_list_query_uses_its_indexes_on_50000_deleted_rows(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await migrate_cms(conn)
        # years of churn: many instances created and deleted since the few live ones were made
        await conn.execute(
            "INSERT INTO toygres.instances (id, name, k8s_name, runtime, postgres_version, storage_size,"
            " password_ref, database, username, created_at)"
            " SELECT gen_random_uuid(), 'live-' || i, 'live-' || i, 'local', '18', '1Gi',"
            ' \'{"store": "local-file", "name": "x"}\', \'postgres\', \'postgres\','
            " now() - interval '3 years' + i * interval '1 minute'"
            " FROM generate_series(1, 20) AS i"
        )
        await conn.execute("UPDATE toygres.instances SET state = 'running'")
        await conn.execute(
            "INSERT INTO toygres.instances (id, name, k8s_name, runtime, postgres_version, storage_size,"
            " password_ref, database, username, created_at)"
            " SELECT gen_random_uuid(), 'churn-' || i, 'churn-' || i, 'local', '18', '1Gi',"
            ' \'{"store": "local-file", "name": "x"}\', \'postgres\', \'postgres\','
            " now() - interval '2 years' + i * interval '20 minutes'"
            " FROM generate_series(1, %s) AS i",
            (DELETED_ROWS,),
        )
        await conn.execute("UPDATE toygres.instances SET state = 'deleting' WHERE name LIKE 'churn-%'")
        await conn.execute(
            "UPDATE toygres.instances SET state = 'deleted', deleted_at = now() WHERE name LIKE 'churn-%'"
        )
        await conn.execute("ANALYZE toygres.instances")
        repo = MetadataRepository(conn)

        default_page = (await repo.list_instances()).items
        assert len(default_page) == 20 and {i.state for i in default_page} == {InstanceState.RUNNING}

        for query, params in (
            repo.list_query(),  # the default page: live instances, newest first
            repo.list_query(state=InstanceState.RUNNING),
            repo.list_query(state=InstanceState.DELETED, limit=10),
        ):
            explain = psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query
            cur = await conn.execute(explain, params)
            row = await cur.fetchone()
            assert row is not None
            plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
            nodes = _plan_nodes(plan)
            kinds = [n["Node Type"] for n in nodes]
            assert "Seq Scan" not in kinds and "Sort" not in kinds, kinds
            scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan")]
            assert scans, kinds
            # the index reads the page, not the history: few rows looked at and thrown away
            assert sum(n.get("Rows Removed by Filter", 0) for n in nodes) < 100, nodes
