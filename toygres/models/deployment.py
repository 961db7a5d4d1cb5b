"""``DeploymentConfig``: the resolved description of one instance that orchestrations carry."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from .passwords import PasswordRef
from .placement import RuntimeKind, ServiceType
from .resources import ResourceRequests
from .validation import StrictModel


class DeploymentConfig(StrictModel):
    """The resolved, complete description of one instance that orchestrations and activities use.

    It is JSON-safe (``model_dump(mode="json")``) because it travels through the durable engine's
    history, which is why it holds a ``password_ref`` and never the password. The StatefulSet and
    the Service are both named ``k8s_name``; the Secret is ``password_ref.name``.
    """

    instance_id: UUID
    name: str
    k8s_name: str
    runtime: RuntimeKind
    namespace: str | None = None
    postgres_version: str
    image: str
    storage_size: str
    storage_class: str | None = None
    resources: ResourceRequests = Field(default_factory=ResourceRequests)
    service_type: ServiceType = ServiceType.CLUSTER_IP
    load_balancer_source_ranges: list[str] = Field(default_factory=list)
    username: str
    database: str = "postgres"
    port: int = 5432
    password_ref: PasswordRef

    @property
    def labels(self) -> dict[str, str]:
        """Kubernetes labels identifying the objects of this instance."""
        return {
            "app.kubernetes.io/name": "postgres",
            "app.kubernetes.io/instance": self.k8s_name,
            "app.kubernetes.io/managed-by": "toygres",
            "toygres.io/instance-id": str(self.instance_id),
        }
