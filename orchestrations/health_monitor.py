"""HealthMonitor: check → record → durable timer → continue_as_new, for as long as the instance runs.

``continue_as_new`` keeps each generation's history a handful of events, so a monitor can run
for months. It stops when cancelled (DeleteInstance does that) or when the instance is gone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities import GET_INSTANCE_RECORD, HEALTH_CHECK, UPDATE_METADATA
from durable_engine import OrchestrationContext
from toygres.models import InstanceState

from .inputs import HealthMonitorInput
from .steps import HEALTH_MONITOR, PLATFORM_RETRY

NAME = HEALTH_MONITOR
VERSION = "2.0.0"


async def health_monitor(ctx: OrchestrationContext, raw: dict[str, Any]) -> Any:
    params = HealthMonitorInput.model_validate(raw)
    instance_id = str(params.config.instance_id)
    record = await ctx.schedule_activity(GET_INSTANCE_RECORD, instance_id, retry=PLATFORM_RETRY)
    if record is None or record["state"] != InstanceState.RUNNING.value:
        state = record["state"] if record else "missing"
        return {"stopped": f"instance is {state}", "checks": params.checks}
    result = await ctx.schedule_activity(HEALTH_CHECK, params.config.model_dump(mode="json"))
    await ctx.schedule_activity(
        UPDATE_METADATA, {"op": "health", "instance_id": instance_id, "result": result}, retry=PLATFORM_RETRY
    )
    ctx.set_custom_status({"last_status": result["status"], "checks": params.checks + 1})
    await ctx.schedule_timer(timedelta(seconds=params.interval_seconds))
    next_input = params.model_copy(update={"checks": params.checks + 1})
    return ctx.continue_as_new(next_input.model_dump(mode="json"))
