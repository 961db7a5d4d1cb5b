"""Toygres' domain models, one concern per module; this package re-exports the public names.

- :mod:`.lifecycle` — instance states, the state machine, operation kinds
- :mod:`.placement` — runtime kinds, service types, Kubernetes names
- :mod:`.identifiers` — rules for instance names and PostgreSQL identifiers
- :mod:`.resources` — Kubernetes quantities and CPU/memory requests
- :mod:`.passwords` — password generation and checks, :class:`PasswordRef`
- :mod:`.connection` — password-less connection URIs
- :mod:`.versions` — the PostgreSQL major versions hosted
- :mod:`.deployment` — :class:`DeploymentConfig`, what orchestrations carry
- :mod:`.records` — stored rows: instance metadata, health checks
- :mod:`.operations` — deterministic ids of operations and monitors
- :mod:`.api_bodies` — HTTP request and response bodies
- :mod:`.validation` — the strict base model and input-free validation messages
"""

from .api_bodies import (
    CreateInstanceRequest,
    CreateInstanceResponse,
    ListInstancesResponse,
    OperationError,
    OperationStatus,
)
from .connection import connection_uri
from .deployment import DeploymentConfig
from .identifiers import NAME_MAX_LENGTH
from .lifecycle import (
    ALLOWED_TRANSITIONS,
    HealthStatus,
    InstanceState,
    OperationKind,
    OperationState,
    allowed_predecessors,
)
from .operations import create_operation_id, delete_operation_id, health_monitor_id
from .passwords import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, PasswordRef, generate_password
from .placement import RuntimeKind, ServiceType, make_k8s_name
from .records import HealthCheckRecord, HealthCheckResult, InstanceMetadata
from .resources import ResourceRequests, parse_quantity
from .validation import StrictModel, load_stored, validation_errors
from .versions import DEFAULT_POSTGRES_VERSION, POSTGRES_VERSIONS

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DEFAULT_POSTGRES_VERSION",
    "NAME_MAX_LENGTH",
    "PASSWORD_MAX_LENGTH",
    "PASSWORD_MIN_LENGTH",
    "POSTGRES_VERSIONS",
    "CreateInstanceRequest",
    "CreateInstanceResponse",
    "DeploymentConfig",
    "HealthCheckRecord",
    "HealthCheckResult",
    "HealthStatus",
    "InstanceMetadata",
    "InstanceState",
    "ListInstancesResponse",
    "OperationError",
    "OperationKind",
    "OperationState",
    "OperationStatus",
    "PasswordRef",
    "ResourceRequests",
    "RuntimeKind",
    "ServiceType",
    "StrictModel",
    "allowed_predecessors",
    "connection_uri",
    "create_operation_id",
    "delete_operation_id",
    "generate_password",
    "health_monitor_id",
    "load_stored",
    "make_k8s_name",
    "parse_quantity",
    "validation_errors",
]
