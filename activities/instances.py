"""Activities that act on the instance itself through its runtime (Kubernetes or local).

Runtimes are synchronous (the Kubernetes client is), so calls go to a worker thread; every
activity is idempotent because the engine runs activities at least once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from durable_engine import ActivityContext
from toygres.models import DeploymentConfig, generate_password
from toygres.runtimes.base import DeployError, InstanceNotFound, InstanceRuntime, InstanceSpec

from .deps import ActivityDeps, instance_spec
from .errors import platform_error


def _stored_or_new_password(runtime: InstanceRuntime, spec: InstanceSpec) -> str:
    """The password stored for the instance (the API stores a user-supplied one), else a new one."""
    try:
        return runtime.read_password(spec)
    except InstanceNotFound:
        return generate_password()


async def deploy_postgres(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    config = DeploymentConfig.model_validate(raw)
    runtime, spec = deps.runtime_for(config), instance_spec(config)

    def deploy() -> dict[str, Any]:
        try:
            ref = runtime.deploy(spec, _stored_or_new_password(runtime, spec))
        except DeployError as exc:
            raise platform_error(exc) from None
        return {"password_ref": ref, "objects": runtime.describe(spec)}

    return await asyncio.to_thread(deploy)


async def get_instance_status(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> dict[str, Any]:
    config = DeploymentConfig.model_validate(raw)
    runtime, spec = deps.runtime_for(config), instance_spec(config)
    try:
        status = await asyncio.to_thread(runtime.status, spec)
    except DeployError as exc:
        raise platform_error(exc) from None
    endpoint = {"host": status.endpoint.host, "port": status.endpoint.port} if status.endpoint else None
    return {
        "exists": status.exists,
        "ready": status.ready,
        "phase": status.phase,
        "message": status.message,
        "endpoint": endpoint,
    }


async def delete_postgres(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    config = DeploymentConfig.model_validate(raw)
    runtime, spec = deps.runtime_for(config), instance_spec(config)
    try:
        removed = await asyncio.to_thread(runtime.delete, spec)
    except DeployError as exc:
        raise platform_error(exc) from None
    return {"removed": removed}


async def generate_connection_string(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> dict[str, Any]:
    """A connection string *without* the password; clients read the password from its store."""
    config = DeploymentConfig.model_validate(raw["config"])
    host, port = raw["endpoint"]["host"], int(raw["endpoint"]["port"])
    return {
        "host": host,
        "port": port,
        "connection_string": config.connection_uri(host, port),
        "password_hint": config.password_ref.describe(),
    }
