"""Builds a real control plane for tests: metadata + engine on the test database, real runtimes."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
from psycopg_pool import AsyncConnectionPool

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import Runtime, RuntimeOptions
from durable_engine.provider import Provider
from toygres.cms_migrations import migrate_cms
from toygres.metadata import MetadataRepository
from toygres.models import RuntimeKind
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
