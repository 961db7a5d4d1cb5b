"""The Kubernetes API stand-in, exercised only through the real ``kubernetes`` client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.standins import fixtures as standin_fixtures
from tests.standins.kube_apiserver import HOST_PORT_ANNOTATION, KubeApiServer

pytestmark = pytest.mark.timeout(240)
kube_apiserver = standin_fixtures.kube_apiserver
kubeconfig_path = standin_fixtures.kubeconfig_path

T = TypeVar("T")
LABELS = {"app.kubernetes.io/name": "pg", "toygres.io/instance": "inst1"}


def alive(pid: int) -> bool:
    """A reaped or zombie postmaster is gone (containers' PID 1 may reap late)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def api_client(kubeconfig_path: Path) -> client.ApiClient:
    return config.new_client_from_config(str(kubeconfig_path))


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


def statefulset(name: str = "pg", secret: str = "pg-secret", storage: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "containers": [
                        {
                            "name": "postgres",
                            "image": "postgres:16",
                            "ports": [{"containerPort": 5432, "name": "postgres"}],
                            "env": [
                                {"name": "POSTGRES_USER", "value": "toygres"},
                                {
                                    "name": "POSTGRES_PASSWORD",
                                    "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}},
                                },
                                {"name": "POSTGRES_DB", "value": "appdb"},
                            ],
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": storage}},
                    },
                }
            ],
        },
    }


def apply(apps: client.AppsV1Api, body: dict[str, Any], ns: str) -> client.V1StatefulSet:
    return apps.patch_namespaced_stateful_set(
        body["metadata"]["name"],
        ns,
        body,
        field_manager="toygres",
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def pod_ready(core: client.CoreV1Api, ns: str, name: str) -> client.V1Pod | None:
    try:
        pod = core.read_namespaced_pod(name, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    conditions = pod.status.conditions or [] if pod.status else []
    return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None


def pod_not_ready(core: client.CoreV1Api, ns: str, name: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, ns)
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return None if ready else pod


def deploy_instance(
    core: client.CoreV1Api, apps: client.AppsV1Api, ns: str, password: str = "s3cret-pw"
) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="pg-secret"), string_data={"password": password}),
    )
    apply(apps, statefulset(), ns)
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "pg"},
            "spec": {
                "type": "LoadBalancer",
                "selector": LABELS,
                "ports": [{"port": 5432, "name": "postgres"}],
            },
        },
    )


def service_port(core: client.CoreV1Api, ns: str) -> int:
    svc = wait_for(
        "host-port annotation",
        lambda: (lambda s: s if (s.metadata.annotations or {}).get(HOST_PORT_ANNOTATION) else None)(
            core.read_namespaced_service("pg", ns)
        ),
    )
    return int(svc.metadata.annotations[HOST_PORT_ANNOTATION])


# -- API semantics ---------------------------------------------------------------------------------


def test_create_get_list_errors_are_real_status_bodies(core: client.CoreV1Api) -> None:
    ns = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="crud")))
    assert ns.status.phase == "Active" and ns.metadata.uid and int(ns.metadata.resource_version) > 0

    with pytest.raises(ApiException) as dup:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="crud")))
    assert dup.value.status == 409
    assert dup.value.body == (
        '{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", '
        '"message": "namespaces \\"crud\\" already exists", "reason": "AlreadyExists", '
        '"details": {"name": "crud", "kind": "namespaces"}, "code": 409}'
    )

    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("nope", "crud")
    assert missing.value.status == 404 and '"reason": "NotFound"' in missing.value.body

    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_secret("ghost", {"metadata": {"name": "s"}})
    assert no_ns.value.status == 404 and 'namespaces \\"ghost\\" not found' in no_ns.value.body

    for name, role in (("a", "primary"), ("b", "replica"), ("c", "primary")):
        core.create_namespaced_secret(
            "crud",
            {"metadata": {"name": name, "labels": {"role": role, "app": "pg"}}, "string_data": {"k": "v"}},
        )
    listed = core.list_namespaced_secret("crud", label_selector="app=pg,role=primary")
    assert [s.metadata.name for s in listed.items] == ["a", "c"]
    assert core.read_namespaced_secret("a", "crud").data == {"k": "dg=="}

    with pytest.raises(ApiException) as gone:
        core.delete_namespaced_secret("nope", "crud")
    assert gone.value.status == 404


