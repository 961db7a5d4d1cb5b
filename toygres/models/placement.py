"""Where an instance runs and how it is exposed, and the Kubernetes name it gets there."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID


class RuntimeKind(StrEnum):
    """Where an instance runs: a Kubernetes cluster, or PostgreSQL processes on this host."""

    KUBERNETES = "kubernetes"
    LOCAL = "local"


class ServiceType(StrEnum):
    """How the instance is exposed; ClusterIP keeps it private to the cluster."""

    CLUSTER_IP = "ClusterIP"
    LOAD_BALANCER = "LoadBalancer"


def make_k8s_name(name: str, instance_id: UUID) -> str:
    """DNS-safe, unique Kubernetes name: the user's name plus 8 hex digits of the id (≤ 49 chars)."""
    return f"{name}-{instance_id.hex[:8]}"
