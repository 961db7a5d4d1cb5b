"""Builds a real control plane for tests: metadata + engine on the test database, real runtimes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from psycopg_pool import AsyncConnectionPool

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import InMemoryProvider, ManualClock, Provider, Runtime, RuntimeOptions, RuntimeStatus
from toygres.cms_migrations import migrate_cms
from toygres.metadata import MetadataRepository
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind
from toygres.runtimes.base import InstanceRuntime
from toygres.settings import Settings

FAST = LifecycleTiming(
    health_interval_seconds=1, readiness_deadline_seconds=90, readiness_poll_seconds=0.3, deploy_attempts=3
)


@asynccontextmanager
async def control_plane(
    dsn: str,
    provider: Provider,
    runtimes: Mapping[RuntimeKind, InstanceRuntime],
    *,
    settings: Settings,
    timing: LifecycleTiming = FAST,
    start_runtime: bool = True,
    options: RuntimeOptions | None = None,
) -> AsyncIterator[tuple[ControlPlane, Runtime]]:
    await migrate_cms(dsn)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    plane = ControlPlane(
        settings=settings,
        provider=provider,
        metadata=MetadataRepository(pool),
        runtimes=runtimes,
        timing=timing,
    )
    runtime = Runtime(
        provider, plane.registry, options or RuntimeOptions(idle_wait=0.3, activity_concurrency=4)
    )
    if start_runtime:
        await runtime.start()
    try:
        yield plane, runtime
    finally:
        await runtime.shutdown(grace=2)
        await pool.close()


def local_settings(root: Path, **extra: Any) -> Settings:
    return Settings(default_runtime=RuntimeKind.LOCAL, local_data_dir=root, **extra)


def kill_local_instances(root: Path) -> None:
    """SIGKILL every server a LocalRuntime under ``root`` left running, whatever the test did."""
    for child in root.iterdir() if root.exists() else []:
        pid_file = child / "pgdata" / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


#: timings for the in-memory engine on a manual clock: time only moves when a test moves it
VIRTUAL = LifecycleTiming(
    health_interval_seconds=30, readiness_deadline_seconds=600, readiness_poll_seconds=5
)


@asynccontextmanager
async def stepped_plane(
    dsn: str,
    runtimes: Mapping[RuntimeKind, InstanceRuntime],
    *,
    settings: Settings,
    timing: LifecycleTiming = VIRTUAL,
    clock: ManualClock | None = None,
) -> AsyncIterator[tuple[ControlPlane, Runtime, ManualClock]]:
    """A control plane on the in-memory engine and a manual clock, with activities only through
    the queue: the test runs the engine (``run_until_idle``, one item at a time) and moves time."""
    clock = clock or ManualClock()
    async with control_plane(
        dsn,
        InMemoryProvider(clock),
        runtimes,
        settings=settings,
        timing=timing,
        start_runtime=False,
        options=RuntimeOptions(inline_activities=False),
    ) as (plane, engine):
        yield plane, engine, clock


def ended(plane: ControlPlane, orchestration_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status = await plane.client.get_status(orchestration_id)
        return status is not None and status.is_terminal

    return check


async def drive(
    engine: Runtime, clock: ManualClock, done: Callable[[], Awaitable[bool]], *, rounds: int = 400
) -> None:
    """Run the engine, moving virtual time on by 5 s while ``done`` is false (durable timers fire);
    a little real time passes too, for what runs on its own (the Kubernetes stand-in's pods)."""
    for _ in range(rounds):
        await engine.run_until_idle()
        if await done():
            return
        clock.advance(timedelta(seconds=5))
        await asyncio.sleep(0.05)
    raise TimeoutError("the engine did not get there")


async def reconcile(plane: ControlPlane, engine: Runtime, clock: ManualClock) -> dict[str, Any]:
    """One Reconciler pass in a window of its own, run to its end; returns its output."""
    clock.advance(timedelta(minutes=5))
    reconciler_id = await plane.run_reconciler(now=clock.now())
    await drive(engine, clock, ended(plane, reconciler_id))
    status = await plane.client.get_status(reconciler_id)
    assert status is not None and status.status == RuntimeStatus.COMPLETED, status
    output: dict[str, Any] = status.output
    return output


async def run_lifecycle(plane: ControlPlane) -> None:
    """Create an instance, see it running and checked, delete it: every layer's queries run."""
    runtime = Runtime(plane.provider, plane.registry, RuntimeOptions(idle_wait=0.2))
    await runtime.start()
    try:
        created = await plane.create_instance(CreateInstanceRequest(name="pooled"))
        status = await plane.client.wait_for_completion(created.operation_id, 120)
        assert status.status.value == "Completed", status.error
        assert (await plane.get_instance(created.instance_id)).state is InstanceState.RUNNING
        for _ in range(100):
            if await plane.metadata.list_health_checks(created.instance_id):
                break
            await asyncio.sleep(0.2)
        assert await plane.metadata.list_health_checks(created.instance_id)
        operation = await plane.delete_instance(created.instance_id)
        deleted = await plane.client.wait_for_completion(operation, 120)
        assert deleted.status.value == "Completed", deleted.error
        assert (await plane.get_instance(created.instance_id)).state is InstanceState.DELETED
    finally:
        await runtime.shutdown(grace=2)
