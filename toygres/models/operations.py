"""Orchestration ids of an instance's operations and monitor: deterministic, so a retried or
concurrent request, a reconciler pass and a crashed-and-restarted caller all name the same one.

The engine starts an orchestration at most once per id, which is what turns "start it" into an
idempotent step anywhere in the control plane.
"""

from __future__ import annotations

from uuid import UUID


def create_operation_id(instance_id: UUID | str) -> str:
    return f"create-{instance_id}"


def health_monitor_id(instance_id: UUID | str) -> str:
    """The one health monitor of an instance (restarted under the same id after it ends)."""
    return f"health-{instance_id}"
