"""Activities of certificate rotation: find server certificates close to expiry, and renew one.

They return fingerprints and dates only: certificates' keys and the CA key stay in their Secrets,
so nothing secret reaches the durable history.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from durable_engine import ActivityContext
from toygres.runtimes.base import DeployError
from toygres.runtimes.capabilities import TlsRuntime

from .deps import ActivityDeps, instance_spec, load_config
from .errors import PermanentPlatformError, platform_error
from .instances import ensure_deployable


async def find_certificates_due(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> list[dict[str, Any]]:
    """Running TLS instances whose certificate is missing or expires before ``now + renew_before_days``.

    ``now`` comes from the orchestration (its deterministic clock), so the decision replays and can
    be tested in virtual time.
    """
    deadline = datetime.fromisoformat(raw["now"]) + timedelta(days=float(raw["renew_before_days"]))
    due: list[dict[str, Any]] = []
    for instance in await deps.metadata.list_running_instances():
        config = instance.deployment_config
        if config is None or config.tls is None:
            continue
        runtime = deps.runtimes.get(config.runtime)
        if not isinstance(runtime, TlsRuntime):
            continue
        try:
            info = await asyncio.to_thread(runtime.certificate_status, instance_spec(config))
        except DeployError as exc:
            ctx.logger.warning("cannot read the certificate of instance %s: %s", instance.id, exc)
            continue
        if info is None or info.not_after <= deadline:
            due.append(
                {
                    "instance_id": str(instance.id),
                    "config": config.model_dump(mode="json"),
                    "sha256": info.sha256 if info else "",
                    "not_after": info.not_after.isoformat() if info else None,
                }
            )
    return due


async def rotate_server_certificate(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> dict[str, Any]:
    """Issue a new certificate unless the one named by ``replaces_sha256`` was already replaced.

    Runs inside the instance's lock, and only while the metadata wants the instance to run: a
    rotation racing a delete must not re-apply the StatefulSet the delete removed.
    """
    config = load_config(raw["config"])
    runtime = deps.runtime_for(config)
    if not isinstance(runtime, TlsRuntime) or config.tls is None:
        raise PermanentPlatformError(f"instance {config.instance_id} does not serve TLS")
    async with deps.metadata.instance_lock(config.instance_id) as current:
        ensure_deployable(current, config)
        try:
            info = await asyncio.to_thread(
                runtime.rotate_certificate, instance_spec(config), raw["replaces_sha256"]
            )
        except DeployError as exc:
            raise platform_error(exc) from None
    return {"sha256": info.sha256, "not_after": info.not_after.isoformat()}
