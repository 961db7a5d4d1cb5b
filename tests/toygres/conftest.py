"""Fixtures of the control-plane tests: a directory for local instances, a stepped plane on it, and
a running plane (engine on PostgreSQL, local runtime) for the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from control_plane.service import ControlPlane
from durable_engine import ManualClock, PostgresProvider, Runtime
from toygres.models import RuntimeKind
from toygres.runtimes.local import LocalRuntime

from .plane import control_plane, kill_local_instances, local_settings, stepped_plane


@pytest.fixture
def local_root(pg_tmp_dir: Path) -> Iterator[Path]:
    """Where local instances live; whatever a test left running there is killed afterwards."""
    root = pg_tmp_dir / "instances"
    try:
        yield root
    finally:
        kill_local_instances(root)


@pytest.fixture
async def stepped_local(
    pg_dsn: str, local_root: Path
) -> AsyncIterator[tuple[ControlPlane, Runtime, ManualClock, Path]]:
    """A stepped plane (``plane.stepped_plane``) with the local runtime: (plane, engine, clock, root)."""
    runtime = {RuntimeKind.LOCAL: LocalRuntime(local_root)}
    async with stepped_plane(pg_dsn, runtime, settings=local_settings(local_root)) as (cp, engine, clock):
        yield cp, engine, clock, local_root


@pytest.fixture
async def api_plane(pg_dsn: str, local_root: Path) -> AsyncIterator[ControlPlane]:
    """A control plane with its engine running on PostgreSQL and the local runtime, for the API."""
    provider = await PostgresProvider.connect(pg_dsn)
    try:
        async with control_plane(
            pg_dsn,
            provider,
            {RuntimeKind.LOCAL: LocalRuntime(local_root)},
            settings=local_settings(local_root),
        ) as (cp, _):
            yield cp
    finally:
        await provider.close()
