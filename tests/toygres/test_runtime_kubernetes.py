"""KubernetesRuntime with the real kubernetes client against the API server stand-in,
and the AKS credential path with the real ContainerServiceClient against the ARM stand-in."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from azure.core.credentials import AccessToken

from tests.standins.arm import ArmServer, StaticTokenCredential
from tests.standins.fixtures import ARM_CLUSTER, ARM_RESOURCE_GROUP, ARM_SUBSCRIPTION
from tests.standins.kube_apiserver import KubeApiServer
from toygres.runtimes import manifests
from toygres.runtimes.aks_credentials import (
    AKS_AAD_SERVER_APP_ID,
    AksClientFactory,
    AksCluster,
    KubeconfigClientFactory,
    aad_server_id,
    client_factory_for,
    with_bearer_token,
)
from toygres.runtimes.base import DeployError, InstanceNotFound, InstanceRuntime, InstanceSpec, RuntimeStatus
from toygres.runtimes.kubernetes import KubernetesRuntime

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

NS = "pg-tenants"
PASSWORD = "Kube-Pa55word!"
SPEC = InstanceSpec(
    instance_id="k8s-inst-1",
    name="orders",
    postgres_version="17",
    storage_size="2Gi",
    storage_class="managed-csi",
    username="orders_owner",
    database="orders",
    cpu_request="100m",
    memory_request="256Mi",
)
LB_SPEC = InstanceSpec(
    instance_id="k8s-inst-2",
    name="public",
    postgres_version="17",
    storage_size="1Gi",
    username="pub",
    service_type="LoadBalancer",
    load_balancer_source_ranges=("203.0.113.0/24",),
)


def wait_for(
    check: Callable[[], RuntimeStatus], api: KubeApiServer, spec: InstanceSpec, timeout: float = 90.0
) -> RuntimeStatus:
    """Wait until the runtime reports ready with the address where the stand-in really serves.

    The stand-in's controller publishes that address on the Service (``standin.toygres.io/host-port``)
    asynchronously, possibly a moment after the pod turned Ready; until then the runtime
    rightly reports the in-cluster DNS name (ClusterIP) or port 5432 (LoadBalancer).
    """
    deadline = time.monotonic() + timeout
    while True:
        status = check()
        try:
            actual: tuple[str, int] | None = api.endpoint_for_service(NS, spec.name)
        except KeyError:
            actual = None
        reported = (status.endpoint.host, status.endpoint.port) if status.endpoint else None
        if status.ready and reported == actual:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{spec.name} not ready at {actual} after {timeout}s: {status}")
        time.sleep(0.2)


def resource_versions(api: KubeApiServer, spec: InstanceSpec) -> dict[str, str]:
    names = manifests.object_names(spec)
    objs = {
        "secret": api.get_object("secrets", NS, names.secret),
        "service": api.get_object("services", NS, names.service),
        "statefulset": api.get_object("statefulsets", NS, names.statefulset, group="apps"),
        "configmap": api.get_object("configmaps", NS, names.config_map),
        "networkpolicy": api.get_object(
            "networkpolicies", NS, names.network_policy, group="networking.k8s.io"
        ),
    }
    out = {}
    for kind, obj in objs.items():
        assert obj is not None, kind
        out[kind] = obj["metadata"]["resourceVersion"]
    return out


def stable_resource_versions(api: KubeApiServer, spec: InstanceSpec, timeout: float = 30.0) -> dict[str, str]:
    """Wait until the stand-in's controller stops touching the objects (status updates)."""
    deadline = time.monotonic() + timeout
    previous = resource_versions(api, spec)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = resource_versions(api, spec)
        if current == previous:
            return current
        previous = current
    raise AssertionError("objects never settled")


@pytest.fixture
def runtime(kubeconfig_path: Path) -> KubernetesRuntime:
    return KubernetesRuntime(KubeconfigClientFactory(kubeconfig_path), namespace=NS, request_timeout=10)


