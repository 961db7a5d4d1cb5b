"""Kubernetes instances stay what their spec says, and "deleted" means gone.

- A StatefulSet deleted by hand does not take the data with it (``whenDeleted: Retain``; the
  PVC is removed only by DeleteInstance), and the reconciler's deploy pass brings it back.
- Objects edited by someone else are corrected by that pass, and the fields taken back (apply
  conflicts with the other field manager) are reported.
- DeleteInstance reports ``deleted`` only once the pod is gone.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes import client as k8s

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import ManualClock, Runtime
from tests.standins.kube_apiserver import KubeApiServer
from toygres.models import CreateInstanceRequest, InstanceMetadata, InstanceState, RuntimeKind
from toygres.runtimes.aks_credentials import KubeconfigClientFactory
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.settings import Settings

from .plane import drive, ended, reconcile, stepped_plane
from .runtimes_under_test import NAMESPACE

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

TIMING = LifecycleTiming(health_interval_seconds=30, readiness_deadline_seconds=600, readiness_poll_seconds=5)
KUBE_SETTINGS = Settings(_env_file=None, default_runtime=RuntimeKind.KUBERNETES)  # type: ignore[call-arg]


@pytest.fixture
async def kube(
    pg_dsn: str, kube_apiserver: KubeApiServer, kubeconfig_path: Path
) -> AsyncIterator[tuple[ControlPlane, Runtime, ManualClock, KubeconfigClientFactory]]:
    factory = KubeconfigClientFactory(kubeconfig_path)
    clock = ManualClock()
    async with stepped_plane(
        pg_dsn,
        {RuntimeKind.KUBERNETES: KubernetesRuntime(factory, namespace=NAMESPACE)},
        settings=KUBE_SETTINGS,
        timing=TIMING,
        clock=clock,
    ) as (cp, engine, _):
        yield cp, engine, clock, factory


async def running_instance(
    cp: ControlPlane, engine: Runtime, clock: ManualClock, name: str
) -> InstanceMetadata:
    created = await cp.create_instance(CreateInstanceRequest(name=name))
    await drive(engine, clock, ended(cp, created.operation_id))
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.RUNNING, row.failure_reason
    return row


def connect(
    row: InstanceMetadata, factory: KubeconfigClientFactory, server: KubeApiServer
) -> psycopg.Connection[Any]:
    secret = k8s.CoreV1Api(factory()).read_namespaced_secret(row.password_ref.name, NAMESPACE)
    password = base64.b64decode(secret.data["password"]).decode()
    host, port = server.endpoint_for_service(NAMESPACE, row.k8s_name)
    return psycopg.connect(
        host=host, port=port, user=row.username, password=password, dbname=row.database, autocommit=True
    )


async def wait_pod_gone(factory: KubeconfigClientFactory, pod: str) -> None:
    core = k8s.CoreV1Api(factory())
    for _ in range(300):
        names = [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items]
        if pod not in names:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"pod {pod} still there")


async def test_a_statefulset_deleted_by_hand_keeps_its_data_and_comes_back(
    kube: tuple[ControlPlane, Runtime, ManualClock, KubeconfigClientFactory], kube_apiserver: KubeApiServer
) -> None:
    cp, engine, clock, factory = kube
    row = await running_instance(cp, engine, clock, "precious")
    with connect(row, factory, kube_apiserver) as conn:
        conn.execute("CREATE TABLE ledger (entry text)")
        conn.execute("INSERT INTO ledger VALUES ('keep me')")

    apps, core = k8s.AppsV1Api(factory()), k8s.CoreV1Api(factory())
    apps.delete_namespaced_stateful_set(row.k8s_name, NAMESPACE)  # kubectl delete statefulset
    await wait_pod_gone(factory, f"{row.k8s_name}-0")
    await asyncio.sleep(1)  # a controller pass or two: nothing more may go
    claims = [c.metadata.name for c in core.list_namespaced_persistent_volume_claim(NAMESPACE).items]
    assert claims == [f"data-{row.k8s_name}-0"]

    await reconcile(cp, engine, clock)

    async def ready() -> bool:
        sts = apps.read_namespaced_stateful_set(row.k8s_name, NAMESPACE)
        return bool(sts.status and sts.status.ready_replicas)

    await drive(engine, clock, ready)
    with connect(row, factory, kube_apiserver) as conn:
        assert conn.execute("SELECT entry FROM ledger").fetchall() == [("keep me",)]


async def test_drift_is_taken_back_and_reported(
    kube: tuple[ControlPlane, Runtime, ManualClock, KubeconfigClientFactory],
) -> None:
    cp, engine, clock, factory = kube
    row = await running_instance(cp, engine, clock, "drifty")
    apps = k8s.AppsV1Api(factory())
    # someone scales the instance away with kubectl
    apps.patch_namespaced_stateful_set(
        row.k8s_name, NAMESPACE, {"spec": {"replicas": 0}}, field_manager="kubectl-scale"
    )

    output = await reconcile(cp, engine, clock)
    [converged] = [c for c in output["converged"] if c["instance_id"] == str(row.id)]
    assert any(".spec.replicas" in c and "kubectl-scale" in c for c in converged["conflicts"]), converged
    assert apps.read_namespaced_stateful_set(row.k8s_name, NAMESPACE).spec.replicas == 1
    # and once taken back, the next pass has nothing to report
    again = await reconcile(cp, engine, clock)
    assert [c["conflicts"] for c in again["converged"]] == [[]]


async def test_delete_reports_deleted_only_once_the_pod_is_gone(
    kube: tuple[ControlPlane, Runtime, ManualClock, KubeconfigClientFactory], kube_apiserver: KubeApiServer
) -> None:
    cp, engine, clock, factory = kube
    row = await running_instance(cp, engine, clock, "lingering")
    kube_apiserver.pod_termination_delay = 3  # a pod takes its time to terminate
    delete_op = await cp.delete_instance(row.id)
    await drive(engine, clock, ended(cp, delete_op))
    assert (await cp.get_operation(delete_op)).status.value == "Completed"
    assert (await cp.get_instance(row.id)).state is InstanceState.DELETED
    pods = k8s.CoreV1Api(factory()).list_namespaced_pod(NAMESPACE).items
    assert [p.metadata.name for p in pods] == []
