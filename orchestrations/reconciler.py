"""Reconciler: what runs is what the metadata says (run by the timer sweep and ``toygres serve``).

One pass:
1. every running instance is deployed again (``ConvergeInstance``): a local server a host
   restart stopped is started (and its new port recorded), Kubernetes objects that drifted from
   the spec are applied again;
2. every running instance has a live health monitor — its one monitor, under its deterministic
   id, restarted in place when it ended (concurrent passes start it once);
3. every ``creating``/``deleting`` row whose operation is missing or ended is ended: a create
   is marked failed with the reason (its name is released), a delete is resumed;
4. orphans — resources of instances that are deleted or unknown — are removed and reported;
5. retention: old health checks, and instances deleted long ago with their finished operations,
   are pruned (bounded storage).
"""

from __future__ import annotations

from typing import Any

from activities import (
    CONVERGE_INSTANCE,
    ENSURE_HEALTH_MONITOR,
    FIND_ORPHANS,
    FIND_STUCK_INSTANCES,
    LIST_RUNNING_INSTANCES,
    PRUNE_METADATA,
    REMOVE_ORPHAN,
    UPDATE_METADATA,
)
from activities.results import (
    ConvergeResult,
    Orphan,
    OrphanRemoval,
    PruneResult,
    RunningInstance,
    StuckInstance,
)
from durable_engine import OrchestrationContext, TaskFailedError
from toygres.models import InstanceState, health_monitor_id, load_stored

from . import delete_instance
from .inputs import DeleteInstanceInput, ReconcilerInput
from .steps import HEALTH_MONITOR, PLATFORM_RETRY, monitor_input, set_state

NAME = "Reconciler"
VERSION = "2.0.0"


async def reconciler(ctx: OrchestrationContext, raw: dict[str, Any] | None) -> dict[str, Any]:
    params = load_stored(ReconcilerInput, raw or {})
    running = [
        load_stored(RunningInstance, item)
        for item in await ctx.schedule_activity(LIST_RUNNING_INSTANCES, None, retry=PLATFORM_RETRY)
    ]
    converged, errors = await converge(ctx, running)
    restarted = await restart_monitors(ctx, params, [r for r in running if not r.monitor_live])
    ended, stuck_errors = await end_stuck_states(ctx, params)
    removed, orphan_errors = await remove_orphans(ctx)
    pruned = await ctx.schedule_activity(
        PRUNE_METADATA,
        {
            "health_check_retention_seconds": params.health_check_retention_seconds,
            "deleted_retention_seconds": params.deleted_retention_seconds,
        },
        retry=PLATFORM_RETRY,
        result_type=PruneResult,
    )
    return {
        "checked": len(running),
        "pruned": pruned.model_dump(mode="json"),
        "converged": converged,
        "restarted": restarted,
        "ended": ended,
        "orphans_removed": removed,
        "errors": errors + stuck_errors + orphan_errors,
    }


async def converge(
    ctx: OrchestrationContext, running: list[RunningInstance]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Deploy every running instance again: stopped local servers start, drifted objects return."""
    converged: list[dict[str, Any]] = []
    errors: list[str] = []
    for instance in running:
        try:
            result = await ctx.schedule_activity(
                CONVERGE_INSTANCE,
                instance.config.model_dump(mode="json"),
                retry=PLATFORM_RETRY,
                result_type=ConvergeResult,
            )
        except TaskFailedError as exc:  # one broken instance must not stop the pass
            errors.append(f"converging instance {instance.instance_id} failed: {exc}")
            continue
        converged.append(result.model_dump(mode="json"))
    return converged, errors


async def restart_monitors(
    ctx: OrchestrationContext, params: ReconcilerInput, unmonitored: list[RunningInstance]
) -> list[dict[str, str]]:
    restarted: list[dict[str, str]] = []
    for instance in unmonitored:
        monitor_id = health_monitor_id(instance.instance_id)
        await ctx.schedule_activity(
            ENSURE_HEALTH_MONITOR,
            {
                "monitor_id": monitor_id,
                "name": HEALTH_MONITOR,
                "input": monitor_input(instance.config, params.health_interval_seconds),
            },
            retry=PLATFORM_RETRY,
        )
        if instance.monitor_id != monitor_id:  # a row of an older version
            await ctx.schedule_activity(
                UPDATE_METADATA,
                {"op": "health_monitor", "instance_id": instance.instance_id, "monitor_id": monitor_id},
                retry=PLATFORM_RETRY,
            )
        restarted.append({"instance_id": instance.instance_id, "monitor_id": monitor_id})
    return restarted


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
    found = await ctx.schedule_activity(FIND_ORPHANS, None, retry=PLATFORM_RETRY, result_type=list[Orphan])
    removed: list[dict[str, Any]] = []
    errors: list[str] = []
    for orphan in found:
        try:
            outcome = await ctx.schedule_activity(
                REMOVE_ORPHAN, orphan.model_dump(mode="json"), retry=PLATFORM_RETRY, result_type=OrphanRemoval
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
