"""Activities of the Reconciler: what runs is what the metadata says, and every state ends.

Orphans are found by looking at the runtimes first and reading the metadata second: a row is
written before anything of its instance is deployed, so an instance created during the pass is
never taken for an orphan.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from durable_engine import ActivityContext, RuntimeStatus
from toygres.models import (
    InstanceMetadata,
    InstanceState,
    RuntimeKind,
    delete_operation_id,
    health_monitor_id,
)
from toygres.runtimes.base import DeployError, FoundInstance

from .deps import ActivityDeps, instance_spec, load_config
from .errors import platform_error
from .instances import converge_with, observe
from .results import ConvergeResult, Orphan, OrphanRemoval, PruneResult, RunningInstance, StuckInstance


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def _orphan_reason(row: InstanceMetadata | None) -> str | None:
    """Why something found for this row must go; None when the metadata calls it live."""
    if row is None:
        return "unknown to the metadata"
    if row.state is InstanceState.DELETED:
        return f"instance {row.name} was deleted"
    return None


async def find_orphans(deps: ActivityDeps, ctx: ActivityContext, _: Any = None) -> list[dict[str, Any]]:
    """Everything a runtime runs for an instance that is deleted or unknown."""
    namespaces = await deps.metadata.namespaces_in_use()
    found: list[tuple[RuntimeKind, FoundInstance]] = []
    for kind, runtime in deps.runtimes.items():
        try:
            listed = await asyncio.to_thread(runtime.list_instances, namespaces)
        except DeployError as exc:
            raise platform_error(exc) from None
        found += [(kind, item) for item in listed]
    ids = {uuid for _, item in found if (uuid := _uuid(item.instance_id)) is not None}
    rows = await deps.metadata.get_instances(ids)
    orphans: list[dict[str, Any]] = []
    for kind, item in found:
        uuid = _uuid(item.instance_id)
        reason = _orphan_reason(rows.get(uuid) if uuid is not None else None)
        if reason is not None:
            orphan = Orphan(
                runtime=kind,
                instance_id=item.instance_id,
                name=item.name,
                namespace=item.namespace,
                reason=reason,
            )
            orphans.append(orphan.model_dump(mode="json"))
    return orphans


async def remove_orphan(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    """Remove one orphan, after checking again under the instance's lock that it still is one."""
    orphan = Orphan.model_validate(raw)
    runtime = deps.runtimes.get(orphan.runtime)
    if runtime is None:
        return OrphanRemoval(
            removed=False, skipped=f"runtime {orphan.runtime.value} is not enabled"
        ).model_dump()
    found = FoundInstance(instance_id=orphan.instance_id, name=orphan.name, namespace=orphan.namespace)
    async with deps.metadata.instance_lock(orphan.instance_id) as current:
        if _orphan_reason(current) is None:
            return OrphanRemoval(removed=False, skipped="the metadata calls it live now").model_dump()
        try:
            removed = await asyncio.to_thread(runtime.remove, found)
        except DeployError as exc:
            raise platform_error(exc) from None
    ctx.logger.warning(
        "removed orphan %s of instance %s (%s, %s)",
        orphan.name,
        orphan.instance_id,
        orphan.runtime,
        orphan.reason,
    )
    return OrphanRemoval(removed=removed).model_dump(mode="json")


class StuckQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: a ``creating`` row without its operation is left alone this long (its request may still run)
    stuck_after_seconds: float = 600


