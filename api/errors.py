"""One JSON error shape for every failure of the HTTP API, and the handlers that produce it.

Every error body is ``{"error": {"code", "message", "fields": [{"field", "message"}]}}`` so that
clients (the CLI, scripts) need a single parser. Validation errors are rebuilt from the error
list *without* the rejected input: FastAPI's default 422 body echoes what was submitted, which
for a rejected password would be the password.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.service import InstanceGone, OperationNotFound, TlsNotServed
from toygres.deployment_planner import PlacementError
from toygres.metadata import DuplicateInstanceName, InstanceNotFound, InvalidCursor, InvalidStateTransition
from toygres.models import validation_errors
from toygres.runtimes.base import DeployError

log = logging.getLogger("toygres.api")

# where a parameter came from is noise for a caller: "body.name" -> "name", "query.limit" -> "limit"
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = []


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer (documented in the OpenAPI schema)."""

    error: ErrorDetail


class ApiError(Exception):
    """Raised by route code to answer with a given status and error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Sequence[Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = [dict(f) for f in fields]
        self.headers = dict(headers or {})


def error_body(code: str, message: str, fields: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": [dict(f) for f in fields]}}


def error_response(
    status: int,
    code: str,
    message: str,
    fields: Sequence[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, fields), status_code=status, headers=dict(headers or {}))


def request_validation_fields(errors: Sequence[Any]) -> list[dict[str, str]]:
    """``{"field", "message"}`` pairs from FastAPI's error list; the ``input`` entries are dropped."""
    out: list[dict[str, str]] = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        if len(loc) > 1 and loc[0] in _LOCATIONS:
            loc = loc[1:]
        out.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", "is not valid"))})
    return out


def _summary(fields: Sequence[Mapping[str, str]]) -> str:
    if not fields:
        return "the request is not valid"
    first = fields[0]
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return f"the request is not valid: {first['field']}: {first['message']}{more}"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    """Map domain exceptions and framework errors to the common error body."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = request_validation_fields(exc.errors())
        return error_response(422, "validation_error", _summary(fields), fields)

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        fields = validation_errors(exc)
        return error_response(422, "validation_error", _summary(fields), fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(DuplicateInstanceName)
    async def _duplicate(_: Request, exc: DuplicateInstanceName) -> JSONResponse:
        return error_response(
            409,
            "duplicate_name",
            f"{exc}; choose another name or delete the existing instance first",
            [{"field": "name", "message": "an instance with this name already exists"}],
        )

    @app.exception_handler(InstanceNotFound)
    async def _instance_not_found(_: Request, exc: InstanceNotFound) -> JSONResponse:
        return error_response(404, "instance_not_found", str(exc))

    @app.exception_handler(InstanceGone)
    async def _instance_gone(_: Request, exc: InstanceGone) -> JSONResponse:
        return error_response(410, "instance_deleted", str(exc))

    @app.exception_handler(OperationNotFound)
    async def _operation_not_found(_: Request, exc: OperationNotFound) -> JSONResponse:
        return error_response(404, "operation_not_found", str(exc))

    @app.exception_handler(TlsNotServed)
    async def _tls_not_served(_: Request, exc: TlsNotServed) -> JSONResponse:
        return error_response(404, "tls_not_served", str(exc))

    @app.exception_handler(DeployError)
    async def _runtime(_: Request, exc: DeployError) -> JSONResponse:
        # runtime messages name objects and statuses, never secrets
        return error_response(503, "runtime_unavailable", f"the instance runtime did not answer: {exc}")

    @app.exception_handler(PlacementError)
    async def _placement(_: Request, exc: PlacementError) -> JSONResponse:
        return error_response(422, exc.code, exc.message, [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(InvalidCursor)
    async def _cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
        return error_response(422, "validation_error", str(exc), [{"field": "cursor", "message": str(exc)}])

    @app.exception_handler(InvalidStateTransition)
    async def _transition(_: Request, exc: InvalidStateTransition) -> JSONResponse:
        return error_response(409, "invalid_state", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # exception text stays in the server log: it may quote internals a caller should not see
        log.error("unhandled %s in %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error; the server log has the details")
