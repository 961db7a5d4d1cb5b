"""The Toygres orchestrations on the in-memory engine with a manual clock.

Timers fire when the test moves the clock, so thirty minutes of 30-second health checks —
each a real connection to a real local PostgreSQL instance — take a second or two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import EventKind, InMemoryProvider, ManualClock, RuntimeStatus
from toygres.models import CreateInstanceRequest, HealthStatus, InstanceState, RuntimeKind
from toygres.runtimes.local import LocalRuntime

from .plane import control_plane, kill_local_instances, local_settings

pytestmark = pytest.mark.postgres

TIMING = LifecycleTiming(health_interval_seconds=30, readiness_deadline_seconds=600, readiness_poll_seconds=5)


@pytest.fixture
async def virtual(
    pg_dsn: str, pg_tmp_dir: Path
) -> AsyncIterator[tuple[ControlPlane, ManualClock, LocalRuntime]]:
    clock = ManualClock()
    provider = InMemoryProvider(clock)
    root = pg_tmp_dir / "instances"
    local = LocalRuntime(root)
    async with control_plane(
        pg_dsn,
        provider,
        {RuntimeKind.LOCAL: local},
        settings=local_settings(root),
        timing=TIMING,
        start_runtime=False,
    ) as (cp, runtime):
        cp.virtual_runtime = runtime  # type: ignore[attr-defined]
        try:
            yield cp, clock, local
        finally:
            kill_local_instances(root)


async def test_thirty_minutes_of_health_checks_in_virtual_time(
    virtual: tuple[ControlPlane, ManualClock, LocalRuntime],
) -> None:
    cp, clock, _ = virtual
    runtime = cp.virtual_runtime  # type: ignore[attr-defined]
    created = await cp.create_instance(CreateInstanceRequest(name="timeless"))
    await runtime.run_until_idle()
    op = await cp.get_operation(created.operation_id)
    assert op.status.value == "Completed", op.error
    instance = await cp.get_instance(created.instance_id)
    assert instance.state is InstanceState.RUNNING and instance.health_monitor_id

    for _ in range(60):  # 60 x 30 s = 30 minutes
        clock.advance(timedelta(seconds=30))
        await runtime.run_until_idle()

    checks = await cp.metadata.list_health_checks(created.instance_id, limit=100)
    assert len(checks) == 61  # the first check runs at once, then one per interval
    assert all(c.status is HealthStatus.HEALTHY for c in checks)
    span = max(c.checked_at for c in checks) - min(c.checked_at for c in checks)
    assert span.total_seconds() > 0
    monitor = await cp.client.get_status(instance.health_monitor_id)
    assert monitor is not None and monitor.status == RuntimeStatus.RUNNING
    assert monitor.execution_id == 61  # one continue_as_new per check
    history = await cp.client.get_history(instance.health_monitor_id)
    assert len(history) < 20 and history[1].kind == EventKind.ORCHESTRATION_STARTED

    delete_op = await cp.delete_instance(created.instance_id)
    await runtime.run_until_idle()
    assert (await cp.get_operation(delete_op)).status.value == "Completed"
    monitor = await cp.client.get_status(instance.health_monitor_id)
    assert monitor is not None and monitor.status == RuntimeStatus.CANCELLED


async def test_reconciler_restarts_a_missing_monitor(
    virtual: tuple[ControlPlane, ManualClock, LocalRuntime],
) -> None:
    cp, clock, _ = virtual
    runtime = cp.virtual_runtime  # type: ignore[attr-defined]
    created = await cp.create_instance(CreateInstanceRequest(name="orphan"))
    await runtime.run_until_idle()
    first_monitor = (await cp.get_instance(created.instance_id)).health_monitor_id
    assert first_monitor is not None
    await cp.client.cancel(first_monitor, "simulated loss of the monitor")
    await runtime.run_until_idle()

    reconciler_id = await cp.run_reconciler(now=clock.now())
    await runtime.run_until_idle()
    result = await cp.client.get_status(reconciler_id)
    assert result is not None and result.status == RuntimeStatus.COMPLETED, result
    assert [r["instance_id"] for r in result.output["restarted"]] == [str(created.instance_id)]
    # restarted in place: one monitor per instance, under its deterministic id
    assert (await cp.get_instance(created.instance_id)).health_monitor_id == first_monitor
    status = await cp.client.get_status(first_monitor)
    assert status is not None and status.status == RuntimeStatus.RUNNING

    # a second pass finds nothing to do
    assert await cp.run_reconciler(now=clock.now()) == reconciler_id  # one pass per window
    clock.advance(timedelta(minutes=5))
    again = await cp.run_reconciler(now=clock.now())
    await runtime.run_until_idle()
    status = await cp.client.get_status(again)
    assert status is not None and status.output["restarted"] == []
    assert await cp.client.get_status(reconciler_id) is None  # the finished earlier pass was purged
    await cp.delete_instance(created.instance_id)
    await runtime.run_until_idle()
