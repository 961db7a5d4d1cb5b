"""History events: the durable record an orchestration is replayed from.

One flat dataclass serves every event kind: history is read in bulk on every turn, and a
single shape keeps (de)serialisation a dict comprehension instead of a class registry.
``event_id`` is the position in the execution's history (1-based, unique per execution);
``corr_id`` is the correlation id tying a completion to the action that scheduled it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    TURN_STARTED = "TurnStarted"
    ORCHESTRATION_STARTED = "OrchestrationStarted"
    ACTIVITY_SCHEDULED = "ActivityScheduled"
    ACTIVITY_COMPLETED = "ActivityCompleted"
    ACTIVITY_FAILED = "ActivityFailed"
    TIMER_CREATED = "TimerCreated"
    TIMER_FIRED = "TimerFired"
    EVENT_SUBSCRIBED = "EventSubscribed"
    EVENT_RAISED = "EventRaised"
    SUB_ORCHESTRATION_SCHEDULED = "SubOrchestrationScheduled"
    SUB_ORCHESTRATION_COMPLETED = "SubOrchestrationCompleted"
    SUB_ORCHESTRATION_FAILED = "SubOrchestrationFailed"
    ORCHESTRATION_DETACHED = "OrchestrationDetached"
    CANCEL_REQUESTED = "CancelRequested"
    ORCHESTRATION_COMPLETED = "OrchestrationCompleted"
    ORCHESTRATION_FAILED = "OrchestrationFailed"
    CONTINUED_AS_NEW = "ContinuedAsNew"


#: Events produced by orchestration code; replay must reproduce them in the same order.
SCHEDULE_KINDS = frozenset(
    {
        EventKind.ACTIVITY_SCHEDULED,
        EventKind.TIMER_CREATED,
        EventKind.EVENT_SUBSCRIBED,
        EventKind.SUB_ORCHESTRATION_SCHEDULED,
        EventKind.ORCHESTRATION_DETACHED,
    }
)

_FIELDS = ("corr_id", "name", "data", "error", "instance", "version", "timestamp", "parent")


@dataclass
class HistoryEvent:
    kind: EventKind
    event_id: int = 0
    corr_id: int | None = None
    name: str | None = None
    #: input, result, output or event payload, depending on ``kind``
    data: Any = None
    error: dict[str, Any] | None = None
    #: target instance of a sub-orchestration or detached start
    instance: str | None = None
    version: str | None = None
    #: ISO-8601 UTC; turn start time, or a timer's fire time
    timestamp: str | None = None
    #: parent link of a sub-orchestration (``{"instance", "execution_id", "corr_id"}``)
    parent: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "event_id": self.event_id}
        for f in _FIELDS:
            v = getattr(self, f)
            if v is not None:
                out[f] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HistoryEvent:
        return cls(
            kind=EventKind(d["kind"]),
            event_id=int(d.get("event_id", 0)),
            **{f: d.get(f) for f in _FIELDS},
        )