def test_deploy_ready_connect_redeploy_delete(
    runtime: KubernetesRuntime,
    kube_apiserver: KubeApiServer,
) -> None:
    assert isinstance(runtime, InstanceRuntime)
    assert runtime.status(SPEC).exists is False
    with pytest.raises(InstanceNotFound):
        runtime.read_password(SPEC)

    ref = runtime.deploy(SPEC, PASSWORD)
    assert ref == f"k8s-secret:{NS}/orders#password"
    assert kube_apiserver.get_object("namespaces", "", NS) is not None

    # Objects exist with the identifying labels, and only the Secret holds the password.
    names = manifests.object_names(SPEC)
    expected_labels = manifests.labels(SPEC)
    secret = kube_apiserver.get_object("secrets", NS, names.secret)
    service = kube_apiserver.get_object("services", NS, names.service)
    sts = kube_apiserver.get_object("statefulsets", NS, names.statefulset, group="apps")
    assert secret and service and sts
    for obj in (secret, service, sts):
        assert obj["metadata"]["labels"] == expected_labels
    assert sts["spec"]["template"]["metadata"]["labels"] == expected_labels
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    assert PASSWORD not in str(sts) and PASSWORD not in str(service)
    assert service["spec"]["type"] == "ClusterIP"
    # Server-side apply was used for everything but the Secret (created once, never overwritten).
    applies = [
        e for e in kube_apiserver.faults.requests("PATCH") if e.content_type == "application/apply-patch+yaml"
    ]
    assert {e.path.rsplit("/", 2)[-2] for e in applies} == {
        "configmaps",
        "services",
        "networkpolicies",
        "poddisruptionbudgets",
        "statefulsets",
    }
    # the stand-in keeps and returns every field of the hardened objects
    pod_spec = sts["spec"]["template"]["spec"]
    assert (
        pod_spec["securityContext"]["runAsNonRoot"] is True
        and pod_spec["automountServiceAccountToken"] is False
    )
    policy = kube_apiserver.get_object("networkpolicies", NS, names.network_policy, group="networking.k8s.io")
    assert policy is not None and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    budget = kube_apiserver.get_object(
        "poddisruptionbudgets", NS, names.pod_disruption_budget, group="policy"
    )
    assert budget is not None and budget["spec"]["minAvailable"] == 1
    config = kube_apiserver.get_object("configmaps", NS, names.config_map)
    assert config is not None and "ssl" not in config["data"]["postgresql.conf"]  # this spec has no TLS

    status = wait_for(lambda: runtime.status(SPEC), kube_apiserver, SPEC)
    assert status.exists and status.phase == "Running" and status.endpoint is not None
    password = runtime.read_password(SPEC)
    assert password == PASSWORD
    endpoint = status.endpoint
    with psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=SPEC.username,
        password=password,
        dbname=SPEC.database,
        connect_timeout=10,
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (v text)")
        conn.execute("INSERT INTO t VALUES ('hello')")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    pvc = kube_apiserver.get_object("persistentvolumeclaims", NS, names.pvc)
    assert pvc is not None and pvc["metadata"]["labels"] == expected_labels
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["spec"]["storageClassName"] == "managed-csi"

    # Re-deploying (even with another password) writes nothing. The stand-in's controller may
    # legitimately touch an object (a readiness probe timing out on a loaded machine changes the
    # StatefulSet status), so an observed change is re-checked; a non-idempotent deploy fails every time.
    changes = []
    for _ in range(3):
        before = stable_resource_versions(kube_apiserver, SPEC)
        assert runtime.deploy(SPEC, "a-different-password") == ref
        after = resource_versions(kube_apiserver, SPEC)
        if after == before:
            break
        changes.append((before, after))
    else:
        raise AssertionError(f"every re-deploy changed a resourceVersion: {changes}")
    assert runtime.read_password(SPEC) == PASSWORD

    assert runtime.describe(SPEC) == {
        "runtime": "kubernetes",
        "namespace": NS,
        "statefulset": "orders",
        "service": "orders",
        "secret": "orders",
        "pod": "orders-0",
        "pvc": "data-orders-0",
        "config_map": "orders-config",
        "network_policy": "orders",
        "pod_disruption_budget": "orders",
        "password_ref": ref,
    }
    # the PodDisruptionBudget counts the ready pod, as the disruption controller does
    budget = kube_apiserver.get_object(
        "poddisruptionbudgets", NS, names.pod_disruption_budget, group="policy"
    )
    assert budget is not None and budget["status"]["currentHealthy"] == 1
    assert budget["status"]["disruptionsAllowed"] == 0

    assert runtime.delete(SPEC) is True
    for resource, name, group in (
        ("secrets", names.secret, ""),
        ("services", names.service, ""),
        ("statefulsets", names.statefulset, "apps"),
        ("configmaps", names.config_map, ""),
        ("networkpolicies", names.network_policy, "networking.k8s.io"),
        ("poddisruptionbudgets", names.pod_disruption_budget, "policy"),
    ):
        assert kube_apiserver.get_object(resource, NS, name, group=group) is None, resource
    deadline = time.monotonic() + 30
    while kube_apiserver.get_object("persistentvolumeclaims", NS, names.pvc) is not None:
        assert time.monotonic() < deadline, "PVC not removed"
        time.sleep(0.2)
    assert runtime.status(SPEC).exists is False
    assert runtime.delete(SPEC) is False


