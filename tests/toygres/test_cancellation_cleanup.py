"""Cancelled operations clean up after themselves (the engine raises OrchestrationCancelledError
at the orchestration's current step, and the orchestration may still schedule work).

- A cancelled create removes what it deployed and records the instance failed, freeing its name.
- A cancelled delete records the instance failed with the reason, instead of leaving it
  ``deleting`` for the reconciler to resume against the operator's wish; deleting again works.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from control_plane.service import ControlPlane
from durable_engine import ManualClock, Runtime, RuntimeStatus
from toygres.models import CreateInstanceRequest, InstanceState

from .plane import reconcile

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


async def test_a_cancelled_create_removes_what_it_deployed_and_fails(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, _, root = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="changed-my-mind"))
    await engine.run_orchestrations()  # the first turn schedules the deploy ...
    await engine.run_activities(max_items=1)  # ... which starts a real server
    row = await cp.get_instance(created.instance_id)
    assert (root / row.k8s_name / "pgdata").exists()

    await cp.client.cancel(created.operation_id, "an operator stopped it")
    await engine.run_until_idle()
    status = await cp.client.get_status(created.operation_id)
    assert status is not None and status.status is RuntimeStatus.CANCELLED
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.FAILED
    assert row.failure_reason and "the create was cancelled: an operator stopped it" in row.failure_reason
    assert not (root / row.k8s_name).exists()  # the cleanup ran before the orchestration ended
    # the name is free again
    again = await cp.create_instance(CreateInstanceRequest(name="changed-my-mind"))
    await engine.run_until_idle()
    assert (await cp.get_instance(again.instance_id)).state is InstanceState.RUNNING


async def test_a_cancelled_delete_is_recorded_failed_and_not_resumed(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, clock, root = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="keep-me"))
    await engine.run_until_idle()
    delete_op = await cp.delete_instance(created.instance_id)
    for _ in range(5):  # step the delete until it has marked the instance deleting ...
        await engine.run_orchestrations()
        await engine.run_activities(max_items=1)
        if (await cp.get_instance(created.instance_id)).state is InstanceState.DELETING:
            break
    await cp.client.cancel(delete_op, "wrong instance")  # ... and then the operator stops it
    await engine.run_until_idle()
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.FAILED
    assert row.failure_reason and "the delete was cancelled (wrong instance)" in row.failure_reason

    await reconcile(cp, engine, clock)  # a failed row is not a stuck delete: nothing resumes it
    assert (await cp.get_instance(created.instance_id)).state is InstanceState.FAILED

    again = await cp.delete_instance(created.instance_id)  # what the reason says to do
    assert again != delete_op
    for _ in range(50):
        await engine.run_until_idle()
        if (await cp.get_instance(created.instance_id)).state is InstanceState.DELETED:
            break
        clock.advance(timedelta(seconds=5))
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.DELETED
    assert not (root / row.k8s_name).exists()
