"""Toygres' domain models, one concern per module; this package re-exports the public names.

- :mod:`.lifecycle` — instance states, the state machine, operation kinds
- :mod:`.placement` — runtime kinds, service types, Kubernetes names
- :mod:`.identifiers` — rules for instance names and PostgreSQL identifiers
- :mod:`.resources` — Kubernetes quantities and CPU/memory requests
- :mod:`.passwords` — password generation and checks, :class:`PasswordRef`
- :mod:`.connection` — password-less connection URIs
- :mod:`.versions` — the PostgreSQL major versions hosted
- :mod:`.network` — who may connect: :class:`IngressSource` (CIDRs, namespace selectors)
- :mod:`.server_parameters` — the allow-list of user-settable PostgreSQL parameters
- :mod:`.tuning` — PostgreSQL parameters derived from an instance's resources
- :mod:`.tls` — :class:`InstanceTls`, the names and Secret of an instance's server certificate
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
from .network import IngressSource
from .operations import create_operation_id, delete_operation_id, health_monitor_id
from .passwords import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, PasswordRef, generate_password
from .placement import RuntimeKind, ServiceType, make_k8s_name
from .records import HealthCheckRecord, HealthCheckResult, InstanceMetadata
from .resources import ResourceRequests, parse_quantity
from .server_parameters import SETTABLE_PARAMETERS, checked_server_parameters
from .tls import InstanceTls, service_dns_names, tls_secret_name
from .tuning import derived_parameters, effective_parameters, shm_size_limit
from .validation import StrictModel, load_stored, validation_errors
from .versions import DEFAULT_POSTGRES_VERSION, POSTGRES_VERSIONS

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DEFAULT_POSTGRES_VERSION",
    "NAME_MAX_LENGTH",
    "PASSWORD_MAX_LENGTH",
    "PASSWORD_MIN_LENGTH",
    "POSTGRES_VERSIONS",
    "SETTABLE_PARAMETERS",
    "CreateInstanceRequest",
    "CreateInstanceResponse",
    "DeploymentConfig",
    "HealthCheckRecord",
    "HealthCheckResult",
    "HealthStatus",
    "IngressSource",
    "InstanceMetadata",
    "InstanceState",
    "InstanceTls",
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
    "checked_server_parameters",
    "connection_uri",
    "create_operation_id",
    "delete_operation_id",
    "derived_parameters",
    "effective_parameters",
    "generate_password",
    "health_monitor_id",
    "load_stored",
    "make_k8s_name",
    "parse_quantity",
    "service_dns_names",
    "shm_size_limit",
    "tls_secret_name",
    "validation_errors",
]
