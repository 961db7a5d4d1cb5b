"""HealthMonitor: check → record → durable timer → continue_as_new, for as long as the instance runs.

``continue_as_new`` keeps each generation's history a handful of events, so a monitor can run
for months. It stops when cancelled (DeleteInstance does that), when the instance is no longer
running, or when the instance's row names another monitor (one started by an older version):
there is one monitor per instance, and the row says which.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities import GET_INSTANCE_RECORD, HEALTH_CHECK, UPDATE_METADATA
from durable_engine import OrchestrationContext
from toygres.models import HealthCheckResult, InstanceMetadata, InstanceState, load_stored

from .inputs import HealthMonitorInput
from .steps import HEALTH_MONITOR, PLATFORM_RETRY

NAME = HEALTH_MONITOR
VERSION = "2.0.0"


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
    result = HealthCheckResult.model_validate(
        await ctx.schedule_activity(HEALTH_CHECK, params.config.model_dump(mode="json"))
    )
    await ctx.schedule_activity(
        UPDATE_METADATA,
        {"op": "health", "instance_id": instance_id, "result": result.model_dump(mode="json")},
        retry=PLATFORM_RETRY,
    )
    ctx.set_custom_status({"last_status": result.status.value, "checks": params.checks + 1})
    await ctx.schedule_timer(timedelta(seconds=params.interval_seconds))
    next_input = params.model_copy(update={"checks": params.checks + 1})
    return ctx.continue_as_new(next_input.model_dump(mode="json"))
