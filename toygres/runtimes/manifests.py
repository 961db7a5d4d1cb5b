"""Kubernetes manifests for one PostgreSQL instance, as plain dicts.

Pure functions (no I/O) so they can be validated against the Kubernetes
OpenAPI schema in unit tests and applied unchanged with server-side apply.
Every object and the pod template carry the same identifying labels, which is
what lets ``delete`` find the PVCs a StatefulSet created on its own.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from toygres.runtimes.base import InstanceSpec

POSTGRES_PORT = 5432
PGDATA = "/var/lib/postgresql/data/pgdata"
DATA_MOUNT_PATH = "/var/lib/postgresql/data"
DATA_VOLUME = "data"
POSTGRES_GID = 999  # the uid/gid of the postgres user in the official image
SECRET_USERNAME_KEY = "username"
SECRET_PASSWORD_KEY = "password"
MANAGED_BY = "toygres"
INSTANCE_ID_LABEL = "toygres.io/instance-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class ObjectNames:
    """Names of everything that backs one instance in its namespace."""

    statefulset: str
    service: str
    secret: str
    pod: str
    pvc: str

    def as_dict(self) -> dict[str, str]:
        return {
            "statefulset": self.statefulset,
            "service": self.service,
            "secret": self.secret,
            "pod": self.pod,
            "pvc": self.pvc,
        }


def object_names(spec: InstanceSpec) -> ObjectNames:
    """Deterministic names, so a retried activity finds what an earlier attempt created."""
    return names_for(spec.name)


def names_for(name: str) -> ObjectNames:
    """The object names of the instance whose Kubernetes name is ``name``."""
    return ObjectNames(
        statefulset=name,
        service=name,
        secret=name,  # the metadata's PasswordRef names the Secret after the instance too
        pod=f"{name}-0",
        pvc=f"{DATA_VOLUME}-{name}-0",
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
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
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


def statefulset_manifest(
    spec: InstanceSpec, namespace: str, *, image_repository: str = "postgres"
) -> Manifest:
    """A one-replica StatefulSet with a PVC template; the password comes from the Secret by reference."""
    names = object_names(spec)
    secret_env = [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": names.secret, "key": key}}}
        for env, key in (("POSTGRES_USER", SECRET_USERNAME_KEY), ("POSTGRES_PASSWORD", SECRET_PASSWORD_KEY))
    ]
    container: dict[str, Any] = {
        "name": "postgres",
        "image": f"{image_repository}:{spec.postgres_version}",
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "env": [
            *secret_env,
            {"name": "POSTGRES_DB", "value": spec.database},
            {"name": "PGDATA", "value": PGDATA},
        ],
        "volumeMounts": [{"name": DATA_VOLUME, "mountPath": DATA_MOUNT_PATH}],
        "readinessProbe": {
            "exec": {"command": _pg_isready(spec)},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "livenessProbe": {
            "exec": {"command": _pg_isready(spec)},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
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
                "metadata": {"labels": labels(spec)},
                "spec": {
                    "securityContext": {"fsGroup": POSTGRES_GID},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                },
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": DATA_VOLUME, "labels": labels(spec)}, "spec": claim_spec},
            ],
        },
    }


def service_manifest(spec: InstanceSpec, namespace: str) -> Manifest:
    """ClusterIP by default; LoadBalancer (optionally restricted by source ranges) for outside access."""
    service_spec: dict[str, Any] = {
        "type": spec.service_type,
        "selector": selector_labels(spec),
        "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres", "protocol": "TCP"}],
    }
    if spec.service_type == "LoadBalancer" and spec.load_balancer_source_ranges:
        service_spec["loadBalancerSourceRanges"] = list(spec.load_balancer_source_ranges)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(object_names(spec).service, namespace, spec),
        "spec": service_spec,
    }
