"""The Toygres HTTP API: a FastAPI app over a :class:`~control_plane.service.ControlPlane`.

The app does not build the control plane itself; ``create_app`` takes a *plane provider* (a
callable returning the plane, or an awaitable of it). ``toygres serve`` passes the plane it
opened; the Azure Functions adapter (``func.AsgiFunctionApp``) can pass one that opens the plane
lazily on the first request of a worker. Routes live under ``/api`` because that is the
Functions host's route prefix, so the same paths work in both hosts.

Status codes: creation and deletion answer 202 with an operation id and a ``Location`` header
pointing at ``/api/operations/{id}``. Deleting an instance that is already deleted answers
**410 Gone** (the id is known, the instance no longer exists); an unknown id answers 404. Errors
use the body in :mod:`api.errors`; no response carries an instance password.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import Authenticator, NoAuthentication, Principal, Role, authenticator_for, require
from api.errors import ApiError, ErrorBody, error_response, install_error_handlers
from control_plane.service import ControlPlane
from toygres.metadata import MAX_PAGE_SIZE
from toygres.models import (
    CreateInstanceRequest,
    CreateInstanceResponse,
    InstanceMetadata,
    InstanceState,
    ListInstancesResponse,
    OperationStatus,
    ServiceType,
)
from toygres.settings import AuthSettings, Settings

log = logging.getLogger("toygres.api")

API_PREFIX = "/api"
PEM_MEDIA_TYPE = "application/x-pem-file"
#: how long the health endpoint waits for the database before answering 503
HEALTH_TIMEOUT_SECONDS = 5.0

PlaneProvider = Callable[[], ControlPlane | Awaitable[ControlPlane]]


class DeleteInstanceResponse(BaseModel):
    """Body of the 202 answer to ``DELETE /instances/{id}``."""

    operation_id: str
    instance_id: UUID


class ImageRolloutResponse(BaseModel):
    """Body of the 202 answer to ``POST /image-catalog/rollouts``."""

    operation_id: str


class ImageCatalogResponse(BaseModel):
    """``GET /image-catalog``: the pinned image each major version runs (repository from the settings)."""

    repository: str
    images: dict[str, str] = Field(description="major version -> image reference pinned by digest")


class HealthResponse(BaseModel):
    status: str
    database: str
    runtimes: list[str]
    default_runtime: str


async def get_plane(request: Request) -> ControlPlane:
    """The control plane, from the provider stored on the app.

    A provider that fails means the service cannot work at all, hence 503. A configuration error
    (``control_plane.bootstrap.ConfigurationError``, looked up lazily so this module does not import the
    Kubernetes client on a Functions cold start) carries a message naming the settings to fix;
    other failures are logged and answered with a generic message.
    """
    provider: PlaneProvider = request.app.state.plane_provider
    try:
        plane = provider()
        if inspect.isawaitable(plane):
            plane = await plane
    except Exception as exc:
        bootstrap = sys.modules.get("control_plane.bootstrap")
        if bootstrap is not None and isinstance(exc, bootstrap.ConfigurationError):
            raise ApiError(503, "not_configured", f"the control plane is not configured: {exc}") from exc
        log.error("the control plane is not available: %s", type(exc).__name__, exc_info=exc)
        raise ApiError(503, "unavailable", "the control plane is not available") from exc
    return plane


Plane = Annotated[ControlPlane, Depends(get_plane)]
Reader = Annotated[Principal, Depends(require(Role.READER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "No credentials, or credentials that are not valid (see `WWW-Authenticate`)",
        403: "The caller lacks the role this needs (Toygres.Reader, .Operator or .Admin)",
        404: "Unknown instance or operation",
        409: "Conflict: duplicate name or a state that does not allow the change",
        410: "The instance was already deleted",
        422: "Validation error: `fields` says which field and why (the submitted values are never echoed)",
        503: "The control plane or its database is not available",
    }.items()
}


def check_exposure(body: CreateInstanceRequest, settings: Settings, caller: Principal) -> None:
    """Only an admin may expose an instance beyond the cluster, and only to configured sources.

    A ``LoadBalancer`` Service without the internal annotation gets a public IP: it is refused
    unless the caller holds ``Toygres.Admin`` and ``TOYGRES_KUBERNETES__LOAD_BALANCER_SOURCE_RANGES``
    limits who can connect. Internal load balancers stay in the virtual network and need no more
    than creating the instance does.
    """
    kube = settings.kubernetes
    if (
        body.service_type or kube.service_type
    ) is not ServiceType.LOAD_BALANCER or kube.internal_load_balancer:
        return
    if not caller.has(Role.ADMIN):
        message = (
            "a public LoadBalancer exposes the instance beyond the cluster: this needs the role "
            f"{Role.ADMIN.value}"
        )
        raise ApiError(403, "forbidden", message, fields=[{"field": "service_type", "message": message}])
    if not kube.load_balancer_source_ranges:
        message = (
            "a public LoadBalancer needs source ranges: set TOYGRES_KUBERNETES__LOAD_BALANCER_SOURCE_RANGES "
            "(or TOYGRES_KUBERNETES__INTERNAL_LOAD_BALANCER=true for a private address)"
        )
        raise ApiError(
            422, "exposure_not_allowed", message, fields=[{"field": "service_type", "message": message}]
        )


def _operation_location(operation_id: str) -> str:
    return f"{API_PREFIX}/operations/{operation_id}"


def _build_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, responses=_ERRORS)

    @router.post(
        "/instances",
        status_code=202,
        response_model=CreateInstanceResponse,
        summary="Create an instance",
        description=(
            "Validates the request, records the instance as `creating` and starts the CreateInstance "
            "operation. Poll the operation in the `Location` header. The password (given or generated) "
            "is stored by the runtime; the answer says where to read it, never the password itself."
        ),
    )
    async def create_instance(
        caller: Operator, body: CreateInstanceRequest, plane: Plane, response: Response
    ) -> CreateInstanceResponse:
        check_exposure(body, plane.settings, caller)
        created = await plane.create_instance(body)
        log.info(
            "create requested by %s: instance %s (%s), operation %s",
            caller.subject,
            created.instance_id,
            created.name,
            created.operation_id,
        )
        response.headers["Location"] = _operation_location(created.operation_id)
        return created

    @router.get("/instances", response_model=ListInstancesResponse, summary="List instances")
    async def list_instances(
        _: Reader,
        plane: Plane,
        state: Annotated[InstanceState | None, Query(description="only instances in this state")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")] = 50,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
        include_deleted: Annotated[bool, Query(description="include deleted instances")] = False,
    ) -> ListInstancesResponse:
        return await plane.list_instances(
            state=state, limit=limit, cursor=cursor, include_deleted=include_deleted
        )

    @router.get("/instances/{instance_id}", response_model=InstanceMetadata, summary="Get an instance")
    async def get_instance(_: Reader, instance_id: UUID, plane: Plane) -> InstanceMetadata:
        return await plane.get_instance(instance_id)

    @router.delete(
        "/instances/{instance_id}",
        status_code=202,
        response_model=DeleteInstanceResponse,
        summary="Delete an instance",
        description=(
            "Starts the DeleteInstance operation (or returns the one already running: the operation id "
            "is the same for every DELETE of an instance). 410 when the instance is already deleted."
        ),
    )
    async def delete_instance(
        caller: Operator, instance_id: UUID, plane: Plane, response: Response
    ) -> DeleteInstanceResponse:
        operation_id = await plane.delete_instance(instance_id)
        log.info(
            "delete requested by %s: instance %s, operation %s", caller.subject, instance_id, operation_id
        )
        response.headers["Location"] = _operation_location(operation_id)
        return DeleteInstanceResponse(operation_id=operation_id, instance_id=instance_id)

    @router.get(
        "/instances/{instance_id}/ca",
        summary="The CA certificate an instance's server certificate chains to",
        response_class=Response,
        responses={
            200: {"content": {PEM_MEDIA_TYPE: {}}, "description": "PEM; use it as sslrootcert"},
            404: {"model": ErrorBody, "description": "Unknown instance, or one that does not serve TLS"},
        },
        description=(
            "Clients connect with `sslmode=verify-full`: save this certificate as "
            "`~/.postgresql/root.crt` or pass it as `sslrootcert`. Local instances do not serve TLS (404)."
        ),
    )
    async def get_instance_ca(instance_id: UUID, plane: Plane) -> Response:
        return Response(await plane.get_instance_ca(instance_id), media_type=PEM_MEDIA_TYPE)

    @router.get("/image-catalog", response_model=ImageCatalogResponse, summary="The pinned images")
    async def get_image_catalog(plane: Plane) -> ImageCatalogResponse:
        repository = plane.settings.kubernetes.image_repository
        catalog = plane.image_catalog
        return ImageCatalogResponse(
            repository=repository,
            images={major: catalog.reference(major, repository) for major in catalog.versions},
        )

    @router.post(
        "/image-catalog/rollouts",
        status_code=202,
        response_model=ImageRolloutResponse,
        summary="Roll running instances onto the catalog's images",
        description=(
            "Starts the RollOutImageCatalog operation: one instance at a time, each restarted onto its "
            "pinned image and ready before the next; the first that does not come back stops it. While a "
            "rollout of the same catalog runs, the answer names that one."
        ),
    )
    async def start_image_rollout(plane: Plane, response: Response) -> ImageRolloutResponse:
        operation_id = await plane.start_image_rollout()
        log.info("image rollout requested: operation %s", operation_id)
        response.headers["Location"] = _operation_location(operation_id)
        return ImageRolloutResponse(operation_id=operation_id)

    @router.get("/operations/{operation_id}", response_model=OperationStatus, summary="Get an operation")
    async def get_operation(_: Reader, operation_id: str, plane: Plane) -> OperationStatus:
        return await plane.get_operation(operation_id)

    @router.get(
        "/health",
        response_model=HealthResponse,
        summary="Liveness and database reachability",
        responses={503: {"model": ErrorBody, "description": "The database is not reachable"}},
    )
    async def health(plane: Plane) -> HealthResponse | JSONResponse:
        try:
            await asyncio.wait_for(_check_database(plane), HEALTH_TIMEOUT_SECONDS)
        except Exception as exc:  # any failure to read both schemas means "not ready to serve"
            log.warning("health check: the database is not reachable (%s)", type(exc).__name__)
            return error_response(503, "database_unreachable", "the control-plane database is not reachable")
        return HealthResponse(
            status="ok",
            database="ok",
            runtimes=sorted(kind.value for kind in plane.runtimes),
            default_runtime=plane.settings.default_runtime.value,
        )

    return router


async def _check_database(plane: ControlPlane) -> None:
    """Read both schemas the control plane needs: the metadata table and the engine's instances."""
    await plane.list_instances(limit=1)
    await plane.client.get_status("toygres-health-probe")


def create_app(plane_provider: PlaneProvider, *, auth: AuthSettings | Authenticator | None = None) -> FastAPI:
    """The API app; ``plane_provider`` is called on every request and may return an awaitable.

    ``auth`` says how callers are authenticated (:mod:`api.auth`); without it there is none,
    which only suits tests and loopback-only servers.
    """
    app = FastAPI(
        title="Toygres",
        summary="PostgreSQL instances as a service",
        version="0.1.0",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    app.state.plane_provider = plane_provider
    app.state.authenticator = (
        authenticator_for(auth) if isinstance(auth, AuthSettings) else auth or NoAuthentication()
    )
    install_error_handlers(app)
    app.include_router(_build_router())
    return app