def test_replace_conflict_and_merge_patch(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "upd"}})
    created = core.create_namespaced_secret("upd", {"metadata": {"name": "s"}, "string_data": {"k": "v1"}})
    stale = created.metadata.resource_version
    patched = core.patch_namespaced_secret("s", "upd", {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.labels == {"x": "y"}
    assert int(patched.metadata.resource_version) > int(stale)

    body = core.read_namespaced_secret("s", "upd")
    body.metadata.resource_version = stale
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_secret("s", "upd", body)
    assert conflict.value.status == 409 and '"reason": "Conflict"' in conflict.value.body


def test_wrong_token_is_401(kube_apiserver: KubeApiServer) -> None:
    api = config.new_client_from_config_dict(kube_apiserver.kubeconfig_dict(token="wrong"))
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespace()
    assert err.value.status == 401 and '"reason": "Unauthorized"' in err.value.body


def test_server_side_apply_is_idempotent(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    core.create_namespace({"metadata": {"name": "ssa"}})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pg-secret"},
        "stringData": {"password": "pw"},
    }
    kwargs: dict[str, Any] = {
        "field_manager": "toygres",
        "force": True,
        "_content_type": "application/apply-patch+yaml",
    }
    first = core.patch_namespaced_secret("pg-secret", "ssa", secret, **kwargs)
    second = core.patch_namespaced_secret("pg-secret", "ssa", secret, **kwargs)
    assert second.metadata.resource_version == first.metadata.resource_version
    changed = core.patch_namespaced_secret(
        "pg-secret", "ssa", {**secret, "stringData": {"password": "new"}}, **kwargs
    )
    assert changed.metadata.resource_version != first.metadata.resource_version

    sts = apply(apps, statefulset(), "ssa")
    assert sts.metadata.generation == 1
    # A statefulset's status moves while its pod starts; compare against a settled read.
    settled = wait_for(
        "statefulset to settle",
        lambda: (lambda s: s if s.status.ready_replicas == 1 else None)(
            apps.read_namespaced_stateful_set("pg", "ssa")
        ),
    )
    again = apply(apps, statefulset(), "ssa")
    assert again.metadata.resource_version == settled.metadata.resource_version
    assert again.metadata.generation == 1

    with pytest.raises(ApiException) as frozen:  # volumeClaimTemplates are immutable
        apply(apps, statefulset(storage="5Gi"), "ssa")
    assert frozen.value.status == 422 and '"reason": "Invalid"' in frozen.value.body


def test_injected_fault_and_access_log(kube_apiserver: KubeApiServer, core: client.CoreV1Api) -> None:
    kube_apiserver.fail_next("GET", r"^/api/v1/namespaces$", status=500)
    with pytest.raises(ApiException) as err:
        core.list_namespace()
    assert err.value.status == 500
    assert core.list_namespace().items == []  # only the next request failed
    statuses = [e.status for e in kube_apiserver.requests("GET", r"^/api/v1/namespaces$")]
    assert statuses == [500, 200]


# -- StatefulSets backed by PostgreSQL ------------------------------------------------------------


def test_statefulset_runs_real_postgres_and_survives_a_kill(
    kube_apiserver: KubeApiServer,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    deploy_instance(core, apps, "inst", password="s3cret-pw")
    pod = wait_for("pod ready", lambda: pod_ready(core, "inst", "pg-0"))
    assert pod.status.pod_ip == "127.0.0.1" and pod.status.phase == "Running"
    assert pod.metadata.labels["toygres.io/instance"] == "inst1"
    pvcs = core.list_namespaced_persistent_volume_claim("inst").items
    assert [p.metadata.name for p in pvcs] == ["data-pg-0"]

    port = service_port(core, "inst")
    assert kube_apiserver.endpoint_for_service("inst", "pg") == ("127.0.0.1", port)
    svc = core.read_namespaced_service("pg", "inst")
    assert svc.status.load_balancer.ingress[0].ip == "127.0.0.1"
    dsn = {"host": "127.0.0.1", "port": port, "user": "toygres", "dbname": "appdb"}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**dsn, password="wrong", connect_timeout=5).close()
    with psycopg.connect(**dsn, password="s3cret-pw", autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.execute("create table kept (v int); insert into kept values (42)")

    kube_apiserver.kill_pod("inst", "pg-0")
    wait_for("pod not ready", lambda: pod_not_ready(core, "inst", "pg-0"))
    pod = wait_for("pod ready again", lambda: pod_ready(core, "inst", "pg-0"))
    assert pod.status.container_statuses[0].restart_count == 1
    with psycopg.connect(**{**dsn, "port": service_port(core, "inst")}, password="s3cret-pw") as conn:
        assert conn.execute("select v from kept").fetchone() == (42,)  # data lives on the PVC

    pids = kube_apiserver.backend_pids()
    assert pids
    apps.delete_namespaced_stateful_set("pg", "inst")
    wait_for("postgres stopped", lambda: not any(alive(p) for p in pids))
    wait_for("pod deleted", lambda: kube_apiserver.get_object("pods", "inst", "pg-0") is None)
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim("inst").items] == [
        "data-pg-0"
    ]


def test_never_ready_hold_down_and_namespace_deletion(
    kube_apiserver: KubeApiServer,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    kube_apiserver.pod_never_ready("pg")
    deploy_instance(core, apps, "nr")
    wait_for(
        "pod running",
        lambda: (lambda p: p if p and p.status.phase == "Running" else None)(
            kube_apiserver.get_object("pods", "nr", "pg-0") and core.read_namespaced_pod("pg-0", "nr")
        ),
    )
    port = service_port(core, "nr")
    with psycopg.connect(
        host="127.0.0.1", port=port, user="toygres", password="s3cret-pw", dbname="postgres"
    ) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert pod_not_ready(core, "nr", "pg-0") is not None
    kube_apiserver.pod_never_ready("pg", enabled=False)
    wait_for("pod ready", lambda: pod_ready(core, "nr", "pg-0"))

    kube_apiserver.hold_down("nr", "pg-0")
    kube_apiserver.kill_pod("nr", "pg-0")
    time.sleep(kube_apiserver.restart_delay * 3)
    assert pod_not_ready(core, "nr", "pg-0") is not None  # held down: not restarted
    kube_apiserver.restart_pod("nr", "pg-0")
    wait_for("pod ready after restart_pod", lambda: pod_ready(core, "nr", "pg-0"))

    pids = kube_apiserver.backend_pids()
    core.delete_namespace("nr")
    assert core.read_namespace("nr").status.phase == "Terminating"
    with pytest.raises(ApiException) as forbidden:
        core.create_namespaced_secret("nr", {"metadata": {"name": "late"}})
    assert forbidden.value.status == 403

    def namespace_gone() -> bool:
        try:
            core.read_namespace("nr")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("namespace removed", namespace_gone)
    assert not any(alive(p) for p in pids)
    assert not list((kube_apiserver.work_dir / "volumes").iterdir())  # PVC data removed with the namespace


def test_missing_secret_blocks_start_until_created(core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    core.create_namespace({"metadata": {"name": "late"}})
    apply(apps, statefulset(secret="late-secret"), "late")

    def config_error() -> bool:
        try:
            pod = core.read_namespaced_pod("pg-0", "late")
        except ApiException:
            return False
        statuses = pod.status.container_statuses or []
        return (
            bool(statuses)
            and statuses[0].state.waiting is not None
            and statuses[0].state.waiting.reason == "CreateContainerConfigError"
        )

    wait_for("CreateContainerConfigError", config_error)
    core.create_namespaced_secret(
        "late", {"metadata": {"name": "late-secret"}, "string_data": {"password": "p"}}
    )
    wait_for("pod ready", lambda: pod_ready(core, "late", "pg-0"))


def test_tls_kubeconfig_with_load_kube_config(tmp_path: Path) -> None:
    with KubeApiServer(tls=True) as server:
        path = server.write_kubeconfig(tmp_path / "config")
        assert server.url.startswith("https://")
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
        api = client.CoreV1Api(client.ApiClient(configuration))
        api.create_namespace({"metadata": {"name": "tls"}})
        assert [n.metadata.name for n in api.list_namespace().items] == ["tls"]


def test_deleting_a_service_answers_with_the_object_like_the_real_server(core: client.CoreV1Api) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="svc")))
    core.create_namespaced_service(
        "svc", {"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}], "selector": {"app": "db"}}}
    )
    deleted = core.delete_namespaced_service("db", "svc")  # the client reads the body as a V1Service
    assert isinstance(deleted, client.V1Service) and deleted.metadata.name == "db"
    secret = core.create_namespaced_secret("svc", {"metadata": {"name": "s"}, "string_data": {"k": "v"}})
    status = core.delete_namespaced_secret(secret.metadata.name, "svc")  # others answer a Status
    body = status if isinstance(status, dict) else status.to_dict()
    assert body["kind"] == "Status" and body["status"] == "Success"


def test_apply_conflicts_with_another_field_manager_are_409s_until_forced(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "owners"}})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "pg", "labels": {"team": "a"}},
        "spec": {"type": "ClusterIP", "selector": LABELS, "ports": [{"port": 5432, "name": "postgres"}]},
    }
    applied = core.patch_namespaced_service(
        "pg", "owners", service, field_manager="toygres", _content_type="application/apply-patch+yaml"
    )
    managers = {m.manager: m for m in applied.metadata.managed_fields}
    assert managers["toygres"].operation == "Apply" and "f:spec" in managers["toygres"].fields_v1
    # someone else changes a field toygres applied
    core.patch_namespaced_service(
        "pg", "owners", {"metadata": {"labels": {"team": "b"}}}, field_manager="kubectl-edit"
    )

    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_service(
            "pg", "owners", service, field_manager="toygres", _content_type="application/apply-patch+yaml"
        )
    assert refused.value.status == 409
    body = json.loads(refused.value.body)
    assert body["reason"] == "Conflict" and 'conflict with "kubectl-edit"' in body["message"]
    assert body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kubectl-edit" using v1',
            "field": ".metadata.labels.team",
        }
    ]
    # an apply that agrees with the other manager's value is no conflict; force takes the field back
    core.patch_namespaced_service(
        "pg",
        "owners",
        {**service, "metadata": {"name": "pg", "labels": {"team": "b"}}},
        field_manager="toygres",
        _content_type="application/apply-patch+yaml",
    )
    forced = core.patch_namespaced_service(
        "pg",
        "owners",
        service,
        field_manager="toygres",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    assert forced.metadata.labels["team"] == "a"
    core.patch_namespaced_service(  # no conflict any more: toygres owns the label again
        "pg", "owners", service, field_manager="toygres", _content_type="application/apply-patch+yaml"
    )


def test_claims_follow_the_statefulset_retention_policy(
    core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    core.create_namespace({"metadata": {"name": "retention"}})
    core.create_namespaced_secret(
        "retention",
        client.V1Secret(metadata=client.V1ObjectMeta(name="pg-secret"), string_data={"password": "pw"}),
    )
    body = statefulset()
    body["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    owner = apply(apps, body, "retention").metadata.uid

    def owned_claim() -> client.V1PersistentVolumeClaim | None:
        claims = core.list_namespaced_persistent_volume_claim("retention").items
        refs = [r.uid for c in claims for r in (c.metadata.owner_references or [])]
        return claims[0] if claims and refs == [owner] else None

    wait_for("an owned claim", owned_claim)
    body["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] = "Retain"
    apply(apps, body, "retention")
    wait_for(
        "the claim to be let go",
        lambda: [
            c
            for c in core.list_namespaced_persistent_volume_claim("retention").items
            if not c.metadata.owner_references
        ],
    )
    apps.delete_namespaced_stateful_set("pg", "retention")
    wait_for("the pod to go", lambda: not core.list_namespaced_pod("retention").items or None)
    time.sleep(0.5)
    assert [c.metadata.name for c in core.list_namespaced_persistent_volume_claim("retention").items] == [
        "data-pg-0"
    ]


def test_a_pod_can_take_its_time_to_terminate(
    kube_apiserver: KubeApiServer, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    deploy_instance(core, apps, "slow")
    wait_for("pod ready", lambda: pod_ready(core, "slow", "pg-0"))
    kube_apiserver.pod_termination_delay = 2
    uid = core.read_namespaced_pod("pg-0", "slow").metadata.uid
    started = time.monotonic()
    core.delete_namespaced_pod("pg-0", "slow")
    assert core.read_namespaced_pod("pg-0", "slow").metadata.deletion_timestamp is not None
    wait_for(
        "the pod to be gone",
        lambda: uid not in [p.metadata.uid for p in core.list_namespaced_pod("slow").items] or None,
    )
    assert time.monotonic() - started >= 2  # the StatefulSet then makes a new pg-0
