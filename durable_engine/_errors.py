"""Error model shared by the runtime, the providers and orchestration code.

Every failure that reaches a status is an :class:`ErrorInfo` with a *category*, so an
operator can tell "the code raised" (application) from "the code or its registration is
wrong" (configuration) from "the machinery failed" (infrastructure) without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ErrorCategory(StrEnum):
    APPLICATION = "application"
    CONFIGURATION = "configuration"
    INFRASTRUCTURE = "infrastructure"


@dataclass(frozen=True)
class ErrorInfo:
    """A JSON-safe description of a failure, stored in history and in instance status."""

    category: ErrorCategory
    type: str
    message: str
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"category": self.category.value, "type": self.type, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(
            category=ErrorCategory(data.get("category", ErrorCategory.APPLICATION)),
            type=str(data.get("type", "Error")),
            message=str(data.get("message", "")),
            details=data.get("details"),
        )

    @classmethod
    def from_exception(
        cls, exc: BaseException, category: ErrorCategory = ErrorCategory.APPLICATION
    ) -> ErrorInfo:
        if isinstance(exc, DurableError) and exc.error is not None:
            return exc.error
        return cls(category=category, type=type(exc).__name__, message=str(exc) or type(exc).__name__)

    def __str__(self) -> str:
        return f"[{self.category.value}] {self.type}: {self.message}"


class DurableError(Exception):
    """Base class for exceptions the engine raises; carries an :class:`ErrorInfo`."""

    def __init__(self, message: str, error: ErrorInfo | None = None) -> None:
        super().__init__(message)
        self.error = error


class TaskFailedError(DurableError):
    """A scheduled task (activity or sub-orchestration) failed.

    ``error_type`` and ``message`` repeat the failing code's exception type and message, so
    orchestration code can branch on them: ``except ActivityError as e: if e.error_type == ...``.
    """

    def __init__(self, task_name: str, error: ErrorInfo) -> None:
        super().__init__(f"{task_name} failed: {error.type}: {error.message}", error)
        self.task_name = task_name
        self.error_type = error.type
        self.error_message = error.message
        self.category = error.category

    @property
    def info(self) -> ErrorInfo:
        assert self.error is not None
        return self.error


class ActivityError(TaskFailedError):
    """An activity failed (after its retries, if it had a retry policy)."""


class ActivityTimeoutError(ActivityError):
    """An activity attempt outlived its ``RetryPolicy.attempt_timeout`` on every attempt."""


class SubOrchestrationError(TaskFailedError):
    """A sub-orchestration ended Failed or Cancelled."""


class OrchestrationCancelledError(BaseException):
    """Raised inside an orchestration, at the await it is blocked on, when it is cancelled.

    Catch it to clean up: schedule and await activities (or sub-orchestrations), then re-raise
    it or return; either way the instance ends Cancelled (another exception ends it Failed).
    A ``BaseException``, like ``asyncio.CancelledError``: a broad ``except Exception`` in
    orchestration code does not swallow a cancellation by accident.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = ErrorInfo(ErrorCategory.APPLICATION, "Cancelled", reason)


class NonDeterminismError(DurableError):
    """Replay produced a different action than history recorded at the same position."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorInfo(ErrorCategory.CONFIGURATION, "NonDeterminismError", message))


class InstanceNotFoundError(DurableError, KeyError):
    """The client addressed an instance id that does not exist."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"orchestration instance {instance_id!r} does not exist")
        self.instance_id = instance_id

    def __str__(self) -> str:
        return str(self.args[0])


class LockLostError(DurableError):
    """A commit or ack came after the lock expired and another dispatcher took the item."""


class InvalidInputError(DurableError, ValueError):
    """An input or output is not JSON-serialisable (or otherwise refused at the edge)."""
