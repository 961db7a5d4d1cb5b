"""Domain models shared by the API, the orchestrations, the activities and the metadata store.

Request bodies forbid unknown fields so that a typo (``storgae_size``) is an error instead of a
silently ignored option. Every rule raises a message that names the field and says what a good
value looks like, because these messages are what an API caller reads.

The instance password only ever lives in a ``SecretStr`` on the request; everything that is stored
or sent through the durable engine (``DeploymentConfig``, ``InstanceMetadata``, ...) carries a
``PasswordRef`` (where the password is kept) instead, so no history row, metadata row or log line
can hold it.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
)
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from toygres.settings import Settings

# --------------------------------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------------------------------


class InstanceState(StrEnum):
    """Lifecycle of a hosted instance as recorded in the metadata store."""

    CREATING = "creating"
    RUNNING = "running"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class RuntimeKind(StrEnum):
    """Where an instance runs: a Kubernetes cluster, or PostgreSQL processes on this host."""

    KUBERNETES = "kubernetes"
    LOCAL = "local"


class ServiceType(StrEnum):
    """How the instance is exposed; ClusterIP keeps it private to the cluster."""

    CLUSTER_IP = "ClusterIP"
    LOAD_BALANCER = "LoadBalancer"


class OperationKind(StrEnum):
    CREATE = "create"
    DELETE = "delete"


class OperationState(StrEnum):
    """Mirrors the durable engine's orchestration status names."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


# Which states an instance may move to from each state. ``deleted`` is terminal. The metadata
# repository enforces this unless a caller passes its own ``expected_from`` set.
ALLOWED_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.CREATING: frozenset({InstanceState.RUNNING, InstanceState.FAILED, InstanceState.DELETING}),
    InstanceState.RUNNING: frozenset({InstanceState.DELETING, InstanceState.FAILED}),
    InstanceState.FAILED: frozenset({InstanceState.DELETING}),
    InstanceState.DELETING: frozenset({InstanceState.DELETED, InstanceState.FAILED}),
    InstanceState.DELETED: frozenset(),
}


def allowed_predecessors(target: InstanceState) -> frozenset[InstanceState]:
    """States from which ``target`` may be reached according to ``ALLOWED_TRANSITIONS``."""
    return frozenset(src for src, dests in ALLOWED_TRANSITIONS.items() if target in dests)


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------

NAME_MAX_LENGTH = 40
"""User-facing names are capped at 40 although a DNS-1123 label may have 63 characters: the
Kubernetes name appends ``-`` and 8 hex digits of the instance id (49 characters), and a StatefulSet
name must stay within 52 characters because the controller adds ``-<10-char hash>`` to a 63-character
label value."""

_DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PG_IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_PG_IDENTIFIER_MAX = 63  # NAMEDATALEN - 1

