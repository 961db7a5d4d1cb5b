"""Full instance lifecycle on the Kubernetes runtime, against the HTTP stand-ins.

The runtime gets its credentials from the ARM stand-in through the real
``azure-mgmt-containerservice`` client and drives the Kubernetes stand-in through the real
``kubernetes`` client; each StatefulSet pod is backed by a real PostgreSQL process.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from kubernetes import client as k8s

from api.app import create_app
from control_plane.service import ControlPlane
from durable_engine import PostgresProvider, Runtime, RuntimeStatus
from tests.standins.arm import ArmServer, StaticTokenCredential
from tests.standins.fixtures import ARM_CLUSTER, ARM_RESOURCE_GROUP, ARM_SUBSCRIPTION
from tests.standins.kube_apiserver import KubeApiServer
from tests.standins.pg_binaries import SKIP_REASON, tls_pg_bin_dir
from toygres.models import CreateInstanceRequest, HealthStatus, InstanceState, RuntimeKind, make_k8s_name
from toygres.runtimes.aks_credentials import AksClientFactory, AksCluster
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.runtimes.manifests import INSTANCE_ID_LABEL
from toygres.runtimes.tls_secrets import KubernetesSecretCaStore
from toygres.settings import Settings

from .plane import FAST, control_plane
from .secret_search import rows_containing

# Kubernetes instances serve TLS, which the stand-in's pods can only do on Debian's PostgreSQL
pytestmark = [pytest.mark.postgres, pytest.mark.skipif(tls_pg_bin_dir() is None, reason=SKIP_REASON)]
NAMESPACE = "toygres"


@asynccontextmanager
async def k8s_plane(
    dsn: str, arm: ArmServer, credential: StaticTokenCredential, *, start_runtime: bool = True
) -> AsyncIterator[tuple[ControlPlane, Runtime, AksClientFactory]]:
    factory = AksClientFactory(
        AksCluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, ARM_CLUSTER),
        credential=credential,
        arm_base_url=arm.url,
        connection_verify=str(arm.ca_file),
    )
    runtime = KubernetesRuntime(
        factory, namespace=NAMESPACE, ca_store=KubernetesSecretCaStore("toygres-system", "toygres-ca")
    )
    settings = Settings(default_runtime=RuntimeKind.KUBERNETES)
    provider = await PostgresProvider.connect(dsn)
    try:
        async with control_plane(
            dsn,
            provider,
            {RuntimeKind.KUBERNETES: runtime},
            settings=settings,
            timing=FAST,
            start_runtime=start_runtime,
        ) as (cp, engine_runtime):
            yield cp, engine_runtime, factory
    finally:
        await provider.close()


def leftovers(factory: AksClientFactory, instance_id: UUID) -> dict[str, list[str]]:
    api = factory()
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    selector = f"{INSTANCE_ID_LABEL}={instance_id}"
    found = {
        "secrets": core.list_namespaced_secret(NAMESPACE, label_selector=selector).items,
        "services": core.list_namespaced_service(NAMESPACE, label_selector=selector).items,
        "pvcs": core.list_namespaced_persistent_volume_claim(NAMESPACE, label_selector=selector).items,
        "pods": core.list_namespaced_pod(NAMESPACE, label_selector=selector).items,
        "statefulsets": apps.list_namespaced_stateful_set(NAMESPACE, label_selector=selector).items,
        "configmaps": core.list_namespaced_config_map(NAMESPACE, label_selector=selector).items,
        "networkpolicies": k8s.NetworkingV1Api(api)
        .list_namespaced_network_policy(NAMESPACE, label_selector=selector)
        .items,
        "poddisruptionbudgets": k8s.PolicyV1Api(api)
        .list_namespaced_pod_disruption_budget(NAMESPACE, label_selector=selector)
        .items,
    }
    return {kind: [o.metadata.name for o in items] for kind, items in found.items() if items}


async def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)
    return value


async def test_lifecycle_on_kubernetes(
    pg_dsn: str,
    kube_apiserver: KubeApiServer,
    arm_server: ArmServer,
    arm_credential: StaticTokenCredential,
    tmp_path: Path,
) -> None:
    async with k8s_plane(pg_dsn, arm_server, arm_credential) as (cp, _, factory):
        created = await cp.create_instance(CreateInstanceRequest(name="inventory", username="app"))
        await cp.client.wait_for_completion(created.operation_id, 120)
        op = await cp.get_operation(created.operation_id)
        assert op.status.value == "Completed", op.error
        instance = await cp.get_instance(created.instance_id)
        assert instance.state is InstanceState.RUNNING and instance.connection_string
        assert "kubectl get secret" in created.password_hint

        # the password lives only in the Secret: read it the way the hint says, then connect as the
        # connection string says: verify-full against the CA the API hands out
        secret = k8s.CoreV1Api(factory()).read_namespaced_secret(instance.password_ref.name, NAMESPACE)
        password = base64.b64decode(secret.data["password"]).decode()
        assert "sslmode=verify-full" in instance.connection_string
        app = create_app(lambda: cp)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://toygres"
        ) as api:
            response = await api.get(f"/api/instances/{created.instance_id}/ca")
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-pem-file"
        assert response.text == await cp.get_instance_ca(created.instance_id)
        ca_file = tmp_path / "ca.crt"
        ca_file.write_text(response.text)
        async with await psycopg.AsyncConnection.connect(
            instance.connection_string, password=password, sslrootcert=str(ca_file), autocommit=True
        ) as conn:
            cur = await conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert await cur.fetchone() == (True,)
            await conn.execute("CREATE TABLE items (id int)")
            await conn.execute("INSERT INTO items VALUES (1)")

        async def healthy_checks() -> bool:
            checks = await cp.metadata.list_health_checks(created.instance_id)
            return len([c for c in checks if c.status is HealthStatus.HEALTHY]) >= 2

        await wait_for(healthy_checks)
        checks = await cp.metadata.list_health_checks(created.instance_id)
        assert any(c.message and "certificate verified" in c.message for c in checks)

        # the private keys (the CA's, the server's) live in their Secrets only: not in a row of the
        # metadata, nor in the engine's history and queues, which share this database
        core = k8s.CoreV1Api(factory())
        keys = [
            base64.b64decode(core.read_namespaced_secret(name, ns).data["tls.key"]).decode()
            for ns, name in (("toygres-system", "toygres-ca"), (NAMESPACE, f"{instance.k8s_name}-tls"))
        ]
        bodies = [key.split("-----")[2].strip().splitlines()[0] for key in keys]  # a line of each key
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            searched, found = await rows_containing(conn, [*bodies, "PRIVATE KEY", password])
        assert searched > 20 and found == []
        # a killed pod turns unhealthy within two intervals, and healthy again once restarted
        kube_apiserver.hold_down(NAMESPACE, f"{instance.k8s_name}-0")
        kube_apiserver.kill_pod(NAMESPACE, f"{instance.k8s_name}-0")

        async def health_is(status: HealthStatus) -> bool:
            return (await cp.get_instance(created.instance_id)).health_status is status

        killed = time.monotonic()
        await wait_for(lambda: health_is(HealthStatus.UNHEALTHY), timeout=30)
        assert time.monotonic() - killed < 2 * cp.timing.health_interval_seconds + 5
        kube_apiserver.hold_down(NAMESPACE, f"{instance.k8s_name}-0", held=False)
        kube_apiserver.restart_pod(NAMESPACE, f"{instance.k8s_name}-0")
        await wait_for(lambda: health_is(HealthStatus.HEALTHY), timeout=60)

        monitor_id = (await cp.get_instance(created.instance_id)).health_monitor_id
        assert leftovers(factory, created.instance_id)  # everything is there before the delete
        delete_op = await cp.delete_instance(created.instance_id)
        await cp.client.wait_for_completion(delete_op, 120)
        assert (await cp.get_operation(delete_op)).status.value == "Completed"
        assert leftovers(factory, created.instance_id) == {}
        assert (await cp.get_instance(created.instance_id)).state is InstanceState.DELETED
        assert monitor_id is not None
        monitor = await cp.client.get_status(monitor_id)
        assert monitor is not None and monitor.status == RuntimeStatus.CANCELLED


async def test_api_server_errors_end_failed_with_reason_and_no_leftovers(
    pg_dsn: str, kube_apiserver: KubeApiServer, arm_server: ArmServer, arm_credential: StaticTokenCredential
) -> None:
    async with k8s_plane(pg_dsn, arm_server, arm_credential, start_runtime=False) as (cp, runtime, factory):
        # every apply of the StatefulSet fails; reads and deletes still work
        kube_apiserver.fail_next("PATCH", r"/statefulsets", status=500, count=1000)
        created = await cp.create_instance(CreateInstanceRequest(name="unlucky"))
        await runtime.start()
        await cp.client.wait_for_completion(created.operation_id, 120)
        op = await cp.get_operation(created.operation_id)
        assert op.status.value == "Failed" and op.error is not None and "500" in op.error.message
        kube_apiserver.faults.clear_faults()
        instance = await cp.get_instance(created.instance_id)
        assert instance.state is InstanceState.FAILED
        assert instance.failure_reason is not None and "500" in instance.failure_reason
        assert leftovers(factory, created.instance_id) == {}  # the Secret stored up front is gone too
        await cp.client.wait_for_completion(await cp.delete_instance(created.instance_id), 120)
        assert (await cp.get_instance(created.instance_id)).state is InstanceState.DELETED


async def test_never_ready_pod_hits_the_deadline_and_is_cleaned_up(
    pg_dsn: str, kube_apiserver: KubeApiServer, arm_server: ArmServer, arm_credential: StaticTokenCredential
) -> None:
    async with k8s_plane(pg_dsn, arm_server, arm_credential, start_runtime=False) as (cp, runtime, factory):
        cp.timing = type(cp.timing)(
            health_interval_seconds=1,
            readiness_deadline_seconds=3,
            readiness_poll_seconds=0.5,
            deploy_attempts=2,
        )
        created = await cp.create_instance(CreateInstanceRequest(name="sleepy"))
        kube_apiserver.pod_never_ready(make_k8s_name("sleepy", created.instance_id), NAMESPACE)
        await runtime.start()
        await cp.client.wait_for_completion(created.operation_id, 120)
        op = await cp.get_operation(created.operation_id)
        assert op.status.value == "Failed" and op.error is not None
        assert "did not become ready within 3 s" in op.error.message
        instance = await cp.get_instance(created.instance_id)
        assert instance.state is InstanceState.FAILED
        assert instance.failure_reason and "did not become ready" in instance.failure_reason
        assert leftovers(factory, created.instance_id) == {}


async def test_a_failed_delete_is_recorded_and_deleting_again_retries_it(
    pg_dsn: str, kube_apiserver: KubeApiServer, arm_server: ArmServer, arm_credential: StaticTokenCredential
) -> None:
    async with k8s_plane(pg_dsn, arm_server, arm_credential) as (cp, _, factory):
        cp.timing = type(cp.timing)(
            health_interval_seconds=1,
            readiness_deadline_seconds=90,
            readiness_poll_seconds=0.3,
            deploy_attempts=2,
        )
        created = await cp.create_instance(CreateInstanceRequest(name="sticky"))
        await cp.client.wait_for_completion(created.operation_id, 120)
        assert (await cp.get_instance(created.instance_id)).state is InstanceState.RUNNING

        kube_apiserver.fail_next("DELETE", r"/statefulsets/", status=500, count=1000)
        first = await cp.delete_instance(created.instance_id)
        assert await cp.delete_instance(created.instance_id) == first  # still running: same operation
        await cp.client.wait_for_completion(first, 120)
        op = await cp.get_operation(first)
        assert op.status.value == "Failed" and op.error is not None and "500" in op.error.message
        failed = await cp.get_instance(created.instance_id)
        assert failed.state is InstanceState.FAILED
        assert failed.failure_reason and "delete the instance again" in failed.failure_reason

        kube_apiserver.faults.clear_faults()
        second = await cp.delete_instance(created.instance_id)
        assert second != first and second.startswith(f"delete-{created.instance_id}-")
        await cp.client.wait_for_completion(second, 120)
        assert (await cp.get_operation(second)).status.value == "Completed"
        assert (await cp.get_instance(created.instance_id)).state is InstanceState.DELETED
        assert leftovers(factory, created.instance_id) == {}
