"""The contract every instance runtime honours.

Activities run on worker threads and may be retried (at least once), so every
operation here is synchronous and idempotent.  The password handed to
``deploy`` is stored by the runtime itself (a Kubernetes Secret, a 0600 file)
and only a *reference* to it travels back to the caller, so the metadata
database and the durable history never hold a plaintext password.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ServiceType = Literal["ClusterIP", "LoadBalancer"]

#: Instance names become Kubernetes object names, DNS labels and directory names. 52 is the
#: longest StatefulSet name whose pods still get a valid ``controller-revision-hash`` label
#: (``<name>-<10 char hash>`` must fit the 63-character label limit).
NAME_MAX_LENGTH = 52
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# A Kubernetes label value: <=63 chars, alphanumerics plus '-', '_', '.' inside.
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# PostgreSQL role / database names we accept: portable, never need quoting.
_PG_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Kubernetes resource quantity (e.g. 10Gi, 500m, 1.5, 2e3).
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SERVICE_TYPES: tuple[str, ...] = ("ClusterIP", "LoadBalancer")


def _check(condition: bool, field_name: str, why: str) -> None:
    if not condition:
        raise ValueError(f"{field_name}: {why}")


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """What to run, independent of where it runs.

    JSON-safe (see :meth:`to_dict`) so it can be an activity input; it never
    contains the password.  Validation happens at construction time so a bad
    spec fails fast in the API instead of deep inside a retried activity.
    """

    instance_id: str
    name: str
    postgres_version: str
    storage_size: str
    username: str
    storage_class: str | None = None
    cpu_request: str | None = None
    memory_request: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    database: str = "postgres"
    service_type: ServiceType = "ClusterIP"
    load_balancer_source_ranges: tuple[str, ...] = field(default_factory=tuple)
    #: the image reference to run (pinned by digest); None: ``<image_repository>:<postgres_version>``
    image: str | None = None
    #: the Secret holding the server certificate; None: the instance does not serve TLS
    tls_secret: str | None = None
    #: the names the server certificate carries (the first is the one clients verify)
    tls_dns_names: tuple[str, ...] = field(default_factory=tuple)
    #: extra NetworkPolicy peers: ``{"cidr": ...}`` or ``{"namespace_selector": {...}, "pod_selector": ...}``
    allowed_sources: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: server parameters the caller set (already validated); the derived ones are added by the manifests
    server_parameters: dict[str, str] = field(default_factory=dict)
    #: the Kubernetes namespace the instance was created in (None: the runtime's configured one)
    namespace: str | None = None

    def __post_init__(self) -> None:
        _check(
            bool(self.instance_id)
            and len(self.instance_id) <= 63
            and _LABEL_VALUE.match(self.instance_id) is not None,
            "instance_id",
            "must be a valid Kubernetes label value (<=63 chars, [A-Za-z0-9._-])",
        )
        _check(
            len(self.name) <= NAME_MAX_LENGTH and _DNS1123_LABEL.match(self.name) is not None,
            "name",
            f"must be a DNS-1123 label of at most {NAME_MAX_LENGTH} characters",
        )
        _check(
            _VERSION.match(self.postgres_version) is not None,
            "postgres_version",
            "must be an image tag such as '17' or '16.4'",
        )
        _check(_QUANTITY.match(self.storage_size) is not None, "storage_size", "must be a quantity like 10Gi")
        if self.storage_class is not None:
            valid = len(self.storage_class) <= 253 and bool(_DNS1123_SUBDOMAIN.match(self.storage_class))
            _check(valid, "storage_class", "must be a DNS-1123 subdomain")
        for name in ("cpu_request", "memory_request", "cpu_limit", "memory_limit"):
            value = getattr(self, name)
            if value is not None:
                _check(_QUANTITY.match(value) is not None, name, "must be a Kubernetes quantity")
        _check(
            _PG_IDENTIFIER.match(self.username) is not None,
            "username",
            "must be a lower-case PostgreSQL identifier ([a-z_][a-z0-9_]*, <=63 chars)",
        )
        _check(
            _PG_IDENTIFIER.match(self.database) is not None,
            "database",
            "must be a lower-case PostgreSQL identifier",
        )
        _check(self.service_type in _SERVICE_TYPES, "service_type", f"must be one of {_SERVICE_TYPES}")
        if self.namespace is not None:
            valid_namespace = len(self.namespace) <= 63 and _DNS1123_LABEL.match(self.namespace) is not None
            _check(valid_namespace, "namespace", "must be a DNS-1123 label of at most 63 characters")
        # Lists arrive from JSON; normalise so the dataclass stays comparable.
        for name in _TUPLE_FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.tls_secret is not None:
            _check(bool(self.tls_dns_names), "tls_dns_names", "a TLS instance needs certificate names")
        for cidr in self.load_balancer_source_ranges:
            _check(
                isinstance(cidr, str) and "/" in cidr,
                "load_balancer_source_ranges",
                f"{cidr!r} is not a CIDR",
            )
        if self.load_balancer_source_ranges:
            _check(
                self.service_type == "LoadBalancer",
                "load_balancer_source_ranges",
                "only applies to service_type LoadBalancer",
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        data = asdict(self)
        for name in _TUPLE_FIELDS:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceSpec:
        """Inverse of :meth:`to_dict`; unknown keys are rejected to catch schema drift early."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown InstanceSpec fields: {sorted(unknown)}")
        values = dict(data)
        for name in _TUPLE_FIELDS:
            if name in values:
                values[name] = tuple(values[name] or ())
        return cls(**values)


