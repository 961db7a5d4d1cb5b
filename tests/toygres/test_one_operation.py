"""Invariant 4: one operation per request, whatever the concurrency; operation ids are deterministic.

Concurrent DELETE requests get the same operation, also after a delete that ended without
deleting; the ids are ``delete-<id>``, then ``delete-<id>-2``, ``-3``...; a delete recorded by a
caller that crashed before starting it is started under the recorded id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control_plane.service import ControlPlane
from durable_engine import ManualClock, Runtime
from toygres.models import CreateInstanceRequest, InstanceState

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


async def delete_operations(cp: ControlPlane) -> list[str]:
    page = await cp.client.list_instances(name="DeleteInstance", limit=1000)
    return sorted(status.instance_id for status in page.items)


async def test_concurrent_deletes_get_one_operation_also_after_one_ended(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, _, _ = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="popular"))
    await engine.run_until_idle()
    instance_id = created.instance_id

    first = await asyncio.gather(*(cp.delete_instance(instance_id) for _ in range(6)))
    assert set(first) == {f"delete-{instance_id}"}
    # that delete ends without deleting (cancelled by an operator)
    await cp.client.cancel(first[0], "stopped by an operator")
    await engine.run_until_idle()
    assert (await cp.get_instance(instance_id)).state is not InstanceState.DELETED

    second = await asyncio.gather(*(cp.delete_instance(instance_id) for _ in range(6)))
    assert set(second) == {f"delete-{instance_id}-2"}
    assert await delete_operations(cp) == sorted([f"delete-{instance_id}", f"delete-{instance_id}-2"])
    await engine.run_until_idle()
    assert (await cp.get_operation(second[0])).status.value == "Completed"
    assert (await cp.get_instance(instance_id)).state is InstanceState.DELETED


async def test_a_recorded_delete_that_never_started_is_started_under_its_id(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, _, _ = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="crashed"))
    await engine.run_until_idle()
    instance_id = created.instance_id
    # a caller recorded the delete and died before starting it
    await cp.metadata.set_delete_orchestration_id(instance_id, f"delete-{instance_id}")

    assert await cp.delete_instance(instance_id) == f"delete-{instance_id}"
    await engine.run_until_idle()
    assert await delete_operations(cp) == [f"delete-{instance_id}"]
    assert (await cp.get_instance(instance_id)).state is InstanceState.DELETED
