"""Queue messages: what dispatchers fetch, peek-locked, from the two queues.

The orchestrator queue carries :class:`OrchestratorMessage` addressed to an instance (starts,
completions, timers, external events, cancellation); the worker queue carries
:class:`ActivityTask`. Both are plain JSON-safe records so any provider can store them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class MessageKind(StrEnum):
    START = "Start"
    CONTINUE_AS_NEW = "ContinueAsNew"
    ACTIVITY_COMPLETED = "ActivityCompleted"
    ACTIVITY_FAILED = "ActivityFailed"
    TIMER_FIRED = "TimerFired"
    EVENT_RAISED = "EventRaised"
    SUB_ORCHESTRATION_COMPLETED = "SubOrchestrationCompleted"
    SUB_ORCHESTRATION_FAILED = "SubOrchestrationFailed"
    CANCEL = "Cancel"


_FIELDS = ("execution_id", "corr_id", "name", "data", "error", "version", "timestamp", "parent", "carry")


@dataclass
class OrchestratorMessage:
    kind: MessageKind
    instance_id: str
    #: the execution a completion belongs to; completions for an older execution are dropped
    execution_id: int | None = None
    corr_id: int | None = None
    name: str | None = None
    data: Any = None
    error: dict[str, Any] | None = None
    version: str | None = None
    timestamp: str | None = None
    parent: dict[str, Any] | None = None
    #: external events carried into a new execution by continue-as-new
    carry: list[dict[str, Any]] | None = None
    #: provider-assigned id (set on fetch)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "instance_id": self.instance_id}
        for f in _FIELDS:
            v = getattr(self, f)
            if v is not None:
                out[f] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], id: int | None = None) -> OrchestratorMessage:
        return cls(
            kind=MessageKind(d["kind"]),
            instance_id=d["instance_id"],
            id=id,
            **{f: d.get(f) for f in _FIELDS},
        )


@dataclass
class ActivityTask:
    instance_id: str
    execution_id: int
    corr_id: int
    name: str
    input: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "execution_id": self.execution_id,
            "corr_id": self.corr_id,
            "name": self.name,
            "input": self.input,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActivityTask:
        return cls(
            instance_id=d["instance_id"],
            execution_id=int(d["execution_id"]),
            corr_id=int(d["corr_id"]),
            name=d["name"],
            input=d.get("input"),
        )
