"""A durable replay engine whose history and queues live in PostgreSQL.

A Python counterpart of the Duroxide runtime and its PostgreSQL provider. Orchestrations are
``async def`` functions replayed deterministically from their event history; activities are
ordinary functions run at least once. See ``docs/engine.md``.

This module is the engine's public face: ``__all__`` below is the whole public surface. The
``_``-prefixed modules behind it are machinery and may change without notice. Besides this
package, three modules are public by path: ``durable_engine.postgres`` (the PostgreSQL
provider), ``durable_engine.migrate`` (the SQL migrator) and ``durable_engine.testing`` (the
provider conformance kit, which needs pytest).
"""

from typing import TYPE_CHECKING

from ._client import Client
from ._clock import Clock, ManualClock, SystemClock
from ._context import ActivityContext, ContinueAsNew, OrchestrationContext
from ._errors import (
    ActivityError,
    ActivityTimeoutError,
    DurableError,
    ErrorCategory,
    ErrorInfo,
    InstanceNotFoundError,
    InvalidInputError,
    LockLostError,
    NonDeterminismError,
    OrchestrationCancelledError,
    SubOrchestrationError,
    TaskFailedError,
)
from ._futures import DurableFuture
from ._history import EventKind, HistoryEvent
from ._memory import InMemoryProvider
from ._messages import ActivityTask, MessageKind, OrchestratorMessage
from ._provider import (
    ActivityItem,
    ClaimedTask,
    InstanceRecord,
    InstanceUpdate,
    NewInstance,
    OrchestrationItem,
    Provider,
    QueueName,
    TimedMessage,
    TurnCommit,
)
from ._registry import Registry
from ._retry import RetryPolicy
from ._runtime import Runtime, RuntimeOptions, WorkHints
from ._status import InstancePage, OrchestrationStatus, RuntimeStatus

if TYPE_CHECKING:
    # imported lazily at run time (see __getattr__), but type checkers must see the real class
    from .postgres import PostgresProvider

__all__ = [
    "ActivityContext",
    "ActivityError",
    "ActivityItem",
    "ActivityTask",
    "ActivityTimeoutError",
    "ClaimedTask",
    "Client",
    "Clock",
    "ContinueAsNew",
    "DurableError",
    "DurableFuture",
    "ErrorCategory",
    "ErrorInfo",
    "EventKind",
    "HistoryEvent",
    "InMemoryProvider",
    "InstanceNotFoundError",
    "InstancePage",
    "InstanceRecord",
    "InstanceUpdate",
    "InvalidInputError",
    "LockLostError",
    "ManualClock",
    "MessageKind",
    "NewInstance",
    "NonDeterminismError",
    "OrchestrationCancelledError",
    "OrchestrationContext",
    "OrchestrationItem",
    "OrchestrationStatus",
    "OrchestratorMessage",
    "PostgresProvider",
    "Provider",
    "QueueName",
    "Registry",
    "RetryPolicy",
    "Runtime",
    "RuntimeOptions",
    "RuntimeStatus",
    "SubOrchestrationError",
    "SystemClock",
    "TaskFailedError",
    "TimedMessage",
    "TurnCommit",
    "WorkHints",
]


def __getattr__(name: str) -> object:
    # psycopg is only imported by whoever asks for the PostgreSQL provider
    if name == "PostgresProvider":
        from .postgres import PostgresProvider

        return PostgresProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
