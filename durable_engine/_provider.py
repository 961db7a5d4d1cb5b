"""The storage contract every provider implements (in-memory, PostgreSQL, ...).

The runtime owns orchestration semantics; a provider owns only durable, atomic storage:
two peek-lock queues (orchestrator messages grouped per instance, activity tasks), the
history, and the instance rows. ``commit_turn`` is the heart of it: one turn's effects are
applied all together or not at all, and only while the caller still holds the instance lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from ._history import HistoryEvent
from ._messages import ActivityTask, OrchestratorMessage
from ._status import RuntimeStatus

QueueName = Literal["orchestrator", "worker"]


@dataclass
class NewInstance:
    """An instance row to create together with its Start message.

    If the id exists, nothing is created. For a sub-orchestration (``parent`` set) whose id
    belongs to another instance, the provider then enqueues a ``SubOrchestrationFailed``
    message to the parent (its execution and correlation id from ``parent``) with the error
    ``{"category": "application", "type": "InstanceAlreadyExists", "message": ...}`` naming the
    id, so the parent never waits for a child that will not run. Asking again for the child
    that exists under the same parent link is a no-op.
    """

    instance_id: str
    name: str
    version: str | None
    input: Any
    parent: dict[str, Any] | None = None


@dataclass
class InstanceRecord:
    instance_id: str
    name: str
    version: str | None
    status: RuntimeStatus
    execution_id: int
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    custom_status: Any = None
    parent_instance_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class OrchestrationItem:
    """An instance locked for one turn, with its current execution's history and its visible messages."""

    instance_id: str
    lock_token: str
    instance: InstanceRecord | None
    history: list[HistoryEvent]
    messages: list[OrchestratorMessage]
    #: the highest delivery count among the messages: a poison-message detector
    dequeue_count: int


@dataclass
class ActivityItem:
    task: ActivityTask
    lock_token: str
    dequeue_count: int


@dataclass
class InstanceUpdate:
    name: str
    version: str | None
    status: RuntimeStatus
    execution_id: int
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    custom_status: Any = None


@dataclass
class TimedMessage:
    message: OrchestratorMessage
    #: ``None`` means visible now; timers are visible at their fire time
    visible_at: datetime | None = None


@dataclass
class ClaimedTask:
    """An activity task the committing runtime already runs (inline): stored locked by it."""

    task: ActivityTask
    lock_token: str
    locked_until: datetime
    #: deliveries so far, counting runs lost with a crashed dispatcher (``ActivityContext.attempt``)
    dequeue_count: int = 1


@dataclass
class TurnCommit:
    """Everything one orchestration turn does, applied atomically by ``commit_turn``.

    When ``update.execution_id`` is higher than the stored one (continue-as-new), the
    provider drops the older executions' history: eternal orchestrations stay bounded.
    """

    instance_id: str
    execution_id: int
    new_events: list[HistoryEvent]
    consumed_message_ids: list[int]
    update: InstanceUpdate | None
    orchestrator_messages: list[TimedMessage] = field(default_factory=list)
    activity_tasks: list[ActivityTask] = field(default_factory=list)
    new_instances: list[NewInstance] = field(default_factory=list)
    #: tasks stored already locked by the committer, which completes them under ``lock_token``
    claimed_tasks: list[ClaimedTask] = field(default_factory=list)


class Provider(Protocol):
    # --- instance creation and client-side messages -------------------------------------
    async def create_instance(self, instance: NewInstance) -> bool:
        """Create the instance row and enqueue its Start message; False if the id existed."""
        ...

    async def create_instance_locked(
        self, instance: NewInstance, lock_timeout: timedelta
    ) -> OrchestrationItem | None:
        """``create_instance``, plus the instance comes back locked for its first turn.

        For a client whose process runs a dispatcher: the first turn starts at once, without a
        wake-up and a fetch. None if the id existed. If the caller dies, the lock expires and
        any dispatcher takes the turn, as after a crashed fetch.
        """
        ...

    async def enqueue_orchestrator_message(
        self, message: OrchestratorMessage, visible_at: datetime | None = None
    ) -> None: ...

    # --- orchestrator queue ---------------------------------------------------------------
    async def fetch_orchestration_item(self, lock_timeout: timedelta) -> OrchestrationItem | None:
        """Lock one instance that has visible messages; None when there is nothing to do.

        The item holds every visible message of the instance, and also those fetched under an
        earlier lock of it that no longer holds (expired, or lost in a server crash): messages
        of one instance are never processed without the ones that arrived before them (timers
        not yet due excepted).
        """
        ...

    async def commit_turn(self, lock_token: str, commit: TurnCommit) -> None:
        """Apply a turn atomically and release the lock; raises LockLostError if it was lost."""
        ...

    async def renew_orchestration_lock(self, lock_token: str, lock_timeout: timedelta) -> bool:
        """Extend a turn's instance lock (and keep its messages hidden) to ``lock_timeout`` from now.

        False if the lock was lost (another dispatcher took the instance). Like a commit, a
        renewal succeeds after expiry as long as nobody replaced the token.
        """
        ...

    async def abandon_orchestration_item(self, lock_token: str, delay: timedelta | None = None) -> None:
        """Release the lock without consuming anything; the messages come back after ``delay``.

        With a delay the *instance* backs off: until the delay has passed it is not fetched at
        all, so messages that arrive meanwhile are delivered together with the abandoned ones,
        never before them (a ContinueAsNew must not be overtaken by a later event).
        """
        ...

    # --- worker queue ---------------------------------------------------------------------
    async def fetch_activity(self, lock_timeout: timedelta) -> ActivityItem | None: ...

    async def renew_activity_lock(self, lock_token: str, lock_timeout: timedelta) -> bool:
        """Extend a running activity's lock; False if it was lost (another worker may run it)."""
        ...

    async def complete_activity(self, lock_token: str, completion: OrchestratorMessage) -> bool:
        """Delete the task and enqueue its completion atomically; False if the lock was lost."""
        ...

    async def abandon_activity(self, lock_token: str, delay: timedelta | None = None) -> None: ...

    # --- reads and maintenance --------------------------------------------------------------
    async def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    async def list_instances(
        self,
        *,
        status: RuntimeStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[InstanceRecord], str | None]: ...

    async def read_history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history, in event-id order."""
        ...

    async def purge_instance(self, instance_id: str) -> bool:
        """Delete a terminal instance with its history and messages; False if absent or not terminal."""
        ...

    async def purge_terminal_before(self, cutoff: datetime) -> int:
        """Delete every Completed/Failed/Cancelled instance last updated before ``cutoff``."""
        ...

    # --- wake-ups and time ------------------------------------------------------------------
    async def wait_for_work(self, queue: QueueName, timeout: float) -> None:
        """Return when work may be available on ``queue``, or after ``timeout`` seconds.

        Spurious returns are allowed; an idle dispatcher calls this instead of polling hot.
        """
        ...

    async def wait_for_instance_change(self, instance_id: str, timeout: float) -> None:
        """Return when the instance's status may have changed, or after ``timeout`` seconds.

        The watch must be registered when the coroutine starts, before its first ``await``:
        callers start it, read the status, and only then await it, so no change is missed.
        """
        ...

    def now(self) -> datetime:
        """The provider's clock (tests control it on the in-memory provider)."""
        ...

    async def close(self) -> None: ...
