"""The replay executor: runs orchestration code against history for one turn.

A turn feeds the coroutine the old history (replay) and then the events that arrived since
(new messages), one event at a time and in order. After each event every blocked fiber whose
awaited future is now resolved runs until it blocks again. Actions the code takes are matched
position by position against the scheduling events of history; an action past the end of
history is new and becomes outbound work. The executor does no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ._context import ContinueAsNew, OrchestrationContext
from ._errors import (
    ActivityError,
    DurableError,
    ErrorCategory,
    ErrorInfo,
    InvalidInputError,
    NonDeterminismError,
    OrchestrationCancelledError,
    SubOrchestrationError,
    TaskFailedError,
)
from ._futures import DurableFuture
from ._history import SCHEDULE_KINDS, EventKind, HistoryEvent
from ._messages import ActivityTask
from ._provider import NewInstance
from ._registry import OrchestrationFn
from ._serialization import ensure_json


class OutcomeKind(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CONTINUED = "continued"


@dataclass
class Outcome:
    kind: OutcomeKind = OutcomeKind.RUNNING
    output: Any = None
    error: ErrorInfo | None = None
    continue_input: Any = None
    continue_version: str | None = None


@dataclass
class TurnResult:
    #: events to append, in order, without event ids
    events: list[HistoryEvent]
    outcome: Outcome
    custom_status: Any
    activity_tasks: list[ActivityTask] = field(default_factory=list)
    #: (corr_id, fire_at) of timers created this turn
    timers: list[tuple[int, datetime]] = field(default_factory=list)
    new_instances: list[NewInstance] = field(default_factory=list)
    #: sub-orchestrations still running when the instance was cancelled
    children_to_cancel: list[str] = field(default_factory=list)
    #: external events not consumed by an execution that continued as new
    carried_events: list[HistoryEvent] = field(default_factory=list)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass
class _Pending:
    future: DurableFuture[Any]
    kind: EventKind
    name: str
    instance: str | None = None


class _Fiber:
    def __init__(self, coro: Coroutine[Any, Any, Any], future: DurableFuture[Any] | None) -> None:
        self.coro = coro
        self.future = future
        self.waiting: DurableFuture[Any] | None = None
        #: raised at the fiber's current await on its next step (cancellation)
        self.throw: BaseException | None = None
        self.finished = False


class TurnExecutor:
    def __init__(
        self,
        fn: OrchestrationFn,
        *,
        instance_id: str,
        execution_id: int,
        name: str,
        version: str,
        history: list[HistoryEvent],
        new_events: list[HistoryEvent],
        custom_status: Any = None,
    ) -> None:
        self._fn = fn
        self.instance_id = instance_id
        self.execution_id = execution_id
        self._history = history
        self._new_events = new_events
        self._scheduled = [e for e in history if e.kind in SCHEDULE_KINDS]
        self._sched_pos = 0
        self._next_corr = 1
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._subscriptions: dict[str, deque[DurableFuture[Any]]] = {}
        self._buffered: dict[str, deque[HistoryEvent]] = {}
        self._fibers: list[_Fiber] = []
        self._main: _Fiber | None = None
        self._fatal: NonDeterminismError | None = None
        self._replaying = True
        self._done = False
        #: set by the first CancelRequested; the code then runs its cleanup, if any
        self._cancel_reason: str | None = None
        #: cancelled in the very turn that starts the execution: its code never runs
        self._cancelled_before_start = not history and any(
            e.kind == EventKind.CANCEL_REQUESTED for e in new_events
        )
        self.current_time: datetime = datetime.fromtimestamp(0).astimezone()
        parent = next((e.parent for e in history if e.kind == EventKind.ORCHESTRATION_STARTED), None)
        self.ctx = OrchestrationContext(
            self,
            instance_id=instance_id,
            execution_id=execution_id,
            name=name,
            version=version,
            parent_instance_id=(parent or {}).get("instance"),
        )
        self.result = TurnResult(events=[], outcome=Outcome(), custom_status=custom_status)

    @property
    def is_replaying(self) -> bool:
        return self._replaying

    # --- the turn -----------------------------------------------------------------------------
    def run(self) -> TurnResult:
        boundary = len(self._history)
        for pos, event in enumerate(self._history + self._new_events):
            if pos == boundary:
                self._end_replay()
            if self._done:
                if pos >= boundary and event.kind == EventKind.EVENT_RAISED:
                    self.result.carried_events.append(event)
                continue
            if pos >= boundary:
                if not self._relevant(event):
                    continue
                self.result.events.append(event)
            self._apply(event, in_replay=pos < boundary)
            self._pump()
        if self._replaying:
            self._end_replay()
        if self._fatal is not None and self.result.outcome.kind in (
            OutcomeKind.RUNNING,
            OutcomeKind.COMPLETED,
        ):
            self._finish(Outcome(OutcomeKind.FAILED, error=self._fatal.error))
        if self._done and self.result.outcome.kind == OutcomeKind.CONTINUED:
            for queue in self._buffered.values():
                self.result.carried_events.extend(queue)
        return self.result

    def _end_replay(self) -> None:
        self._replaying = False
        if self._done or self._fatal is not None:
            return
        if self._sched_pos < len(self._scheduled):
            expected = self._scheduled[self._sched_pos]
            self._nondeterminism(
                f"history has {_describe(expected.kind, expected.name)} at action position "
                f"{self._sched_pos + 1}, but the replayed code did not schedule it"
            )

    def _relevant(self, event: HistoryEvent) -> bool:
        """New completions for unknown or already-resolved correlation ids are dropped."""
        if event.corr_id is not None and event.kind not in SCHEDULE_KINDS:
            return event.corr_id in self._pending
        return True

    def _apply(self, event: HistoryEvent, *, in_replay: bool) -> None:
        kind = event.kind
        if kind == EventKind.TURN_STARTED:
            assert event.timestamp is not None
            self.current_time = parse_time(event.timestamp)
        elif kind == EventKind.ORCHESTRATION_STARTED:
            if self._cancelled_before_start:
                reason = next(
                    str(e.data or "cancelled")
                    for e in self._new_events
                    if e.kind == EventKind.CANCEL_REQUESTED
                )
                self._finish(Outcome(OutcomeKind.CANCELLED, error=OrchestrationCancelledError(reason).error))
            else:
                self._start_main(event.data)
        elif kind in (
            EventKind.ACTIVITY_COMPLETED,
            EventKind.TIMER_FIRED,
            EventKind.SUB_ORCHESTRATION_COMPLETED,
        ):
            pending = self._pending.pop(event.corr_id or 0, None)
            if pending is not None:
                pending.future._resolve(event.data, self._next_seq())
        elif kind in (EventKind.ACTIVITY_FAILED, EventKind.SUB_ORCHESTRATION_FAILED):
            pending = self._pending.pop(event.corr_id or 0, None)
            if pending is not None:
                info = ErrorInfo.from_dict(event.error or {})
                exc_type = ActivityError if kind == EventKind.ACTIVITY_FAILED else SubOrchestrationError
                pending.future._fail(exc_type(pending.name, info), self._next_seq())
        elif kind == EventKind.EVENT_RAISED:
            name = event.name or ""
            waiters = self._subscriptions.get(name)
            if waiters:
                waiters.popleft()._resolve(event.data, self._next_seq())
            else:
                self._buffered.setdefault(name, deque()).append(event)
        elif kind == EventKind.CANCEL_REQUESTED:
            if self._cancel_reason is not None:
                return  # already cancelling: a repeated request changes nothing
            reason = str(event.data or "cancelled")
            self._cancel_reason = reason
            if not in_replay:  # running sub-orchestrations are cancelled at once, with the parent
                self.result.children_to_cancel = [
                    p.instance
                    for p in self._pending.values()
                    if p.kind == EventKind.SUB_ORCHESTRATION_SCHEDULED and p.instance
                ]
            # the code sees it at the await it is blocked on, and may clean up; the engine's own
            # helpers (retry loops) stop too, so a cancelled instance schedules no more attempts
            for fiber in self._fibers:
                if not fiber.finished:
                    fiber.throw = OrchestrationCancelledError(reason)

    # --- fibers -------------------------------------------------------------------------------
    def _start_main(self, input: Any) -> None:
        self._main = _Fiber(self._fn(self.ctx, input), None)
        self._fibers.append(self._main)
        self._step(self._main)

    def spawn(self, coro: Coroutine[Any, Any, Any], description: str) -> DurableFuture[Any]:
        """Run a helper coroutine (e.g. a retry loop) as its own fiber, awaitable as a future."""
        future: DurableFuture[Any] = DurableFuture(description)
        fiber = _Fiber(coro, future)
        self._fibers.append(fiber)
        self._step(fiber)
        return future

    def _step(self, fiber: _Fiber) -> None:
        try:
            if fiber.throw is not None:
                exc, fiber.throw = fiber.throw, None
                yielded = fiber.coro.throw(exc)
            else:
                yielded = fiber.coro.send(None)
        except StopIteration as stop:
            self._fiber_finished(fiber, value=stop.value)
        except BaseException as exc:
            self._fiber_finished(fiber, exc=exc)
        else:
            if not isinstance(yielded, DurableFuture):
                fiber.coro.close()
                self._fiber_finished(
                    fiber,
                    exc=_config_error(
                        "InvalidAwait",
                        f"orchestration awaited {yielded!r}; orchestrations may only await the tasks "
                        "ctx returns (activities, timers, events, sub-orchestrations, join, select)",
                    ),
                )
            else:
                fiber.waiting = yielded

    def _fiber_finished(self, fiber: _Fiber, *, value: Any = None, exc: BaseException | None = None) -> None:
        fiber.finished = True
        if fiber.future is not None:
            if exc is not None:
                fiber.future._fail(exc, self._next_seq())
            else:
                fiber.future._resolve(value, self._next_seq())
            return
        if self._replaying and self._fatal is None and exc is None:
            self._nondeterminism("the orchestration completed during replay, but history shows it went on")
        if self._fatal is not None:
            self._finish(Outcome(OutcomeKind.FAILED, error=self._fatal.error))
        elif isinstance(exc, OrchestrationCancelledError) or (
            exc is None and self._cancel_reason is not None
        ):
            # re-raised after its cleanup, or returned: cancelled either way (not continued)
            reason = self._cancel_reason if self._cancel_reason is not None else str(exc)
            output = None if isinstance(value, ContinueAsNew) else value
            try:
                ensure_json(output, "the orchestration output")
            except InvalidInputError:
                output = None
            self._finish(
                Outcome(OutcomeKind.CANCELLED, output=output, error=OrchestrationCancelledError(reason).error)
            )
        elif exc is not None:
            self._finish(Outcome(OutcomeKind.FAILED, error=_error_of(exc)))
        elif isinstance(value, ContinueAsNew):
            try:
                ensure_json(value.input, "the continue_as_new input")
            except InvalidInputError as bad:
                self._finish(Outcome(OutcomeKind.FAILED, error=_error_of(bad)))
                return
            self._finish(
                Outcome(OutcomeKind.CONTINUED, continue_input=value.input, continue_version=value.version)
            )
        else:
            try:
                ensure_json(value, "the orchestration output")
            except InvalidInputError as bad:
                self._finish(Outcome(OutcomeKind.FAILED, error=_error_of(bad)))
                return
            self._finish(Outcome(OutcomeKind.COMPLETED, output=value))

    def _pump(self) -> None:
        progressed = True
        while progressed and not self._done:
            progressed = False
            for fiber in list(self._fibers):
                if self._done:
                    break
                ready = fiber.waiting is None or fiber.waiting.done() or fiber.throw is not None
                if not fiber.finished and ready:
                    self._step(fiber)
                    progressed = True

    def _finish(self, outcome: Outcome) -> None:
        if self._done:
            return
        self._done = True
        self.result.outcome = outcome
        for fiber in self._fibers:
            if not fiber.finished:
                fiber.finished = True
                try:
                    fiber.coro.close()
                except BaseException:
                    pass

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _nondeterminism(self, message: str) -> NonDeterminismError:
        if self._fatal is None:
            self._fatal = NonDeterminismError(
                f"nondeterminism in {self.ctx.name} ({self.instance_id}): {message}"
            )
        return self._fatal

    # --- actions (called through the context) ----------------------------------------------
    def _record(
        self, kind: EventKind, name: str, instance: str | None = None
    ) -> tuple[int, HistoryEvent | None]:
        if self._done:
            raise RuntimeError("the orchestration has finished; it cannot schedule more work")
        if self._fatal is not None:
            raise self._fatal
        corr = self._next_corr
        self._next_corr += 1
        if self._sched_pos < len(self._scheduled):
            expected = self._scheduled[self._sched_pos]
            position = self._sched_pos + 1
            self._sched_pos += 1
            same = expected.kind == kind and expected.name == name
            if same and instance is not None and expected.instance is not None:
                same = expected.instance == instance
            if not same or expected.corr_id != corr:
                raise self._nondeterminism(
                    f"at action position {position} history has {_describe(expected.kind, expected.name)} "
                    f"but the replayed code scheduled {_describe(kind, name)}"
                )
            return corr, expected
        if self._replaying:
            raise self._nondeterminism(
                f"the replayed code scheduled {_describe(kind, name)} at action position {corr}, "
                "where history has no scheduled action"
            )
        return corr, None

    def _new_event(self, kind: EventKind, corr: int, name: str, **fields: Any) -> None:
        self.result.events.append(HistoryEvent(kind=kind, corr_id=corr, name=name, **fields))

    def schedule_activity(self, name: str, input: Any) -> DurableFuture[Any]:
        corr, seen = self._record(EventKind.ACTIVITY_SCHEDULED, name)
        if seen is None:
            ensure_json(input, f"the input of activity {name!r}")
            self._new_event(EventKind.ACTIVITY_SCHEDULED, corr, name, data=input)
            self.result.activity_tasks.append(
                ActivityTask(self.instance_id, self.execution_id, corr, name, input)
            )
        future: DurableFuture[Any] = DurableFuture(f"activity {name!r} #{corr}")
        self._pending[corr] = _Pending(future, EventKind.ACTIVITY_SCHEDULED, name)
        return future

    def schedule_timer(self, fire_at: datetime) -> DurableFuture[None]:
        corr, seen = self._record(EventKind.TIMER_CREATED, "timer")
        if seen is None:
            self._new_event(EventKind.TIMER_CREATED, corr, "timer", timestamp=fire_at.isoformat())
            self.result.timers.append((corr, fire_at))
        future: DurableFuture[None] = DurableFuture(f"timer #{corr}")
        self._pending[corr] = _Pending(future, EventKind.TIMER_CREATED, "timer")
        return future

    def wait_for_event(self, name: str) -> DurableFuture[Any]:
        corr, seen = self._record(EventKind.EVENT_SUBSCRIBED, name)
        if seen is None:
            self._new_event(EventKind.EVENT_SUBSCRIBED, corr, name)
        future: DurableFuture[Any] = DurableFuture(f"event {name!r} #{corr}")
        buffered = self._buffered.get(name)
        if buffered:
            future._resolve(buffered.popleft().data, self._next_seq())
        else:
            self._subscriptions.setdefault(name, deque()).append(future)
        return future

    def _child_id(self, corr: int, explicit: str | None) -> str:
        return explicit or f"{self.instance_id}::{self.execution_id}:{corr}"

    def schedule_sub_orchestration(
        self, name: str, input: Any, instance_id: str | None, version: str | None
    ) -> DurableFuture[Any]:
        corr = self._next_corr
        child = self._child_id(corr, instance_id)
        corr, seen = self._record(EventKind.SUB_ORCHESTRATION_SCHEDULED, name, child)
        if seen is None:
            ensure_json(input, f"the input of sub-orchestration {name!r}")
            self._new_event(
                EventKind.SUB_ORCHESTRATION_SCHEDULED, corr, name, data=input, instance=child, version=version
            )
            parent = {"instance": self.instance_id, "execution_id": self.execution_id, "corr_id": corr}
            self.result.new_instances.append(NewInstance(child, name, version, input, parent))
        future: DurableFuture[Any] = DurableFuture(f"sub-orchestration {name!r} ({child})")
        self._pending[corr] = _Pending(future, EventKind.SUB_ORCHESTRATION_SCHEDULED, name, child)
        return future

    def start_detached(self, name: str, input: Any, instance_id: str | None, version: str | None) -> str:
        corr = self._next_corr
        child = self._child_id(corr, instance_id)
        corr, seen = self._record(EventKind.ORCHESTRATION_DETACHED, name, child)
        if seen is None:
            ensure_json(input, f"the input of orchestration {name!r}")
            self._new_event(
                EventKind.ORCHESTRATION_DETACHED, corr, name, data=input, instance=child, version=version
            )
            self.result.new_instances.append(NewInstance(child, name, version, input, None))
        return seen.instance if seen is not None and seen.instance else child

    def set_custom_status(self, value: Any) -> None:
        ensure_json(value, "the custom status")
        self.result.custom_status = value


def _describe(kind: EventKind, name: str | None) -> str:
    return f"{kind.value}({name!r})"


def _config_error(type_: str, message: str) -> DurableError:
    return DurableError(message, ErrorInfo(ErrorCategory.CONFIGURATION, type_, message))


def _error_of(exc: BaseException) -> ErrorInfo:
    """The status error of an orchestration that raised ``exc``.

    A task failure keeps its cause's category (an activity's infrastructure failure is still
    infrastructure) and records the cause, so the status shows both what failed and why.
    """
    if isinstance(exc, TaskFailedError):
        return ErrorInfo(exc.category, type(exc).__name__, str(exc), {"cause": exc.info.to_dict()})
    if isinstance(exc, InvalidInputError):
        return ErrorInfo(ErrorCategory.APPLICATION, "InvalidInputError", str(exc))
    if isinstance(exc, DurableError) and exc.error is not None:
        return exc.error
    return ErrorInfo.from_exception(exc)