# PostgreSQL's *reserved* key words (they cannot be used as a role or database name without
# quoting, which breaks tools that build SQL from the name), plus role names the server refuses.
_PG_RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time current_timestamp
    current_user default deferrable desc distinct do else end except false fetch for foreign from
    grant group having in initially intersect into lateral leading limit localtime localtimestamp
    not null offset on only or order placing primary references returning select session_user some
    symmetric system_user table then to trailing true union unique user using variadic when where
    window with public none
    """.split()
)

POSTGRES_VERSIONS: tuple[str, ...] = ("14", "15", "16", "17", "18")
DEFAULT_POSTGRES_VERSION = "17"
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 128

# Kubernetes resource quantities (k8s.io/apimachinery/pkg/api/resource). Parsed here rather than
# with ``kubernetes.utils.parse_quantity`` because importing that loads the whole generated client,
# which costs every HTTP cold start for a twenty-line grammar.
_QUANTITY_RE = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

GI = Decimal(2) ** 30
STORAGE_MIN = GI
STORAGE_MAX = 16 * Decimal(2) ** 40
CPU_MIN = Decimal("0.1")
CPU_MAX = Decimal(64)
MEMORY_MIN = 128 * Decimal(2) ** 20
MEMORY_MAX = 512 * GI


def parse_quantity(text: str) -> Decimal:
    """Value of a Kubernetes quantity (``500m`` -> 0.5, ``2Gi`` -> 2147483648); ValueError if malformed."""
    match = _QUANTITY_RE.match(text)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        try:
            return number.scaleb(int(suffix[1:]))
        except (InvalidOperation, ValueError) as exc:  # pragma: no cover - regex guarantees digits
            raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc
    return number * _QUANTITY_SUFFIXES[suffix]


def _quantity_in_range(
    value: object, field: str, example: str, low: Decimal, high: Decimal, bounds: str
) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("quantity_type", f"{field} must be a string such as {example!r}")
    text = value.strip()
    try:
        amount = parse_quantity(text)
    except ValueError:
        raise PydanticCustomError(
            "quantity", f"{field} must be a Kubernetes quantity such as {example!r}"
        ) from None
    if not low <= amount <= high:
        raise PydanticCustomError("quantity_range", f"{field} must be between {bounds}")
    return text


def _dns_label(value: str, field: str, max_length: int) -> str:
    if len(value) > max_length or not _DNS_LABEL_RE.match(value):
        raise PydanticCustomError(
            "dns_label",
            f"{field} must be a DNS-1123 label: lowercase letters, digits and '-', starting with a "
            f"letter and ending with a letter or digit, at most {max_length} characters",
        )
    return value


def _pg_identifier(value: str, field: str) -> str:
    if len(value) > _PG_IDENTIFIER_MAX or not _PG_IDENTIFIER_RE.match(value):
        raise PydanticCustomError(
            "pg_identifier",
            f"{field} must be a PostgreSQL identifier: lowercase letters, digits and '_', starting "
            f"with a letter or '_', at most {_PG_IDENTIFIER_MAX} characters",
        )
    if value.startswith("pg_"):
        raise PydanticCustomError("pg_reserved_prefix", f"{field} must not start with 'pg_' (reserved)")
    if value in _PG_RESERVED:
        raise PydanticCustomError(
            "pg_reserved_word", f"{field} must not be the reserved SQL key word {value!r}"
        )
    return value


def generate_password() -> str:
    """A 32-character URL-safe password (192 bits from ``secrets``): safe in connection URIs."""
    return secrets.token_urlsafe(24)


def connection_uri(host: str, port: int, database: str, username: str, *, sslmode: str | None = None) -> str:
    """``postgresql://user@host:port/db`` — deliberately without a password."""
    host_part = f"[{host}]" if ":" in host else host
    uri = f"postgresql://{quote(username, safe='')}@{host_part}:{port}/{quote(database, safe='')}"
    if sslmode:
        uri += f"?sslmode={quote(sslmode, safe='')}"
    return uri


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Human-readable ``{"field", "message"}`` pairs, WITHOUT the rejected input values.

    Use this (not ``exc.errors()``) in API responses and logs: pydantic's own error entries echo the
    input, which for a rejected password would be the password.
    """
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in err["loc"]) or "body"
        out.append({"field": field, "message": err["msg"]})
    return out


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    """Request-style model: unknown fields are errors; errors never print inputs (passwords)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ResourceRequests(_Strict):
    """CPU and memory requests of the PostgreSQL container, as Kubernetes quantities."""

    cpu: str = "500m"
    memory: str = "1Gi"

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: object) -> str:
        return _quantity_in_range(value, "cpu", "500m", CPU_MIN, CPU_MAX, "100m and 64 cores")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> str:
        return _quantity_in_range(value, "memory", "2Gi", MEMORY_MIN, MEMORY_MAX, "128Mi and 512Gi")


class PasswordRef(_Strict):
    """Where an instance password is kept — never the password itself.

    ``kubernetes-secret``: key ``key`` of Secret ``namespace/name``. ``local-file``: the file at ``name``.
    """

    store: Literal["kubernetes-secret", "local-file"]
    name: str = Field(min_length=1)
    namespace: str | None = None
    key: str = "password"

    def describe(self) -> str:
        """A hint telling a person how to fetch the password."""
        if self.store == "kubernetes-secret":
            ns = self.namespace or "default"
            return (
                f"The password is in Kubernetes Secret {ns}/{self.name} (key '{self.key}'): "
                f"kubectl get secret -n {ns} {self.name} -o jsonpath='{{.data.{self.key}}}' | base64 -d"
            )
        return f"The password is in the file {self.name} on the host running the local runtime."


# --------------------------------------------------------------------------------------------------
# API request / response bodies
# --------------------------------------------------------------------------------------------------


