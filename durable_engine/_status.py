"""Instance status as the client sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ._errors import ErrorInfo


class RuntimeStatus(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.CANCELLED})


@dataclass(frozen=True)
class OrchestrationStatus:
    instance_id: str
    name: str
    version: str | None
    status: RuntimeStatus
    input: Any
    output: Any
    error: ErrorInfo | None
    custom_status: Any
    execution_id: int
    parent_instance_id: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "version": self.version,
            "status": self.status.value,
            "input": self.input,
            "output": self.output,
            "error": self.error.to_dict() if self.error else None,
            "custom_status": self.custom_status,
            "execution_id": self.execution_id,
            "parent_instance_id": self.parent_instance_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class InstancePage:
    """One page of :meth:`Client.list_instances`; pass ``next_cursor`` back for the next."""

    items: list[OrchestrationStatus]
    next_cursor: str | None
