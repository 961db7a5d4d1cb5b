"""Every failure path leaves durable state consistent.

- A delete that fails in any step (not only the resource removal) marks the instance failed.
- A create that fails in any way (not only a failed activity) removes what it made.
- The health check retries, and a credential failure is recorded as "unknown" (the instance may
  be fine; the control plane could not look) instead of ending the monitor.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from activities import GENERATE_CONNECTION_STRING
from control_plane.service import ControlPlane
from durable_engine import (
    ActivityContext,
    ManualClock,
    Registry,
    Runtime,
    RuntimeOptions,
    RuntimeStatus,
)
from orchestrations import register_orchestrations
from tests.standins.arm import ArmServer
from tests.standins.fixtures import ARM_RESOURCE_GROUP, ARM_SUBSCRIPTION
from tests.standins.kube_apiserver import KubeApiServer
from toygres.models import CreateInstanceRequest, HealthStatus, InstanceState, RuntimeKind
from toygres.runtimes.aks_credentials import AKS_AAD_SERVER_APP_ID, AksClientFactory, AksCluster
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.settings import Settings

from .plane import stepped_plane
from .runtimes_under_test import NAMESPACE, local_postmasters

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

KUBE_SETTINGS = Settings(_env_file=None, default_runtime=RuntimeKind.KUBERNETES)  # type: ignore[call-arg]


async def test_a_delete_that_fails_before_removing_anything_marks_the_instance_failed(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path], pg_dsn: str
) -> None:
    cp, engine, clock, _ = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="brittle"))
    await engine.run_until_idle()
    delete_op = await cp.delete_instance(created.instance_id)
    for _ in range(10):  # until the delete has marked the instance deleting
        await engine.run_orchestrations()
        await engine.run_activities(max_items=1)
        if (await cp.get_instance(created.instance_id)).state is InstanceState.DELETING:
            break
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        # the metadata store is unreachable for the delete's next steps, past their retries
        await conn.execute("ALTER TABLE toygres.instances RENAME TO instances_away")
        try:
            for _ in range(6):
                await engine.run_until_idle()
                clock.advance(timedelta(seconds=70))
        finally:
            await conn.execute("ALTER TABLE toygres.instances_away RENAME TO instances")
    for _ in range(6):
        await engine.run_until_idle()
        clock.advance(timedelta(seconds=70))

    op = await cp.get_operation(delete_op)
    assert op.status.value == "Failed"
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.FAILED
    assert row.failure_reason and "delete the instance again" in row.failure_reason


def _registry_with_an_older_worker(cp: ControlPlane) -> Registry:
    """The control plane's code, except one activity answers in a shape this version cannot read
    (a worker of another version during a rolling upgrade)."""
    registry = Registry()
    register_orchestrations(registry)
    for name in cp.registry.activity_names():
        if name == GENERATE_CONNECTION_STRING:
            continue
        activity = cp.registry.get_activity(name)
        assert activity is not None
        registry.activity(name)(activity.fn)

    @registry.activity(GENERATE_CONNECTION_STRING)
    async def older(ctx: ActivityContext, raw: Any) -> dict[str, Any]:
        return {"uri": "postgresql://somewhere"}

    return registry


async def test_a_create_that_fails_in_any_way_removes_what_it_made(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, _, clock, root = stepped_local
    engine = Runtime(cp.provider, _registry_with_an_older_worker(cp), RuntimeOptions(inline_activities=False))
    created = await cp.create_instance(CreateInstanceRequest(name="skewed"))
    for _ in range(10):
        await engine.run_until_idle()
        clock.advance(timedelta(seconds=10))
    op = await cp.get_operation(created.operation_id)
    assert op.status.value == "Failed" and op.error is not None
    row = await cp.get_instance(created.instance_id)
    assert row.state is InstanceState.FAILED and row.failure_reason
    assert local_postmasters(root) == {}  # the server it started was removed again
    assert not (root / row.k8s_name).exists()


class SwitchableCredential:
    """An Entra ID credential that can be told to fail (an expired federated assertion)."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.failing = False

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self.failing:
            raise ClientAuthenticationError(
                "AADSTS700024: Client assertion is not within its valid time range."
            )
        return AccessToken(self.tokens[scopes[0]], int(time.time()) + 3600)


async def test_a_credential_failure_is_an_unknown_health_and_the_monitor_goes_on(
    pg_dsn: str, kube_apiserver: KubeApiServer, arm_server: ArmServer
) -> None:
    kubeconfig = kube_apiserver.kubeconfig_dict(context="aad")
    kubeconfig["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin",
            "args": ["get-token", "--server-id", AKS_AAD_SERVER_APP_ID],
        }
    }
    arm_server.add_cluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, "aad", kubeconfig=kubeconfig, aad=True)
    credential = SwitchableCredential(
        {
            "https://management.azure.com/.default": arm_server.token,
            f"{AKS_AAD_SERVER_APP_ID}/.default": kube_apiserver.token,
        }
    )
    factory = AksClientFactory(
        AksCluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, "aad"),
        credential=credential,
        arm_base_url=arm_server.url,
        connection_verify=str(arm_server.ca_file),
    )
    runtime = KubernetesRuntime(factory, namespace=NAMESPACE)
    clock = ManualClock()
    async with stepped_plane(
        pg_dsn, {RuntimeKind.KUBERNETES: runtime}, settings=KUBE_SETTINGS, clock=clock
    ) as (cp, engine, _):
        created = await cp.create_instance(CreateInstanceRequest(name="audited"))
        for _ in range(200):
            await engine.run_until_idle()
            row = await cp.get_instance(created.instance_id)
            if row.health_status is HealthStatus.HEALTHY:
                break
            clock.advance(timedelta(seconds=5))
            await asyncio.sleep(0.1)
        assert row.health_status is HealthStatus.HEALTHY and row.health_monitor_id is not None

        credential.failing = True
        factory.invalidate()  # the cached cluster credentials expired
        for _ in range(10):
            clock.advance(timedelta(seconds=31))
            await engine.run_until_idle()
        row = await cp.get_instance(created.instance_id)
        assert row.health_status is HealthStatus.UNKNOWN, row.last_health_message
        assert row.last_health_message and "AADSTS700024" in row.last_health_message
        monitor = await cp.client.get_status(row.health_monitor_id)
        assert monitor is not None and monitor.status == RuntimeStatus.RUNNING, monitor

        credential.failing = False
        for _ in range(40):
            clock.advance(timedelta(seconds=31))
            await engine.run_until_idle()
            if (await cp.get_instance(created.instance_id)).health_status is HealthStatus.HEALTHY:
                break
            await asyncio.sleep(0.1)
        final = await cp.get_instance(created.instance_id)
        assert final.health_status is HealthStatus.HEALTHY, final.last_health_message
