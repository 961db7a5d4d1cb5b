"""Kubernetes manifests for one PostgreSQL instance, as plain dicts.

Pure functions (no I/O) so they can be validated against the Kubernetes
OpenAPI schema and scanned by checkov in unit tests, and applied unchanged with
server-side apply. Every object and the pod template carry the same identifying
labels, which is what lets ``delete`` find the PVCs a StatefulSet created on its own.

The pod passes the Kubernetes "restricted" Pod Security profile: it runs as the
image's postgres user, drops every capability, cannot escalate, has a read-only
root filesystem (``emptyDir`` volumes where PostgreSQL writes outside its data
directory) and no service-account token. Why each choice was made is in
docs/control-plane.md ("Hardening").
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toygres.models import effective_parameters, shm_size_limit
from toygres.runtimes.base import InstanceSpec

POSTGRES_PORT = 5432
PGDATA = "/var/lib/postgresql/data/pgdata"
DATA_MOUNT_PATH = "/var/lib/postgresql/data"
DATA_VOLUME = "data"
POSTGRES_UID = 999  # the uid/gid of the postgres user in the official image
POSTGRES_GID = 999
SECRET_USERNAME_KEY = "username"
SECRET_PASSWORD_KEY = "password"
MANAGED_BY = "toygres"
INSTANCE_ID_LABEL = "toygres.io/instance-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"

# where the pod sees its files (read-only mounts of the Secrets and the ConfigMap, emptyDirs)
CREDENTIALS_DIR = "/etc/toygres/credentials"
CONFIG_DIR = "/etc/toygres/config"
TLS_DIR = "/etc/toygres/tls"
SOCKET_DIR = "/var/run/postgresql"
PASSWORD_FILE = f"{CREDENTIALS_DIR}/{SECRET_PASSWORD_KEY}"
CONFIG_FILE = f"{CONFIG_DIR}/postgresql.conf"
HBA_FILE = f"{CONFIG_DIR}/pg_hba.conf"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
TLS_CA_KEY = "ca.crt"
#: read by the owner (root, as kubelet writes them) and the pod's fsGroup (postgres); PostgreSQL
#: accepts a root-owned key file that is at most group-readable
SECRET_FILE_MODE = 0o440

# pod-template annotations whose change rolls the pod: a new configuration or server certificate
CONFIG_HASH_ANNOTATION = "toygres.io/config-sha256"
TLS_CERT_ANNOTATION = "toygres.io/tls-certificate-sha256"
INTERNAL_LB_ANNOTATION = "service.beta.kubernetes.io/azure-load-balancer-internal"
POD_SECURITY_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class ObjectNames:
    """Names of everything that backs one instance in its namespace."""

    statefulset: str
    service: str
    secret: str
    pod: str
    pvc: str
    config_map: str
    network_policy: str
    pod_disruption_budget: str
    #: the server-certificate Secret; None when the instance does not serve TLS
    tls_secret: str | None = None

    def as_dict(self) -> dict[str, str]:
        names = {
            "statefulset": self.statefulset,
            "service": self.service,
            "secret": self.secret,
            "pod": self.pod,
            "pvc": self.pvc,
            "config_map": self.config_map,
            "network_policy": self.network_policy,
            "pod_disruption_budget": self.pod_disruption_budget,
        }
        if self.tls_secret is not None:
            names["tls_secret"] = self.tls_secret
        return names


def object_names(spec: InstanceSpec) -> ObjectNames:
    """Deterministic names, so a retried activity finds what an earlier attempt created."""
    return names_for(spec.name, spec.tls_secret)


def names_for(name: str, tls_secret: str | None = None) -> ObjectNames:
    """The object names of the instance whose Kubernetes name is ``name``."""
    return ObjectNames(
        statefulset=name,
        service=name,
        secret=name,  # the metadata's PasswordRef names the Secret after the instance too
        pod=f"{name}-0",
        pvc=f"{DATA_VOLUME}-{name}-0",
        config_map=f"{name}-config",
        network_policy=name,
        pod_disruption_budget=name,
        tls_secret=tls_secret,
    )


def selector_labels(spec: InstanceSpec) -> dict[str, str]:
    """The immutable subset used by the StatefulSet selector and the Service."""
    return {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": spec.name}


def labels(spec: InstanceSpec) -> dict[str, str]:
    """Labels stamped on every object, the pod template and the PVC template."""
    return {
        **selector_labels(spec),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        INSTANCE_ID_LABEL: spec.instance_id,
    }


def instance_label_selector(spec: InstanceSpec) -> str:
    """A label selector matching exactly this instance's objects (used to find its PVCs)."""
    return label_selector_for(spec.name, spec.instance_id)


