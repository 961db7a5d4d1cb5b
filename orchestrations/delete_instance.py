"""DeleteInstance: deleting → stop the create and the monitor → wait for the create → delete → deleted.

A create may still be deploying when the delete begins. The delete marks the instance
``deleting`` first, so no deploy that starts afterwards does anything (deploys check the state
inside the instance lock); it stops the create, waits for it to settle, and then removes the
resources inside the same lock, so a deploy still in flight finishes before the removal starts
and whatever it made is removed too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities import (
    DELETE_POSTGRES,
    GET_INSTANCE_RECORD,
    GET_OPERATION_STATUS,
    STOP_ORCHESTRATION,
    UPDATE_METADATA,
)
from activities.results import DeleteResult, OperationStatusResult
from durable_engine import OrchestrationCancelledError, OrchestrationContext
from toygres.models import InstanceMetadata, InstanceState, health_monitor_id, load_stored

from .inputs import DeleteInstanceInput
from .steps import PLATFORM_RETRY, failure_reason, mark_deleted, mark_failed, platform_retry, set_state

NAME = "DeleteInstance"
VERSION = "2.0.0"


async def delete_instance(ctx: OrchestrationContext, raw: dict[str, Any]) -> dict[str, Any]:
    params = load_stored(DeleteInstanceInput, raw)
    instance_id = str(params.config.instance_id)

    try:  # any step that fails leaves the instance failed (with the reason), not deleting forever
        removed = await _delete(ctx, params, instance_id)
    except OrchestrationCancelledError as cancelled:
        # an operator stopped it: say so on the row rather than leave it deleting (the reconciler
        # would otherwise resume the delete the operator stopped)
        reason = f"the delete was cancelled ({cancelled.reason}); delete the instance again to retry"
        await _record_failure(ctx, instance_id, reason)
        raise
    except Exception as exc:
        reason = f"deleting the instance failed ({failure_reason(exc)}); delete the instance again to retry"
        await _record_failure(ctx, instance_id, reason)
        raise
    await mark_deleted(ctx, instance_id)
    ctx.set_custom_status({"phase": "deleted"})
    return {"instance_id": instance_id, "state": InstanceState.DELETED.value, "removed": removed.removed}


async def _record_failure(ctx: OrchestrationContext, instance_id: str, reason: str) -> None:
    ctx.set_custom_status({"phase": "failed", "reason": reason})
    await mark_failed(ctx, instance_id, reason, expected_from=[InstanceState.DELETING])


async def _delete(ctx: OrchestrationContext, params: DeleteInstanceInput, instance_id: str) -> DeleteResult:
    ctx.set_custom_status({"phase": "marking deleting"})
    # the operation records itself: whoever started it may have died before recording it
    await ctx.schedule_activity(
        UPDATE_METADATA,
        {"op": "delete_operation", "instance_id": instance_id, "operation_id": ctx.instance_id},
        retry=PLATFORM_RETRY,
    )
    await set_state(ctx, instance_id, InstanceState.DELETING)
    raw_record = await ctx.schedule_activity(GET_INSTANCE_RECORD, instance_id, retry=PLATFORM_RETRY)
    record = load_stored(InstanceMetadata, raw_record) if raw_record is not None else None
    stops = [
        params.create_operation_id,
        record.health_monitor_id if record else None,
        health_monitor_id(instance_id),
    ]
    ctx.set_custom_status({"phase": "stopping the create and the health monitor"})
    for orchestration_id in dict.fromkeys(s for s in stops if s):
        await ctx.schedule_activity(
            STOP_ORCHESTRATION,
            {"instance_id": orchestration_id, "reason": f"instance {instance_id} is being deleted"},
            retry=PLATFORM_RETRY,
        )
    if params.create_operation_id:
        ctx.set_custom_status({"phase": "waiting for the create to stop"})
        await wait_until_settled(ctx, params.create_operation_id, params)

    ctx.set_custom_status({"phase": "deleting resources"})
    config = params.config.model_dump(mode="json")
    return await ctx.schedule_activity(
        DELETE_POSTGRES, config, retry=platform_retry(params.delete_attempts), result_type=DeleteResult
    )


async def wait_until_settled(
    ctx: OrchestrationContext, operation_id: str, params: DeleteInstanceInput
) -> bool:
    """Wait (durable timers) until the orchestration has ended or does not exist; False if it never did.

    Bounded: a create that does not settle in time is deleted from under anyway, because the
    instance lock keeps its deploys from starting anything once the state is ``deleting``.
    """
    for _ in range(params.settle_polls + 1):
        status = await ctx.schedule_activity(
            GET_OPERATION_STATUS, operation_id, retry=PLATFORM_RETRY, result_type=OperationStatusResult
        )
        if not status.exists or status.terminal:
            return True
        await ctx.schedule_timer(timedelta(seconds=params.settle_poll_seconds))
    return False