def test_load_balancer_endpoint_and_not_ready_pod(
    runtime: KubernetesRuntime, kube_apiserver: KubeApiServer
) -> None:
    kube_apiserver.pod_never_ready(LB_SPEC.name, NS)
    runtime.deploy(LB_SPEC, PASSWORD)
    service = kube_apiserver.get_object("services", NS, LB_SPEC.name)
    assert service is not None and service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    time.sleep(2)
    status = runtime.status(LB_SPEC)
    assert status.exists and not status.ready
    kube_apiserver.pod_never_ready(LB_SPEC.name, NS, enabled=False)
    status = wait_for(lambda: runtime.status(LB_SPEC), kube_apiserver, LB_SPEC)
    assert status.endpoint is not None
    with psycopg.connect(
        host=status.endpoint.host,
        port=status.endpoint.port,
        user="pub",
        password=PASSWORD,
        dbname="postgres",
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("pub",)
    assert runtime.delete(LB_SPEC) is True


def test_api_errors_map_to_deploy_error(runtime: KubernetesRuntime, kube_apiserver: KubeApiServer) -> None:
    kube_apiserver.faults.fail_next("PATCH", r"/statefulsets/", status=500)
    with pytest.raises(DeployError) as info:
        runtime.deploy(SPEC, PASSWORD)
    assert info.value.retryable is True and info.value.status == 500

    kube_apiserver.faults.fail_next("PATCH", r"/services/", status=429)
    with pytest.raises(DeployError) as info:
        runtime.deploy(SPEC, PASSWORD)
    assert info.value.retryable is True

    kube_apiserver.faults.fail_next("PATCH", r"/statefulsets/", status=403)
    with pytest.raises(DeployError) as info:
        runtime.deploy(SPEC, PASSWORD)
    assert info.value.retryable is False and info.value.status == 403
    assert "injected failure" in str(info.value)  # the API's own message is carried through
    assert PASSWORD not in str(info.value)

    # After the faults, a retry converges.
    runtime.deploy(SPEC, PASSWORD)
    assert kube_apiserver.get_object("statefulsets", NS, SPEC.name, group="apps") is not None
    runtime.delete(SPEC)


def test_stored_password_wins_and_foreign_secret_is_not_adopted(
    runtime: KubernetesRuntime,
    kube_apiserver: KubeApiServer,
) -> None:
    assert runtime.store_password(SPEC, PASSWORD) == f"k8s-secret:{NS}/orders#password"
    assert kube_apiserver.get_object("statefulsets", NS, SPEC.name, group="apps") is None
    runtime.deploy(SPEC, "not this one")
    assert runtime.read_password(SPEC) == PASSWORD
    impostor = InstanceSpec.from_dict(SPEC.to_dict() | {"instance_id": "someone-else"})
    with pytest.raises(DeployError) as info:
        runtime.deploy(impostor, "other")
    assert info.value.retryable is False
    runtime.delete(SPEC)


def test_wrong_token_is_an_auth_error(kube_apiserver: KubeApiServer, tmp_path: Path) -> None:
    config = kube_apiserver.write_kubeconfig(tmp_path / "kc", token="nope")
    bad = KubernetesRuntime(KubeconfigClientFactory(config), namespace=NS)
    with pytest.raises(DeployError) as info:
        bad.status(SPEC)
    assert info.value.status == 401


# --------------------------------------------------------------------------- AKS credentials


class ScopedCredential(StaticTokenCredential):
    """Hands out one token for ARM and another for the AKS AAD server app, like Entra ID would."""

    def __init__(self, tokens: dict[str, str], lifetime: int = 3600) -> None:
        super().__init__(lifetime=lifetime)
        self.tokens = tokens

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes_requested.append(scopes)
        return AccessToken(self.tokens[scopes[0]], int(time.time()) + self.lifetime)


def aks_factory(arm: ArmServer, credential: Any, **kwargs: Any) -> AksClientFactory:
    cluster = AksCluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, ARM_CLUSTER)
    return AksClientFactory(
        cluster, credential=credential, arm_base_url=arm.url, connection_verify=str(arm.ca_file), **kwargs
    )


def arm_credential_calls(arm: ArmServer) -> int:
    return len([e for e in arm.faults.requests("POST") if e.path.endswith("/listClusterUserCredential")])


