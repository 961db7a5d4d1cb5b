"""Activities of image rollouts: which instances run an image other than the catalog's, recording
the new deployment, and whether a restarted pod runs the new revision."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from durable_engine import ActivityContext
from toygres.runtimes.base import DeployError
from toygres.runtimes.capabilities import RollingRuntime

from .deps import ActivityDeps, instance_spec, load_config
from .errors import PermanentPlatformError, platform_error


async def plan_image_rollout(deps: ActivityDeps, ctx: ActivityContext, _: Any = None) -> dict[str, Any]:
    """Running Kubernetes instances whose image differs from the catalog's, with their new config.

    Instances of a version the catalog no longer lists are reported as ``skipped``: dropping a
    version from the catalog stops new instances of it, it does not touch running ones.
    """
    catalog = deps.image_catalog
    if catalog is None:
        raise PermanentPlatformError("this control plane has no image catalog")
    changes: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for instance in await deps.metadata.list_running_instances():
        config = instance.deployment_config
        runtime = deps.runtimes.get(config.runtime) if config else None
        if config is None or not isinstance(runtime, RollingRuntime):
            continue
        if config.postgres_version not in catalog.images:
            skipped.append(
                {"instance_id": str(instance.id), "reason": f"no catalog entry for {config.postgres_version}"}
            )
            continue
        image = catalog.reference(config.postgres_version, deps.image_repository)
        if image != config.image:
            new = config.model_copy(update={"image": image})
            changes.append(
                {"instance_id": str(instance.id), "from": config.image, "config": new.model_dump(mode="json")}
            )
    return {"changes": changes, "skipped": skipped}


async def set_deployment_config(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> dict[str, Any]:
    """Record the new config of a running instance (intent first); ``updated`` False if it is not running."""
    config = load_config(raw["config"])
    updated = await deps.metadata.set_deployment_config(UUID(raw["instance_id"]), config)
    return {"updated": updated is not None}


async def get_rollout_status(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    config = load_config(raw)
    runtime = deps.runtime_for(config)
    if not isinstance(runtime, RollingRuntime):
        raise PermanentPlatformError(f"the {config.runtime.value} runtime has no rollouts")
    try:
        status = await asyncio.to_thread(runtime.rollout_status, instance_spec(config))
    except DeployError as exc:
        raise platform_error(exc) from None
    return {"complete": status.complete, "message": status.message}
