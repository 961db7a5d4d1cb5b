"""A durable replay engine whose history and queues live in PostgreSQL.

A Python counterpart of the Duroxide runtime and its PostgreSQL provider. Orchestrations are
``async def`` functions replayed deterministically from their event history; activities are
ordinary functions run at least once. See ``docs/engine.md``.
"""

from .client import Client
from .clock import ManualClock, SystemClock
from .context import ActivityContext, ContinueAsNew, OrchestrationContext
from .errors import (
    ActivityError,
    ActivityTimeoutError,
    DurableError,
    ErrorCategory,
    ErrorInfo,
    InstanceNotFoundError,
    InvalidInputError,
    LockLostError,
    NonDeterminismError,
    SubOrchestrationError,
    TaskFailedError,
)
from .futures import DurableFuture
from .history import EventKind, HistoryEvent
from .memory import InMemoryProvider
from .provider import Provider
from .registry import Registry
from .retry import RetryPolicy
from .runtime import Runtime, RuntimeOptions, WorkHints
from .status import InstancePage, OrchestrationStatus, RuntimeStatus

__all__ = [
    "ActivityContext",
    "ActivityError",
    "ActivityTimeoutError",
    "Client",
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
    "InvalidInputError",
    "LockLostError",
    "ManualClock",
    "NonDeterminismError",
    "OrchestrationContext",
    "OrchestrationStatus",
    "PostgresProvider",
    "Provider",
    "Registry",
    "RetryPolicy",
    "Runtime",
    "RuntimeOptions",
    "RuntimeStatus",
    "SubOrchestrationError",
    "SystemClock",
    "TaskFailedError",
    "WorkHints",
]


def __getattr__(name: str) -> object:
    # psycopg is only imported by whoever asks for the PostgreSQL provider
    if name == "PostgresProvider":
        from .postgres import PostgresProvider

        return PostgresProvider
    raise AttributeError(name)