async def find_stuck_instances(
    deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """``creating``/``deleting`` rows whose operation is missing or has ended: none may stay so."""
    query = StuckQuery.model_validate(raw or {})
    now = datetime.now(UTC)
    stuck: list[dict[str, Any]] = []
    for row in await deps.metadata.list_instances_in_states([InstanceState.CREATING, InstanceState.DELETING]):
        if row.deployment_config is None:
            continue
        found = await _stuck(deps, row, now - timedelta(seconds=query.stuck_after_seconds))
        if found is not None:
            stuck.append(found.model_dump(mode="json"))
    return stuck


async def _stuck(deps: ActivityDeps, row: InstanceMetadata, old: datetime) -> StuckInstance | None:
    if row.state is InstanceState.CREATING:
        operation = row.create_orchestration_id
        status = await deps.client.get_status(operation) if operation else None
        if status is None:
            if row.created_at > old:
                return None  # the request that inserted it may still be starting it
            reason = "the create request ended before its operation started; create the instance again"
        elif status.is_terminal:
            detail = f": {status.error.message}" if status.error else ""
            reason = f"the create operation ended {status.status.value} without finishing{detail}"
        else:
            return None
        return StuckInstance(instance_id=str(row.id), state=row.state, action="fail", reason=reason)
    operation = row.delete_orchestration_id
    status = await deps.client.get_status(operation) if operation else None
    if status is not None and not status.is_terminal:
        return None
    # a recorded operation that never started is started now; an ended one gets a successor
    resume = operation if operation is not None and status is None else delete_operation_id(row.id, operation)
    state = status.status.value if status is not None else "missing"
    return StuckInstance(
        instance_id=str(row.id),
        state=row.state,
        action="resume_delete",
        reason=f"the delete operation {operation} is {state}",
        operation_id=resume,
        create_operation_id=row.create_orchestration_id,
        config=row.deployment_config,
    )


async def list_running_instances(
    deps: ActivityDeps, ctx: ActivityContext, _: Any = None
) -> list[dict[str, Any]]:
    """Every running instance, with whether the monitor its row names is alive."""
    return [running.model_dump(mode="json") for running in await _running(deps, ctx)]


async def find_instances_without_monitor(
    deps: ActivityDeps, ctx: ActivityContext, _: Any = None
) -> list[dict[str, Any]]:
    """Running instances whose health monitor is missing or no longer running (Reconciler 1.0.0)."""
    return [
        {
            "instance_id": running.instance_id,
            "previous_monitor_id": running.monitor_id,
            "config": running.config.model_dump(mode="json"),
        }
        for running in await _running(deps, ctx)
        if not running.monitor_live
    ]


async def _running(deps: ActivityDeps, ctx: ActivityContext) -> list[RunningInstance]:
    found: list[RunningInstance] = []
    for row in await deps.metadata.list_running_instances():
        if row.deployment_config is None:
            ctx.logger.warning("instance %s has no deployment config; cannot reconcile it", row.id)
            continue
        monitor = await deps.client.get_status(row.health_monitor_id) if row.health_monitor_id else None
        live = monitor is not None and monitor.status in (RuntimeStatus.RUNNING, RuntimeStatus.PENDING)
        found.append(
            RunningInstance(
                instance_id=str(row.id),
                config=row.deployment_config,
                monitor_id=row.health_monitor_id,
                monitor_live=live,
            )
        )
    return found


async def converge_instance(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    """Deploy a running instance again, so what runs matches its spec, and record where it answers.

    A local server that a host restart stopped is started (on its recorded port when free, else
    another); Kubernetes objects that drifted from the spec are applied again. Inside the
    instance lock, and only while the row says ``running``.
    """
    config = load_config(raw)
    runtime, spec = deps.runtime_for(config), instance_spec(config)
    async with deps.metadata.instance_lock(config.instance_id) as current:
        if current is None or current.state is not InstanceState.RUNNING:
            state = current.state.value if current is not None else "unknown"
            return ConvergeResult(
                instance_id=str(config.instance_id), skipped=f"instance is {state}"
            ).model_dump()
        before = await asyncio.to_thread(observe, runtime, spec)
        conflicts = await asyncio.to_thread(converge_with, runtime, spec)
        after = await asyncio.to_thread(observe, runtime, spec)
    endpoint = after.endpoint
    moved = endpoint is not None and (endpoint.host, endpoint.port) != (current.host, current.port)
    if endpoint is not None and moved:
        await deps.metadata.set_connection_info(current.id, host=endpoint.host, port=endpoint.port)
        ctx.logger.warning("instance %s answers at %s:%s now", current.id, endpoint.host, endpoint.port)
    for conflict in conflicts:
        ctx.logger.warning("instance %s had drifted; taken back: %s", current.id, conflict)
    result = ConvergeResult(
        instance_id=str(current.id),
        restarted=not before.ready,
        moved=moved,
        ready=after.ready,
        conflicts=conflicts,
    )
    return result.model_dump(mode="json")


class Retention(BaseModel):
    model_config = ConfigDict(extra="ignore")
    health_check_retention_seconds: float
    deleted_retention_seconds: float
    #: rows one call removes at most, so no pass holds a long transaction (the next pass goes on)
    batch: int = 1000


async def prune_metadata(deps: ActivityDeps, ctx: ActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
    """Retention: old health checks; instances deleted long ago, with their finished operations."""
    retention = Retention.model_validate(raw)
    now = datetime.now(UTC)
    checks = await deps.metadata.prune_health_checks(
        now - timedelta(seconds=retention.health_check_retention_seconds), limit=retention.batch * 10
    )
    removed = await deps.metadata.prune_deleted_instances(
        now - timedelta(seconds=retention.deleted_retention_seconds), limit=retention.batch
    )
    operations = 0
    for row in removed:
        for operation in _operations_of(row):
            operations += await deps.client.purge(operation)  # only finished ones go; 0 if absent
    return PruneResult(health_checks=checks, instances=len(removed), operations=operations).model_dump()


def _operations_of(row: InstanceMetadata) -> list[str]:
    """Every orchestration id an instance may have had: create, each delete attempt, monitors."""
    operations = [row.create_orchestration_id, row.health_monitor_id, health_monitor_id(row.id)]
    delete, last = delete_operation_id(row.id), row.delete_orchestration_id
    for _ in range(100):  # delete-<id>, delete-<id>-2, ... up to the one the row records
        operations.append(delete)
        if delete == last or last is None:
            break
        delete = delete_operation_id(row.id, delete)
    if last is not None:
        operations.append(last)  # an older version's delete id
    return sorted({op for op in operations if op})
