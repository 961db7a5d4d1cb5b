"""HealthMonitor: check → record → durable timer → continue_as_new, for as long as the instance runs.

``continue_as_new`` keeps each generation's history a handful of events, so a monitor can run
for months. A check that cannot run (the control plane's credentials failed, say) is retried,
then recorded as ``unknown`` — the monitor goes on. It stops when cancelled (DeleteInstance
does that), when the instance is no longer running, or when the instance's row names another
monitor (one started by an older version): one monitor per instance, and the row says which.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities import GET_INSTANCE_RECORD, HEALTH_CHECK, UPDATE_METADATA
from durable_engine import OrchestrationContext, TaskFailedError
from toygres.models import HealthCheckResult, HealthStatus, InstanceMetadata, InstanceState, load_stored

from .inputs import HealthMonitorInput
from .steps import HEALTH_MONITOR, PLATFORM_RETRY, platform_retry

NAME = HEALTH_MONITOR
VERSION = "2.0.0"
#: a check that cannot run is tried again a few times before it is recorded as "unknown"
HEALTH_RETRY = platform_retry(3)


async def health_monitor(ctx: OrchestrationContext, raw: dict[str, Any]) -> Any:
    params = load_stored(HealthMonitorInput, raw)
    instance_id = str(params.config.instance_id)
    raw_record = await ctx.schedule_activity(GET_INSTANCE_RECORD, instance_id, retry=PLATFORM_RETRY)
    record = load_stored(InstanceMetadata, raw_record) if raw_record is not None else None
    if record is None or record.state is not InstanceState.RUNNING:
        state = record.state.value if record else "missing"
        return {"stopped": f"instance is {state}", "checks": params.checks}
    if record.health_monitor_id not in (None, ctx.instance_id):
        return {
            "stopped": f"the instance is monitored by {record.health_monitor_id}",
            "checks": params.checks,
        }
    try:
        result = await ctx.schedule_activity(
            HEALTH_CHECK,
            params.config.model_dump(mode="json"),
            retry=HEALTH_RETRY,
            result_type=HealthCheckResult,
        )
        update: dict[str, Any] = {"op": "health", "result": result.model_dump(mode="json")}
        status = result.status
    except TaskFailedError as exc:  # the check could not run (credentials, ...): say so, go on
        message = f"the health check could not run: {exc.error_message}"[:500]
        update, status = {"op": "health_unknown", "message": message}, HealthStatus.UNKNOWN
    await ctx.schedule_activity(UPDATE_METADATA, {**update, "instance_id": instance_id}, retry=PLATFORM_RETRY)
    ctx.set_custom_status({"last_status": status.value, "checks": params.checks + 1})
    await ctx.schedule_timer(timedelta(seconds=params.interval_seconds))
    next_input = params.model_copy(update={"checks": params.checks + 1})
    return ctx.continue_as_new(next_input.model_dump(mode="json"))
