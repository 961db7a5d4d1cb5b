"""The CMS schema and repository against a real PostgreSQL (one fresh database per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from toygres.cms_migrations import CMS_MIGRATIONS_DIR, cms_migrations, migrate_cms
from toygres.deployment_planner import build_deployment_config
from toygres.metadata import (
    DuplicateInstanceName,
    InstanceNotFound,
    InvalidCursor,
    InvalidStateTransition,
    MetadataRepository,
)
from toygres.models import (
    CreateInstanceRequest,
    DeploymentConfig,
    HealthCheckResult,
    HealthStatus,
    InstanceState,
    RuntimeKind,
)
from toygres.settings import Settings

from .secret_search import rows_containing

pytestmark = pytest.mark.postgres

KNOWN_PASSWORD = "Plaintext-Must-Never-Land-7731"
SETTINGS = Settings(_env_file=None, kubernetes={"namespace": "toygres"})  # type: ignore[call-arg]


def _config(name: str, *, password: str | None = None) -> DeploymentConfig:
    body: dict[str, object] = {"name": name, "runtime": "kubernetes"}
    if password is not None:
        body["password"] = password
    return build_deployment_config(CreateInstanceRequest(**body), SETTINGS, instance_id=uuid.uuid4())


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as c:
        yield c


@pytest.fixture
async def repo(conn: psycopg.AsyncConnection[object]) -> MetadataRepository:
    await migrate_cms(conn)
    return MetadataRepository(conn)


# -- migrations -------------------------------------------------------------------------------


async def test_migrations_apply_cleanly_and_twice_is_a_noop(pg_dsn: str) -> None:
    assert (CMS_MIGRATIONS_DIR / "0001_instances.sql").is_file()
    first = await migrate_cms(pg_dsn)
    assert [m.filename for m in first] == [m.filename for m in cms_migrations()]
    assert await migrate_cms(pg_dsn) == []
    async with await psycopg.AsyncConnection.connect(pg_dsn) as c:
        cur = await c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'toygres' ORDER BY 1"
        )
        assert [r[0] for r in await cur.fetchall()] == ["health_checks", "instances", "schema_migrations"]
        cur = await c.execute(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            " WHERE n.nspname = 'toygres' AND t.typtype = 'e' ORDER BY 1"
        )
        assert [r[0] for r in await cur.fetchall()] == ["health_status", "instance_state"]
        # nothing leaked into public
        cur = await c.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        assert (await cur.fetchone()) == (0,)


async def test_schema_name_is_configurable(conn: psycopg.AsyncConnection[object]) -> None:
    await migrate_cms(conn, schema="cms_alt")
    repo = MetadataRepository(conn, schema="cms_alt")
    created = await repo.create_instance(_config("alt"))
    assert (await repo.get_instance(created.id)) == created
    cur = await conn.execute("SELECT to_regclass('toygres.instances')")
    assert (await cur.fetchone()) == (None,)


# -- create / get / names ---------------------------------------------------------------------


async def test_create_and_get(repo: MetadataRepository) -> None:
    cfg = _config("orders")
    inst = await repo.create_instance(cfg, create_orchestration_id="create-1")
    assert inst.id == cfg.instance_id and inst.state is InstanceState.CREATING
    assert inst.health_status is HealthStatus.UNKNOWN
    assert inst.runtime is RuntimeKind.KUBERNETES and inst.k8s_namespace == "toygres"
    assert inst.password_ref == cfg.password_ref and inst.resources == cfg.resources
    assert inst.create_orchestration_id == "create-1" and inst.deleted_at is None
    assert inst.connection_string is None and inst.model_dump()["connection_string"] is None
    assert await repo.get_instance(cfg.instance_id) == inst
    assert await repo.get_instance_by_name("orders") == inst
    assert await repo.get_instance_by_operation_id("create-1") == inst
    assert await repo.get_instance(uuid.uuid4()) is None
    assert await repo.get_instance_by_name("nope") is None


async def test_create_is_idempotent_for_the_same_id(repo: MetadataRepository) -> None:
    cfg = _config("orders")
    first = await repo.create_instance(cfg, create_orchestration_id="op")
    again = await repo.create_instance(cfg, create_orchestration_id="op")
    assert again == first


async def test_duplicate_name_refused_until_deleted(repo: MetadataRepository) -> None:
    first = await repo.create_instance(_config("shared"))
    with pytest.raises(DuplicateInstanceName) as info:
        await repo.create_instance(_config("shared"))
    assert info.value.name == "shared"

    # an instance whose delete failed holds its name: it is still there until deleted again
    await repo.update_state(first.id, InstanceState.RUNNING)
    await repo.update_state(first.id, InstanceState.DELETING)
    await repo.update_state(first.id, InstanceState.FAILED, reason="the delete failed")
    assert not (await repo.get_instance(first.id) or first).name_released
    with pytest.raises(DuplicateInstanceName):
        await repo.create_instance(_config("shared"))

    await repo.update_state(first.id, InstanceState.DELETING)
    deleted = await repo.mark_deleted(first.id)
    assert deleted.state is InstanceState.DELETED and deleted.deleted_at is not None
    second = await repo.create_instance(_config("shared"))
    assert (await repo.get_instance_by_name("shared")) == second
    with pytest.raises(DuplicateInstanceName):
        await repo.create_instance(_config("shared"))

    # a create that fails gives the name back at once; the failed row stays to be looked at
    failed = await repo.update_state(second.id, InstanceState.FAILED, reason="the deploy failed")
    assert failed.name_released
    third = await repo.create_instance(_config("shared"))
    assert (await repo.get_instance_by_name("shared")) == third
    assert (await repo.get_instance(second.id)) == failed


# -- state machine ----------------------------------------------------------------------------


async def test_compare_and_set_state_transitions(repo: MetadataRepository) -> None:
    inst = await repo.create_instance(_config("cas"))
    running = await repo.update_state(inst.id, InstanceState.RUNNING)
    assert running.state is InstanceState.RUNNING and running.updated_at >= inst.updated_at

    # the same transition again: no write, same row (a retried activity is harmless)
    assert await repo.update_state(inst.id, InstanceState.RUNNING) == running

    # not allowed by the transition table
    with pytest.raises(InvalidStateTransition) as info:
        await repo.update_state(inst.id, InstanceState.CREATING)
    assert (info.value.current, info.value.target) == (InstanceState.RUNNING, InstanceState.CREATING)

    # an explicit expected_from that does not hold
    with pytest.raises(InvalidStateTransition):
        await repo.update_state(inst.id, InstanceState.DELETING, expected_from={InstanceState.CREATING})
    assert (await repo.get_instance(inst.id)).state is InstanceState.RUNNING  # type: ignore[union-attr]

    deleting = await repo.update_state(inst.id, InstanceState.DELETING, expected_from={InstanceState.RUNNING})
    assert deleting.state is InstanceState.DELETING and deleting.deleted_at is None
    deleted = await repo.update_state(inst.id, InstanceState.DELETED)
    assert deleted.deleted_at is not None

    # deleted is terminal, and marking it deleted again changes nothing
    assert await repo.mark_deleted(inst.id) == deleted
    with pytest.raises(InvalidStateTransition):
        await repo.update_state(inst.id, InstanceState.RUNNING, expected_from={InstanceState.DELETED})
    with pytest.raises(InvalidStateTransition):
        await repo.update_state(inst.id, InstanceState.FAILED)

    with pytest.raises(InstanceNotFound):
        await repo.update_state(uuid.uuid4(), InstanceState.RUNNING)


async def test_failure_reason_is_recorded(repo: MetadataRepository) -> None:
    inst = await repo.create_instance(_config("flaky"))
    failed = await repo.update_state(inst.id, InstanceState.FAILED, reason="pod never became ready")
    assert failed.failure_reason == "pod never became ready"
    # a retry with another reason does not rewrite history
    assert (await repo.update_state(inst.id, InstanceState.FAILED, reason="other")) == failed


async def test_concurrent_cas_lets_exactly_one_win(pg_dsn: str) -> None:
    import asyncio

    await migrate_cms(pg_dsn)
    async with AsyncConnectionPool(pg_dsn, min_size=4, max_size=4, open=False) as pool:
        repo = MetadataRepository(pool)
        inst = await repo.create_instance(_config("race"))

        async def attempt(target: InstanceState) -> InstanceState | None:
            try:
                await repo.update_state(inst.id, target, expected_from={InstanceState.CREATING})
                return target
            except InvalidStateTransition:
                return None

        outcomes = await asyncio.gather(
            *(attempt(t) for t in [InstanceState.RUNNING, InstanceState.FAILED] * 4)
        )
        winners = {o for o in outcomes if o is not None}
        assert len(winners) == 1
        final = await repo.get_instance(inst.id)
        assert final is not None and final.state in winners


# -- connection info, orchestration ids -------------------------------------------------------


async def test_setters_are_idempotent(repo: MetadataRepository) -> None:
    inst = await repo.create_instance(_config("conn"))
    first = await repo.set_connection_info(inst.id, host="conn-1.toygres.svc.cluster.local", port=5432)
    # a Kubernetes instance serves TLS: clients must verify it
    uri = "postgresql://postgres@conn-1.toygres.svc.cluster.local:5432/postgres?sslmode=verify-full"
    assert first.connection_string == uri and first.model_dump(mode="json")["connection_string"] == uri
    again = await repo.set_connection_info(inst.id, host="conn-1.toygres.svc.cluster.local", port=5432)
    assert again == first  # updated_at did not move: the row did not change

    monitored = await repo.set_health_monitor_id(inst.id, "health-conn")
    assert monitored.health_monitor_id == "health-conn" and monitored.updated_at >= first.updated_at
    assert await repo.set_health_monitor_id(inst.id, "health-conn") == monitored

    with_delete = await repo.set_delete_orchestration_id(inst.id, "delete-1")
    assert (await repo.get_instance_by_operation_id("delete-1")) == with_delete

    with pytest.raises(InstanceNotFound):
        await repo.set_connection_info(uuid.uuid4(), host="h", port=1)


async def test_list_running_instances(repo: MetadataRepository) -> None:
    a = await repo.create_instance(_config("a"))
    b = await repo.create_instance(_config("b"))
    await repo.create_instance(_config("c"))
    await repo.update_state(a.id, InstanceState.RUNNING)
    await repo.update_state(b.id, InstanceState.RUNNING)
    await repo.update_state(b.id, InstanceState.DELETING)
    assert [i.id for i in await repo.list_running_instances()] == [a.id]


# -- health checks ----------------------------------------------------------------------------


async def test_health_check_recording_updates_the_instance(repo: MetadataRepository) -> None:
    inst = await repo.create_instance(_config("hc"))
    t0 = datetime.now(UTC)
    healthy = HealthCheckResult(
        status=HealthStatus.HEALTHY, checked_at=t0, latency_ms=3.5, server_version="17.2", message="ok"
    )
    rec = await repo.record_health_check(inst.id, healthy)
    assert rec.instance_id == inst.id and rec.status is HealthStatus.HEALTHY and rec.server_version == "17.2"

    after = await repo.get_instance(inst.id)
    assert after is not None
    assert after.health_status is HealthStatus.HEALTHY
    assert after.last_health_check_at == t0
    assert (after.last_health_latency_ms, after.last_health_message) == (3.5, "ok")

    # recording the same probe again stores nothing new
    assert await repo.record_health_check(inst.id, healthy) == rec
    assert len(await repo.list_health_checks(inst.id)) == 1

    # a newer failure wins; an older, late-arriving one is kept but does not overwrite it
    newer = HealthCheckResult(
        status=HealthStatus.UNHEALTHY, checked_at=t0 + timedelta(seconds=30), message="refused"
    )
    older = HealthCheckResult(status=HealthStatus.HEALTHY, checked_at=t0 - timedelta(seconds=30))
    await repo.record_health_check(inst.id, newer)
    await repo.record_health_check(inst.id, older)
    latest = await repo.get_instance(inst.id)
    assert latest is not None and latest.health_status is HealthStatus.UNHEALTHY
    assert latest.last_health_message == "refused" and latest.last_health_latency_ms is None

    history = await repo.list_health_checks(inst.id, limit=10)
    assert [h.checked_at for h in history] == [newer.checked_at, t0, older.checked_at]
    assert [h.checked_at for h in await repo.list_health_checks(inst.id, limit=1)] == [newer.checked_at]

    assert await repo.prune_health_checks(t0) == 1
    assert len(await repo.list_health_checks(inst.id)) == 2

    with pytest.raises(InstanceNotFound):
        await repo.record_health_check(uuid.uuid4(), healthy)


# -- pagination -------------------------------------------------------------------------------


async def test_pagination_is_stable(repo: MetadataRepository, conn: psycopg.AsyncConnection[object]) -> None:
    created = [await repo.create_instance(_config(f"db{i}")) for i in range(7)]
    # give several rows the very same created_at: the id must break the tie deterministically
    await conn.execute(
        "UPDATE toygres.instances SET created_at = '2024-01-01T00:00:00Z' WHERE name IN ('db2','db3','db4')"
    )
    expected = [
        i.id
        for i in sorted(
            [await repo.get_instance(c.id) for c in created],  # type: ignore[misc]
            key=lambda i: (i.created_at, i.id),
            reverse=True,
        )
    ]

    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = await repo.list_instances(limit=3, cursor=cursor)
        seen += [i.id for i in page.items]
        pages += 1
        if pages == 1:
            await repo.create_instance(_config("late-arrival"))  # newer than every cursor: not in later pages
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected and pages == 3

    # deleted instances are hidden unless asked for; state filter works
    await repo.update_state(created[0].id, InstanceState.DELETING)
    await repo.mark_deleted(created[0].id)
    await repo.update_state(created[1].id, InstanceState.RUNNING)
    everything = await repo.list_instances(limit=100)
    assert created[0].id not in [i.id for i in everything.items] and everything.next_cursor is None
    assert len((await repo.list_instances(limit=100, include_deleted=True)).items) == 8
    assert [i.id for i in (await repo.list_instances(state=InstanceState.DELETED)).items] == [created[0].id]
    assert [i.id for i in (await repo.list_instances(state=InstanceState.RUNNING)).items] == [created[1].id]

    with pytest.raises(InvalidCursor):
        await repo.list_instances(cursor="not-a-cursor")
    with pytest.raises(ValueError):
        await repo.list_instances(limit=0)


# -- secrets ----------------------------------------------------------------------------------


async def test_a_changed_deployment_is_recorded_only_while_running(repo: MetadataRepository) -> None:
    inst = await repo.create_instance(_config("rolled"))
    assert inst.deployment_config is not None
    moved = inst.deployment_config.model_copy(update={"image": "postgres:17.7@sha256:" + "7" * 64})
    assert await repo.set_deployment_config(inst.id, moved) is None  # still creating: refused
    await repo.update_state(inst.id, InstanceState.RUNNING)
    updated = await repo.set_deployment_config(inst.id, moved)
    assert updated is not None and updated.image == moved.image and updated.deployment_config == moved
    with pytest.raises(ValueError, match="another instance"):
        await repo.set_deployment_config(uuid.uuid4(), moved)


async def test_no_column_anywhere_holds_the_plaintext_password(
    repo: MetadataRepository, conn: psycopg.AsyncConnection[object]
) -> None:
    cfg = _config("secretive", password=KNOWN_PASSWORD)
    inst = await repo.create_instance(cfg, create_orchestration_id="create-secretive")
    await repo.set_connection_info(inst.id, host="10.0.0.7", port=5432)
    await repo.update_state(inst.id, InstanceState.RUNNING)
    await repo.set_health_monitor_id(inst.id, "health-secretive")
    await repo.record_health_check(
        inst.id, HealthCheckResult(status=HealthStatus.HEALTHY, checked_at=datetime.now(UTC), latency_ms=1)
    )

    searched, found = await rows_containing(conn, [KNOWN_PASSWORD])
    assert searched >= 3 and found == []
    assert KNOWN_PASSWORD not in repr(await repo.get_instance(inst.id))


async def test_schema_refuses_a_password_inside_the_reference(
    repo: MetadataRepository, conn: psycopg.AsyncConnection[object]
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute(
            "INSERT INTO toygres.instances (id, name, k8s_name, runtime, postgres_version, storage_size,"
            " password_ref, database, username) VALUES (%s, 'x', 'x-1', 'local', '17', '1Gi',"
            ' \'{"store": "local-file", "name": "/p", "password": "oops"}\', \'postgres\', \'postgres\')',
            (uuid.uuid4(),),
        )
