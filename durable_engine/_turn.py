"""One orchestration turn, from fetched item to the commit that applies it.

Pure logic, no I/O: message → event conversion, the guards that end an instance instead of
looping (unknown orchestration, poison messages, history cap), running the replay executor,
and assembling the outbound work. The runtime hands the result to ``Provider.commit_turn``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._errors import ErrorCategory, ErrorInfo
from ._history import EventKind, HistoryEvent
from ._messages import MessageKind, OrchestratorMessage
from ._provider import InstanceRecord, InstanceUpdate, OrchestrationItem, TimedMessage, TurnCommit
from ._registry import Registry
from ._replay import OutcomeKind, TurnExecutor, TurnResult, parse_time
from ._status import RuntimeStatus


@dataclass(frozen=True)
class TurnLimits:
    history_cap: int = 10_000
    max_dequeue_count: int = 10


class TurnDeferred(Exception):
    """The messages in hand cannot be processed yet; the runtime releases them with a backoff.

    Raised when an execution has ended in ContinuedAsNew but the message that starts the next
    execution is not among them: replaying the finished execution would fail it. Providers back
    off the whole instance, so the next delivery brings that message along.
    """


_COMPLETION_KINDS = {
    MessageKind.ACTIVITY_COMPLETED: EventKind.ACTIVITY_COMPLETED,
    MessageKind.ACTIVITY_FAILED: EventKind.ACTIVITY_FAILED,
    MessageKind.TIMER_FIRED: EventKind.TIMER_FIRED,
    MessageKind.SUB_ORCHESTRATION_COMPLETED: EventKind.SUB_ORCHESTRATION_COMPLETED,
    MessageKind.SUB_ORCHESTRATION_FAILED: EventKind.SUB_ORCHESTRATION_FAILED,
}


def plan_turn(item: OrchestrationItem, registry: Registry, now: datetime, limits: TurnLimits) -> TurnCommit:
    record = item.instance
    consumed = [m.id for m in item.messages if m.id is not None]
    if record is None or record.status.is_terminal:
        # a finished (or purged) instance runs no more turns: its late messages are dropped
        return TurnCommit(item.instance_id, record.execution_id if record else 1, [], consumed, None)

    return _TurnPlanner(item, record, now).plan(consumed, registry, limits)


def plan_failure(item: OrchestrationItem, now: datetime, error: ErrorInfo) -> TurnCommit:
    """A turn that fails the instance without running its code (which overran its time limit).

    The messages are consumed, the parent (if any) hears of the failure, as on every failure.
    """
    record = item.instance
    consumed = [m.id for m in item.messages if m.id is not None]
    if record is None or record.status.is_terminal:
        return TurnCommit(item.instance_id, record.execution_id if record else 1, [], consumed, None)
    planner = _TurnPlanner(item, record, now)
    planner._events_from_messages()  # a ContinueAsNew among them decides the failing execution
    return planner._fail_now(consumed, error)


class _TurnPlanner:
    def __init__(
        self,
        item: OrchestrationItem,
        record: InstanceRecord,
        now: datetime,
    ) -> None:
        self.item = item
        self.record = record
        self.now = now
        self.execution_id = record.execution_id
        self.history = list(item.history)
        self.name = record.name
        self.version = record.version
        self.input = record.input
        started = next((e for e in self.history if e.kind == EventKind.ORCHESTRATION_STARTED), None)
        self.parent: dict[str, Any] | None = started.parent if started else None

    def plan(self, consumed: list[int], registry: Registry, limits: TurnLimits) -> TurnCommit:
        new_events = self._events_from_messages()
        if self.item.dequeue_count > limits.max_dequeue_count:
            return self._fail_now(
                consumed,
                ErrorInfo(
                    ErrorCategory.INFRASTRUCTURE,
                    "PoisonMessage",
                    f"messages for this instance were delivered {self.item.dequeue_count} times "
                    "without a successful turn; giving up",
                ),
            )
        if self.history and self.history[-1].kind == EventKind.CONTINUED_AS_NEW:
            # still the old execution: its ContinueAsNew message was not delivered with these
            raise TurnDeferred(
                f"{self.item.instance_id} continued as new, but the message that starts execution "
                f"{self.execution_id + 1} did not come with {len(self.item.messages)} later message(s)"
            )
        if not self.history and not any(e.kind == EventKind.ORCHESTRATION_STARTED for e in new_events):
            # nothing has started this execution (e.g. only stale completions arrived): drop them
            return TurnCommit(self.item.instance_id, self.execution_id, [], consumed, None)
        if not any(e.kind != EventKind.TURN_STARTED for e in new_events):
            return TurnCommit(self.item.instance_id, self.execution_id, [], consumed, None)

        found = registry.get_orchestration(self.name, self.version)
        if found is None:
            known = registry.orchestration_names().get(self.name)
            detail = f"versions registered: {', '.join(known)}" if known else "no version is registered"
            return self._fail_now(
                consumed,
                ErrorInfo(
                    ErrorCategory.CONFIGURATION,
                    "UnknownOrchestration",
                    f"orchestration {self.name!r} version {self.version or 'latest'} is not registered "
                    f"({detail})",
                ),
            )
        self.version, fn = found
        for event in new_events:
            if event.kind == EventKind.ORCHESTRATION_STARTED:
                event.version = self.version

        executor = TurnExecutor(
            fn,
            instance_id=self.item.instance_id,
            execution_id=self.execution_id,
            name=self.name,
            version=self.version,
            history=self.history,
            new_events=new_events,
            custom_status=self.record.custom_status,
        )
        result = executor.run()
        if len(self.history) + len(result.events) + 1 > limits.history_cap:
            return self._fail_now(
                consumed,
                ErrorInfo(
                    ErrorCategory.APPLICATION,
                    "HistoryCapExceeded",
                    f"the history of this execution would exceed {limits.history_cap} events; "
                    "long-running orchestrations should use continue_as_new to start afresh",
                ),
            )
        return self._commit_from(result, consumed)

    # --- message → event ----------------------------------------------------------------------
    def _turn_time(self) -> datetime:
        """The turn's time (``ctx.utc_now()``): the clock's, but never before the previous turn
        nor before a timer firing in this one.

        A provider's clock may be an estimate (PostgreSQL's is the server's, read on this host)
        and host clocks step; orchestration code must still see time move forward, and a timer
        of ``d`` never end less than ``d`` after it was set.
        """
        floor = self.now
        previous = next((e for e in reversed(self.history) if e.kind == EventKind.TURN_STARTED), None)
        if previous is not None and previous.timestamp:
            floor = max(floor, parse_time(previous.timestamp))
        for msg in self.item.messages:
            fired = msg.kind == MessageKind.TIMER_FIRED and msg.execution_id == self.execution_id
            if fired and msg.timestamp:
                floor = max(floor, parse_time(msg.timestamp))
        return floor

    def _events_from_messages(self) -> list[HistoryEvent]:
        events = [HistoryEvent(EventKind.TURN_STARTED, timestamp=self._turn_time().isoformat())]
        for msg in self.item.messages:
            event = self._event_of(msg)
            if event is not None:
                events.extend(event)
        return events

    def _event_of(self, msg: OrchestratorMessage) -> list[HistoryEvent] | None:
        kind = msg.kind
        if kind == MessageKind.START:
            if self.history or self.record.status != RuntimeStatus.PENDING:
                return None  # a duplicate start of an instance that already runs
            self.parent = msg.parent
            self.version = msg.version or self.version
            return [
                HistoryEvent(
                    EventKind.ORCHESTRATION_STARTED, name=self.name, data=msg.data, parent=msg.parent
                )
            ]
        if kind == MessageKind.CONTINUE_AS_NEW:
            if (msg.execution_id or 0) <= self.execution_id and self.history:
                return None
            self.execution_id = msg.execution_id or self.execution_id + 1
            self.history = []
            self.version = msg.version or self.version
            self.input = msg.data
            self.parent = msg.parent
            started = HistoryEvent(
                EventKind.ORCHESTRATION_STARTED, name=self.name, data=msg.data, parent=msg.parent
            )
            carried = [HistoryEvent.from_dict(e) for e in msg.carry or []]
            return [started, *carried]
        if kind in _COMPLETION_KINDS:
            if msg.execution_id != self.execution_id:
                return None  # a completion for an execution that continued as new
            return [
                HistoryEvent(
                    _COMPLETION_KINDS[kind],
                    corr_id=msg.corr_id,
                    data=msg.data,
                    error=msg.error,
                    timestamp=msg.timestamp,
                )
            ]
        if kind == MessageKind.EVENT_RAISED:
            return [HistoryEvent(EventKind.EVENT_RAISED, name=msg.name, data=msg.data)]
        if kind == MessageKind.CANCEL:
            return [HistoryEvent(EventKind.CANCEL_REQUESTED, data=msg.data)]
        return None

    # --- commits ------------------------------------------------------------------------------
    def _numbered(self, events: list[HistoryEvent]) -> list[HistoryEvent]:
        start = len(self.history) + 1
        for offset, event in enumerate(events):
            event.event_id = start + offset
        return events

    def _update(self, status: RuntimeStatus, **fields: Any) -> InstanceUpdate:
        return InstanceUpdate(
            name=self.name,
            version=self.version,
            status=status,
            execution_id=self.execution_id,
            input=self.input,
            custom_status=fields.pop("custom_status", self.record.custom_status),
            **fields,
        )

    def _parent_notice(self, *, output: Any = None, error: ErrorInfo | None = None) -> list[TimedMessage]:
        if not self.parent:
            return []
        kind = MessageKind.SUB_ORCHESTRATION_FAILED if error else MessageKind.SUB_ORCHESTRATION_COMPLETED
        return [
            TimedMessage(
                OrchestratorMessage(
                    kind=kind,
                    instance_id=self.parent["instance"],
                    execution_id=self.parent.get("execution_id"),
                    corr_id=self.parent.get("corr_id"),
                    data=output,
                    error=error.to_dict() if error else None,
                )
            )
        ]

    def _fail_now(self, consumed: list[int], error: ErrorInfo) -> TurnCommit:
        events = self._numbered([HistoryEvent(EventKind.ORCHESTRATION_FAILED, error=error.to_dict())])
        return TurnCommit(
            instance_id=self.item.instance_id,
            execution_id=self.execution_id,
            new_events=events,
            consumed_message_ids=consumed,
            update=self._update(RuntimeStatus.FAILED, error=error.to_dict()),
            orchestrator_messages=self._parent_notice(error=error),
        )

    def _commit_from(self, result: TurnResult, consumed: list[int]) -> TurnCommit:
        outcome = result.outcome
        if (
            outcome.kind == OutcomeKind.RUNNING
            and self.history
            and all(e.kind == EventKind.TURN_STARTED for e in result.events)
            and not (
                result.activity_tasks or result.timers or result.new_instances or result.children_to_cancel
            )
            and result.custom_status == self.record.custom_status
        ):
            # only stale messages arrived (a late timer, a completion nobody awaits any more):
            # consume them without growing the history by an empty turn
            return TurnCommit(self.item.instance_id, self.execution_id, [], consumed, None)
        events = list(result.events)
        # fire-and-forget work of a final turn still goes out (CreateInstance starts its
        # monitor and returns; a cancelled one schedules its cleanup); timers of a finished
        # instance would only be dropped
        sends_work = outcome.kind != OutcomeKind.FAILED
        timers = result.timers if outcome.kind == OutcomeKind.RUNNING else []
        messages = [
            TimedMessage(
                OrchestratorMessage(
                    kind=MessageKind.TIMER_FIRED,
                    instance_id=self.item.instance_id,
                    execution_id=self.execution_id,
                    corr_id=corr,
                    timestamp=fire_at.isoformat(),
                ),
                visible_at=fire_at,
            )
            for corr, fire_at in timers
        ]
        custom = {"custom_status": result.custom_status}
        if outcome.kind == OutcomeKind.RUNNING:
            update = self._update(RuntimeStatus.RUNNING, **custom)
        elif outcome.kind == OutcomeKind.COMPLETED:
            events.append(HistoryEvent(EventKind.ORCHESTRATION_COMPLETED, data=outcome.output))
            update = self._update(RuntimeStatus.COMPLETED, output=outcome.output, **custom)
            messages += self._parent_notice(output=outcome.output)
        elif outcome.kind == OutcomeKind.CONTINUED:
            next_version = outcome.continue_version or self.version
            events.append(
                HistoryEvent(EventKind.CONTINUED_AS_NEW, data=outcome.continue_input, version=next_version)
            )
            update = self._update(RuntimeStatus.RUNNING, **custom)
            messages.append(
                TimedMessage(
                    OrchestratorMessage(
                        kind=MessageKind.CONTINUE_AS_NEW,
                        instance_id=self.item.instance_id,
                        execution_id=self.execution_id + 1,
                        name=self.name,
                        version=next_version,
                        data=outcome.continue_input,
                        parent=self.parent,
                        carry=[e.to_dict() for e in result.carried_events] or None,
                    )
                )
            )
        else:
            assert outcome.error is not None
            error = outcome.error
            events.append(HistoryEvent(EventKind.ORCHESTRATION_FAILED, error=error.to_dict()))
            status = (
                RuntimeStatus.CANCELLED if outcome.kind == OutcomeKind.CANCELLED else RuntimeStatus.FAILED
            )
            update = self._update(status, output=outcome.output, error=error.to_dict(), **custom)
            messages += self._parent_notice(error=error)
        # sub-orchestrations running when the cancellation arrived go down with the parent now,
        # while its cleanup (if any) still runs
        messages += [
            TimedMessage(
                OrchestratorMessage(
                    kind=MessageKind.CANCEL,
                    instance_id=child,
                    data=f"parent {self.item.instance_id} cancelled",
                )
            )
            for child in result.children_to_cancel
        ]
        return TurnCommit(
            instance_id=self.item.instance_id,
            execution_id=self.execution_id,
            new_events=self._numbered(events),
            consumed_message_ids=consumed,
            update=update,
            orchestrator_messages=messages,
            activity_tasks=result.activity_tasks if sends_work else [],
            new_instances=result.new_instances if sends_work else [],
        )


# --- chaining turns in one dispatch (inline activities) --------------------------------------------


def can_chain(item: OrchestrationItem, commit: TurnCommit) -> bool:
    """Whether another turn may follow ``commit`` before it is written.

    Only while the instance keeps running in the same execution: a finished instance has no
    next turn, and continue-as-new starts a new execution that begins from a fresh fetch.
    """
    update = commit.update
    return (
        update is not None
        and update.status == RuntimeStatus.RUNNING
        and update.execution_id == commit.execution_id
        and item.instance is not None
        and item.instance.execution_id == commit.execution_id
        and not any(m.message.kind == MessageKind.CONTINUE_AS_NEW for m in commit.orchestrator_messages)
    )


def next_item(
    item: OrchestrationItem, commit: TurnCommit, completions: list[OrchestratorMessage]
) -> OrchestrationItem:
    """The item the next chained turn sees: history so far plus the completions that arrived."""
    assert item.instance is not None and commit.update is not None
    update = commit.update
    record = InstanceRecord(
        instance_id=item.instance_id,
        name=update.name,
        version=update.version,
        status=update.status,
        execution_id=update.execution_id,
        input=update.input,
        output=update.output,
        error=update.error,
        custom_status=update.custom_status,
        parent_instance_id=item.instance.parent_instance_id,
        created_at=item.instance.created_at,
        updated_at=item.instance.updated_at,
    )
    return OrchestrationItem(
        instance_id=item.instance_id,
        lock_token=item.lock_token,
        instance=record,
        history=[*item.history, *commit.new_events],
        messages=completions,
        dequeue_count=1,
    )


def merge_commits(first: TurnCommit, second: TurnCommit) -> TurnCommit:
    """One commit that applies two consecutive turns of one instance (``second`` planned on ``first``)."""
    return TurnCommit(
        instance_id=first.instance_id,
        execution_id=second.execution_id,
        new_events=[*first.new_events, *second.new_events],
        consumed_message_ids=[*first.consumed_message_ids, *second.consumed_message_ids],
        update=second.update if second.update is not None else first.update,
        orchestrator_messages=[*first.orchestrator_messages, *second.orchestrator_messages],
        activity_tasks=[*first.activity_tasks, *second.activity_tasks],
        new_instances=[*first.new_instances, *second.new_instances],
        claimed_tasks=[*first.claimed_tasks, *second.claimed_tasks],
    )
