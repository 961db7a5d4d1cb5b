"""Invariant 5: state changes follow the state machine, enforced where the data lives.

The checks live in the database (a trigger), so they hold for every writer: the repository,
an operator's ``psql``, a future service. Deleted rows take no writes at all.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from toygres.cms_migrations import migrate_cms
from toygres.deployment_planner import build_deployment_config
from toygres.metadata import InstanceDeleted, InvalidStateTransition, MetadataRepository
from toygres.models import (
    ALLOWED_TRANSITIONS,
    CreateInstanceRequest,
    HealthCheckResult,
    HealthStatus,
    InstanceMetadata,
    InstanceState,
)
from toygres.settings import Settings

pytestmark = pytest.mark.postgres

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as c:
        await migrate_cms(c)
        yield c


@pytest.fixture
async def repo(conn: psycopg.AsyncConnection[object]) -> MetadataRepository:
    return MetadataRepository(conn)


async def _instance(repo: MetadataRepository, name: str) -> InstanceMetadata:
    request = CreateInstanceRequest(name=name, runtime="kubernetes")  # type: ignore[arg-type]
    return await repo.create_instance(build_deployment_config(request, SETTINGS, instance_id=uuid.uuid4()))


async def _deleted(repo: MetadataRepository, name: str) -> InstanceMetadata:
    instance = await _instance(repo, name)
    await repo.update_state(instance.id, InstanceState.DELETING)
    return await repo.mark_deleted(instance.id)


async def test_the_database_knows_the_state_machine_python_knows(
    conn: psycopg.AsyncConnection[object],
) -> None:
    for source, target in itertools.product(InstanceState, InstanceState):
        if source is target:
            continue
        cur = await conn.execute(
            "SELECT toygres.instance_transition_allowed("
            "%s::toygres.instance_state, %s::toygres.instance_state)",
            (source.value, target.value),
        )
        row = await cur.fetchone()
        assert row is not None
        assert row[0] is (target in ALLOWED_TRANSITIONS[source]), (source, target)


async def test_sql_that_bypasses_the_repository_cannot_skip_the_machine(
    repo: MetadataRepository, conn: psycopg.AsyncConnection[object]
) -> None:
    instance = await _instance(repo, "bypass")
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        await conn.execute(
            "UPDATE toygres.instances SET state = 'deleted', deleted_at = now() WHERE id = %s", (instance.id,)
        )
    assert refused.value.diag.constraint_name == "instances_state_transition"
    # a new row starts its life in "creating", whatever the INSERT says
    row = (await repo.get_instance(instance.id) or instance).model_dump(
        mode="json", exclude={"connection_string"}
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute(
            "INSERT INTO toygres.instances (id, name, k8s_name, state, runtime, postgres_version,"
            " storage_size, password_ref, database, username)"
            " SELECT %s, 'sneaky', 'sneaky-1', 'running', runtime, postgres_version, storage_size,"
            " password_ref, database, username FROM toygres.instances WHERE id = %s",
            (uuid.uuid4(), row["id"]),
        )


async def test_a_caller_cannot_widen_the_machine_with_expected_from(repo: MetadataRepository) -> None:
    instance = await _instance(repo, "widen")
    await repo.update_state(instance.id, InstanceState.FAILED, reason="the create failed")
    with pytest.raises(InvalidStateTransition):
        await repo.update_state(instance.id, InstanceState.RUNNING, expected_from=[InstanceState.FAILED])
    running = await _instance(repo, "skip")
    await repo.update_state(running.id, InstanceState.RUNNING)
    with pytest.raises(InvalidStateTransition):  # running -> deleted skips deleting
        await repo.mark_deleted(running.id)


async def test_deleted_rows_take_no_writes(
    repo: MetadataRepository, conn: psycopg.AsyncConnection[object]
) -> None:
    gone = await _deleted(repo, "gone")
    for write in (
        lambda: repo.set_connection_info(gone.id, host="10.0.0.1", port=5432),
        lambda: repo.set_health_monitor_id(gone.id, "health-somebody"),
        lambda: repo.set_delete_orchestration_id(gone.id, "delete-again"),
        lambda: repo.record_health_check(
            gone.id, HealthCheckResult(status=HealthStatus.HEALTHY, checked_at=datetime.now(UTC))
        ),
    ):
        with pytest.raises(InstanceDeleted):
            await write()
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute("UPDATE toygres.instances SET failure_reason = 'edited' WHERE id = %s", (gone.id,))
    # asking for the state it is in already is no write, and no error (retried activities)
    assert (await repo.mark_deleted(gone.id)).state is InstanceState.DELETED
    assert await repo.get_instance(gone.id) == gone
    assert await repo.list_health_checks(gone.id) == []
