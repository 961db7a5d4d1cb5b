"""Manifests are schema-valid Kubernetes objects, pass the "restricted" Pod Security profile, and
carry what the runtime relies on. (checkov's scan of the same manifests: test_checkov_manifests.py.)"""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes_validate
import pytest

from toygres.models import service_dns_names
from toygres.runtimes import manifests
from toygres.runtimes.base import InstanceSpec
from toygres.x509 import issue_server_certificate, new_certificate_authority

K8S_VERSION = "1.30"
PASSWORD = "s3cr3t-Pa55word"
PINNED = "postgres:17.6@sha256:00bc86618629af00d2937fdc5a5d63db3ff8450acf52f0636ec813c7f4902929"
CA = new_certificate_authority("manifest tests")

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
    "tls": InstanceSpec(
        instance_id="inst-5",
        name="secure-3f2b9c1e",
        postgres_version="17",
        storage_size="20Gi",
        username="app",
        cpu_request="2",
        memory_request="8Gi",
        memory_limit="8Gi",
        image=PINNED,
        tls_secret="secure-3f2b9c1e-tls",
        tls_dns_names=tuple(service_dns_names("secure-3f2b9c1e", "toygres", "cluster.local")),
        allowed_sources=(
            {"cidr": "10.20.0.0/16"},
            {"namespace_selector": {"team": "web"}, "pod_selector": {"app": "api"}},
        ),
        server_parameters={"max_connections": "300", "statement_timeout": "30000ms"},
    ),
}


