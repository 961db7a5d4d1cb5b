"""Reconciler: every running instance has a live health monitor (run by the timer sweep)."""

from __future__ import annotations

from typing import Any

from activities import FIND_INSTANCES_WITHOUT_MONITOR
from durable_engine import OrchestrationContext
from toygres.models import DeploymentConfig

from .inputs import ReconcilerInput
from .steps import PLATFORM_RETRY, start_health_monitor

NAME = "Reconciler"
VERSION = "2.0.0"


async def reconciler(ctx: OrchestrationContext, raw: dict[str, Any] | None) -> dict[str, Any]:
    params = ReconcilerInput.model_validate(raw or {})
    orphans = await ctx.schedule_activity(FIND_INSTANCES_WITHOUT_MONITOR, None, retry=PLATFORM_RETRY)
    restarted: list[dict[str, str]] = []
    for orphan in orphans:
        instance_id = orphan["instance_id"]
        config = DeploymentConfig.model_validate(orphan["config"])
        monitor_id = await start_health_monitor(ctx, config, params.health_interval_seconds)
        restarted.append({"instance_id": instance_id, "monitor_id": monitor_id})
    return {"checked": len(orphans), "restarted": restarted}
