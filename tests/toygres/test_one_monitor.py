"""Invariant 2: one health monitor per instance, whatever the reconciler does and when.

Runs on the in-memory engine with a manual clock and the local runtime's real servers; the test
steps the engine itself to stop exactly in the gaps that matter.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from control_plane.service import ControlPlane
from durable_engine import ManualClock, Runtime, RuntimeStatus
from toygres.models import CreateInstanceRequest, InstanceState

from .plane import reconcile

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


async def live_monitors(cp: ControlPlane, instance_id: UUID) -> list[str]:
    """Health monitors that are running or about to, for this instance."""
    live: list[str] = []
    for status in (RuntimeStatus.RUNNING, RuntimeStatus.PENDING):
        page = await cp.client.list_instances(name="HealthMonitor", status=status, limit=1000)
        for monitor in page.items:
            if (monitor.input or {}).get("config", {}).get("instance_id") == str(instance_id):
                live.append(monitor.instance_id)
    return sorted(live)


async def test_a_reconciler_pass_between_running_and_the_monitor_id_adds_no_monitor(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, clock, _ = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="gap"))
    # step the create one activity at a time until the row says running
    for _ in range(50):
        await engine.run_orchestrations()
        item = await cp.provider.fetch_activity(timedelta(hours=1))
        assert item is not None, "the create stopped before the instance was running"
        await engine.process_activity_item(item)
        if (await cp.get_instance(created.instance_id)).state is InstanceState.RUNNING:
            break
        clock.advance(timedelta(seconds=5))
    await engine.run_orchestrations()  # the turn after "running": it starts (and records) the monitor
    # the create's next step (if any) stalls in a worker, so the pass runs in the gap
    stalled = await cp.provider.fetch_activity(timedelta(hours=1))
    if stalled is not None and stalled.task.instance_id != created.operation_id:
        await cp.provider.abandon_activity(stalled.lock_token)
        stalled = None
    await reconcile(cp, engine, clock)
    if stalled is not None:
        await engine.process_activity_item(stalled)
    await engine.run_until_idle()

    assert (await cp.get_operation(created.operation_id)).status.value == "Completed"
    monitors = await live_monitors(cp, created.instance_id)
    assert len(monitors) == 1, monitors
    assert (await cp.get_instance(created.instance_id)).health_monitor_id == monitors[0]


async def test_concurrent_passes_restart_a_lost_monitor_once(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, clock, _ = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="lost"))
    await engine.run_until_idle()
    first = (await cp.get_instance(created.instance_id)).health_monitor_id
    assert first is not None and await live_monitors(cp, created.instance_id) == [first]
    await cp.client.cancel(first, "the monitor is lost")
    await engine.run_until_idle()
    assert await live_monitors(cp, created.instance_id) == []

    # two passes (two sweeps of overlapping windows) both see the monitor missing
    one = await cp.run_reconciler(now=clock.now())
    clock.advance(timedelta(minutes=5))
    two = await cp.run_reconciler(now=clock.now())
    assert one != two
    await engine.run_until_idle()
    for pass_id in (one, two):
        status = await cp.client.get_status(pass_id)
        assert status is not None and status.status == RuntimeStatus.COMPLETED, status

    monitors = await live_monitors(cp, created.instance_id)
    assert len(monitors) == 1, monitors
    assert (await cp.get_instance(created.instance_id)).health_monitor_id == monitors[0]
    # and the restarted monitor checks the instance
    clock.advance(timedelta(seconds=31))
    await engine.run_until_idle()
    assert await cp.metadata.list_health_checks(created.instance_id)
