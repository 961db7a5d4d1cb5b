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


def delete_operation_id(instance_id: UUID | str, previous: str | None = None) -> str:
    """The id of the next delete operation of an instance, given the one before it (if any).

    ``delete-<id>`` first; a retry after a failed or cancelled delete is ``delete-<id>-2``, then
    ``-3`` and so on. Everyone who looks at the same row computes the same id, so concurrent
    DELETE requests (and a reconciler resuming the delete) start one operation, not several.
    """
    first = f"delete-{instance_id}"
    if previous is None:
        return first
    suffix = previous.removeprefix(first + "-")
    attempt = int(suffix) if previous != first and suffix.isdigit() and len(suffix) < 6 else 1
    return f"{first}-{attempt + 1}"
