"""Reconciler: what runs is what the metadata says (run by the timer sweep and ``toygres serve``).

One pass:
1. every running instance has a live health monitor — its one monitor, under its deterministic
   id, restarted in place when it ended (concurrent passes start it once);
2. every ``creating``/``deleting`` row whose operation is missing or ended is ended: a create
   is marked failed with the reason (its name is released), a delete is resumed;
3. orphans — resources of instances that are deleted or unknown — are removed and reported.
"""

from __future__ import annotations

from typing import Any

from activities import (
    ENSURE_HEALTH_MONITOR,
    FIND_INSTANCES_WITHOUT_MONITOR,
    FIND_ORPHANS,
    FIND_STUCK_INSTANCES,
    REMOVE_ORPHAN,
    UPDATE_METADATA,
)
from activities.results import Orphan, OrphanRemoval, StuckInstance
from durable_engine import OrchestrationContext, TaskFailedError
from toygres.models import DeploymentConfig, InstanceState, health_monitor_id, load_stored

from . import delete_instance
from .inputs import DeleteInstanceInput, ReconcilerInput
from .steps import HEALTH_MONITOR, PLATFORM_RETRY, monitor_input, set_state

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
    ended, errors = await end_stuck_states(ctx, params)
    removed, orphan_errors = await remove_orphans(ctx)
    return {
        "checked": len(unmonitored),
        "restarted": restarted,
        "ended": ended,
        "orphans_removed": removed,
        "errors": errors + orphan_errors,
    }


async def end_stuck_states(
    ctx: OrchestrationContext, params: ReconcilerInput
) -> tuple[list[dict[str, Any]], list[str]]:
    found = await ctx.schedule_activity(
        FIND_STUCK_INSTANCES, {"stuck_after_seconds": params.stuck_after_seconds}, retry=PLATFORM_RETRY
    )
    ended: list[dict[str, Any]] = []
    errors: list[str] = []
    for stuck in (load_stored(StuckInstance, item) for item in found):
        if stuck.action == "fail":
            try:  # only from the state it was found in: a create that just finished stays running
                await set_state(
                    ctx,
                    stuck.instance_id,
                    InstanceState.FAILED,
                    reason=stuck.reason,
                    expected_from=[stuck.state],
                )
            except TaskFailedError as exc:
                errors.append(f"ending {stuck.state.value} instance {stuck.instance_id} failed: {exc}")
                continue
        else:
            assert stuck.config is not None and stuck.operation_id is not None
            resumed = DeleteInstanceInput(
                config=stuck.config,
                create_operation_id=stuck.create_operation_id,
                delete_attempts=params.delete_attempts,
            )
            ctx.start_orchestration(
                delete_instance.NAME, resumed.model_dump(mode="json"), instance_id=stuck.operation_id
            )
            await ctx.schedule_activity(
                UPDATE_METADATA,
                {
                    "op": "delete_operation",
                    "instance_id": stuck.instance_id,
                    "operation_id": stuck.operation_id,
                },
                retry=PLATFORM_RETRY,
            )
        ctx.logger.warning("instance %s was stuck %s: %s", stuck.instance_id, stuck.state.value, stuck.reason)
        ended.append(stuck.model_dump(mode="json", include={"instance_id", "state", "action", "reason"}))
    return ended, errors


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