def label_selector_for(name: str, instance_id: str) -> str:
    """The label selector of the objects of instance ``instance_id`` named ``name``."""
    return (
        f"{INSTANCE_LABEL}={name},app.kubernetes.io/managed-by={MANAGED_BY},{INSTANCE_ID_LABEL}={instance_id}"
    )


def _metadata(name: str, namespace: str, spec: InstanceSpec) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(spec)}


def namespace_manifest(namespace: str) -> Manifest:
    """A namespace Toygres creates: Pod Security admission enforces the "restricted" profile in it."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, **POD_SECURITY_LABELS},
        },
    }


def secret_manifest(spec: InstanceSpec, namespace: str, password: str) -> Manifest:
    """The credentials Secret; the only manifest that contains the password."""

    def b64(value: str) -> str:
        return base64.b64encode(value.encode()).decode("ascii")

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(object_names(spec).secret, namespace, spec),
        "type": "Opaque",
        "data": {SECRET_USERNAME_KEY: b64(spec.username), SECRET_PASSWORD_KEY: b64(password)},
    }


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode("ascii")


def tls_secret_manifest(
    spec: InstanceSpec, namespace: str, *, cert_pem: str, key_pem: str, ca_pem: str
) -> Manifest:
    """The server certificate, its key and the CA certificate (``kubernetes.io/tls``)."""
    name = object_names(spec).tls_secret
    if name is None:
        raise ValueError(f"instance {spec.name} does not serve TLS")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(name, namespace, spec),
        "type": "kubernetes.io/tls",
        "data": {TLS_CERT_KEY: _b64(cert_pem), TLS_KEY_KEY: _b64(key_pem), TLS_CA_KEY: _b64(ca_pem)},
    }


# -- PostgreSQL configuration ---------------------------------------------------------------------


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def server_settings(spec: InstanceSpec) -> dict[str, str]:
    """Every parameter Toygres sets: fixed ones (network, files, TLS), then derived and caller-set ones."""
    fixed = {
        "listen_addresses": "*",
        "port": str(POSTGRES_PORT),
        "unix_socket_directories": SOCKET_DIR,
        "hba_file": HBA_FILE,
        "password_encryption": "scram-sha-256",
        "dynamic_shared_memory_type": "posix",
    }
    if spec.tls_secret is not None:
        fixed.update(
            {
                "ssl": "on",
                "ssl_cert_file": f"{TLS_DIR}/{TLS_CERT_KEY}",
                "ssl_key_file": f"{TLS_DIR}/{TLS_KEY_KEY}",
                "ssl_min_protocol_version": "TLSv1.2",
                "ssl_prefer_server_ciphers": "on",
            }
        )
    memory = spec.memory_limit or spec.memory_request or "1Gi"
    return {**fixed, **effective_parameters(memory, spec.server_parameters)}


def postgresql_conf(spec: InstanceSpec) -> str:
    """``postgresql.conf`` for the ConfigMap: initdb's file first (locale, time zone), then ours."""
    lines = [
        "# Managed by Toygres: rendered from the instance's resources and server parameters.",
        "# initdb's own file first, so what follows wins.",
        f"include_if_exists = {_conf_quote(f'{PGDATA}/postgresql.conf')}",
    ]
    lines += [f"{key} = {_conf_quote(value)}" for key, value in server_settings(spec).items()]
    return "\n".join(lines) + "\n"


def pg_hba_conf(spec: InstanceSpec) -> str:
    """Password (SCRAM) authentication everywhere; with TLS, plaintext TCP connections are rejected."""
    lines = ["# Managed by Toygres.", "local all all scram-sha-256"]
    if spec.tls_secret is not None:
        lines += [
            "hostssl all all 0.0.0.0/0 scram-sha-256",
            "hostssl all all ::/0 scram-sha-256",
            "hostnossl all all 0.0.0.0/0 reject",
            "hostnossl all all ::/0 reject",
        ]
    else:
        lines += ["host all all 0.0.0.0/0 scram-sha-256", "host all all ::/0 scram-sha-256"]
    return "\n".join(lines) + "\n"


