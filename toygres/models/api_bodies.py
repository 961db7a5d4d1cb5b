"""Bodies of the HTTP API: what callers send and what they get back.

The rules a field must follow live in the domain modules (identifiers, resources, passwords,
versions); these classes only say which fields a request has and which rule applies to each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from .identifiers import NAME_MAX_LENGTH, dns_label, dns_subdomain, pg_identifier
from .lifecycle import InstanceState, OperationKind, OperationState
from .network import IngressSource, allowed_sources
from .passwords import checked_password, generate_password
from .placement import RuntimeKind, ServiceType
from .records import InstanceMetadata
from .resources import ResourceRequests, storage_size
from .server_parameters import checked_server_parameters
from .validation import StrictModel
from .versions import POSTGRES_VERSIONS


class CreateInstanceRequest(StrictModel):
    """Body of ``POST /instances``.

    ``username`` may be ``postgres`` (the default): in both runtimes the configured user is the
    instance's superuser created by initdb, so refusing the conventional name would buy nothing.
    Names starting with ``pg_``, reserved SQL key words and ``public`` are refused because the
    server rejects them as role names or they need quoting everywhere.

    ``postgres_version`` left out means "the runtime's default": the local runtime runs the
    version of its bundled binaries, a cluster the default major version.

    ``allowed_sources`` (CIDRs or namespace selectors, :mod:`.network`) may connect besides the
    control plane; ``server_parameters`` come from an allow-list (:mod:`.server_parameters`).
    """

    name: str
    username: str = "postgres"
    database: str = "postgres"
    password: SecretStr = Field(default_factory=lambda: SecretStr(generate_password()))
    postgres_version: str | None = None
    storage_size: str = "10Gi"
    storage_class: str | None = None
    resources: ResourceRequests | None = None
    runtime: RuntimeKind | None = None
    service_type: ServiceType | None = None
    allowed_sources: list[IngressSource] = Field(default_factory=list)
    server_parameters: dict[str, str] = Field(default_factory=dict)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> object:
        if isinstance(value, str):
            return dns_label(value, "name", NAME_MAX_LENGTH)
        return value

    @field_validator("username", "database", mode="before")
    @classmethod
    def _identifiers(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            return pg_identifier(value, str(info.field_name))
        return value

    @field_validator("password", mode="before")
    @classmethod
    def _password(cls, value: object) -> SecretStr:
        return checked_password(value)

    @field_validator("postgres_version", mode="before")
    @classmethod
    def _version(cls, value: object) -> str | None:
        if value is None:
            return None
        text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
        if text not in POSTGRES_VERSIONS:
            raise PydanticCustomError(
                "postgres_version", f"postgres_version must be one of {', '.join(POSTGRES_VERSIONS)}"
            )
        return text

    @field_validator("storage_size", mode="before")
    @classmethod
    def _storage(cls, value: object) -> str:
        return storage_size(value)

    @field_validator("storage_class", mode="before")
    @classmethod
    def _storage_class(cls, value: object) -> object:
        if isinstance(value, str):
            return dns_subdomain(value, "storage_class")
        return value

    @field_validator("allowed_sources", mode="before")
    @classmethod
    def _sources(cls, value: object) -> object:
        return allowed_sources(value)

    @field_validator("server_parameters", mode="before")
    @classmethod
    def _parameters(cls, value: object) -> dict[str, str]:
        return checked_server_parameters(value)


class CreateInstanceResponse(BaseModel):
    """Body of the 202 answer to ``POST /instances``; the password is never echoed back."""

    instance_id: UUID
    operation_id: str
    name: str
    state: InstanceState = InstanceState.CREATING
    connection_string: str | None = None
    password_hint: str


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
