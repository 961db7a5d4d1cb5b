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
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from toygres.models import RuntimeKind, ServiceType

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGE_REPO_RE = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*$")


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
    service_type: ServiceType = ServiceType.CLUSTER_IP
    load_balancer_source_ranges: Annotated[list[str], NoDecode] = Field(default_factory=list)
    image_repository: str = "postgres"

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL_RE.match(value):
            raise PydanticCustomError(
                "dns_label",
                "kubernetes.namespace must be a DNS-1123 label: lowercase letters, digits and '-', "
                "at most 63 characters",
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

    @field_validator("load_balancer_source_ranges", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("load_balancer_source_ranges")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise PydanticCustomError(
                    "cidr",
                    "kubernetes.load_balancer_source_ranges must hold CIDR ranges such as 203.0.113.0/24; "
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
    engine_schema: str = "durable"
    cms_schema: str = "toygres"
    default_runtime: RuntimeKind = RuntimeKind.KUBERNETES
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    health_check_interval_seconds: int = Field(default=30, ge=5, le=3600)
    readiness_deadline_seconds: int = Field(default=600, ge=30, le=7200)
    local_data_dir: Path = Path("~/.toygres/instances")
    #: register the local runtime (PostgreSQL processes on this host): on for ``toygres serve`` and
    #: development; the Azure profile turns it off, where instances belong on the cluster only
    local_runtime_enabled: bool = True
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
