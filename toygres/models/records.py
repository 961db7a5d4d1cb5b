"""What the metadata store keeps about an instance: its row and its health checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, computed_field

from .connection import connection_uri
from .deployment import DeploymentConfig
from .lifecycle import HealthStatus, InstanceState
from .passwords import PasswordRef
from .placement import RuntimeKind, ServiceType
from .resources import ResourceRequests


class HealthCheckResult(BaseModel):
    """Outcome of one health probe, as produced by the health-check activity."""

    status: HealthStatus
    checked_at: datetime
    latency_ms: float | None = Field(default=None, ge=0)
    server_version: str | None = None
    message: str | None = None


class HealthCheckRecord(HealthCheckResult):
    """A stored health check."""

    id: int
    instance_id: UUID


class InstanceMetadata(BaseModel):
    """Everything the metadata store knows about an instance (``GET /instances/{id}``)."""

    id: UUID
    name: str
    k8s_name: str
    state: InstanceState
    health_status: HealthStatus = HealthStatus.UNKNOWN
    runtime: RuntimeKind
    postgres_version: str
    image: str | None = None
    storage_size: str
    storage_class: str | None = None
    resources: ResourceRequests | None = None
    service_type: ServiceType = ServiceType.CLUSTER_IP
    k8s_namespace: str | None = None
    password_ref: PasswordRef
    host: str | None = None
    port: int | None = None
    database: str
    username: str
    create_orchestration_id: str | None = None
    delete_orchestration_id: str | None = None
    health_monitor_id: str | None = None
    last_health_check_at: datetime | None = None
    last_health_message: str | None = None
    last_health_latency_ms: float | None = None
    failure_reason: str | None = None
    #: a failed create gave its name back: another instance may have it now
    name_released: bool = False
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    #: what the instance was created with; internal (orchestration inputs), so not in API output
    deployment_config: DeploymentConfig | None = Field(default=None, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def connection_string(self) -> str | None:
        """Password-less URI once host and port are known (with the TLS mode clients must use)."""
        if self.host is None or self.port is None:
            return None
        if self.deployment_config is not None:
            return self.deployment_config.connection_uri(self.host, self.port)
        return connection_uri(self.host, self.port, self.database, self.username)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def server_parameters(self) -> dict[str, str]:
        """The server parameters the instance was created with (the caller's; derived ones aside)."""
        return dict(self.deployment_config.server_parameters) if self.deployment_config else {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def allowed_sources(self) -> list[dict[str, Any]]:
        """Who may connect besides the control plane (the instance's NetworkPolicy)."""
        config = self.deployment_config
        return [s.model_dump(exclude_none=True) for s in config.allowed_sources] if config else []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def connection_security(self) -> str:
        """How connections are protected, in words a person reads next to the connection string."""
        config = self.deployment_config
        if config is not None and config.tls is not None:
            return (
                f"TLS required (sslmode=verify-full): save the CA from GET /api/instances/{self.id}/ca "
                "(`toygres instances ca`) as ~/.postgresql/root.crt, or add sslrootcert=<file>"
            )
        if self.runtime is RuntimeKind.LOCAL:
            return (
                "local runtime only: no TLS (sslmode=disable), listening on 127.0.0.1; "
                "for development on this host, never expose it"
            )
        return "no TLS: the instance was created before Toygres served TLS (sslmode=disable)"
