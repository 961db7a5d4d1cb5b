"""CreateInstance: deploy → wait ready → connection string → running → start its health monitor.

If anything fails — the deploy keeps failing, the instance never becomes ready before the
deadline, a result cannot be read — the orchestration removes what it created, records the
instance as failed with the reason (which releases its name), and ends Failed: a failed create
leaves no resources behind. A cancelled create (``OrchestrationCancelledError`` at its current
step) cleans up the same way and ends Cancelled.
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
from activities.results import ConnectionResult, InstanceStatusResult
from durable_engine import OrchestrationCancelledError, OrchestrationContext, RetryPolicy, TaskFailedError
from toygres.models import InstanceState, load_stored

from .inputs import CreateInstanceInput
from .steps import (
    PLATFORM_RETRY,
    failure_reason,
    mark_failed,
    platform_retry,
    set_state,
    start_health_monitor,
)

NAME = "CreateInstance"
VERSION = "2.0.0"


class InstanceNotReadyError(Exception):
    """The instance did not become ready before the readiness deadline."""


async def create_instance(ctx: OrchestrationContext, raw: dict[str, Any]) -> dict[str, Any]:
    params = load_stored(CreateInstanceInput, raw)
    config = params.config.model_dump(mode="json")
    instance_id = str(params.config.instance_id)
    deploy_retry = platform_retry(params.deploy_attempts)
    try:
        ctx.set_custom_status({"phase": "deploying"})
        await ctx.schedule_activity(DEPLOY_POSTGRES, config, retry=deploy_retry)

        ctx.set_custom_status({"phase": "waiting for readiness"})
        deadline = ctx.utc_now() + timedelta(seconds=params.readiness_deadline_seconds)
        while True:
            status = await ctx.schedule_activity(
                GET_INSTANCE_STATUS, config, retry=PLATFORM_RETRY, result_type=InstanceStatusResult
            )
            if status.ready and status.endpoint is not None:
                endpoint = status.endpoint
                break
            if ctx.utc_now() >= deadline:
                raise InstanceNotReadyError(
                    f"the instance did not become ready within {params.readiness_deadline_seconds:g} s "
                    f"(last phase {status.phase}: {status.message})"
                )
            await ctx.schedule_timer(timedelta(seconds=params.readiness_poll_seconds))

        ctx.set_custom_status({"phase": "recording connection"})
        conn = await ctx.schedule_activity(
            GENERATE_CONNECTION_STRING,
            {"config": config, "endpoint": endpoint.model_dump(mode="json")},
            result_type=ConnectionResult,
        )
        await ctx.schedule_activity(
            UPDATE_METADATA,
            {"op": "connection", "instance_id": instance_id, "host": conn.host, "port": conn.port},
            retry=PLATFORM_RETRY,
        )
        await set_state(ctx, instance_id, InstanceState.RUNNING)
    except OrchestrationCancelledError as cancelled:
        # stopped from outside (a delete that began, an operator): leave nothing running behind it
        await _clean_up(
            ctx, config, instance_id, f"the create was cancelled: {cancelled.reason}", deploy_retry
        )
        raise
    except Exception as exc:  # any failure, not only a failed activity, runs the cleanup
        await _clean_up(ctx, config, instance_id, failure_reason(exc), deploy_retry)
        raise

    monitor_id = start_health_monitor(ctx, params.config, params.health_interval_seconds)
    ctx.set_custom_status({"phase": "running"})
    return {
        "instance_id": instance_id,
        "state": InstanceState.RUNNING.value,
        "connection_string": conn.connection_string,
        "password_hint": conn.password_hint,
        "health_monitor_id": monitor_id,
    }


async def _clean_up(
    ctx: OrchestrationContext, config: dict[str, Any], instance_id: str, reason: str, retry: RetryPolicy
) -> None:
    """Remove what the create made and record it failed with ``reason`` (which frees its name)."""
    ctx.set_custom_status({"phase": "cleaning up after failure", "reason": reason})
    try:
        await ctx.schedule_activity(DELETE_POSTGRES, config, retry=retry)
    except TaskFailedError as cleanup:
        # the instance is failed either way; say that resources may remain and how to retry
        reason += f"; cleaning up failed too ({cleanup}): delete the instance to retry the cleanup"
    # only from creating: a delete that began meanwhile owns the state from then on
    await mark_failed(ctx, instance_id, reason, expected_from=[InstanceState.CREATING])
