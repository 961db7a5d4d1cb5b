"""Invariant 3: every non-final state ends, and a failed create gives its name back.

``creating`` and ``deleting`` rows whose operation is missing, finished or failed are resumed or
marked ``failed`` (with a reason) by the reconciler; a create whose orchestration cannot start is
failed at once; a crash between the insert and the start leaves a row the reconciler ends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import (
    InMemoryProvider,
    ManualClock,
    PostgresProvider,
    Runtime,
)
from toygres.deployment_planner import build_deployment_config
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind
from toygres.runtimes.local import LocalRuntime

from .plane import control_plane, kill_local_instances, local_settings, reconcile, stepped_plane

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

TIMING = LifecycleTiming(
    health_interval_seconds=30,
    readiness_deadline_seconds=600,
    readiness_poll_seconds=5,
    deploy_attempts=1,
    stuck_after_seconds=0,
)


@pytest.fixture
async def virtual(
    pg_dsn: str, local_root: Path
) -> AsyncIterator[tuple[ControlPlane, Runtime, ManualClock, Path]]:
    runtime = {RuntimeKind.LOCAL: LocalRuntime(local_root)}
    async with stepped_plane(pg_dsn, runtime, settings=local_settings(local_root), timing=TIMING) as (
        cp,
        engine,
        clock,
    ):
        yield cp, engine, clock, local_root


async def reconcile_and_settle(cp: ControlPlane, engine: Runtime, clock: ManualClock) -> dict[str, Any]:
    """A pass, and then what it started (a resumed delete) runs to its end too."""
    output = await reconcile(cp, engine, clock)
    for _ in range(50):
        clock.advance(timedelta(seconds=5))
        await engine.run_until_idle()
    return output


async def test_a_crash_between_insert_and_start_leaves_a_row_the_reconciler_fails(
    virtual: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, clock, _ = virtual
    # what a control plane that died right after the insert leaves behind
    instance_id = uuid.uuid4()
    config = build_deployment_config(
        CreateInstanceRequest(name="orphaned"), cp.settings, instance_id=instance_id
    )
    await cp.metadata.create_instance(config, create_orchestration_id=f"create-{instance_id}")

    output = await reconcile_and_settle(cp, engine, clock)
    row = await cp.get_instance(instance_id)
    assert row.state is InstanceState.FAILED
    assert row.failure_reason and "before its operation started" in row.failure_reason
    assert [s["instance_id"] for s in output["ended"]] == [str(instance_id)]
    # and the name is free again
    again = await cp.create_instance(CreateInstanceRequest(name="orphaned"))
    await engine.run_until_idle()
    assert (await cp.get_instance(again.instance_id)).state is InstanceState.RUNNING


async def test_a_create_whose_operation_ended_without_finishing_is_failed(
    virtual: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, clock, _ = virtual
    created = await cp.create_instance(CreateInstanceRequest(name="abandoned"))
    await cp.client.cancel(created.operation_id, "cancelled by an operator")
    await engine.run_until_idle()
    assert (await cp.get_instance(created.instance_id)).state is InstanceState.CREATING

    await reconcile_and_settle(cp, engine, clock)
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.FAILED
    assert row.failure_reason and "Cancelled" in row.failure_reason


async def test_a_deleting_row_whose_operation_is_gone_is_resumed(
    virtual: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, clock, root = virtual
    created = await cp.create_instance(CreateInstanceRequest(name="halfway"))
    await engine.run_until_idle()
    assert (await cp.get_instance(created.instance_id)).state is InstanceState.RUNNING
    # what a delete leaves when its operation vanished after marking the row (its history was lost,
    # or the caller that recorded it died before starting it): deleting, with an operation id
    # the engine does not know
    lost = f"delete-{created.instance_id}"
    await cp.metadata.claim_delete_operation(created.instance_id, None, lost)
    await cp.metadata.update_state(created.instance_id, InstanceState.DELETING)
    assert await cp.client.get_status(lost) is None

    output = await reconcile_and_settle(cp, engine, clock)
    assert [s["instance_id"] for s in output["ended"]] == [str(created.instance_id)]
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.DELETED
    assert not (root / row.k8s_name).exists()


async def test_a_failed_create_releases_its_name(pg_dsn: str, pg_tmp_dir: Path) -> None:
    root = pg_tmp_dir / "instances"
    broken = LocalRuntime(root, server_settings={"shared_buffers": "not-a-size"})
    clock = ManualClock()
    try:
        async with control_plane(
            pg_dsn,
            InMemoryProvider(clock),
            {RuntimeKind.LOCAL: broken},
            settings=local_settings(root),
            timing=TIMING,
            start_runtime=False,
        ) as (cp, engine):
            failed = await cp.create_instance(CreateInstanceRequest(name="retry-me"))
            await engine.run_until_idle()
            assert (await cp.get_instance(failed.instance_id)).state is InstanceState.FAILED
            again = await cp.create_instance(CreateInstanceRequest(name="retry-me"))
            assert again.instance_id != failed.instance_id
            # the failed one is still there to look at (and to delete)
            assert (await cp.get_instance(failed.instance_id)).state is InstanceState.FAILED
    finally:
        kill_local_instances(root)


async def test_a_create_whose_orchestration_cannot_start_is_failed_at_once(
    pg_dsn: str, pg_tmp_dir: Path
) -> None:
    root = pg_tmp_dir / "instances"
    provider = await PostgresProvider.connect(pg_dsn)
    try:
        async with control_plane(
            pg_dsn,
            provider,
            {RuntimeKind.LOCAL: LocalRuntime(root)},
            settings=local_settings(root),
            timing=TIMING,
            start_runtime=False,
        ) as (cp, _):
            # the engine's store refuses the start (its table is gone for a moment)
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
                await conn.execute("ALTER TABLE durable.instances RENAME TO instances_away")
                try:
                    with pytest.raises(psycopg.Error):
                        await cp.create_instance(CreateInstanceRequest(name="unstarted"))
                finally:
                    await conn.execute("ALTER TABLE durable.instances_away RENAME TO instances")
            rows = (await cp.list_instances(include_deleted=True)).items
            assert [(r.name, r.state) for r in rows] == [("unstarted", InstanceState.FAILED)]
            assert rows[0].failure_reason and "could not start" in rows[0].failure_reason
            # the name is free: the next request gets it
            await cp.create_instance(CreateInstanceRequest(name="unstarted"))
    finally:
        await provider.close()
        kill_local_instances(root)
