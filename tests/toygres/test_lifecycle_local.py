"""Full instance lifecycle on the local runtime: real PostgreSQL processes, real engine on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import psutil
import psycopg
import pytest

from control_plane.service import ControlPlane, InstanceGone
from durable_engine import PostgresProvider, RuntimeStatus
from toygres.metadata import DuplicateInstanceName, InstanceNotFound
from toygres.models import CreateInstanceRequest, HealthStatus, InstanceState, RuntimeKind
from toygres.pgserver import bundled_major_version
from toygres.runtimes.local import LocalRuntime

from .plane import control_plane, kill_local_instances, local_settings

pytestmark = pytest.mark.postgres


@pytest.fixture
async def plane(pg_dsn: str, pg_tmp_dir: Path) -> AsyncIterator[tuple[ControlPlane, LocalRuntime]]:
    root = pg_tmp_dir / "instances"
    local = LocalRuntime(root)
    provider = await PostgresProvider.connect(pg_dsn)
    try:
        async with control_plane(
            pg_dsn, provider, {RuntimeKind.LOCAL: local}, settings=local_settings(root)
        ) as (cp, _):
            yield cp, local
    finally:
        await provider.close()
        kill_local_instances(root)


async def wait_operation(cp: ControlPlane, operation_id: str, timeout: float = 90) -> Any:
    status = await cp.client.wait_for_completion(operation_id, timeout)
    return await cp.get_operation(operation_id), status


async def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)


async def test_create_use_monitor_delete(plane: tuple[ControlPlane, LocalRuntime]) -> None:
    cp, local = plane
    request = CreateInstanceRequest(name="orders", password="correct-horse-battery")
    created = await cp.create_instance(request)
    assert "correct-horse-battery" not in created.model_dump_json()
    op, _ = await wait_operation(cp, created.operation_id)
    assert op.status.value == "Completed", op.error
    instance = await cp.get_instance(created.instance_id)
    assert instance.state is InstanceState.RUNNING
    # the metadata records the version that runs: the bundled binaries', not a cluster default
    assert instance.postgres_version == bundled_major_version()
    assert instance.connection_string is not None and "correct-horse" not in instance.connection_string

    # a client can connect with the connection string plus the stored password, and write
    async with await psycopg.AsyncConnection.connect(
        instance.connection_string, password="correct-horse-battery", autocommit=True
    ) as conn:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")

    # health checks are recorded by the detached monitor
    async def two_healthy_checks() -> bool:
        checks = await cp.metadata.list_health_checks(created.instance_id)
        return len([c for c in checks if c.status is HealthStatus.HEALTHY]) >= 2

    await wait_for(two_healthy_checks)
    monitor_id = (await cp.get_instance(created.instance_id)).health_monitor_id
    assert monitor_id is not None

    instance_dir = local.root_dir / instance.k8s_name
    pid = int((instance_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    delete_op = await cp.delete_instance(created.instance_id)
    op, _ = await wait_operation(cp, delete_op)
    assert op.status.value == "Completed", op.error
    gone = await cp.get_instance(created.instance_id)
    assert gone.state is InstanceState.DELETED and gone.deleted_at is not None
    assert not instance_dir.exists()
    await wait_for(lambda: _async(not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"))
    monitor = await cp.client.get_status(monitor_id)
    assert monitor is not None and monitor.status == RuntimeStatus.CANCELLED

    # deleting again is a clear 404-class error; an unknown id too
    with pytest.raises(InstanceGone):
        await cp.delete_instance(created.instance_id)
    with pytest.raises(InstanceNotFound):
        await cp.delete_instance(uuid4())
    # the name is free again
    again = await cp.create_instance(CreateInstanceRequest(name="orders"))
    op, _ = await wait_operation(cp, again.operation_id)
    assert op.status.value == "Completed"
    await wait_operation(cp, await cp.delete_instance(again.instance_id))


async def _async(value: Any) -> Any:
    return value


async def test_duplicate_names_are_refused(plane: tuple[ControlPlane, LocalRuntime]) -> None:
    cp, _ = plane
    first = await cp.create_instance(CreateInstanceRequest(name="dup"))
    with pytest.raises(DuplicateInstanceName):
        await cp.create_instance(CreateInstanceRequest(name="dup"))
    await wait_operation(cp, first.operation_id)
    await wait_operation(cp, await cp.delete_instance(first.instance_id))


async def test_killed_instance_turns_unhealthy_then_healthy_again(
    plane: tuple[ControlPlane, LocalRuntime],
) -> None:
    cp, local = plane
    created = await cp.create_instance(CreateInstanceRequest(name="fragile"))
    await wait_operation(cp, created.operation_id)
    instance = await cp.get_instance(created.instance_id)
    assert instance.deployment_config is not None
    from activities import instance_spec

    spec = instance_spec(instance.deployment_config)

    async def latest_is(status: HealthStatus) -> bool:
        current = await cp.get_instance(created.instance_id)
        return current.health_status is status

    await wait_for(lambda: latest_is(HealthStatus.HEALTHY))
    pid = int((local.root_dir / instance.k8s_name / "pgdata" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, 9)
    killed_at = time.monotonic()
    await wait_for(lambda: latest_is(HealthStatus.UNHEALTHY), timeout=30)
    # interval is 1 s: unhealthy within two intervals plus a check's own time
    assert time.monotonic() - killed_at < 2 * cp.timing.health_interval_seconds + 5
    await asyncio.to_thread(local.deploy, spec, "unused: the stored password wins")
    await wait_for(lambda: latest_is(HealthStatus.HEALTHY), timeout=30)
    await wait_operation(cp, await cp.delete_instance(created.instance_id))
