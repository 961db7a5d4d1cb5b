"""Toygres activities: the only place the control plane touches the outside world.

``register_activities`` binds each activity to its dependencies and registers it under the
name orchestrations schedule. All are idempotent: the engine runs activities at least once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from durable_engine import ActivityContext, Registry

from .certificates import find_certificates_due, rotate_server_certificate
from .deps import ActivityDeps, instance_spec
from .health import health_check
from .instances import delete_postgres, deploy_postgres, generate_connection_string, get_instance_status
from .metadata import (
    ensure_health_monitor,
    get_instance_record,
    get_operation_status,
    stop_orchestration,
    update_metadata,
)
from .reconcile import (
    converge_instance,
    find_instances_without_monitor,
    find_orphans,
    find_stuck_instances,
    list_running_instances,
    prune_metadata,
    remove_orphan,
)
from .rollouts import get_rollout_status, plan_image_rollout, set_deployment_config

DEPLOY_POSTGRES = "DeployPostgres"
DELETE_POSTGRES = "DeletePostgres"
GET_INSTANCE_STATUS = "GetInstanceStatus"
HEALTH_CHECK = "HealthCheck"
UPDATE_METADATA = "UpdateMetadata"
GENERATE_CONNECTION_STRING = "GenerateConnectionString"
GET_INSTANCE_RECORD = "GetInstanceRecord"
STOP_ORCHESTRATION = "StopOrchestration"
FIND_INSTANCES_WITHOUT_MONITOR = "FindInstancesWithoutMonitor"
FIND_CERTIFICATES_DUE = "FindCertificatesDue"
ROTATE_SERVER_CERTIFICATE = "RotateServerCertificate"
PLAN_IMAGE_ROLLOUT = "PlanImageRollout"
SET_DEPLOYMENT_CONFIG = "SetDeploymentConfig"
GET_ROLLOUT_STATUS = "GetRolloutStatus"
GET_OPERATION_STATUS = "GetOperationStatus"
ENSURE_HEALTH_MONITOR = "EnsureHealthMonitor"
FIND_ORPHANS = "FindOrphans"
REMOVE_ORPHAN = "RemoveOrphan"
FIND_STUCK_INSTANCES = "FindStuckInstances"
LIST_RUNNING_INSTANCES = "ListRunningInstances"
CONVERGE_INSTANCE = "ConvergeInstance"
PRUNE_METADATA = "PruneMetadata"

_ACTIVITIES: dict[str, Callable[[ActivityDeps, ActivityContext, Any], Awaitable[Any]]] = {
    DEPLOY_POSTGRES: deploy_postgres,
    DELETE_POSTGRES: delete_postgres,
    GET_INSTANCE_STATUS: get_instance_status,
    HEALTH_CHECK: health_check,
    UPDATE_METADATA: update_metadata,
    GENERATE_CONNECTION_STRING: generate_connection_string,
    GET_INSTANCE_RECORD: get_instance_record,
    STOP_ORCHESTRATION: stop_orchestration,
    FIND_INSTANCES_WITHOUT_MONITOR: find_instances_without_monitor,
    FIND_CERTIFICATES_DUE: find_certificates_due,
    ROTATE_SERVER_CERTIFICATE: rotate_server_certificate,
    PLAN_IMAGE_ROLLOUT: plan_image_rollout,
    SET_DEPLOYMENT_CONFIG: set_deployment_config,
    GET_ROLLOUT_STATUS: get_rollout_status,
    GET_OPERATION_STATUS: get_operation_status,
    ENSURE_HEALTH_MONITOR: ensure_health_monitor,
    FIND_ORPHANS: find_orphans,
    REMOVE_ORPHAN: remove_orphan,
    FIND_STUCK_INSTANCES: find_stuck_instances,
    LIST_RUNNING_INSTANCES: list_running_instances,
    CONVERGE_INSTANCE: converge_instance,
    PRUNE_METADATA: prune_metadata,
}


def register_activities(registry: Registry, deps: ActivityDeps) -> None:
    for name, fn in _ACTIVITIES.items():
        bound = functools.partial(fn, deps)
        functools.update_wrapper(bound, fn)
        registry.activity(name)(_as_coroutine_function(bound))


def _as_coroutine_function(
    bound: Callable[[ActivityContext, Any], Awaitable[Any]],
) -> Callable[[ActivityContext, Any], Awaitable[Any]]:
    # the registry runs coroutine functions on the event loop and plain functions in threads;
    # a functools.partial of an async function does not look like one, so wrap it
    async def activity(ctx: ActivityContext, input: Any) -> Any:
        return await bound(ctx, input)

    activity.__name__ = getattr(bound, "__name__", "activity")
    return activity


__all__ = ["ActivityDeps", "instance_spec", "register_activities"]
