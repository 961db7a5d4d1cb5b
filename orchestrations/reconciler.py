"""Reconciler: every running instance has a live health monitor (run by the timer sweep)."""

from __future__ import annotations

from typing import Any

from activities import FIND_INSTANCES_WITHOUT_MONITOR, UPDATE_METADATA
from durable_engine import OrchestrationContext
from toygres.models import DeploymentConfig

from .create_instance import PLATFORM_RETRY, monitor_instance_id
from .inputs import HealthMonitorInput, ReconcilerInput

NAME = "Reconciler"
VERSION = "1.0.0"


async def reconciler(ctx: OrchestrationContext, raw: dict[str, Any] | None) -> dict[str, Any]:
    params = ReconcilerInput.model_validate(raw or {})
    orphans = await ctx.schedule_activity(FIND_INSTANCES_WITHOUT_MONITOR, None, retry=PLATFORM_RETRY)
    restarted: list[dict[str, str]] = []
    for orphan in orphans:
        instance_id = orphan["instance_id"]
        config = DeploymentConfig.model_validate(orphan["config"])
        monitor_input = HealthMonitorInput(config=config, interval_seconds=params.health_interval_seconds)
        monitor_id = ctx.start_orchestration(
            "HealthMonitor",
            monitor_input.model_dump(mode="json"),
            instance_id=monitor_instance_id(ctx, instance_id),
        )
        await ctx.schedule_activity(
            UPDATE_METADATA,
            {"op": "health_monitor", "instance_id": instance_id, "monitor_id": monitor_id},
            retry=PLATFORM_RETRY,
        )
        restarted.append({"instance_id": instance_id, "monitor_id": monitor_id})
    return {"checked": len(orphans), "restarted": restarted}
