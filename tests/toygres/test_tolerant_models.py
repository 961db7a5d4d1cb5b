"""Invariant 8: stored rows and orchestration inputs survive upgrades and rollbacks.

A newer version may write fields this version does not know (then be rolled back): its rows and
its orchestration inputs must still be readable and workable here. Versioned orchestrations and
their stored histories are covered by ``test_history_replay.py``.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from control_plane.service import ControlPlane
from durable_engine import ManualClock, Runtime
from toygres.models import CreateInstanceRequest, InstanceState

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


async def _as_written_by_a_newer_version(dsn: str, instance_id: UUID) -> None:
    """Fields a newer version added to the row's JSON, left behind by a rollback."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "UPDATE toygres.instances SET"
            ' deployment_config = jsonb_set(deployment_config || \'{"backup_policy": "daily"}\','
            "   '{resources,gpu}', '\"1\"') || jsonb_build_object('password_ref',"
            "   deployment_config->'password_ref' || '{\"rotation\": \"weekly\"}'),"
            ' password_ref = password_ref || \'{"rotation": "weekly"}\','
            ' resources = resources || \'{"gpu": "1"}\''
            " WHERE id = %s",
            (instance_id,),
        )


async def test_rows_written_by_a_newer_version_are_read_and_worked_on(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path], pg_dsn: str
) -> None:
    cp, engine, _, _ = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="newer"))
    await engine.run_until_idle()
    await _as_written_by_a_newer_version(pg_dsn, created.instance_id)

    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.RUNNING and row.deployment_config is not None
    assert [i.id for i in (await cp.list_instances()).items] == [created.instance_id]
    # the reconciler and the delete both rebuild their inputs from the row
    reconciler_id = await cp.run_reconciler()
    await engine.run_until_idle()
    status = await cp.client.get_status(reconciler_id)
    assert status is not None and status.status.value == "Completed", status.error
    delete_op = await cp.delete_instance(created.instance_id)
    await engine.run_until_idle()
    assert (await cp.get_operation(delete_op)).status.value == "Completed"
    assert (await cp.get_instance(created.instance_id)).state is InstanceState.DELETED


async def test_an_orchestration_input_with_fields_of_a_newer_version_runs(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, _, _ = stepped_local
    # what a newer control plane would have started: the same create, with more in its input
    created = await cp.create_instance(CreateInstanceRequest(name="input"))
    status = await cp.client.get_status(created.operation_id)
    assert status is not None
    newer = dict(status.input)
    newer["maintenance_window"] = "sun 02:00"
    newer["config"] = {**newer["config"], "backup_policy": "daily"}
    await cp.client.cancel(created.operation_id, "replaced by the newer start below")
    await engine.run_until_idle()
    await cp.client.start_orchestration("create-newer", "CreateInstance", newer)
    await engine.run_until_idle()
    run = await cp.client.get_status("create-newer")
    assert run is not None and run.status.value == "Completed", run.error
    assert (await cp.get_instance(created.instance_id)).state is InstanceState.RUNNING
