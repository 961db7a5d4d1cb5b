"""Version 1.0.0 of every Toygres orchestration, frozen.

Instances started by 1.0.0 may still be running (a monitor, a create waiting for readiness) when
a newer control plane takes over; they replay their history against this code, so it must keep
scheduling exactly what it scheduled when they started. Do not edit it: change the current
version's module and give it a new version instead. ``tests/toygres/test_history_replay.py``
replays stored 1.0.0 histories against this module.

The only changes from the original are names (one module holds all four) and that inputs are
read tolerantly (fields added by later versions are ignored); nothing that changes what runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities import (
    DELETE_POSTGRES,
    DEPLOY_POSTGRES,
    FIND_INSTANCES_WITHOUT_MONITOR,
    GENERATE_CONNECTION_STRING,
    GET_INSTANCE_RECORD,
    GET_INSTANCE_STATUS,
    HEALTH_CHECK,
    STOP_ORCHESTRATION,
    UPDATE_METADATA,
)
from activities.errors import NON_RETRYABLE
from durable_engine import OrchestrationContext, RetryPolicy, TaskFailedError
from toygres.models import DeploymentConfig, InstanceState

from .inputs import CreateInstanceInput, DeleteInstanceInput, HealthMonitorInput, ReconcilerInput

VERSION = "1.0.0"
HEALTH_MONITOR = "HealthMonitor"


class InstanceNotReadyError(Exception):
    """The instance did not become ready before the readiness deadline."""


def _platform_retry(attempts: int) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=attempts,
        initial_delay=timedelta(seconds=2),
        max_delay=timedelta(seconds=60),
        non_retryable_error_types=NON_RETRYABLE,
    )


_PLATFORM_RETRY = _platform_retry(5)


async def _mark_failed(ctx: OrchestrationContext, instance_id: str, reason: str) -> None:
    await ctx.schedule_activity(
        UPDATE_METADATA,
        {"op": "state", "instance_id": instance_id, "state": InstanceState.FAILED.value, "reason": reason},
        retry=_PLATFORM_RETRY,
    )


async def _start_health_monitor(
    ctx: OrchestrationContext, config: DeploymentConfig, interval_seconds: float
) -> str:
    instance_id = str(config.instance_id)
    monitor_input = HealthMonitorInput(config=config, interval_seconds=interval_seconds)
    monitor_id = ctx.start_orchestration(
        HEALTH_MONITOR,
        monitor_input.model_dump(mode="json"),
        instance_id=f"health-{instance_id}-{ctx.new_uuid()[:8]}",
    )
    await ctx.schedule_activity(
        UPDATE_METADATA,
        {"op": "health_monitor", "instance_id": instance_id, "monitor_id": monitor_id},
        retry=_PLATFORM_RETRY,
    )
    return monitor_id


async def create_instance(ctx: OrchestrationContext, raw: dict[str, Any]) -> dict[str, Any]:
    params = CreateInstanceInput.model_validate(raw, extra="ignore")
    config = params.config.model_dump(mode="json")
    instance_id = str(params.config.instance_id)
    deploy_retry = _platform_retry(params.deploy_attempts)
    try:
        ctx.set_custom_status({"phase": "deploying"})
        await ctx.schedule_activity(DEPLOY_POSTGRES, config, retry=deploy_retry)

        ctx.set_custom_status({"phase": "waiting for readiness"})
        deadline = ctx.utc_now() + timedelta(seconds=params.readiness_deadline_seconds)
        while True:
            status = await ctx.schedule_activity(GET_INSTANCE_STATUS, config, retry=_PLATFORM_RETRY)
            if status["ready"] and status["endpoint"]:
                break
            if ctx.utc_now() >= deadline:
                raise InstanceNotReadyError(
                    f"the instance did not become ready within {params.readiness_deadline_seconds:g} s "
                    f"(last phase {status['phase']}: {status['message']})"
                )
            await ctx.schedule_timer(timedelta(seconds=params.readiness_poll_seconds))

        ctx.set_custom_status({"phase": "recording connection"})
        conn = await ctx.schedule_activity(
            GENERATE_CONNECTION_STRING, {"config": config, "endpoint": status["endpoint"]}
        )
        await ctx.schedule_activity(
            UPDATE_METADATA,
            {"op": "connection", "instance_id": instance_id, "host": conn["host"], "port": conn["port"]},
            retry=_PLATFORM_RETRY,
        )
        await ctx.schedule_activity(
            UPDATE_METADATA,
            {"op": "state", "instance_id": instance_id, "state": InstanceState.RUNNING.value},
            retry=_PLATFORM_RETRY,
        )
    except (TaskFailedError, InstanceNotReadyError) as exc:
        reason = str(exc)
        ctx.set_custom_status({"phase": "cleaning up after failure", "reason": reason})
        try:
            await ctx.schedule_activity(DELETE_POSTGRES, config, retry=deploy_retry)
        except TaskFailedError as cleanup:
            reason += f"; cleaning up failed too ({cleanup}): delete the instance to retry the cleanup"
        await _mark_failed(ctx, instance_id, reason)
        raise

    monitor_id = await _start_health_monitor(ctx, params.config, params.health_interval_seconds)
    ctx.set_custom_status({"phase": "running"})
    return {
        "instance_id": instance_id,
        "state": InstanceState.RUNNING.value,
        "connection_string": conn["connection_string"],
        "password_hint": conn["password_hint"],
        "health_monitor_id": monitor_id,
    }


async def delete_instance(ctx: OrchestrationContext, raw: dict[str, Any]) -> dict[str, Any]:
    params = DeleteInstanceInput.model_validate(raw, extra="ignore")
    config = params.config.model_dump(mode="json")
    instance_id = str(params.config.instance_id)

    ctx.set_custom_status({"phase": "marking deleting"})
    await ctx.schedule_activity(
        UPDATE_METADATA,
        {"op": "state", "instance_id": instance_id, "state": InstanceState.DELETING.value},
        retry=_PLATFORM_RETRY,
    )
    record = await ctx.schedule_activity(GET_INSTANCE_RECORD, instance_id, retry=_PLATFORM_RETRY)
    stops = [params.create_operation_id, (record or {}).get("health_monitor_id")]
    ctx.set_custom_status({"phase": "stopping monitors"})
    for orchestration_id in [s for s in stops if s]:
        await ctx.schedule_activity(
            STOP_ORCHESTRATION,
            {"instance_id": orchestration_id, "reason": f"instance {instance_id} is being deleted"},
            retry=_PLATFORM_RETRY,
        )

    ctx.set_custom_status({"phase": "deleting resources"})
    try:
        removed = await ctx.schedule_activity(
            DELETE_POSTGRES, config, retry=_platform_retry(params.delete_attempts)
        )
    except TaskFailedError as exc:
        reason = f"deleting the resources failed ({exc}); delete the instance again to retry"
        await _mark_failed(ctx, instance_id, reason)
        raise
    await ctx.schedule_activity(
        UPDATE_METADATA, {"op": "deleted", "instance_id": instance_id}, retry=_PLATFORM_RETRY
    )
    ctx.set_custom_status({"phase": "deleted"})
    return {"instance_id": instance_id, "state": InstanceState.DELETED.value, "removed": removed["removed"]}


async def health_monitor(ctx: OrchestrationContext, raw: dict[str, Any]) -> Any:
    params = HealthMonitorInput.model_validate(raw, extra="ignore")
    instance_id = str(params.config.instance_id)
    record = await ctx.schedule_activity(GET_INSTANCE_RECORD, instance_id, retry=_PLATFORM_RETRY)
    if record is None or record["state"] != InstanceState.RUNNING.value:
        state = record["state"] if record else "missing"
        return {"stopped": f"instance is {state}", "checks": params.checks}
    result = await ctx.schedule_activity(HEALTH_CHECK, params.config.model_dump(mode="json"))
    await ctx.schedule_activity(
        UPDATE_METADATA, {"op": "health", "instance_id": instance_id, "result": result}, retry=_PLATFORM_RETRY
    )
    ctx.set_custom_status({"last_status": result["status"], "checks": params.checks + 1})
    await ctx.schedule_timer(timedelta(seconds=params.interval_seconds))
    next_input = params.model_copy(update={"checks": params.checks + 1})
    return ctx.continue_as_new(next_input.model_dump(mode="json"))


async def reconciler(ctx: OrchestrationContext, raw: dict[str, Any] | None) -> dict[str, Any]:
    params = ReconcilerInput.model_validate(raw or {}, extra="ignore")
    orphans = await ctx.schedule_activity(FIND_INSTANCES_WITHOUT_MONITOR, None, retry=_PLATFORM_RETRY)
    restarted: list[dict[str, str]] = []
    for orphan in orphans:
        instance_id = orphan["instance_id"]
        config = DeploymentConfig.model_validate(orphan["config"], extra="ignore")
        monitor_id = await _start_health_monitor(ctx, config, params.health_interval_seconds)
        restarted.append({"instance_id": instance_id, "monitor_id": monitor_id})
    return {"checked": len(orphans), "restarted": restarted}
