"""The instance lifecycle: its states, the transitions between them, and operation kinds.

``ALLOWED_TRANSITIONS`` is the single statement of the state machine. The metadata store turns it
into the guard of every state change, so a caller cannot move an instance along an edge that is
not listed here.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceState(StrEnum):
    """Lifecycle of a hosted instance as recorded in the metadata store."""

    CREATING = "creating"
    RUNNING = "running"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class OperationKind(StrEnum):
    CREATE = "create"
    DELETE = "delete"
    #: a catalog change rolled out to the instances (rolling restarts onto the pinned images)
    IMAGE_ROLLOUT = "image-rollout"
    #: server certificates renewed before they expire
    CERTIFICATE_ROTATION = "certificate-rotation"


class OperationState(StrEnum):
    """Mirrors the durable engine's orchestration status names."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


# Which states an instance may move to from each state. ``deleted`` is terminal. The metadata
# repository enforces this unless a caller passes its own ``expected_from`` set.
ALLOWED_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.CREATING: frozenset({InstanceState.RUNNING, InstanceState.FAILED, InstanceState.DELETING}),
    InstanceState.RUNNING: frozenset({InstanceState.DELETING, InstanceState.FAILED}),
    InstanceState.FAILED: frozenset({InstanceState.DELETING}),
    InstanceState.DELETING: frozenset({InstanceState.DELETED, InstanceState.FAILED}),
    InstanceState.DELETED: frozenset(),
}


def allowed_predecessors(target: InstanceState) -> frozenset[InstanceState]:
    """States from which ``target`` may be reached according to ``ALLOWED_TRANSITIONS``."""
    return frozenset(src for src, dests in ALLOWED_TRANSITIONS.items() if target in dests)
