"""Manifests are schema-valid Kubernetes objects and carry what the runtime relies on."""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes_validate
import pytest

from toygres.runtimes import manifests
from toygres.runtimes.base import InstanceSpec

K8S_VERSION = "1.30"
PASSWORD = "s3cr3t-Pa55word"

SPECS = {
    "minimal": InstanceSpec(
        instance_id="0b7c5f0e-1111-4222-8333-444455556666",
        name="pg-min",
        postgres_version="17",
        storage_size="1Gi",
        username="app",
    ),
    "full": InstanceSpec(
        instance_id="inst-2",
        name="orders-db",
        postgres_version="16.4",
        storage_size="20Gi",
        storage_class="managed-csi-premium",
        cpu_request="250m",
        memory_request="512Mi",
        cpu_limit="2",
        memory_limit="2Gi",
        username="orders",
        database="orders",
    ),
    "loadbalancer": InstanceSpec(
        instance_id="inst-3",
        name="public-db",
        postgres_version="15",
        storage_size="5Gi",
        username="pub",
        service_type="LoadBalancer",
        load_balancer_source_ranges=("10.0.0.0/8", "203.0.113.7/32"),
    ),
    "limits-only": InstanceSpec(
        instance_id="inst-4",
        name="a" * 52,
        postgres_version="17",
        storage_size="500Mi",
        username="_x",
        memory_limit="1Gi",
    ),
}


def all_manifests(spec: InstanceSpec, ns: str = "toygres") -> list[dict[str, Any]]:
    return [
        manifests.secret_manifest(spec, ns, PASSWORD),
        manifests.statefulset_manifest(spec, ns, image_repository="myregistry.azurecr.io/library/postgres"),
        manifests.service_manifest(spec, ns),
    ]


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_manifests_validate_against_openapi_schema(variant: str) -> None:
    for obj in [*all_manifests(SPECS[variant]), manifests.namespace_manifest("toygres")]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_validator_rejects_a_broken_manifest() -> None:
    """Guards the test above: strict validation really catches an unknown field and a bad type."""
    sts = manifests.statefulset_manifest(SPECS["minimal"], "ns")
    sts["spec"]["replicaz"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)
    svc = manifests.service_manifest(SPECS["minimal"], "ns")
    svc["spec"]["ports"][0]["port"] = "5432"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_labels_on_every_object_and_template(variant: str) -> None:
    spec = SPECS[variant]
    expected = {
        "app.kubernetes.io/name": "postgres",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": "toygres",
        "toygres.io/instance-id": spec.instance_id,
    }
    secret, sts, svc = all_manifests(spec)
    for obj in (secret, sts, svc):
        assert obj["metadata"]["labels"] == expected
        assert obj["metadata"]["namespace"] == "toygres"
    assert sts["spec"]["template"]["metadata"]["labels"] == expected
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"] == expected
    # The selector must match the pod template, and the Service must select the same pods.
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector.items() <= expected.items()
    assert svc["spec"]["selector"] == selector


def test_statefulset_content() -> None:
    spec = SPECS["full"]
    sts = manifests.statefulset_manifest(spec, "toygres", image_repository="myregistry.azurecr.io/pg")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "myregistry.azurecr.io/pg:16.4"
    assert pod["securityContext"]["fsGroup"] == 999
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "orders-db"
    env = {e["name"]: e for e in container["env"]}
    assert env["PGDATA"]["value"] == "/var/lib/postgresql/data/pgdata"
    assert env["POSTGRES_DB"]["value"] == "orders"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "orders-db", "key": "password"}
    assert env["POSTGRES_USER"]["valueFrom"]["secretKeyRef"] == {"name": "orders-db", "key": "username"}
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]
    probe = ["pg_isready", "-U", "orders", "-d", "postgres", "-h", "127.0.0.1"]
    assert container["readinessProbe"]["exec"]["command"] == probe
    assert container["livenessProbe"]["exec"]["command"] == probe
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "managed-csi-premium"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_optional_fields_are_omitted_not_null() -> None:
    sts = manifests.statefulset_manifest(SPECS["minimal"], "ns")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert "resources" not in container
    assert "storageClassName" not in sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert container["image"] == "postgres:17"
    limits_only = manifests.statefulset_manifest(SPECS["limits-only"], "ns")
    assert limits_only["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "1Gi"}
    }


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_password_only_in_the_secret(variant: str) -> None:
    spec = SPECS[variant]
    secret, sts, svc = all_manifests(spec)
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    for obj in (sts, svc):
        text = json.dumps(obj)
        assert PASSWORD not in text and encoded not in text
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    assert base64.b64decode(secret["data"]["username"]).decode() == spec.username


def test_service_types() -> None:
    cluster_ip = manifests.service_manifest(SPECS["minimal"], "ns")
    assert cluster_ip["spec"]["type"] == "ClusterIP"
    assert "loadBalancerSourceRanges" not in cluster_ip["spec"]
    assert cluster_ip["spec"]["ports"][0]["port"] == 5432
    lb = manifests.service_manifest(SPECS["loadbalancer"], "ns")
    assert lb["spec"]["type"] == "LoadBalancer"
    assert lb["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", "203.0.113.7/32"]


def test_names_and_selector() -> None:
    spec = SPECS["minimal"]
    names = manifests.object_names(spec)
    assert names.as_dict() == {
        "statefulset": "pg-min",
        "service": "pg-min",
        "secret": "pg-min",
        "pod": "pg-min-0",
        "pvc": "data-pg-min-0",
    }
    assert manifests.instance_label_selector(spec) == (
        "app.kubernetes.io/instance=pg-min,app.kubernetes.io/managed-by=toygres,"
        "toygres.io/instance-id=0b7c5f0e-1111-4222-8333-444455556666"
    )


def test_spec_round_trips_through_json() -> None:
    for spec in SPECS.values():
        data = json.loads(json.dumps(spec.to_dict()))
        assert InstanceSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Bad_Name"),
        ("name", "a" * 53),
        ("name", "-x"),
        ("storage_size", "ten gigs"),
        ("username", "Robert'); DROP"),
        ("service_type", "NodePort"),
        ("cpu_limit", "lots"),
        ("instance_id", "has space"),
    ],
)
def test_spec_validation_names_the_field(field: str, value: str) -> None:
    data = SPECS["minimal"].to_dict() | {field: value}
    with pytest.raises(ValueError, match=field):
        InstanceSpec.from_dict(data)


def test_source_ranges_require_load_balancer() -> None:
    with pytest.raises(ValueError, match="load_balancer_source_ranges"):
        InstanceSpec.from_dict(SPECS["minimal"].to_dict() | {"load_balancer_source_ranges": ["10.0.0.0/8"]})
    with pytest.raises(ValueError, match="unknown"):
        InstanceSpec.from_dict(SPECS["minimal"].to_dict() | {"password": "nope"})
