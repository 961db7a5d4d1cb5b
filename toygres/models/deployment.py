"""``DeploymentConfig``: the resolved description of one instance that orchestrations carry."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from .connection import connection_uri, tls_route
from .network import IngressSource
from .passwords import PasswordRef
from .placement import RuntimeKind, ServiceType
from .resources import ResourceRequests
from .tls import InstanceTls
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
    #: how the instance serves TLS; None for local instances and for those created before TLS
    tls: InstanceTls | None = None
    #: who may connect besides the control plane (the instance's NetworkPolicy)
    allowed_sources: list[IngressSource] = Field(default_factory=list)
    #: server parameters the caller set (validated against the allow-list); derived ones are not here
    server_parameters: dict[str, str] = Field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        """Kubernetes labels identifying the objects of this instance."""
        return {
            "app.kubernetes.io/name": "postgres",
            "app.kubernetes.io/instance": self.k8s_name,
            "app.kubernetes.io/managed-by": "toygres",
            "toygres.io/instance-id": str(self.instance_id),
        }

    @property
    def sslmode(self) -> str:
        """What clients must ask for: ``verify-full`` when the instance serves TLS.

        ``disable`` otherwise: local instances (the embedded binaries have no OpenSSL; they listen
        on 127.0.0.1 only) and Kubernetes instances created before TLS.
        """
        return "verify-full" if self.tls is not None else "disable"

    def connection_uri(self, host: str, port: int) -> str:
        """The password-less URI clients use to reach the instance at ``host:port``."""
        if self.tls is None:
            return connection_uri(host, port, self.database, self.username, sslmode=self.sslmode)
        verified, hostaddr = tls_route(self.tls.server_name, host)
        return connection_uri(
            verified, port, self.database, self.username, sslmode=self.sslmode, hostaddr=hostaddr
        )
