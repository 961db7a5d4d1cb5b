"""Steps more than one orchestration takes, written once.

They are plain coroutines awaited from orchestration code, so they replay like the code that
calls them: same actions, same order.
"""

from __future__ import annotations

from datetime import timedelta

from activities import UPDATE_METADATA
from activities.errors import NON_RETRYABLE
from activities.results import MetadataResult
from durable_engine import OrchestrationContext, RetryPolicy, TaskFailedError
from toygres.models import DeploymentConfig, InstanceState, health_monitor_id

from .inputs import HealthMonitorInput

HEALTH_MONITOR = "HealthMonitor"


def platform_retry(attempts: int) -> RetryPolicy:
    """Retries for calls to the platform (Kubernetes API, local processes) that may fail transiently."""
    return RetryPolicy(
        max_attempts=attempts,
        initial_delay=timedelta(seconds=2),
        max_delay=timedelta(seconds=60),
        non_retryable_error_types=NON_RETRYABLE,
    )


#: Metadata and status reads are cheap and idempotent: retry them patiently.
PLATFORM_RETRY = platform_retry(5)


async def set_state(
    ctx: OrchestrationContext,
    instance_id: str,
    state: InstanceState,
    *,
    reason: str | None = None,
    expected_from: list[InstanceState] | None = None,
) -> MetadataResult:
    op: dict[str, object] = {"op": "state", "instance_id": instance_id, "state": state.value}
    if reason is not None:
        op["reason"] = reason
    if expected_from is not None:
        op["expected_from"] = [s.value for s in expected_from]
    return await ctx.schedule_activity(UPDATE_METADATA, op, retry=PLATFORM_RETRY, result_type=MetadataResult)


async def mark_failed(
    ctx: OrchestrationContext, instance_id: str, reason: str, *, expected_from: list[InstanceState]
) -> bool:
    """Record the failure from the states given (the state the failing step left the instance in);
    False when that was not possible (the instance moved on, or the store is unreachable)."""
    try:
        await set_state(ctx, instance_id, InstanceState.FAILED, reason=reason, expected_from=expected_from)
    except TaskFailedError:
        return False  # what is left stuck, the reconciler ends (FindStuckInstances)
    return True


def failure_reason(exc: BaseException, limit: int = 1000) -> str:
    """An exception as a failure reason for the metadata: its message, bounded."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def mark_deleted(ctx: OrchestrationContext, instance_id: str) -> None:
    await ctx.schedule_activity(
        UPDATE_METADATA, {"op": "deleted", "instance_id": instance_id}, retry=PLATFORM_RETRY
    )


def monitor_input(config: DeploymentConfig, interval_seconds: float) -> dict[str, object]:
    return HealthMonitorInput(config=config, interval_seconds=interval_seconds).model_dump(mode="json")


def start_health_monitor(ctx: OrchestrationContext, config: DeploymentConfig, interval_seconds: float) -> str:
    """Start the instance's detached HealthMonitor under its deterministic id; returns the id.

    The id is recorded with the row when the instance is created, so nothing is left to record
    here, and a reconciler that starts the same monitor in the meantime starts the same instance.
    """
    return ctx.start_orchestration(
        HEALTH_MONITOR,
        monitor_input(config, interval_seconds),
        instance_id=health_monitor_id(config.instance_id),
    )