def config_map_manifest(spec: InstanceSpec, namespace: str) -> Manifest:
    """The server configuration, mounted read-only into the pod."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(object_names(spec).config_map, namespace, spec),
        "data": {"postgresql.conf": postgresql_conf(spec), "pg_hba.conf": pg_hba_conf(spec)},
    }


def config_hash(spec: InstanceSpec) -> str:
    """A digest of the ConfigMap's data: the pod-template annotation that restarts on a change."""
    data = config_map_manifest(spec, "-")["data"]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# -- the StatefulSet ------------------------------------------------------------------------------


def _resources(spec: InstanceSpec) -> dict[str, dict[str, str]]:
    requests = {k: v for k, v in (("cpu", spec.cpu_request), ("memory", spec.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", spec.cpu_limit), ("memory", spec.memory_limit)) if v}
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _pg_isready(spec: InstanceSpec) -> list[str]:
    # Connect over TCP on loopback: a socket-only check would pass while the
    # entrypoint's temporary init server (which listens on the socket only) runs.
    return ["pg_isready", "-U", spec.username, "-d", "postgres", "-h", "127.0.0.1"]


def _probe(spec: InstanceSpec, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": _pg_isready(spec)},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def image_reference(spec: InstanceSpec, image_repository: str = "postgres") -> str:
    """The pinned reference from the spec (the catalog's), else ``<repository>:<major>``."""
    return spec.image or f"{image_repository}:{spec.postgres_version}"


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": POSTGRES_UID,
        "runAsGroup": POSTGRES_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volumes(spec: InstanceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): credentials, configuration, certificate, and the writable scratch dirs."""
    names = object_names(spec)
    memory = spec.memory_limit or spec.memory_request or "1Gi"
    volumes: list[dict[str, Any]] = [
        {
            "name": "credentials",
            "secret": {
                "secretName": names.secret,
                "items": [{"key": SECRET_PASSWORD_KEY, "path": SECRET_PASSWORD_KEY}],
                "defaultMode": SECRET_FILE_MODE,
            },
        },
        {"name": "config", "configMap": {"name": names.config_map, "defaultMode": 0o444}},
        {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size_limit(memory)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": DATA_VOLUME, "mountPath": DATA_MOUNT_PATH},
        {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "run", "mountPath": SOCKET_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    if names.tls_secret is not None:
        volumes.append(
            {
                "name": "tls",
                "secret": {
                    "secretName": names.tls_secret,
                    "items": [
                        {"key": TLS_CERT_KEY, "path": TLS_CERT_KEY},
                        {"key": TLS_KEY_KEY, "path": TLS_KEY_KEY},
                    ],
                    "defaultMode": SECRET_FILE_MODE,
                },
            }
        )
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    return volumes, mounts


def statefulset_manifest(
    spec: InstanceSpec,
    namespace: str,
    *,
    image_repository: str = "postgres",
    tls_certificate_sha256: str | None = None,
) -> Manifest:
    """A one-replica StatefulSet with a PVC template, hardened to the "restricted" profile.

    The password reaches the entrypoint as a file (``POSTGRES_PASSWORD_FILE``), never as an
    environment variable. ``tls_certificate_sha256`` (the fingerprint of the certificate in the TLS
    Secret) is stamped on the pod template so that a new certificate restarts the pod onto it.
    """
    names = object_names(spec)
    volumes, mounts = _volumes(spec)
    container: dict[str, Any] = {
        "name": "postgres",
        "image": image_reference(spec, image_repository),
        "imagePullPolicy": "IfNotPresent",
        "args": ["postgres", "-c", f"config_file={CONFIG_FILE}"],
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "POSTGRES_USER", "value": spec.username},
            {"name": "POSTGRES_PASSWORD_FILE", "value": PASSWORD_FILE},
            {"name": "POSTGRES_DB", "value": spec.database},
            {"name": "PGDATA", "value": PGDATA},
        ],
        "volumeMounts": mounts,
        # a long crash recovery may take many minutes: only the startup probe waits for it, so the
        # liveness probe can stay quick without killing a server that is replaying WAL
        "startupProbe": _probe(spec, period=10, failures=90),
        "readinessProbe": _probe(spec, period=5, failures=3),
        "livenessProbe": _probe(spec, period=10, failures=6),
        "securityContext": {
            **_security_context(),
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage_size}},
    }
    if spec.storage_class:
        claim_spec["storageClassName"] = spec.storage_class
    annotations = {CONFIG_HASH_ANNOTATION: config_hash(spec)}
    if tls_certificate_sha256 is not None:
        annotations[TLS_CERT_ANNOTATION] = tls_certificate_sha256
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(names.statefulset, namespace, spec),
        "spec": {
            "serviceName": names.service,
            "replicas": 1,
            "selector": {"matchLabels": selector_labels(spec)},
            # a StatefulSet deleted by hand keeps its data: only DeleteInstance removes the claims
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": labels(spec), "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        **_security_context(),
                        "fsGroup": POSTGRES_GID,
                        "fsGroupChangePolicy": "OnRootMismatch",
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": DATA_VOLUME, "labels": labels(spec)}, "spec": claim_spec},
            ],
        },
    }


# -- Service, NetworkPolicy, PodDisruptionBudget --------------------------------------------------


def service_manifest(spec: InstanceSpec, namespace: str, *, internal_load_balancer: bool = False) -> Manifest:
    """ClusterIP by default; LoadBalancer (optionally restricted by source ranges) for outside access.

    A LoadBalancer keeps client addresses (``externalTrafficPolicy: Local``) so the NetworkPolicy
    can admit the source ranges; ``internal_load_balancer`` asks Azure for a private address.
    """
    service_spec: dict[str, Any] = {
        "type": spec.service_type,
        "selector": selector_labels(spec),
        "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres", "protocol": "TCP"}],
    }
    metadata = _metadata(object_names(spec).service, namespace, spec)
    if spec.service_type == "LoadBalancer":
        service_spec["externalTrafficPolicy"] = "Local"
        if spec.load_balancer_source_ranges:
            service_spec["loadBalancerSourceRanges"] = list(spec.load_balancer_source_ranges)
        if internal_load_balancer:
            metadata["annotations"] = {INTERNAL_LB_ANNOTATION: "true"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": service_spec}


def _ip_block(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def _peer(source: dict[str, Any]) -> dict[str, Any]:
    if "cidr" in source:
        return _ip_block(str(source["cidr"]))
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": dict(source["namespace_selector"])}}
    if source.get("pod_selector"):
        peer["podSelector"] = {"matchLabels": dict(source["pod_selector"])}
    return peer


def network_policy_manifest(
    spec: InstanceSpec,
    namespace: str,
    *,
    control_plane_namespace: str,
    control_plane_cidrs: Sequence[str] = (),
) -> Manifest:
    """Ingress on 5432 from the control plane and the allowed sources only; egress to DNS only.

    A LoadBalancer's source ranges are admitted too (without ranges, any address: the load balancer
    itself is then the boundary). Probes run inside the container and need no rule.
    """
    peers: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": control_plane_namespace}}},
        *(_ip_block(cidr) for cidr in control_plane_cidrs),
    ]
    if spec.service_type == "LoadBalancer":
        ranges = list(spec.load_balancer_source_ranges) or ["0.0.0.0/0", "::/0"]
        peers += [_ip_block(cidr) for cidr in ranges]
    peers += [_peer(source) for source in spec.allowed_sources]
    dns_port = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(object_names(spec).network_policy, namespace, spec),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers, "ports": [{"port": POSTGRES_PORT, "protocol": "TCP"}]}],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": dns_port,
                }
            ],
        },
    }


def pod_disruption_budget_manifest(spec: InstanceSpec, namespace: str) -> Manifest:
    """Voluntary evictions (drains, autoscaler) may not take the only pod down; a broken pod may go.

    With one replica this makes a node drain wait for a person: moving a database is downtime, and
    should be a decision (docs/control-plane.md explains how to proceed).
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(object_names(spec).pod_disruption_budget, namespace, spec),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": selector_labels(spec)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
