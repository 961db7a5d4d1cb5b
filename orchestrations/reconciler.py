"""Reconciler: what runs is what the metadata says (run by the timer sweep and ``toygres serve``).

One pass:
1. every running instance has a live health monitor — its one monitor, under its deterministic
   id, restarted in place when it ended (concurrent passes start it once);
2. orphans — resources of instances that are deleted or unknown — are removed and reported.
"""

from __future__ import annotations

from typing import Any

from activities import (
    ENSURE_HEALTH_MONITOR,
    FIND_INSTANCES_WITHOUT_MONITOR,
    FIND_ORPHANS,
    REMOVE_ORPHAN,
    UPDATE_METADATA,
)
from activities.results import Orphan, OrphanRemoval
from durable_engine import OrchestrationContext, TaskFailedError
from toygres.models import DeploymentConfig, health_monitor_id, load_stored

from .inputs import ReconcilerInput
from .steps import HEALTH_MONITOR, PLATFORM_RETRY, monitor_input

NAME = "Reconciler"
VERSION = "2.0.0"


async def reconciler(ctx: OrchestrationContext, raw: dict[str, Any] | None) -> dict[str, Any]:
    params = load_stored(ReconcilerInput, raw or {})
    unmonitored = await ctx.schedule_activity(FIND_INSTANCES_WITHOUT_MONITOR, None, retry=PLATFORM_RETRY)
    restarted: list[dict[str, str]] = []
    for found in unmonitored:
        instance_id = found["instance_id"]
        config = load_stored(DeploymentConfig, found["config"])
        monitor_id = health_monitor_id(instance_id)
        await ctx.schedule_activity(
            ENSURE_HEALTH_MONITOR,
            {
                "monitor_id": monitor_id,
                "name": HEALTH_MONITOR,
                "input": monitor_input(config, params.health_interval_seconds),
            },
            retry=PLATFORM_RETRY,
        )
        if found.get("previous_monitor_id") != monitor_id:  # a row of an older version
            await ctx.schedule_activity(
                UPDATE_METADATA,
                {"op": "health_monitor", "instance_id": instance_id, "monitor_id": monitor_id},
                retry=PLATFORM_RETRY,
            )
        restarted.append({"instance_id": instance_id, "monitor_id": monitor_id})
    removed, errors = await remove_orphans(ctx)
    return {"checked": len(unmonitored), "restarted": restarted, "orphans_removed": removed, "errors": errors}


async def remove_orphans(ctx: OrchestrationContext) -> tuple[list[dict[str, Any]], list[str]]:
    """Remove what runs for deleted or unknown instances; report what went, and what would not."""
    found = await ctx.schedule_activity(FIND_ORPHANS, None, retry=PLATFORM_RETRY)
    removed: list[dict[str, Any]] = []
    errors: list[str] = []
    for orphan in (Orphan.model_validate(item) for item in found):
        try:
            outcome = OrphanRemoval.model_validate(
                await ctx.schedule_activity(
                    REMOVE_ORPHAN, orphan.model_dump(mode="json"), retry=PLATFORM_RETRY
                )
            )
        except TaskFailedError as exc:  # one stubborn orphan must not stop the pass
            errors.append(f"removing orphan {orphan.name} ({orphan.instance_id}) failed: {exc}")
            continue
        if outcome.removed:
            ctx.logger.warning(
                "removed orphan %s of instance %s: %s", orphan.name, orphan.instance_id, orphan.reason
            )
            removed.append(orphan.model_dump(mode="json"))
    return removed, errors
