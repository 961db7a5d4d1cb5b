"""Randomised: creates, deletes (some twice, some mid-create), reconciler passes and crashed
servers, all at once, on the local runtime; then what runs must be exactly what the metadata
calls live.

The real engine on PostgreSQL with its dispatch loops and inline activities, real PostgreSQL
processes. Workers pause at random before they deploy (a GC pause, a frozen VM), so deploys
arrive late, after deletes. The seed is printed, and ``TOYGRES_RANDOM_SEED`` replays a run;
``TOYGRES_RANDOM_OPS`` makes it longer.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import psutil
import psycopg
import pytest

from control_plane.service import ControlPlane, InstanceGone, LifecycleTiming
from durable_engine import PostgresProvider
from toygres.metadata import InstanceNotFound
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind
from toygres.runtimes.base import InstanceSpec
from toygres.runtimes.local import LocalRuntime

from .plane import control_plane, kill_local_instances, local_settings
from .runtimes_under_test import local_postmasters

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]

TIMING = LifecycleTiming(
    health_interval_seconds=5, readiness_deadline_seconds=120, readiness_poll_seconds=0.3, deploy_attempts=3
)
OPS = int(os.environ.get("TOYGRES_RANDOM_OPS", "24"))


class PausingLocalRuntime(LocalRuntime):
    """The local runtime on a worker that sometimes stalls before it gets to a deploy."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        super().__init__(root)
        self.rng = rng

    def deploy(self, spec: InstanceSpec, password: str) -> str:
        time.sleep(self.rng.choice((0, 0, 0.5, 1.5)))
        return super().deploy(spec, password)


SEED = int(os.environ.get("TOYGRES_RANDOM_SEED", random.randrange(2**32)))


@pytest.fixture
async def plane(pg_dsn: str, pg_tmp_dir: Path) -> AsyncIterator[tuple[ControlPlane, Path]]:
    root = pg_tmp_dir / "instances"
    provider = await PostgresProvider.connect(pg_dsn)
    runtime = PausingLocalRuntime(root, random.Random(SEED + 1))
    try:
        async with control_plane(
            pg_dsn, provider, {RuntimeKind.LOCAL: runtime}, settings=local_settings(root), timing=TIMING
        ) as (cp, _):
            yield cp, root
    finally:
        await provider.close()
        kill_local_instances(root)


def crash(root: Path, name: str) -> None:
    """SIGKILL one instance's server (and its children), leaving its pid file, like a crash."""
    try:
        pid = int((root / name / "pgdata" / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except (OSError, ValueError, IndexError, psutil.Error):
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


async def test_what_runs_is_what_the_metadata_calls_live(plane: tuple[ControlPlane, Path]) -> None:
    cp, root = plane
    seed = SEED
    print(f"TOYGRES_RANDOM_SEED={seed}")
    rng = random.Random(seed)
    created: list[UUID] = []
    operations: list[str] = []
    windows = iter(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(10_000))

    async def create(i: int) -> None:
        response = await cp.create_instance(CreateInstanceRequest(name=f"r{i}"))
        created.append(response.instance_id)
        operations.append(response.operation_id)

    async def delete(instance_id: UUID) -> None:
        try:
            operations.append(await cp.delete_instance(instance_id))
        except (InstanceGone, InstanceNotFound):
            pass

    async def step(i: int) -> None:
        await asyncio.sleep(rng.random() * 2)
        roll = rng.random()
        if roll < 0.45 or not created:
            await create(i)
        elif roll < 0.75:
            victim = rng.choice(created)
            await asyncio.gather(*(delete(victim) for _ in range(rng.choice((1, 1, 2)))))
        elif roll < 0.9:
            await cp.run_reconciler(now=next(windows))
        else:
            rows = (await cp.list_instances(state=InstanceState.RUNNING)).items
            if rows:
                crash(root, rng.choice(rows).k8s_name)

    # a create deleted while it is still deploying, for sure
    await create(OPS)
    await delete(created[-1])
    await asyncio.gather(*(step(i) for i in range(OPS)))

    # quiesce: every operation ends; a server crashes; a reconciler pass brings back what crashed
    for operation in list(operations):
        await cp.client.wait_for_completion(operation, 240)
    survivors = (await cp.list_instances(state=InstanceState.RUNNING)).items
    if survivors:
        crash(root, rng.choice(survivors).k8s_name)
    final = await cp.run_reconciler(now=next(windows))
    await cp.client.wait_for_completion(final, 240)

    rows = (await cp.list_instances(include_deleted=True, limit=500)).items
    stuck = [(r.name, r.state) for r in rows if r.state in (InstanceState.CREATING, InstanceState.DELETING)]
    assert stuck == [], stuck
    live = {r.k8s_name for r in rows if r.state is InstanceState.RUNNING}
    assert set(local_postmasters(root)) == live, (
        seed,
        [(r.name, r.state.value, r.failure_reason) for r in rows],
    )
    for row in rows:  # and each running instance answers where the metadata says
        if row.state is InstanceState.RUNNING:
            assert row.connection_string is not None
            password = (root / row.k8s_name / "password").read_text()
            async with await psycopg.AsyncConnection.connect(
                row.connection_string, password=password
            ) as conn:
                await conn.execute("SELECT 1")