def test_aks_credentials_via_arm(
    arm_server: ArmServer,
    arm_credential: StaticTokenCredential,
    kube_apiserver: KubeApiServer,
) -> None:
    now = [1_000_000.0]
    factory = aks_factory(
        arm_server, arm_credential, static_credential_ttl=600, refresh_margin=60, clock=lambda: now[0]
    )
    runtime = KubernetesRuntime(factory, namespace=NS)
    runtime.deploy(SPEC, PASSWORD)
    assert kube_apiserver.get_object("statefulsets", NS, SPEC.name, group="apps") is not None
    assert ("https://management.azure.com/.default",) in arm_credential.scopes_requested
    # Cached: more calls, one ARM round trip; past the TTL minus margin, a fresh fetch.
    runtime.status(SPEC)
    assert factory() is factory()
    assert arm_credential_calls(arm_server) == 1
    now[0] += 600 - 60 + 1
    runtime.status(SPEC)
    assert arm_credential_calls(arm_server) == 2
    runtime.delete(SPEC)


def test_aks_aad_cluster_uses_bearer_token(arm_server: ArmServer, kube_apiserver: KubeApiServer) -> None:
    # An AAD cluster's user kubeconfig: kubelogin exec plugin instead of a token.
    kubeconfig = kube_apiserver.kubeconfig_dict(context="aad")
    kubeconfig["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin",
            "args": ["get-token", "--login", "devicecode", "--server-id", AKS_AAD_SERVER_APP_ID],
        }
    }
    arm_server.add_cluster(
        ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, "aad-cluster", kubeconfig=kubeconfig, aad=True
    )
    aad_scope = f"{AKS_AAD_SERVER_APP_ID}/.default"
    credential = ScopedCredential(
        {"https://management.azure.com/.default": arm_server.token, aad_scope: kube_apiserver.token},
        lifetime=120,
    )
    now = [time.time()]
    factory = AksClientFactory(
        AksCluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, "aad-cluster"),
        credential=credential,
        arm_base_url=arm_server.url,
        connection_verify=str(arm_server.ca_file),
        refresh_margin=30,
        clock=lambda: now[0],
    )
    runtime = KubernetesRuntime(factory, namespace=NS)
    assert runtime.status(SPEC).exists is False  # authenticated with the AAD token
    assert (aad_scope,) in credential.scopes_requested
    # The cache follows the token expiry (120 s) minus the margin (30 s).
    factory()
    assert arm_credential_calls(arm_server) == 1
    now[0] += 91
    factory()
    assert arm_credential_calls(arm_server) == 2


def test_aks_errors(arm_server: ArmServer, arm_credential: StaticTokenCredential) -> None:
    missing = AksClientFactory(
        AksCluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, "no-such-cluster"),
        credential=arm_credential,
        arm_base_url=arm_server.url,
        connection_verify=str(arm_server.ca_file),
    )
    with pytest.raises(DeployError) as info:
        missing()
    assert info.value.retryable is False and info.value.status == 404

    arm_server.faults.fail_next("POST", r"listClusterUserCredential", status=503, count=20)
    factory = aks_factory(arm_server, arm_credential, arm_client_kwargs={"retry_total": 0})
    with pytest.raises(DeployError) as info:
        factory()
    assert info.value.retryable is True and info.value.status == 503


def test_kubeconfig_helpers() -> None:
    base = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [
            {"name": "u", "user": {"exec": {"command": "kubelogin", "args": ["--server-id=abc"]}}},
            {"name": "other", "user": {"token": "keep"}},
        ],
    }
    assert aad_server_id(base) == "abc"
    replaced = with_bearer_token(base, "tok")
    assert replaced["users"] == [
        {"name": "u", "user": {"token": "tok"}},
        {"name": "other", "user": {"token": "keep"}},
    ]
    assert aad_server_id(replaced) is None
    legacy = base | {"users": [{"name": "u", "user": {"auth-provider": {"name": "azure", "config": {}}}}]}
    assert aad_server_id(legacy) == AKS_AAD_SERVER_APP_ID


def test_client_factory_for_settings(kubeconfig_path: Path, arm_credential: StaticTokenCredential) -> None:
    factory = client_factory_for(kubeconfig=kubeconfig_path)
    assert isinstance(factory, KubeconfigClientFactory)
    assert KubernetesRuntime(factory, namespace=NS).status(SPEC).exists is False  # talks to the stand-in
    aks = client_factory_for(
        aks_subscription_id="s", aks_resource_group="rg", aks_cluster_name="c", credential=arm_credential
    )
    assert isinstance(aks, AksClientFactory) and aks.cluster == AksCluster("s", "rg", "c")
    with pytest.raises(ValueError, match="aks_cluster_name"):
        client_factory_for(aks_subscription_id="s")
