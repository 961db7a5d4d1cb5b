"""UpdateMetadata and the activities that look after health-monitor orchestrations.

UpdateMetadata takes one validated operation per call (a discriminated union), so the
orchestrations state *what* changed and the repository's compare-and-set keeps retries harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from durable_engine import ActivityContext, RuntimeStatus
from toygres.models import HealthCheckResult, HealthStatus, InstanceState

from .deps import ActivityDeps
from .results import MetadataResult, OperationStatusResult, StopResult


class _Op(BaseModel):
    # tolerant: an orchestration of a newer version may send fields this one does not know
    model_config = ConfigDict(extra="ignore")
    instance_id: UUID


class SetState(_Op):
    op: Literal["state"] = "state"
    state: InstanceState
    reason: str | None = None
    expected_from: list[InstanceState] | None = None


class SetConnection(_Op):
    op: Literal["connection"] = "connection"
    host: str
    port: int


class SetHealthMonitor(_Op):
    op: Literal["health_monitor"] = "health_monitor"
    monitor_id: str


class SetDeleteOperation(_Op):
    op: Literal["delete_operation"] = "delete_operation"
    operation_id: str


class RecordHealth(_Op):
    op: Literal["health"] = "health"
    result: HealthCheckResult


class RecordUnknownHealth(_Op):
    """A check that could not run: recorded as "unknown", stamped with this worker's clock (the
    clock real checks are stamped with)."""

    op: Literal["health_unknown"] = "health_unknown"
    message: str


class MarkDeleted(_Op):
    op: Literal["deleted"] = "deleted"


MetadataOp = Annotated[
    SetState
    | SetConnection
    | SetHealthMonitor
    | SetDeleteOperation
    | RecordHealth
    | RecordUnknownHealth
    | MarkDeleted,
    Field(discriminator="op"),
]
_OPS: TypeAdapter[MetadataOp] = TypeAdapter(MetadataOp)


async def update_metadata(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    op = _OPS.validate_python(raw)
    repo = deps.metadata
    if isinstance(op, SetState):
        instance = await repo.update_state(
            op.instance_id, op.state, reason=op.reason, expected_from=op.expected_from
        )
    elif isinstance(op, SetConnection):
        instance = await repo.set_connection_info(op.instance_id, host=op.host, port=op.port)
    elif isinstance(op, SetHealthMonitor):
        instance = await repo.set_health_monitor_id(op.instance_id, op.monitor_id)
    elif isinstance(op, SetDeleteOperation):
        instance = await repo.set_delete_orchestration_id(op.instance_id, op.operation_id)
    elif isinstance(op, RecordHealth | RecordUnknownHealth):
        result = (
            op.result
            if isinstance(op, RecordHealth)
            else HealthCheckResult(
                status=HealthStatus.UNKNOWN, checked_at=datetime.now(UTC), message=op.message
            )
        )
        await repo.record_health_check(op.instance_id, result)
        return MetadataResult(recorded=True).model_dump(mode="json")
    else:
        instance = await repo.mark_deleted(op.instance_id)
    return MetadataResult(state=instance.state).model_dump(mode="json")


async def get_instance_record(
    deps: ActivityDeps, ctx: ActivityContext, instance_id: str
) -> dict[str, Any] | None:
    instance = await deps.metadata.get_instance(UUID(instance_id))
    return None if instance is None else instance.model_dump(mode="json")


async def stop_orchestration(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    """Cancel an orchestration (a health monitor, a create still running); a no-op if finished."""
    instance_id, reason = raw["instance_id"], raw.get("reason", "stopped by Toygres")
    status = await deps.client.get_status(instance_id)
    if status is None or status.is_terminal:
        return StopResult(cancelled=False).model_dump(mode="json")
    return StopResult(cancelled=await deps.client.cancel(instance_id, reason)).model_dump(mode="json")


async def get_operation_status(deps: ActivityDeps, ctx: ActivityContext, operation_id: str) -> dict[str, Any]:
    """Where an orchestration (a create, a delete, a monitor) is: so another can wait for it."""
    status = await deps.client.get_status(operation_id)
    if status is None:
        return OperationStatusResult(exists=False).model_dump(mode="json")
    return OperationStatusResult(
        exists=True, status=status.status.value, terminal=status.is_terminal
    ).model_dump(mode="json")


class EnsureMonitor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    monitor_id: str
    name: str
    input: dict[str, Any]


async def ensure_health_monitor(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]
) -> dict[str, Any]:
    """Make sure the monitor with this (deterministic) id runs: start it, or restart it if it ended.

    Idempotent and safe against concurrent reconciler passes: the engine starts an id at most
    once, and purging only removes a finished instance, never one another pass just started.
    """
    want = EnsureMonitor.model_validate(raw)
    status = await deps.client.get_status(want.monitor_id)
    if status is not None and not status.is_terminal:
        return OperationStatusResult(exists=True, status=status.status.value).model_dump(mode="json")
    if status is not None:
        await deps.client.purge(want.monitor_id)
    await deps.client.start_orchestration(want.monitor_id, want.name, want.input)
    return OperationStatusResult(exists=True, status=RuntimeStatus.PENDING.value).model_dump(mode="json")
