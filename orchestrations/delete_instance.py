"""DeleteInstance: metadata deleting → stop the monitor (and a running create) → delete → deleted."""

from __future__ import annotations

from typing import Any

from activities import DELETE_POSTGRES, GET_INSTANCE_RECORD, STOP_ORCHESTRATION, UPDATE_METADATA
from durable_engine import OrchestrationContext, TaskFailedError
from toygres.models import InstanceState

from .inputs import DeleteInstanceInput
from .steps import PLATFORM_RETRY, mark_failed, platform_retry

NAME = "DeleteInstance"
VERSION = "2.0.0"


async def delete_instance(ctx: OrchestrationContext, raw: dict[str, Any]) -> dict[str, Any]:
    params = DeleteInstanceInput.model_validate(raw)
    config = params.config.model_dump(mode="json")
    instance_id = str(params.config.instance_id)

    ctx.set_custom_status({"phase": "marking deleting"})
    await ctx.schedule_activity(
        UPDATE_METADATA,
        {"op": "state", "instance_id": instance_id, "state": InstanceState.DELETING.value},
        retry=PLATFORM_RETRY,
    )
    record = await ctx.schedule_activity(GET_INSTANCE_RECORD, instance_id, retry=PLATFORM_RETRY)
    stops = [params.create_operation_id, (record or {}).get("health_monitor_id")]
    ctx.set_custom_status({"phase": "stopping monitors"})
    for orchestration_id in [s for s in stops if s]:
        await ctx.schedule_activity(
            STOP_ORCHESTRATION,
            {"instance_id": orchestration_id, "reason": f"instance {instance_id} is being deleted"},
            retry=PLATFORM_RETRY,
        )

    ctx.set_custom_status({"phase": "deleting resources"})
    try:
        removed = await ctx.schedule_activity(
            DELETE_POSTGRES, config, retry=platform_retry(params.delete_attempts)
        )
    except TaskFailedError as exc:
        reason = f"deleting the resources failed ({exc}); delete the instance again to retry"
        await mark_failed(ctx, instance_id, reason)
        raise
    await ctx.schedule_activity(
        UPDATE_METADATA, {"op": "deleted", "instance_id": instance_id}, retry=PLATFORM_RETRY
    )
    ctx.set_custom_status({"phase": "deleted"})
    return {"instance_id": instance_id, "state": InstanceState.DELETED.value, "removed": removed["removed"]}
