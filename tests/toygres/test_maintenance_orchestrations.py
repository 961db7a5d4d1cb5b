"""Certificate rotation and image rollouts, on the in-memory engine in virtual time.

The instances are real: TLS pods of the Kubernetes stand-in (Debian's PostgreSQL). Durable timers
fire when the test moves the clock, so two months pass in a few seconds; the clock starts at the real
time so that certificates (issued at the real time) and the orchestrations' clock agree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from activities.deps import instance_spec
from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine import InMemoryProvider, ManualClock, Runtime, RuntimeStatus
from tests.standins.kube_apiserver import KubeApiServer
from tests.standins.pg_binaries import SKIP_REASON, tls_pg_bin_dir
from toygres.image_catalog import ImageCatalog, load_image_catalog
from toygres.models import CreateInstanceRequest, InstanceState, RuntimeKind
from toygres.runtimes.aks_credentials import KubeconfigClientFactory
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.runtimes.tls_secrets import KubernetesSecretCaStore
from toygres.settings import Settings

from .plane import control_plane

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.skipif(tls_pg_bin_dir() is None, reason=SKIP_REASON),
]

NAMESPACE = "toygres"
TIMING = LifecycleTiming(
    health_interval_seconds=30, readiness_deadline_seconds=300, readiness_poll_seconds=5, deploy_attempts=2
)
NEXT_17 = "sha256:" + "7" * 64


class Virtual:
    def __init__(
        self, cp: ControlPlane, runtime: Runtime, clock: ManualClock, kube: KubernetesRuntime
    ) -> None:
        self.cp, self.runtime, self.clock, self.kube = cp, runtime, clock, kube

    async def drive(
        self, done: Callable[[], Awaitable[bool]], *, step: float = 5, timeout: float = 150
    ) -> None:
        """Run the engine, moving virtual time by ``step`` while real pods start, until ``done``."""
        deadline = time.monotonic() + timeout
        while True:
            await self.runtime.run_until_idle()
            if await done():
                return
            assert time.monotonic() < deadline, "the orchestrations did not get there"
            await asyncio.sleep(0.2)
            self.clock.advance(timedelta(seconds=step))

    async def finished(self, operation_id: str) -> Any:
        async def ended() -> bool:
            status = await self.cp.client.get_status(operation_id)
            return status is not None and status.is_terminal

        await self.drive(ended)
        status = await self.cp.client.get_status(operation_id)
        assert status is not None
        return status

    async def create(self, name: str) -> Any:
        created = await self.cp.create_instance(CreateInstanceRequest(name=name, username="app"))
        status = await self.finished(created.operation_id)
        assert status.status == RuntimeStatus.COMPLETED, status.error
        return await self.cp.get_instance(created.instance_id)


@pytest.fixture
async def virtual(
    pg_dsn: str, kube_apiserver: KubeApiServer, kubeconfig_path: Path
) -> AsyncIterator[Virtual]:
    clock = ManualClock(start=datetime.now(UTC))
    kube = KubernetesRuntime(
        KubeconfigClientFactory(kubeconfig_path),
        namespace=NAMESPACE,
        request_timeout=10,
        ca_store=KubernetesSecretCaStore("toygres-system"),
    )
    async with control_plane(
        pg_dsn,
        InMemoryProvider(clock),
        {RuntimeKind.KUBERNETES: kube},
        settings=Settings(default_runtime=RuntimeKind.KUBERNETES),
        timing=TIMING,
        start_runtime=False,
    ) as (cp, runtime):
        yield Virtual(cp, runtime, clock, kube)


def served_by_verify_full(instance: Any, ca_pem: str, password: str, tmp_path: Path) -> bool:
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(ca_pem)
    with psycopg.connect(instance.connection_string, password=password, sslrootcert=str(ca_file)) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    return row == (True,)


async def test_certificates_are_renewed_before_they_expire(virtual: Virtual, tmp_path: Path) -> None:
    cp, clock, kube = virtual.cp, virtual.clock, virtual.kube
    instance = await virtual.create("renewed")
    spec = instance_spec(instance.deployment_config)
    first = kube.certificate_status(spec)
    assert first is not None

    # a fresh 90-day certificate is not due: the pass completes having renewed nothing
    quiet = await cp.run_certificate_rotation(now=clock.now())
    status = await virtual.finished(quiet)
    assert status.status == RuntimeStatus.COMPLETED and status.output["rotated"] == []
    assert await cp.run_certificate_rotation(now=clock.now()) == quiet  # one pass per day

    # 61 days later it expires within the 30-day window: renewed, and the pod restarted onto it
    clock.advance(timedelta(days=61))
    busy = await cp.run_certificate_rotation(now=clock.now())
    assert busy != quiet
    status = await virtual.finished(busy)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    (rotated,) = status.output["rotated"]
    assert rotated["instance_id"] == str(instance.id) and rotated["sha256"] != first.sha256
    second = kube.certificate_status(spec)
    assert second is not None and second.sha256 == rotated["sha256"] and second.not_after > first.not_after
    assert kube.rollout_status(spec).complete
    password = kube.read_password(spec)
    assert served_by_verify_full(instance, await cp.get_instance_ca(instance.id), password, tmp_path)
    assert await cp.client.get_status(quiet) is None  # the finished earlier pass was purged
    # no secret reaches the history: fingerprints and dates only
    history = repr(await cp.client.get_history(busy))
    assert "PRIVATE KEY" not in history and "BEGIN CERTIFICATE" not in history


def bumped(catalog: ImageCatalog, major: str, tag: str, digest: str) -> ImageCatalog:
    images = dict(catalog.images)
    images[major] = images[major].model_copy(update={"tag": tag, "digest": digest})
    return catalog.model_copy(update={"images": images})


async def test_a_catalog_change_rolls_instances_one_at_a_time(
    virtual: Virtual, kube_apiserver: KubeApiServer
) -> None:
    cp = virtual.cp
    first = await virtual.create("alpha")
    second = await virtual.create("beta")
    old_image = first.image
    assert old_image is not None and "@sha256:" in old_image and old_image.startswith("postgres:17.")

    # the operator changes the catalog (a minor upgrade) and rolls it out
    cp.image_catalog = cp.deps.image_catalog = bumped(load_image_catalog(), "17", "17.7", NEXT_17)
    operation_id = await cp.start_image_rollout()
    assert await cp.start_image_rollout() == operation_id  # the same rollout while it runs
    status = await virtual.finished(operation_id)
    assert status.status == RuntimeStatus.COMPLETED, status.error
    new_image = f"postgres:17.7@{NEXT_17}"
    assert sorted(r["instance_id"] for r in status.output["rolled"]) == sorted(
        [str(first.id), str(second.id)]
    )
    assert all(r["from"] == old_image and r["to"] == new_image for r in status.output["rolled"])
    for instance in (first, second):
        record = await cp.get_instance(instance.id)
        assert record.image == new_image and record.deployment_config is not None
        assert record.deployment_config.image == new_image and record.state is InstanceState.RUNNING
        sts = kube_apiserver.get_object("statefulsets", NAMESPACE, instance.k8s_name, group="apps")
        assert sts is not None and sts["spec"]["template"]["spec"]["containers"][0]["image"] == new_image
    operation = await cp.get_operation(operation_id)
    assert operation.kind.value == "image-rollout" and operation.status.value == "Completed"

    # asked again: a new pass, which finds nothing to do
    again = await cp.start_image_rollout()
    assert again != operation_id and again.startswith(operation_id)
    status = await virtual.finished(again)
    assert status.status == RuntimeStatus.COMPLETED and status.output["rolled"] == []


async def test_a_rollout_stops_at_the_first_instance_that_does_not_come_back(
    virtual: Virtual, kube_apiserver: KubeApiServer
) -> None:
    cp = virtual.cp
    instances = [await virtual.create("gamma"), await virtual.create("delta")]
    for instance in instances:
        kube_apiserver.pod_never_ready(instance.k8s_name, NAMESPACE)
    cp.image_catalog = cp.deps.image_catalog = bumped(
        load_image_catalog(), "17", "17.8", "sha256:" + "8" * 64
    )
    operation_id = await cp.start_image_rollout()
    status = await virtual.finished(operation_id)
    assert status.status == RuntimeStatus.FAILED
    assert status.error is not None and "did not come back" in status.error.message
    assert "1 instance(s) not rolled" in status.error.message
    images = sorted([(await cp.get_instance(i.id)).image or "" for i in instances])
    # the first instance records its new image (intent first); the second was never touched
    assert images == sorted([instances[0].image or "", f"postgres:17.8@sha256:{'8' * 64}"])
