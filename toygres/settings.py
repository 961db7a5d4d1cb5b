"""Process-wide configuration, read from ``TOYGRES_*`` environment variables (and a ``.env`` file).

Nested groups use ``__``: ``TOYGRES_KUBERNETES__NAMESPACE=pg``. List values accept JSON or a comma
separated string: ``TOYGRES_KUBERNETES__LOAD_BALANCER_SOURCE_RANGES=10.0.0.0/8,192.168.1.0/24``.
Validation errors never echo the input (``hide_input_in_errors``) because ``database_url`` may
carry a password.
"""

from __future__ import annotations

import ipaddress
import json
import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from toygres.models import RuntimeKind, ServiceType

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGE_REPO_RE = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class DatabaseAuth(StrEnum):
    """How connections to the metadata database authenticate.

    ``entra``: no password in ``database_url``; every new connection presents a Microsoft Entra token
    for ``https://ossrdbms-aad.database.windows.net/.default`` (Azure Database for PostgreSQL).
    """

    PASSWORD = "password"
    ENTRA = "entra"


class DatabasePooler(StrEnum):
    """What sits between Toygres and PostgreSQL.

    ``transaction``: a transaction-mode pooler (Azure's built-in PgBouncer on port 6432), so no
    session state survives a transaction: no LISTEN, no session ``SET``, no session advisory locks.
    """

    NONE = "none"
    TRANSACTION = "transaction"


class AuthMode(StrEnum):
    """Who authenticates callers of the HTTP API.

    ``none``: nobody (every caller may do everything); ``toygres serve`` allows it on loopback only.
    ``jwt``: the API validates bearer JWTs itself against ``auth.issuer``, ``auth.audience`` and
    ``auth.jwks_url``. ``app-service``: App Service Authentication (Easy Auth) in front of the
    Functions app validated the caller; the API trusts the ``X-MS-CLIENT-PRINCIPAL`` header the
    platform adds. Never choose it where requests can reach the app without passing through that
    platform layer.
    """

    NONE = "none"
    JWT = "jwt"
    APP_SERVICE = "app-service"


