"""CreateInstance: deploy → wait ready → connection string → running → start its health monitor.

If the deploy keeps failing or the instance never becomes ready before the deadline, the
orchestration removes what it created, records the instance as failed with the reason, and
ends Failed — so a failed create leaves no resources behind.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities import (
    DELETE_POSTGRES,
    DEPLOY_POSTGRES,
    GENERATE_CONNECTION_STRING,
    GET_INSTANCE_STATUS,
    UPDATE_METADATA,
)
from activities.errors import NON_RETRYABLE
from durable_engine import OrchestrationContext, RetryPolicy, TaskFailedError
from toygres.models import InstanceState

from .inputs import CreateInstanceInput, HealthMonitorInput

NAME = "CreateInstance"
VERSION = "1.0.0"

#: Metadata and status reads are cheap and idempotent: retry them patiently.
PLATFORM_RETRY = RetryPolicy(
    max_attempts=5,
    initial_delay=timedelta(seconds=2),
    max_delay=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE,
)


def platform_retry(attempts: int) -> RetryPolicy:
    """Retries for calls to the platform (Kubernetes API, local processes) that may fail transiently."""
    return RetryPolicy(
        max_attempts=attempts,
        initial_delay=timedelta(seconds=2),
        max_delay=timedelta(seconds=60),
        non_retryable_error_types=NON_RETRYABLE,
    )


class InstanceNotReadyError(Exception):
    """The instance did not become ready before the readiness deadline."""


def monitor_instance_id(ctx: OrchestrationContext, instance_id: str) -> str:
    """A fresh id per monitor generation, so a restarted monitor never collides with a dead one."""
    return f"health-{instance_id}-{ctx.new_uuid()[:8]}"


async def create_instance(ctx: OrchestrationContext, raw: dict[str, Any]) -> dict[str, Any]:
    params = CreateInstanceInput.model_validate(raw)
    config = params.config.model_dump(mode="json")
    instance_id = str(params.config.instance_id)
    deploy_retry = platform_retry(params.deploy_attempts)
    try:
        ctx.set_custom_status({"phase": "deploying"})
        await ctx.schedule_activity(DEPLOY_POSTGRES, config, retry=deploy_retry)

        ctx.set_custom_status({"phase": "waiting for readiness"})
        deadline = ctx.utc_now() + timedelta(seconds=params.readiness_deadline_seconds)
        while True:
            status = await ctx.schedule_activity(GET_INSTANCE_STATUS, config, retry=PLATFORM_RETRY)
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
            retry=PLATFORM_RETRY,
        )
        await ctx.schedule_activity(
            UPDATE_METADATA,
            {"op": "state", "instance_id": instance_id, "state": InstanceState.RUNNING.value},
            retry=PLATFORM_RETRY,
        )
    except (TaskFailedError, InstanceNotReadyError) as exc:
        reason = str(exc)
        ctx.set_custom_status({"phase": "cleaning up after failure", "reason": reason})
        try:
            await ctx.schedule_activity(DELETE_POSTGRES, config, retry=deploy_retry)
        except TaskFailedError as cleanup:
            # the instance is failed either way; say that resources may remain and how to retry
            reason += f"; cleaning up failed too ({cleanup}): delete the instance to retry the cleanup"
        await ctx.schedule_activity(
            UPDATE_METADATA,
            {
                "op": "state",
                "instance_id": instance_id,
                "state": InstanceState.FAILED.value,
                "reason": reason,
            },
            retry=PLATFORM_RETRY,
        )
        raise

    monitor_input = HealthMonitorInput(config=params.config, interval_seconds=params.health_interval_seconds)
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
    ctx.set_custom_status({"phase": "running"})
    return {
        "instance_id": instance_id,
        "state": InstanceState.RUNNING.value,
        "connection_string": conn["connection_string"],
        "password_hint": conn["password_hint"],
        "health_monitor_id": monitor_id,
    }
