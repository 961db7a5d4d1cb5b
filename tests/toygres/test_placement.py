"""Invariant 6: placement is explicit and recorded.

The namespace an instance was created in is part of what every later activity gets, whatever the
settings say by then; the local runtime exists only where a setting enables it; a request for a
runtime that is not enabled is a 422 that names the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from activities import instance_spec
from api.app import create_app
from control_plane.bootstrap import ConfigurationError, build_runtimes
from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import ManualClock, PostgresProvider
from tests.standins.kube_apiserver import KubeApiServer
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind
from toygres.runtimes.aks_credentials import KubeconfigClientFactory
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.settings import KubernetesSettings, Settings

from .plane import control_plane, stepped_plane
from .runtimes_under_test import kube_objects

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

TIMING = LifecycleTiming(health_interval_seconds=30, readiness_deadline_seconds=600, readiness_poll_seconds=5)


async def test_later_activities_use_the_namespace_the_instance_was_created_in(
    pg_dsn: str, kube_apiserver: KubeApiServer, kubeconfig_path: Path
) -> None:
    runtime = KubernetesRuntime(KubeconfigClientFactory(kubeconfig_path), namespace="tenants-a")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_runtime=RuntimeKind.KUBERNETES,
        kubernetes=KubernetesSettings(namespace="tenants-a", kubeconfig=kubeconfig_path),
    )
    clock = ManualClock()
    async with stepped_plane(
        pg_dsn, {RuntimeKind.KUBERNETES: runtime}, settings=settings, timing=TIMING, clock=clock
    ) as (cp, engine, _):
        created = await cp.create_instance(CreateInstanceRequest(name="placed"))
        for _ in range(200):
            await engine.run_until_idle()
            status = await cp.client.get_status(created.operation_id)
            if status is not None and status.is_terminal:
                break
            clock.advance(timedelta(seconds=5))
            await asyncio.sleep(0.1)
        row = await cp.get_instance(created.instance_id)
        assert row.state is InstanceState.RUNNING and row.k8s_namespace == "tenants-a"

        # the control plane is reconfigured for another namespace; the instance stays where it is
        runtime.namespace = "tenants-b"
        assert row.deployment_config is not None
        observed = await asyncio.to_thread(runtime.status, instance_spec(row.deployment_config))
        assert observed.exists and observed.ready
        delete_op = await cp.delete_instance(created.instance_id)
        for _ in range(100):
            await engine.run_until_idle()
            status = await cp.client.get_status(delete_op)
            if status is not None and status.is_terminal:
                break
            clock.advance(timedelta(seconds=5))
            await asyncio.sleep(0.1)
        assert (await cp.get_operation(delete_op)).status.value == "Completed"
    api_objects = {
        kind: names
        for kind, names in kube_objects(kubeconfig_path, namespace="tenants-a").items()
        if kind != "pods"  # a pod terminates in the background
    }
    assert api_objects == {}


def test_the_local_runtime_exists_only_where_a_setting_enables_it(
    kubeconfig_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = KubernetesSettings(kubeconfig=kubeconfig_path)
    assert set(build_runtimes(Settings(local_data_dir=tmp_path, kubernetes=kube))) == {
        RuntimeKind.KUBERNETES,
        RuntimeKind.LOCAL,
    }
    monkeypatch.setenv("TOYGRES_LOCAL_RUNTIME_ENABLED", "false")
    monkeypatch.setenv("TOYGRES_LOCAL_DATA_DIR", str(tmp_path))
    off = Settings(_env_file=None, kubernetes=kube)  # type: ignore[call-arg]
    assert off.local_runtime_enabled is False
    assert set(build_runtimes(off)) == {RuntimeKind.KUBERNETES}
    with pytest.raises(ConfigurationError, match="TOYGRES_LOCAL_RUNTIME_ENABLED"):
        build_runtimes(off.model_copy(update={"default_runtime": RuntimeKind.LOCAL}))


@pytest.fixture
async def kube_only_api(
    pg_dsn: str, kube_apiserver: KubeApiServer, kubeconfig_path: Path, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        local_runtime_enabled=False,
        local_data_dir=tmp_path,
        kubernetes=KubernetesSettings(kubeconfig=kubeconfig_path),
    )
    provider = await PostgresProvider.connect(pg_dsn)
    try:
        async with control_plane(
            pg_dsn, provider, build_runtimes(settings), settings=settings, start_runtime=False
        ) as (plane, _):
            app = create_app(lambda: plane)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://toygres") as client:
                client.plane = plane  # type: ignore[attr-defined]
                yield client
    finally:
        await provider.close()


async def test_a_request_for_a_runtime_that_is_not_enabled_is_a_422_naming_the_field(
    kube_only_api: httpx.AsyncClient,
) -> None:
    response = await kube_only_api.post("/api/instances", json={"name": "local-please", "runtime": "local"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "runtime_not_configured"
    assert "runtime" in response.text and "local" in error["message"]
    plane: ControlPlane = kube_only_api.plane  # type: ignore[attr-defined]
    assert (await plane.list_instances(include_deleted=True)).items == []  # nothing was recorded