def _split_list(value: object) -> object:
    """Accept a JSON array or a comma-separated string for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise PydanticCustomError("list", "must be a JSON array or a comma-separated list") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class KubernetesSettings(BaseModel):
    """Cluster access and defaults for instances with the ``kubernetes`` runtime.

    With ``aks_subscription_id``, ``aks_resource_group`` and ``aks_cluster_name`` all set, credentials
    come from AKS (azure-mgmt-containerservice + DefaultAzureCredential); otherwise from
    ``kubeconfig`` (or the default kubeconfig / in-cluster config).
    """

    model_config = ConfigDict(extra="forbid")

    namespace: str = "toygres"
    kubeconfig: Path | None = None
    context: str | None = None
    aks_subscription_id: str | None = None
    aks_resource_group: str | None = None
    aks_cluster_name: str | None = None
    storage_class: str | None = None
    #: where the control plane keeps its own objects (the CA Secret) and, when it runs in the
    #: cluster, its pods: instances' NetworkPolicies admit this namespace
    control_plane_namespace: str = "toygres-system"
    #: addresses the control plane connects from when it runs outside the cluster (e.g. the Function
    #: App's VNet integration subnet); admitted by every instance's NetworkPolicy
    control_plane_cidrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: the cluster's DNS domain, for the names in instances' server certificates
    cluster_domain: str = "cluster.local"
    service_type: ServiceType = ServiceType.CLUSTER_IP
    load_balancer_source_ranges: Annotated[list[str], NoDecode] = Field(default_factory=list)
    image_repository: str = "postgres"
    #: LoadBalancer Services of instances get ``service.beta.kubernetes.io/azure-load-balancer-internal``
    #: so they get a private IP in the cluster's virtual network (the Azure profile's default)
    internal_load_balancer: bool = False

    @field_validator("namespace", "control_plane_namespace")
    @classmethod
    def _namespace(cls, value: str, info: ValidationInfo) -> str:
        if len(value) > 63 or not _DNS_LABEL_RE.match(value):
            raise PydanticCustomError(
                "dns_label",
                f"kubernetes.{info.field_name} must be a DNS-1123 label: lowercase letters, digits and '-', "
                "at most 63 characters",
            )
        return value

    @field_validator("cluster_domain")
    @classmethod
    def _cluster_domain(cls, value: str) -> str:
        if len(value) > 253 or not _DNS_SUBDOMAIN_RE.match(value):
            raise PydanticCustomError(
                "dns_subdomain", "kubernetes.cluster_domain must be a DNS name such as cluster.local"
            )
        return value

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN_RE.match(value)):
            raise PydanticCustomError(
                "dns_subdomain", "kubernetes.storage_class must be a DNS-1123 subdomain"
            )
        return value

    @field_validator("load_balancer_source_ranges", "control_plane_cidrs", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("load_balancer_source_ranges", "control_plane_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str], info: ValidationInfo) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise PydanticCustomError(
                    "cidr",
                    f"kubernetes.{info.field_name} must hold CIDR ranges such as 203.0.113.0/24; "
                    "got {item}",
                    {"item": item},
                ) from None
        return out

    @field_validator("image_repository")
    @classmethod
    def _image(cls, value: str) -> str:
        if not _IMAGE_REPO_RE.match(value):
            raise PydanticCustomError(
                "image",
                "kubernetes.image_repository must be an image reference without a tag, e.g. 'postgres'",
            )
        return value

    @property
    def uses_aks(self) -> bool:
        return bool(self.aks_subscription_id and self.aks_resource_group and self.aks_cluster_name)


class AuthSettings(BaseModel):
    """How the HTTP API authenticates callers (``TOYGRES_AUTH__*``); roles come from the ``roles`` claim."""

    model_config = ConfigDict(extra="forbid")

    mode: AuthMode = AuthMode.NONE
    #: expected ``iss`` claim, e.g. ``https://login.microsoftonline.com/<tenant id>/v2.0``
    issuer: str | None = None
    #: expected ``aud`` claim: the API's application id URI (``api://<client id>``) or client id
    audience: str | None = None
    #: where the signing keys are, e.g. ``https://login.microsoftonline.com/<tenant id>/discovery/v2.0/keys``
    jwks_url: str | None = None
    #: clock skew tolerated on ``exp`` and ``nbf``
    leeway_seconds: int = Field(default=60, ge=0, le=600)

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise PydanticCustomError(
                "jwks_url", "auth.jwks_url must be an https:// URL (http only for 127.0.0.1 / localhost)"
            )
        return value

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode is AuthMode.JWT:
            missing = [name for name in ("issuer", "audience", "jwks_url") if not getattr(self, name)]
            if missing:
                raise PydanticCustomError(
                    "auth_incomplete",
                    "auth.mode 'jwt' needs {missing} (TOYGRES_AUTH__ISSUER, __AUDIENCE, __JWKS_URL)",
                    {"missing": ", ".join(f"auth.{name}" for name in missing)},
                )
        return self


class CaStoreKind(StrEnum):
    """Where the deployment's CA private key is kept."""

    KUBERNETES_SECRET = "kubernetes-secret"
    KEY_VAULT = "key-vault"


