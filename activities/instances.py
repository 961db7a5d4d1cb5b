"""Activities that act on the instance itself through its runtime (Kubernetes or local).

Runtimes are synchronous (the Kubernetes client is), so calls go to a worker thread; every
activity is idempotent because the engine runs activities at least once.

Deploys and deletes run inside the instance's lock (``MetadataRepository.instance_lock``), and a
deploy checks there that the metadata still wants the instance to run: a deploy delivered late
(a stalled worker, a redelivery) after a delete began starts nothing, and a delete that begins
while a deploy is in flight waits for it and then removes what it made.
"""

from __future__ import annotations

import asyncio
from typing import Any

from durable_engine import ActivityContext
from toygres.models import DeploymentConfig, InstanceMetadata, InstanceState, generate_password
from toygres.runtimes.base import DeployError, InstanceNotFound, InstanceRuntime, InstanceSpec

from .deps import ActivityDeps, instance_spec, load_config
from .errors import InstanceNotDeployable, platform_error
from .results import ConnectionResult, DeleteResult, DeployResult, Endpoint, InstanceStatusResult

#: states in which the metadata wants the instance's resources to exist
DEPLOYABLE = frozenset({InstanceState.CREATING, InstanceState.RUNNING})


def ensure_deployable(current: InstanceMetadata | None, config: DeploymentConfig) -> None:
    """Raise unless the metadata (read under the instance lock) wants this instance to run."""
    if current is None:
        raise InstanceNotDeployable(
            f"instance {config.instance_id} is unknown to the metadata; not deploying"
        )
    if current.state not in DEPLOYABLE:
        raise InstanceNotDeployable(f"instance {config.instance_id} is {current.state.value}; not deploying")


def _stored_or_new_password(runtime: InstanceRuntime, spec: InstanceSpec) -> str:
    """The password stored for the instance (the API stores a user-supplied one), else a new one."""
    try:
        return runtime.read_password(spec)
    except InstanceNotFound:
        return generate_password()


def deploy_with(runtime: InstanceRuntime, spec: InstanceSpec) -> DeployResult:
    """Create or converge the instance (call inside its lock, after :func:`ensure_deployable`)."""
    try:
        ref = runtime.deploy(spec, _stored_or_new_password(runtime, spec))
    except DeployError as exc:
        raise platform_error(exc) from None
    return DeployResult(password_ref=ref, objects=runtime.describe(spec))


def converge_with(runtime: InstanceRuntime, spec: InstanceSpec) -> list[str]:
    """Deploy again, returning what had drifted (call inside the instance lock)."""
    try:
        return runtime.converge(spec, _stored_or_new_password(runtime, spec))
    except DeployError as exc:
        raise platform_error(exc) from None


async def deploy_postgres(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    config = load_config(raw)
    runtime, spec = deps.runtime_for(config), instance_spec(config)
    async with deps.metadata.instance_lock(config.instance_id) as current:
        ensure_deployable(current, config)
        result = await asyncio.to_thread(deploy_with, runtime, spec)
    return result.model_dump(mode="json")


def observe(runtime: InstanceRuntime, spec: InstanceSpec) -> InstanceStatusResult:
    try:
        status = runtime.status(spec)
    except DeployError as exc:
        raise platform_error(exc) from None
    endpoint = Endpoint(host=status.endpoint.host, port=status.endpoint.port) if status.endpoint else None
    return InstanceStatusResult(
        exists=status.exists,
        ready=status.ready,
        phase=status.phase,
        message=status.message,
        endpoint=endpoint,
    )


async def get_instance_status(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> dict[str, Any]:
    config = load_config(raw)
    result = await asyncio.to_thread(observe, deps.runtime_for(config), instance_spec(config))
    return result.model_dump(mode="json")


async def delete_postgres(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    config = load_config(raw)
    runtime, spec = deps.runtime_for(config), instance_spec(config)
    async with deps.metadata.instance_lock(config.instance_id):
        try:
            removed = await asyncio.to_thread(runtime.delete, spec)
        except DeployError as exc:
            raise platform_error(exc) from None
    return DeleteResult(removed=removed).model_dump(mode="json")


async def generate_connection_string(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> dict[str, Any]:
    """A connection string *without* the password; clients read the password from its store."""
    config = load_config(raw["config"])
    endpoint = Endpoint.model_validate(raw["endpoint"])
    return ConnectionResult(
        host=endpoint.host,
        port=endpoint.port,
        connection_string=config.connection_uri(endpoint.host, endpoint.port),
        password_hint=config.password_ref.describe(),
    ).model_dump(mode="json")