def all_manifests(spec: InstanceSpec, ns: str = "toygres") -> list[dict[str, Any]]:
    """Every object of an instance: Secret, Service, StatefulSet first (older tests index them)."""
    objects = [
        manifests.secret_manifest(spec, ns, PASSWORD),
        manifests.statefulset_manifest(spec, ns, image_repository="myregistry.azurecr.io/library/postgres"),
        manifests.service_manifest(spec, ns, internal_load_balancer=True),
        manifests.config_map_manifest(spec, ns),
        manifests.network_policy_manifest(
            spec, ns, control_plane_namespace="toygres-system", control_plane_cidrs=["10.9.0.0/24"]
        ),
        manifests.pod_disruption_budget_manifest(spec, ns),
    ]
    if spec.tls_secret is not None:
        issued = issue_server_certificate(CA, list(spec.tls_dns_names))
        objects.append(
            manifests.tls_secret_manifest(
                spec, ns, cert_pem=issued.cert_pem, key_pem=issued.key_pem, ca_pem=CA.cert_pem
            )
        )
    return objects


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
    objects = all_manifests(spec)
    _, sts, svc = objects[:3]
    for obj in objects:
        assert obj["metadata"]["labels"] == expected
        assert obj["metadata"]["namespace"] == "toygres"
    assert sts["spec"]["template"]["metadata"]["labels"] == expected
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"] == expected
    # The selector must match the pod template, and the Service must select the same pods.
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector.items() <= expected.items()
    assert svc["spec"]["selector"] == selector
    policy, budget = objects[4], objects[5]
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert budget["spec"]["selector"]["matchLabels"] == selector


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
    # the password reaches the entrypoint as a file from the Secret, never as an environment variable
    assert "POSTGRES_PASSWORD" not in env and not any("valueFrom" in e for e in container["env"])
    assert env["POSTGRES_PASSWORD_FILE"]["value"] == "/etc/toygres/credentials/password"
    assert env["POSTGRES_USER"]["value"] == "orders"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["credentials"]["secret"] == {
        "secretName": "orders-db",
        "items": [{"key": "password", "path": "password"}],
        "defaultMode": 0o440,
    }
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/lib/postgresql/data"]["name"] == "data"
    assert mounts["/etc/toygres/credentials"] == {
        "name": "credentials",
        "mountPath": "/etc/toygres/credentials",
        "readOnly": True,
    }
    assert container["args"] == ["postgres", "-c", "config_file=/etc/toygres/config/postgresql.conf"]
    probe = ["pg_isready", "-U", "orders", "-d", "postgres", "-h", "127.0.0.1"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[kind]["exec"]["command"] == probe
    # the startup probe waits for a long crash recovery; liveness stays quick
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert liveness["periodSeconds"] * liveness["failureThreshold"] <= 60
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
    assert container["image"] == "postgres:17"  # no pinned image in the spec: the repository's tag
    limits_only = manifests.statefulset_manifest(SPECS["limits-only"], "ns")
    assert limits_only["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "1Gi"}
    }


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_password_only_in_the_secret(variant: str) -> None:
    spec = SPECS[variant]
    secret, *others = all_manifests(spec)
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    for obj in others:
        text = json.dumps(obj)
        assert PASSWORD not in text and encoded not in text
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    assert base64.b64decode(secret["data"]["username"]).decode() == spec.username


def test_service_types() -> None:
    cluster_ip = manifests.service_manifest(SPECS["minimal"], "ns", internal_load_balancer=True)
    assert cluster_ip["spec"]["type"] == "ClusterIP"
    assert "loadBalancerSourceRanges" not in cluster_ip["spec"]
    assert "annotations" not in cluster_ip["metadata"]  # the annotation is for load balancers only
    assert cluster_ip["spec"]["ports"][0]["port"] == 5432
    lb = manifests.service_manifest(SPECS["loadbalancer"], "ns")
    assert lb["spec"]["type"] == "LoadBalancer"
    assert lb["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", "203.0.113.7/32"]
    # client addresses survive the load balancer, so the NetworkPolicy can admit the ranges
    assert lb["spec"]["externalTrafficPolicy"] == "Local"
    assert "annotations" not in lb["metadata"]
    internal = manifests.service_manifest(SPECS["loadbalancer"], "ns", internal_load_balancer=True)
    assert internal["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/azure-load-balancer-internal": "true"
    }


def test_names_and_selector() -> None:
    spec = SPECS["minimal"]
    names = manifests.object_names(spec)
    assert names.as_dict() == {
        "statefulset": "pg-min",
        "service": "pg-min",
        "secret": "pg-min",
        "pod": "pg-min-0",
        "pvc": "data-pg-min-0",
        "config_map": "pg-min-config",
        "network_policy": "pg-min",
        "pod_disruption_budget": "pg-min",
    }
    assert manifests.object_names(SPECS["tls"]).as_dict()["tls_secret"] == "secure-3f2b9c1e-tls"
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


# -- hardening ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(SPECS))
def test_pod_passes_the_restricted_profile(variant: str) -> None:
    """The fields the Kubernetes "restricted" Pod Security Standard requires, and the rest of ours."""
    sts = manifests.statefulset_manifest(SPECS[variant], "toygres")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == sc["runAsUser"] == 999 and pod_sc["runAsGroup"] == 999
    assert pod_sc["seccompProfile"] == sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}  # nothing added, NET_RAW included in the drop
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all(
        set(v) & {"secret", "configMap", "emptyDir", "persistentVolumeClaim"} for v in volumes.values()
    )
    # PostgreSQL writes outside its data directory only to emptyDirs
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/var/run/postgresql"]]["emptyDir"]
    assert volumes[mounts["/tmp"]]["emptyDir"]
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"


def test_shm_is_sized_from_the_memory_limit() -> None:
    def shm(spec: InstanceSpec) -> str:
        pod = manifests.statefulset_manifest(spec, "ns")["spec"]["template"]["spec"]
        return next(v["emptyDir"]["sizeLimit"] for v in pod["volumes"] if v["name"] == "shm")

    assert shm(SPECS["tls"]) == "2048Mi"  # a quarter of 8Gi
    assert shm(SPECS["full"]) == "512Mi"  # a quarter of 2Gi
    assert shm(SPECS["minimal"]) == "256Mi"  # no limit given: the 1Gi default


