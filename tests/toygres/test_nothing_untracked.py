"""Invariant 1: nothing runs that the metadata does not know about.

A deploy that arrives after its instance started deleting must not start anything, whether it was
queued (a worker fetched it and stalled) or running inline when the delete came; and whatever
slipped through anyway (a crash, a bug, a hand-made object) is found and removed by the
reconciler, which reports what it removed. Both runtimes, real processes and real objects.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from activities import instance_spec
from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import PostgresProvider
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind
from toygres.runtimes.base import InstanceRuntime, InstanceSpec
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.runtimes.local import LocalRuntime
from toygres.settings import Settings

from .plane import control_plane, drive, ended, kill_local_instances, local_settings, stepped_plane
from .runtimes_under_test import (
    NAMESPACE,
    Gate,
    GatedKubernetesRuntime,
    GatedLocalRuntime,
    kube_objects,
    local_postmasters,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

VIRTUAL = LifecycleTiming(
    health_interval_seconds=30, readiness_deadline_seconds=600, readiness_poll_seconds=5, deploy_attempts=3
)
KINDS = [RuntimeKind.LOCAL, RuntimeKind.KUBERNETES]


class Where:
    """One runtime under test and how to see what it runs."""

    def __init__(self, kind: RuntimeKind, request: pytest.FixtureRequest, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.kubeconfig: Path | None = None
        if kind is RuntimeKind.KUBERNETES:
            request.getfixturevalue("kube_apiserver")
            self.kubeconfig = request.getfixturevalue("kubeconfig_path")

    def runtime(self, gate: Gate | None = None) -> InstanceRuntime:
        if self.kind is RuntimeKind.LOCAL:
            return GatedLocalRuntime(self.root, gate) if gate else LocalRuntime(self.root)
        assert self.kubeconfig is not None
        if gate:
            return GatedKubernetesRuntime(self.kubeconfig, gate)
        from toygres.runtimes.aks_credentials import KubeconfigClientFactory

        return KubernetesRuntime(KubeconfigClientFactory(self.kubeconfig), namespace=NAMESPACE)

    def settings(self) -> Settings:
        if self.kind is RuntimeKind.LOCAL:
            return local_settings(self.root)
        return Settings(default_runtime=RuntimeKind.KUBERNETES, local_data_dir=self.root)

    def running(self) -> Any:
        """What runs right now: PostgreSQL servers (local) or labelled objects (Kubernetes)."""
        if self.kind is RuntimeKind.LOCAL:
            return local_postmasters(self.root)
        assert self.kubeconfig is not None
        return kube_objects(self.kubeconfig)


@pytest.fixture(params=KINDS, ids=lambda k: k.value)
def where(request: pytest.FixtureRequest, pg_tmp_dir: Path) -> Any:
    root = pg_tmp_dir / "instances"
    try:
        yield Where(request.param, request, root)
    finally:
        kill_local_instances(root)


async def test_a_deploy_delivered_after_the_delete_starts_nothing(where: Where, pg_dsn: str) -> None:
    runtime = where.runtime()
    async with stepped_plane(pg_dsn, {where.kind: runtime}, settings=where.settings()) as (cp, engine, clock):
        created = await cp.create_instance(CreateInstanceRequest(name="racer"))
        await engine.run_orchestrations()
        # a worker takes the deploy and stalls (a GC pause, a frozen VM) ...
        stalled = await cp.provider.fetch_activity(timedelta(hours=1))
        assert stalled is not None and stalled.task.name == "DeployPostgres"
        # ... while the instance is deleted from start to end
        delete_op = await cp.delete_instance(created.instance_id)
        await drive(engine, clock, ended(cp, delete_op))
        assert (await cp.get_operation(delete_op)).status.value == "Completed"
        assert (await cp.get_instance(created.instance_id)).state is InstanceState.DELETED
        # the worker wakes up and delivers the deploy
        await engine.process_activity_item(stalled)
        await engine.run_until_idle()
        assert where.running() == {}


async def _deleting_is_done_or_waits_for_the_deploy(cp: ControlPlane, operation_id: str, dsn: str) -> bool:
    if await ended(cp, operation_id)():
        return True
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        row = await cur.fetchone()
    return bool(row and row[0])


async def test_a_delete_during_an_inline_deploy_leaves_nothing_running(where: Where, pg_dsn: str) -> None:
    gate = Gate()
    runtime = where.runtime(gate)
    provider = await PostgresProvider.connect(pg_dsn)
    try:
        async with control_plane(pg_dsn, provider, {where.kind: runtime}, settings=where.settings()) as (
            cp,
            _,
        ):
            created = await cp.create_instance(CreateInstanceRequest(name="inline"))
            assert await asyncio.to_thread(gate.entered.wait, 60), "the deploy never started"
            delete_op = await cp.delete_instance(created.instance_id)
            # the delete either ends (and a deploy could then start a server nobody tracks) or
            # waits for the deploy to let go of the instance
            deadline = time.monotonic() + 120
            while not await _deleting_is_done_or_waits_for_the_deploy(cp, delete_op, pg_dsn):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            gate.open()
            assert await asyncio.to_thread(gate.left.wait, 60)
            await cp.client.wait_for_completion(delete_op, 120)
            assert (await cp.get_operation(delete_op)).status.value == "Completed"
            assert (await cp.get_instance(created.instance_id)).state is InstanceState.DELETED
            deadline = time.monotonic() + 30  # pods terminate in the background
            while where.running() != {} and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert where.running() == {}
    finally:
        await provider.close()


def _stranger_spec(kind: RuntimeKind) -> InstanceSpec:
    instance_id = uuid4()
    return InstanceSpec(
        instance_id=str(instance_id),
        name=f"stranger-{instance_id.hex[:8]}",
        postgres_version="18" if kind is RuntimeKind.LOCAL else "17",
        storage_size="1Gi",
        username="postgres",
    )


async def test_the_reconciler_removes_and_reports_orphans(where: Where, pg_dsn: str) -> None:
    runtime = where.runtime()
    async with stepped_plane(pg_dsn, {where.kind: runtime}, settings=where.settings()) as (cp, engine, clock):
        kept = await cp.create_instance(CreateInstanceRequest(name="kept"))
        gone = await cp.create_instance(CreateInstanceRequest(name="gone"))
        await drive(engine, clock, ended(cp, kept.operation_id))
        await drive(engine, clock, ended(cp, gone.operation_id))
        delete_op = await cp.delete_instance(gone.instance_id)
        await drive(engine, clock, ended(cp, delete_op))
        assert (await cp.get_instance(gone.instance_id)).state is InstanceState.DELETED

        # what slipped through: the deleted instance's resources back again, and an instance the
        # metadata never heard of
        gone_row = await cp.get_instance(gone.instance_id)
        kept_row = await cp.get_instance(kept.instance_id)
        assert gone_row.deployment_config is not None and kept_row.deployment_config is not None
        gone_spec, kept_spec = (
            instance_spec(gone_row.deployment_config),
            instance_spec(kept_row.deployment_config),
        )
        stranger = _stranger_spec(where.kind)
        for spec in (gone_spec, stranger):
            await asyncio.to_thread(runtime.deploy, spec, "an-orphaned-password")

        reconciler_id = await cp.run_reconciler(now=clock.now())
        await drive(engine, clock, ended(cp, reconciler_id))
        result = await cp.client.get_status(reconciler_id)
        assert result is not None and result.status.value == "Completed", result.error
        removed = sorted(o["instance_id"] for o in result.output["orphans_removed"])
        assert removed == sorted([gone_spec.instance_id, stranger.instance_id])
        reasons = {o["instance_id"]: o["reason"] for o in result.output["orphans_removed"]}
        assert "deleted" in reasons[gone_spec.instance_id] and "unknown" in reasons[stranger.instance_id]
        for spec in (gone_spec, stranger):
            assert not (await asyncio.to_thread(runtime.status, spec)).exists
        assert (await asyncio.to_thread(runtime.status, kept_spec)).exists  # a live instance stays
        assert (await cp.get_instance(kept.instance_id)).state is InstanceState.RUNNING
