"""Fixtures of the control-plane tests: a directory for local instances, and a stepped plane on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from control_plane.service import ControlPlane
from durable_engine import ManualClock, Runtime
from toygres.models import RuntimeKind
from toygres.runtimes.local import LocalRuntime

from .plane import kill_local_instances, local_settings, stepped_plane


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