def test_tls_configuration_and_certificate_volume() -> None:
    spec = SPECS["tls"]
    conf = manifests.postgresql_conf(spec)
    assert "ssl = 'on'" in conf and "ssl_min_protocol_version = 'TLSv1.2'" in conf
    assert "ssl_cert_file = '/etc/toygres/tls/tls.crt'" in conf
    assert conf.index("include_if_exists") < conf.index("ssl = 'on'")  # initdb's file first, ours wins
    hba = manifests.pg_hba_conf(spec).splitlines()
    assert "hostnossl all all 0.0.0.0/0 reject" in hba and "hostssl all all 0.0.0.0/0 scram-sha-256" in hba
    assert not any(line.startswith("host ") for line in hba)  # no plaintext TCP at all
    assert not any(" trust" in line for line in hba)
    pod = manifests.statefulset_manifest(spec, "ns", tls_certificate_sha256="ab" * 32)["spec"]["template"]
    assert pod["metadata"]["annotations"][manifests.TLS_CERT_ANNOTATION] == "ab" * 32
    tls = next(v for v in pod["spec"]["volumes"] if v["name"] == "tls")["secret"]
    assert tls["secretName"] == "secure-3f2b9c1e-tls" and tls["defaultMode"] == 0o440
    assert {i["key"] for i in tls["items"]} == {"tls.crt", "tls.key"}
    assert pod["spec"]["containers"][0]["image"] == PINNED
    # without TLS (local-style specs, instances created before TLS) the server keeps scram over TCP
    plain = manifests.postgresql_conf(SPECS["minimal"])
    assert "ssl" not in plain
    assert "host all all 0.0.0.0/0 scram-sha-256" in manifests.pg_hba_conf(SPECS["minimal"])


def test_tls_secret_holds_certificate_key_and_ca() -> None:
    secret = all_manifests(SPECS["tls"])[-1]
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["name"] == "secure-3f2b9c1e-tls"
    assert base64.b64decode(secret["data"]["ca.crt"]).decode() == CA.cert_pem
    assert "PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"]).decode()
    # no other object carries a private key
    for obj in all_manifests(SPECS["tls"])[:-1]:
        assert "PRIVATE KEY" not in json.dumps(obj) and "tls.key" not in obj.get("data", {})


def test_server_parameters_derived_and_overridden() -> None:
    settings = manifests.server_settings(SPECS["tls"])  # 8Gi, caller sets max_connections and a timeout
    assert settings["shared_buffers"] == f"{2 * 1024 * 1024}kB"  # 25 % of 8Gi
    assert settings["effective_cache_size"] == f"{6 * 1024 * 1024}kB"
    assert settings["max_connections"] == "300"  # the caller's
    assert (
        settings["work_mem"] == f"{(8 * 1024 * 1024 - 2 * 1024 * 1024) // 900}kB"
    )  # follows max_connections
    assert settings["statement_timeout"] == "30000ms"
    # a change of the configuration changes the pod template (and so restarts the pod)
    changed = InstanceSpec.from_dict(
        SPECS["tls"].to_dict() | {"server_parameters": {"statement_timeout": "1000ms"}}
    )
    assert manifests.config_hash(changed) != manifests.config_hash(SPECS["tls"])


def test_network_policy_admits_only_the_control_plane_and_allowed_sources() -> None:
    policy = manifests.network_policy_manifest(
        SPECS["tls"], "toygres", control_plane_namespace="toygres-system", control_plane_cidrs=["10.9.0.0/24"]
    )
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "toygres-system"}}},
        {"ipBlock": {"cidr": "10.9.0.0/24"}},
        {"ipBlock": {"cidr": "10.20.0.0/16"}},
        {
            "namespaceSelector": {"matchLabels": {"team": "web"}},
            "podSelector": {"matchLabels": {"app": "api"}},
        },
    ]
    (egress,) = spec["egress"]
    assert {p["port"] for p in egress["ports"]} == {53}  # DNS only
    lb = manifests.network_policy_manifest(SPECS["loadbalancer"], "ns", control_plane_namespace="cp")
    assert {"ipBlock": {"cidr": "203.0.113.7/32"}} in lb["spec"]["ingress"][0]["from"]


def test_disruption_budget_and_namespace() -> None:
    budget = manifests.pod_disruption_budget_manifest(SPECS["minimal"], "ns")
    assert (
        budget["spec"]["minAvailable"] == 1 and budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    )
    namespace = manifests.namespace_manifest("toygres")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