class CreateInstanceRequest(_Strict):
    """Body of ``POST /instances``.

    ``username`` may be ``postgres`` (the default): in both runtimes the configured user is the
    instance's superuser created by initdb, so refusing the conventional name would buy nothing.
    Names starting with ``pg_``, reserved SQL key words and ``public`` are refused because the
    server rejects them as role names or they need quoting everywhere.
    """

    name: str
    username: str = "postgres"
    database: str = "postgres"
    password: SecretStr = Field(default_factory=lambda: SecretStr(generate_password()))
    postgres_version: str = DEFAULT_POSTGRES_VERSION
    storage_size: str = "10Gi"
    storage_class: str | None = None
    resources: ResourceRequests | None = None
    runtime: RuntimeKind | None = None
    service_type: ServiceType | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> object:
        if isinstance(value, str):
            return _dns_label(value, "name", NAME_MAX_LENGTH)
        return value

    @field_validator("username", "database", mode="before")
    @classmethod
    def _identifiers(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            return _pg_identifier(value, str(info.field_name))
        return value

    @field_validator("password", mode="before")
    @classmethod
    def _password(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            raise PydanticCustomError("password_type", "password must be a string")
        if not PASSWORD_MIN_LENGTH <= len(raw) <= PASSWORD_MAX_LENGTH:
            raise PydanticCustomError(
                "password_length",
                f"password must have between {PASSWORD_MIN_LENGTH} and {PASSWORD_MAX_LENGTH} characters",
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
            raise PydanticCustomError("password_chars", "password must not contain control characters")
        return SecretStr(raw)

    @field_validator("postgres_version", mode="before")
    @classmethod
    def _version(cls, value: object) -> str:
        text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
        if text not in POSTGRES_VERSIONS:
            raise PydanticCustomError(
                "postgres_version", f"postgres_version must be one of {', '.join(POSTGRES_VERSIONS)}"
            )
        return text

    @field_validator("storage_size", mode="before")
    @classmethod
    def _storage(cls, value: object) -> str:
        text = _quantity_in_range(value, "storage_size", "10Gi", STORAGE_MIN, STORAGE_MAX, "1Gi and 16Ti")
        if parse_quantity(text) != parse_quantity(text).to_integral_value():
            raise PydanticCustomError("quantity", "storage_size must be a whole number of bytes")
        return text

    @field_validator("storage_class", mode="before")
    @classmethod
    def _storage_class(cls, value: object) -> object:
        if isinstance(value, str) and (len(value) > 253 or not _DNS_SUBDOMAIN_RE.match(value)):
            raise PydanticCustomError(
                "dns_subdomain",
                "storage_class must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
                "at most 253 characters",
            )
        return value


class DeploymentConfig(_Strict):
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


def make_k8s_name(name: str, instance_id: UUID) -> str:
    """DNS-safe, unique Kubernetes name: the user's name plus 8 hex digits of the id (≤ 49 chars)."""
    return f"{name}-{instance_id.hex[:8]}"


def build_deployment_config(
    request: CreateInstanceRequest, settings: Settings, *, instance_id: UUID
) -> DeploymentConfig:
    """Fill every optional request field from the settings, producing what the orchestration runs."""
    runtime = request.runtime or settings.default_runtime
    k8s_name = make_k8s_name(request.name, instance_id)
    kube = settings.kubernetes
    if runtime is RuntimeKind.KUBERNETES:
        namespace: str | None = kube.namespace
        ref = PasswordRef(store="kubernetes-secret", namespace=kube.namespace, name=k8s_name)
    else:
        namespace = None
        ref = PasswordRef(store="local-file", name=str(Path(settings.local_data_dir) / k8s_name / "password"))
    service_type = request.service_type or kube.service_type
    return DeploymentConfig(
        instance_id=instance_id,
        name=request.name,
        k8s_name=k8s_name,
        runtime=runtime,
        namespace=namespace,
        postgres_version=request.postgres_version,
        image=f"{kube.image_repository}:{request.postgres_version}",
        storage_size=request.storage_size,
        storage_class=request.storage_class or kube.storage_class,
        resources=request.resources or ResourceRequests(),
        service_type=service_type,
        load_balancer_source_ranges=(
            list(kube.load_balancer_source_ranges) if service_type is ServiceType.LOAD_BALANCER else []
        ),
        username=request.username,
        database=request.database,
        password_ref=ref,
    )


class CreateInstanceResponse(BaseModel):
    """Body of the 202 answer to ``POST /instances``; the password is never echoed back."""

    instance_id: UUID
    operation_id: str
    name: str
    state: InstanceState = InstanceState.CREATING
    connection_string: str | None = None
    password_hint: str


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
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    #: what the instance was created with; internal (orchestration inputs), so not in API output
    deployment_config: DeploymentConfig | None = Field(default=None, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def connection_string(self) -> str | None:
        """Password-less URI once host and port are known."""
        if self.host is None or self.port is None:
            return None
        return connection_uri(self.host, self.port, self.database, self.username)


class ListInstancesResponse(BaseModel):
    items: list[InstanceMetadata]
    next_cursor: str | None = None


class OperationError(BaseModel):
    message: str
    category: str | None = None


class OperationStatus(BaseModel):
    """``GET /operations/{id}``: an orchestration instance seen through Toygres' eyes."""

    operation_id: str
    kind: OperationKind
    instance_id: UUID | None = None
    status: OperationState
    phase: str | None = None
    custom_status: Any = None
    error: OperationError | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