class TlsSettings(BaseModel):
    """TLS of instances (``TOYGRES_TLS__*``): the deployment's CA and the server certificates it issues.

    ``ca_store=key-vault`` (with ``key_vault_url``) is the Azure profile's intended home for the CA
    key; this version refuses it at start-up (see docs/control-plane.md) rather than pretend.
    """

    model_config = ConfigDict(extra="forbid")

    ca_store: CaStoreKind = CaStoreKind.KUBERNETES_SECRET
    #: the Secret (in ``kubernetes.control_plane_namespace``) holding the CA certificate and key
    ca_secret_name: str = "toygres-ca"
    key_vault_url: str | None = None
    server_certificate_days: int = Field(default=90, ge=7, le=825)
    #: a certificate is renewed when it expires within this many days
    renew_before_days: int = Field(default=30, ge=1, le=365)

    @field_validator("ca_secret_name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        if len(value) > 253 or not _DNS_SUBDOMAIN_RE.match(value):
            raise PydanticCustomError("dns_subdomain", "tls.ca_secret_name must be a DNS-1123 subdomain")
        return value

    @model_validator(mode="after")
    def _window(self) -> TlsSettings:
        if self.renew_before_days >= self.server_certificate_days:
            raise PydanticCustomError(
                "renew_window", "tls.renew_before_days must be smaller than tls.server_certificate_days"
            )
        return self


class Settings(BaseSettings):
    """All Toygres settings. ``database_url`` is optional: ``toygres serve`` can run an embedded server."""

    model_config = SettingsConfigDict(
        env_prefix="TOYGRES_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    database_url: SecretStr | None = None
    #: ``entra``: connect with Microsoft Entra tokens instead of a password (Azure Database for PostgreSQL)
    database_auth: DatabaseAuth = DatabaseAuth.PASSWORD
    #: ``transaction``: ``database_url`` points at a transaction-mode pooler (PgBouncer, port 6432)
    database_pooler: DatabasePooler = DatabasePooler.NONE
    #: apply the schema migrations when the control plane starts; off in Azure, where
    #: ``scripts/azure/deploy.sh`` runs ``toygres migrate`` over a direct (non-pooled) connection
    migrate_on_start: bool = True
    #: offer the ``local`` runtime (PostgreSQL processes on this host); off where the host is ephemeral
    local_runtime_enabled: bool = True
    #: client id of the user-assigned managed identity (read as ``AZURE_CLIENT_ID``, the variable
    #: ``DefaultAzureCredential`` itself reads), for database tokens, AKS credentials and Storage
    azure_client_id: str | None = Field(default=None, validation_alias="AZURE_CLIENT_ID")
    auth: AuthSettings = Field(default_factory=AuthSettings)
    engine_schema: str = "durable"
    cms_schema: str = "toygres"
    default_runtime: RuntimeKind = RuntimeKind.KUBERNETES
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    health_check_interval_seconds: int = Field(default=30, ge=5, le=3600)
    readiness_deadline_seconds: int = Field(default=600, ge=30, le=7200)
    local_data_dir: Path = Path("~/.toygres/instances")
    #: the image catalog (JSON); unset: the catalog shipped in the package (toygres/image-catalog.json)
    image_catalog_file: Path | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    #: retention: health checks older than this are pruned (the Reconciler does it every pass)
    health_check_retention_days: float = Field(default=7, gt=0)
    #: retention: deleted instances (their rows and finished operations) are pruned after this
    deleted_instance_retention_days: float = Field(default=30, gt=0)
    #: ports of local instances, ``low-high``; keep it out of the kernel's ephemeral range
    local_port_range: Annotated[tuple[int, int], NoDecode] = (20000, 29999)

    @field_validator("engine_schema", "cms_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        if not _SCHEMA_RE.match(value):
            raise PydanticCustomError(
                "schema_name",
                "schema names must be lowercase PostgreSQL identifiers: letters, digits and '_', "
                "starting with a letter or '_', at most 63 characters",
            )
        return value

    @field_validator("azure_client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not _UUID_RE.match(value):
            raise PydanticCustomError("client_id", "AZURE_CLIENT_ID must be a client id (a GUID)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from psycopg.conninfo import conninfo_to_dict  # local: keep settings import light

        try:
            conninfo_to_dict(value.get_secret_value())
        except Exception:  # psycopg raises ProgrammingError; never echo the value (it may hold a password)
            raise PydanticCustomError(
                "database_url",
                "database_url must be a PostgreSQL URI (postgresql://user@host:5432/db) or a "
                "'key=value' connection string",
            ) from None
        return value

    @field_validator("local_port_range", mode="before")
    @classmethod
    def _port_range(cls, value: object) -> object:
        if isinstance(value, str):
            low, sep, high = value.partition("-")
            if not sep or not low.strip().isdigit() or not high.strip().isdigit():
                raise PydanticCustomError("port_range", "local_port_range must look like 20000-29999")
            return int(low), int(high)
        return value

    @field_validator("local_port_range")
    @classmethod
    def _port_range_bounds(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 <= low <= high <= 65535:
            raise PydanticCustomError("port_range", "local_port_range must be low-high within 1024-65535")
        return value

    @field_validator("local_data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process settings, read once. Tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