_TUPLE_FIELDS = ("load_balancer_source_ranges", "tls_dns_names", "allowed_sources")


@dataclass(frozen=True)
class Endpoint:
    """Where clients connect (host may be a DNS name or an IP)."""

    host: str
    port: int


@dataclass(frozen=True)
class RuntimeStatus:
    """A point-in-time observation; ``ready`` means clients can connect via ``endpoint`` now."""

    exists: bool
    ready: bool
    phase: str
    message: str
    endpoint: Endpoint | None = None


@dataclass(frozen=True, order=True)
class FoundInstance:
    """Something a runtime runs for an instance id, found by looking at the runtime itself.

    The reconciler compares these with the metadata to find orphans: ``name`` is the object or
    directory name (``k8s_name``), ``namespace`` the Kubernetes namespace (None for local).
    """

    instance_id: str
    name: str
    namespace: str | None = None


class InstanceRuntimeError(Exception):
    """Base class for runtime failures (kept distinct from the builtin ``RuntimeError``)."""


class DeployError(InstanceRuntimeError):
    """An operation against the backing platform failed.

    ``retryable`` tells the activity layer whether a retry can help (throttling,
    server errors, timeouts) or whether the request itself is wrong.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class CredentialError(DeployError):
    """The control plane could not authenticate to the platform (expired or missing credentials,
    no rights): says nothing about the instance itself, which may be perfectly fine."""


class InstanceNotFound(InstanceRuntimeError):
    """The instance (or the piece asked for, e.g. its password) does not exist."""


@runtime_checkable
class InstanceRuntime(Protocol):
    """Where instances run.  All methods are synchronous and safe to retry."""

    kind: str
    #: PostgreSQL major versions this runtime can run; the first is its default
    postgres_versions: tuple[str, ...]

    def deploy(self, spec: InstanceSpec, password: str) -> str:
        """Create or converge the instance; return a password reference, never the password.

        The password is only used when the instance's credential does not exist
        yet: a retried deploy must not change the password of a server that was
        already initialised with the first one.
        """
        ...

    def store_password(self, spec: InstanceSpec, password: str) -> str:
        """Store the password ahead of ``deploy`` (a user-chosen one); the first stored wins."""
        ...

    def converge(self, spec: InstanceSpec, password: str) -> list[str]:
        """``deploy`` again (the reconciler's drift correction); returns what had drifted from the
        spec and was taken back (field-manager conflicts on Kubernetes), for the report."""
        ...

    def status(self, spec: InstanceSpec) -> RuntimeStatus: ...

    def delete(self, spec: InstanceSpec) -> bool:
        """Remove everything; True if something was removed, False if nothing was there."""
        ...

    def read_password(self, spec: InstanceSpec) -> str:
        """The stored password; raises :class:`InstanceNotFound` when there is none."""
        ...

    def describe(self, spec: InstanceSpec) -> dict[str, Any]:
        """Names of the objects / directories backing the instance, for metadata and humans."""
        ...

    def list_instances(self, namespaces: Sequence[str] = ()) -> list[FoundInstance]:
        """Every instance this runtime runs something for (also in ``namespaces``), by looking."""
        ...

    def remove(self, found: FoundInstance) -> bool:
        """Remove what :meth:`list_instances` found, like ``delete``; True if something went."""
        ...
