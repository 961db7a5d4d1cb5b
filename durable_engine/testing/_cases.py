"""The conformance cases: the storage contract of :class:`~durable_engine.Provider`, as code.

Each case gets a provider over empty storage and a way to let time pass on its clock. Locks
that must *hold* during a case are long (30 s); locks that must *expire* are short (0.3 s)
and the case lets 0.5 s pass, so a provider on the real clock runs each case in about a
second at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from .._errors import LockLostError
from .._history import EventKind, HistoryEvent
from .._messages import ActivityTask, MessageKind, OrchestratorMessage
from .._provider import (
    InstanceUpdate,
    NewInstance,
    OrchestrationItem,
    Provider,
    TimedMessage,
    TurnCommit,
)
from .._status import RuntimeStatus

#: lets ``seconds`` pass on the provider's clock (virtual or real)
Advance = Callable[[float], Awaitable[None]]
CaseFn = Callable[[Provider, Advance], Awaitable[None]]


@dataclass(frozen=True)
class ConformanceCase:
    """One rule of the storage contract, checked against a fresh provider."""

    name: str
    run: CaseFn

    def __repr__(self) -> str:
        return f"<ConformanceCase {self.name}>"


#: every case, in the order they are defined (the order of the contract in ``Provider``)
CONFORMANCE_CASES: list[ConformanceCase] = []


def conformance_case(fn: CaseFn) -> CaseFn:
    CONFORMANCE_CASES.append(ConformanceCase(fn.__name__, fn))
    return fn


LONG = timedelta(seconds=30)
SHORT = timedelta(seconds=0.3)
PAST_SHORT = 0.5


# --- helpers -------------------------------------------------------------------------------
def event(event_id: int, kind: EventKind = EventKind.TURN_STARTED, **fields: Any) -> HistoryEvent:
    return HistoryEvent(kind=kind, event_id=event_id, **fields)


def raised(instance_id: str, name: str, data: Any = None) -> OrchestratorMessage:
    return OrchestratorMessage(kind=MessageKind.EVENT_RAISED, instance_id=instance_id, name=name, data=data)


def update(
    name: str = "Orch",
    status: RuntimeStatus = RuntimeStatus.RUNNING,
    execution_id: int = 1,
    **fields: Any,
) -> InstanceUpdate:
    return InstanceUpdate(name=name, version="1.0.0", status=status, execution_id=execution_id, **fields)


def task(instance_id: str, corr_id: int, name: str = "Act", execution_id: int = 1) -> ActivityTask:
    return ActivityTask(
        instance_id=instance_id, execution_id=execution_id, corr_id=corr_id, name=name, input={"n": corr_id}
    )


async def start(provider: Provider, instance_id: str, name: str = "Orch", **kw: Any) -> None:
    assert await provider.create_instance(
        NewInstance(instance_id=instance_id, name=name, version="1.0.0", input=kw.pop("input", None), **kw)
    )


async def fetch(provider: Provider, lock: timedelta = LONG) -> OrchestrationItem:
    item = await provider.fetch_orchestration_item(lock)
    assert item is not None, "expected an orchestration item"
    return item


def commit_for(item: OrchestrationItem, *events: HistoryEvent, **kw: Any) -> TurnCommit:
    """A commit consuming every message of ``item`` (override with consumed_message_ids=...)."""
    kw.setdefault("consumed_message_ids", [m.id for m in item.messages])
    kw.setdefault("update", None)
    execution_id = item.instance.execution_id if item.instance else 1
    return TurnCommit(
        instance_id=item.instance_id,
        execution_id=kw.pop("execution_id", execution_id),
        new_events=list(events),
        **kw,
    )


# --- instances and the orchestrator queue -----------------------------------------------------
@conformance_case
async def create_instance_is_idempotent_and_enqueues_start(provider: Provider, advance: Advance) -> None:
    parent = {"instance": "parent-1", "execution_id": 1, "corr_id": 7}
    new = NewInstance(instance_id="a", name="Orch", version="2.0.0", input={"x": 1}, parent=parent)
    assert await provider.create_instance(new) is True
    again = NewInstance(instance_id="a", name="Other", version=None, input={"x": 2})
    assert await provider.create_instance(again) is False

    record = await provider.get_instance("a")
    assert record is not None
    assert (record.name, record.version, record.status, record.execution_id) == (
        "Orch",
        "2.0.0",
        RuntimeStatus.PENDING,
        1,
    )
    assert record.input == {"x": 1}
    assert record.parent_instance_id == "parent-1"
    assert record.created_at is not None and record.updated_at is not None
    assert record.created_at.tzinfo is not None

    item = await fetch(provider)
    assert item.instance_id == "a"
    assert item.instance is not None and item.instance.name == "Orch"
    assert item.history == []
    assert len(item.messages) == 1, "the second create must not enqueue another Start"
    msg = item.messages[0]
    assert msg.kind is MessageKind.START
    assert (msg.name, msg.version, msg.data, msg.execution_id, msg.parent) == (
        "Orch",
        "2.0.0",
        {"x": 1},
        1,
        parent,
    )
    assert msg.id is not None
    assert item.dequeue_count == 1


@conformance_case
async def fetch_returns_all_visible_messages_of_one_instance_and_locks_it(
    provider: Provider, advance: Advance
) -> None:
    await start(provider, "a")
    await provider.enqueue_orchestrator_message(raised("a", "e1", 1))
    await start(provider, "b")
    await provider.enqueue_orchestrator_message(raised("a", "e2", 2))

    first = await fetch(provider)
    assert first.instance_id == "a"
    assert [m.kind for m in first.messages] == [
        MessageKind.START,
        MessageKind.EVENT_RAISED,
        MessageKind.EVENT_RAISED,
    ]
    assert [m.data for m in first.messages[1:]] == [1, 2]
    ids = [m.id for m in first.messages if m.id is not None]
    assert len(ids) == 3 and ids == sorted(ids)

    # a message arriving for the locked instance does not make it fetchable
    await provider.enqueue_orchestrator_message(raised("a", "e3", 3))
    second = await fetch(provider)
    assert second.instance_id == "b"
    assert await provider.fetch_orchestration_item(LONG) is None

    # once "a" commits (consuming what it fetched), the late message is delivered alone
    await provider.commit_turn(first.lock_token, commit_for(first))
    third = await fetch(provider)
    assert third.instance_id == "a"
    assert [m.name for m in third.messages] == ["e3"]


@conformance_case
async def message_for_unknown_instance_has_no_instance_row(provider: Provider, advance: Advance) -> None:
    await provider.enqueue_orchestrator_message(raised("ghost", "e"))
    item = await fetch(provider)
    assert item.instance_id == "ghost"
    assert item.instance is None
    assert item.history == []


@conformance_case
async def delayed_message_is_invisible_until_due(provider: Provider, advance: Advance) -> None:
    due = provider.now() + timedelta(seconds=0.3)
    await provider.enqueue_orchestrator_message(raised("t", "timer"), visible_at=due)
    assert await provider.fetch_orchestration_item(LONG) is None
    await advance(PAST_SHORT)
    item = await fetch(provider)
    assert [m.name for m in item.messages] == ["timer"]


@conformance_case
async def delayed_message_of_a_ready_instance_is_left_for_later(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    await provider.enqueue_orchestrator_message(
        raised("a", "later"), visible_at=provider.now() + timedelta(seconds=0.3)
    )
    item = await fetch(provider)
    assert [m.kind for m in item.messages] == [MessageKind.START]
    await provider.commit_turn(item.lock_token, commit_for(item))
    assert await provider.fetch_orchestration_item(LONG) is None
    await advance(PAST_SHORT)
    item = await fetch(provider)
    assert [m.name for m in item.messages] == ["later"]


@conformance_case
async def expired_lock_makes_item_fetchable_and_old_token_loses(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    stale = await fetch(provider, SHORT)
    await advance(PAST_SHORT)
    fresh = await fetch(provider)
    assert fresh.instance_id == "a"
    assert fresh.lock_token != stale.lock_token
    assert fresh.dequeue_count == 2

    with pytest.raises(LockLostError):
        await provider.commit_turn(
            stale.lock_token,
            commit_for(
                stale,
                event(1),
                update=update(status=RuntimeStatus.COMPLETED, output="stale"),
                activity_tasks=[task("a", 1)],
            ),
        )
    # the stale commit changed nothing
    assert await provider.read_history("a") == []
    record = await provider.get_instance("a")
    assert record is not None and record.status is RuntimeStatus.PENDING
    assert await provider.fetch_activity(LONG) is None

    await provider.commit_turn(fresh.lock_token, commit_for(fresh, event(1), update=update()))
    assert [e.event_id for e in await provider.read_history("a")] == [1]


@conformance_case
async def expired_lock_not_taken_over_can_still_commit(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    item = await fetch(provider, SHORT)
    await advance(PAST_SHORT)
    await provider.commit_turn(item.lock_token, commit_for(item, event(1), update=update()))
    assert [e.event_id for e in await provider.read_history("a")] == [1]
    assert await provider.fetch_orchestration_item(LONG) is None


@conformance_case
async def abandon_without_delay_redelivers_now(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    item = await fetch(provider)
    await provider.abandon_orchestration_item(item.lock_token)
    again = await fetch(provider)
    assert again.instance_id == "a"
    assert [m.id for m in again.messages] == [m.id for m in item.messages]
    assert again.dequeue_count == 2


@conformance_case
async def abandon_with_delay_hides_messages_until_then(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    item = await fetch(provider)
    await provider.abandon_orchestration_item(item.lock_token, timedelta(seconds=0.3))
    assert await provider.fetch_orchestration_item(LONG) is None
    await advance(PAST_SHORT)
    again = await fetch(provider)
    assert [m.id for m in again.messages] == [m.id for m in item.messages]
    assert again.dequeue_count == 2


@conformance_case
async def abandon_with_delay_holds_back_messages_that_arrive_meanwhile(
    provider: Provider, advance: Advance
) -> None:
    # the instance backs off, not only the abandoned messages: a later message must not overtake
    # them (a stray event fetched without its ContinueAsNew would replay a finished execution)
    await start(provider, "a")
    item = await fetch(provider)
    await provider.abandon_orchestration_item(item.lock_token, timedelta(seconds=0.3))
    await provider.enqueue_orchestrator_message(raised("a", "meanwhile"))
    assert await provider.fetch_orchestration_item(LONG) is None
    with pytest.raises(LockLostError):  # the abandoned token holds nothing any more
        await provider.commit_turn(item.lock_token, commit_for(item))
    await advance(PAST_SHORT)
    again = await fetch(provider)
    assert [m.kind for m in again.messages] == [MessageKind.START, MessageKind.EVENT_RAISED]
    assert again.messages[0].id == item.messages[0].id


@conformance_case
async def commit_with_duplicate_event_id_changes_nothing(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    item = await fetch(provider)
    await provider.commit_turn(item.lock_token, commit_for(item, event(1), event(2), update=update()))

    await provider.enqueue_orchestrator_message(raised("a", "go"))
    item = await fetch(provider)
    bad = commit_for(
        item,
        event(3),
        event(2),  # already in history
        update=update(status=RuntimeStatus.COMPLETED, output="nope"),
        orchestrator_messages=[TimedMessage(raised("other", "x"))],
        activity_tasks=[task("a", 9)],
        new_instances=[NewInstance("child", "Child", None, None)],
    )
    with pytest.raises(ValueError):
        await provider.commit_turn(item.lock_token, bad)

    assert [e.event_id for e in await provider.read_history("a")] == [1, 2]
    record = await provider.get_instance("a")
    assert record is not None and record.status is RuntimeStatus.RUNNING and record.output is None
    assert await provider.get_instance("child") is None
    assert await provider.fetch_activity(LONG) is None
    # the consumed message was not deleted: after releasing the lock it is delivered again
    await provider.abandon_orchestration_item(item.lock_token)
    again = await fetch(provider)
    assert again.instance_id == "a"
    assert [m.name for m in again.messages] == ["go"]
    assert await provider.fetch_orchestration_item(LONG) is None, "the message to 'other' was not enqueued"


@conformance_case
async def history_appends_in_event_order_and_status_updates(provider: Provider, advance: Advance) -> None:
    await start(provider, "a", input={"in": 1})
    item = await fetch(provider)
    await provider.commit_turn(
        item.lock_token,
        commit_for(
            item,
            event(1, EventKind.TURN_STARTED, timestamp="2030-01-01T00:00:00+00:00"),
            event(2, EventKind.ORCHESTRATION_STARTED, name="Orch", data={"in": 1}),
            event(3, EventKind.ACTIVITY_SCHEDULED, corr_id=1, name="Act", data={"n": 1}),
            update=update(input={"in": 1}, custom_status={"phase": "one"}),
        ),
    )
    await provider.enqueue_orchestrator_message(raised("a", "e"))
    item = await fetch(provider)
    assert [e.event_id for e in item.history] == [1, 2, 3]
    assert item.history[2].kind is EventKind.ACTIVITY_SCHEDULED
    assert (item.history[2].corr_id, item.history[2].name, item.history[2].data) == (1, "Act", {"n": 1})
    assert item.instance is not None and item.instance.custom_status == {"phase": "one"}

    error = {"category": "application", "type": "Boom", "message": "bad"}
    await provider.commit_turn(
        item.lock_token,
        commit_for(
            item,
            event(4, EventKind.EVENT_RAISED, name="e"),
            event(5, EventKind.ORCHESTRATION_FAILED, error=error),
            update=update(status=RuntimeStatus.FAILED, input={"in": 1}, error=error, custom_status="done"),
        ),
    )
    history = await provider.read_history("a")
    assert [e.event_id for e in history] == [1, 2, 3, 4, 5]
    assert history[4].error == error
    record = await provider.get_instance("a")
    assert record is not None
    assert (record.status, record.error, record.custom_status, record.input) == (
        RuntimeStatus.FAILED,
        error,
        "done",
        {"in": 1},
    )
    assert record.updated_at is not None and record.created_at is not None
    assert record.updated_at >= record.created_at


@conformance_case
async def continue_as_new_drops_old_history(provider: Provider, advance: Advance) -> None:
    await start(provider, "eternal")
    item = await fetch(provider)
    await provider.commit_turn(item.lock_token, commit_for(item, event(1), event(2), update=update()))
    await provider.enqueue_orchestrator_message(raised("eternal", "tick"))
    item = await fetch(provider)
    restart = OrchestratorMessage(
        kind=MessageKind.CONTINUE_AS_NEW,
        instance_id="eternal",
        execution_id=2,
        name="Orch",
        data={"round": 2},
    )
    await provider.commit_turn(
        item.lock_token,
        commit_for(
            item,
            event(3, EventKind.CONTINUED_AS_NEW, data={"round": 2}),
            update=update(execution_id=2, input={"round": 2}),
            orchestrator_messages=[TimedMessage(restart)],
        ),
    )
    assert await provider.read_history("eternal") == []
    record = await provider.get_instance("eternal")
    assert record is not None and record.execution_id == 2 and record.input == {"round": 2}

    item = await fetch(provider)
    assert item.instance is not None and item.instance.execution_id == 2
    assert item.history == []
    assert [m.kind for m in item.messages] == [MessageKind.CONTINUE_AS_NEW]
    await provider.commit_turn(
        item.lock_token, commit_for(item, event(1), event(2), update=update(execution_id=2))
    )
    assert [e.event_id for e in await provider.read_history("eternal")] == [1, 2]


@conformance_case
async def new_instances_are_created_once(provider: Provider, advance: Advance) -> None:
    await start(provider, "parent")
    item = await fetch(provider)
    link = {"instance": "parent", "execution_id": 1, "corr_id": 1}
    child = NewInstance("parent::1", "Child", "1.0.0", {"c": 1}, parent=link)
    await provider.commit_turn(
        item.lock_token, commit_for(item, event(1), update=update(), new_instances=[child])
    )
    record = await provider.get_instance("parent::1")
    assert record is not None
    assert (record.name, record.status, record.parent_instance_id, record.input) == (
        "Child",
        RuntimeStatus.PENDING,
        "parent",
        {"c": 1},
    )

    # a later turn that (wrongly) asks again must not create a second Start
    await provider.enqueue_orchestrator_message(raised("parent", "again"))
    item = await fetch(provider)
    assert item.instance_id == "parent::1"
    assert [m.kind for m in item.messages] == [MessageKind.START]
    assert item.messages[0].parent == link and item.messages[0].data == {"c": 1}
    await provider.commit_turn(item.lock_token, commit_for(item))
    item = await fetch(provider)
    assert item.instance_id == "parent"
    await provider.commit_turn(
        item.lock_token, commit_for(item, event(2), update=update(), new_instances=[child])
    )
    assert await provider.fetch_orchestration_item(LONG) is None


@conformance_case
async def commit_enqueues_delayed_timers_and_messages_to_other_instances(
    provider: Provider, advance: Advance
) -> None:
    await start(provider, "a")
    item = await fetch(provider)
    fired = OrchestratorMessage(kind=MessageKind.TIMER_FIRED, instance_id="a", execution_id=1, corr_id=1)
    to_parent = OrchestratorMessage(
        kind=MessageKind.SUB_ORCHESTRATION_COMPLETED, instance_id="p", execution_id=1, corr_id=4, data="ok"
    )
    await provider.commit_turn(
        item.lock_token,
        commit_for(
            item,
            event(1),
            update=update(),
            orchestrator_messages=[
                TimedMessage(fired, visible_at=provider.now() + timedelta(seconds=0.3)),
                TimedMessage(to_parent),
            ],
        ),
    )
    item = await fetch(provider)
    assert item.instance_id == "p"
    assert item.messages[0].kind is MessageKind.SUB_ORCHESTRATION_COMPLETED
    assert item.messages[0].data == "ok"
    await provider.commit_turn(item.lock_token, commit_for(item))
    assert await provider.fetch_orchestration_item(LONG) is None
    await advance(PAST_SHORT)
    item = await fetch(provider)
    assert item.instance_id == "a" and item.messages[0].kind is MessageKind.TIMER_FIRED


# --- the activity queue ---------------------------------------------------------------------
async def schedule_tasks(provider: Provider, instance_id: str, *tasks: ActivityTask) -> None:
    await start(provider, instance_id)
    item = await fetch(provider)
    await provider.commit_turn(
        item.lock_token, commit_for(item, event(1), update=update(), activity_tasks=list(tasks))
    )


@conformance_case
async def activity_fetch_lock_renew_complete(provider: Provider, advance: Advance) -> None:
    await schedule_tasks(provider, "a", task("a", 1), task("a", 2))
    first = await provider.fetch_activity(LONG)
    second = await provider.fetch_activity(LONG)
    assert first is not None and second is not None
    assert (first.task.corr_id, second.task.corr_id) == (1, 2)
    assert first.task == task("a", 1)
    assert first.dequeue_count == 1
    assert first.lock_token != second.lock_token
    assert await provider.fetch_activity(LONG) is None

    assert await provider.renew_activity_lock(first.lock_token, LONG) is True
    done = OrchestratorMessage(
        kind=MessageKind.ACTIVITY_COMPLETED, instance_id="a", execution_id=1, corr_id=1, data={"result": 1}
    )
    assert await provider.complete_activity(first.lock_token, done) is True
    item = await fetch(provider)
    assert [(m.kind, m.corr_id, m.data) for m in item.messages] == [
        (MessageKind.ACTIVITY_COMPLETED, 1, {"result": 1})
    ]
    # completing twice is refused: the task is gone
    assert await provider.complete_activity(first.lock_token, done) is False
    assert await provider.renew_activity_lock(first.lock_token, LONG) is False


@conformance_case
async def activity_lock_expiry_redelivers_and_old_token_loses(provider: Provider, advance: Advance) -> None:
    await schedule_tasks(provider, "a", task("a", 1))
    stale = await provider.fetch_activity(SHORT)
    assert stale is not None
    assert await provider.fetch_activity(LONG) is None
    await advance(PAST_SHORT)
    fresh = await provider.fetch_activity(LONG)
    assert fresh is not None
    assert fresh.task.corr_id == 1 and fresh.dequeue_count == 2
    assert fresh.lock_token != stale.lock_token

    late = OrchestratorMessage(
        kind=MessageKind.ACTIVITY_COMPLETED, instance_id="a", execution_id=1, corr_id=1, data="stale"
    )
    assert await provider.renew_activity_lock(stale.lock_token, LONG) is False
    assert await provider.complete_activity(stale.lock_token, late) is False
    assert await provider.fetch_orchestration_item(LONG) is None, "a lost completion must enqueue nothing"

    ok = OrchestratorMessage(
        kind=MessageKind.ACTIVITY_COMPLETED, instance_id="a", execution_id=1, corr_id=1, data="fresh"
    )
    assert await provider.complete_activity(fresh.lock_token, ok) is True
    item = await fetch(provider)
    assert [m.data for m in item.messages] == ["fresh"]


@conformance_case
async def activity_renewal_keeps_it_locked(provider: Provider, advance: Advance) -> None:
    await schedule_tasks(provider, "a", task("a", 1))
    item = await provider.fetch_activity(SHORT)
    assert item is not None
    assert await provider.renew_activity_lock(item.lock_token, LONG) is True
    await advance(PAST_SHORT)
    assert await provider.fetch_activity(LONG) is None


@conformance_case
async def abandon_activity_with_and_without_delay(provider: Provider, advance: Advance) -> None:
    await schedule_tasks(provider, "a", task("a", 1))
    item = await provider.fetch_activity(LONG)
    assert item is not None
    await provider.abandon_activity(item.lock_token)
    again = await provider.fetch_activity(LONG)
    assert again is not None and again.dequeue_count == 2
    await provider.abandon_activity(again.lock_token, timedelta(seconds=0.3))
    assert await provider.fetch_activity(LONG) is None
    await advance(PAST_SHORT)
    third = await provider.fetch_activity(LONG)
    assert third is not None and third.task.corr_id == 1 and third.dequeue_count == 3


# --- reads and maintenance --------------------------------------------------------------------
@conformance_case
async def list_instances_pages_and_filters(provider: Provider, advance: Advance) -> None:
    ids = [f"i{n:02d}" for n in range(7)]
    for n, iid in enumerate(ids):
        await start(provider, iid, name="Even" if n % 2 == 0 else "Odd")

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        records, cursor = await provider.list_instances(limit=3, cursor=cursor)
        pages += 1
        seen += [r.instance_id for r in records]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == ids
    assert pages == 3

    evens, nxt = await provider.list_instances(name="Even")
    assert [r.instance_id for r in evens] == ["i00", "i02", "i04", "i06"] and nxt is None

    item = await fetch(provider)
    assert item.instance_id == "i00"
    await provider.commit_turn(
        item.lock_token,
        commit_for(item, event(1), update=update(name="Even", status=RuntimeStatus.COMPLETED, output=1)),
    )
    done, _ = await provider.list_instances(status=RuntimeStatus.COMPLETED)
    assert [r.instance_id for r in done] == ["i00"] and done[0].output == 1
    pending_odd, _ = await provider.list_instances(status=RuntimeStatus.PENDING, name="Odd", limit=2)
    assert [r.instance_id for r in pending_odd] == ["i01", "i03"]
    nothing, nxt = await provider.list_instances(name="Missing")
    assert nothing == [] and nxt is None


async def complete(provider: Provider, instance_id: str) -> None:
    item = await fetch(provider)
    assert item.instance_id == instance_id
    await provider.commit_turn(
        item.lock_token,
        commit_for(item, event(1), update=update(status=RuntimeStatus.COMPLETED, output="ok")),
    )


@conformance_case
async def purge_instance_only_when_terminal(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    assert await provider.purge_instance("a") is False, "a Pending instance is not purged"
    assert await provider.purge_instance("nope") is False
    await complete(provider, "a")
    # leftovers that belong to the instance: a late message
    await provider.enqueue_orchestrator_message(raised("a", "late"))
    assert await provider.purge_instance("a") is True
    assert await provider.get_instance("a") is None
    assert await provider.read_history("a") == []
    assert await provider.fetch_orchestration_item(LONG) is None
    assert await provider.purge_instance("a") is False


@conformance_case
async def purge_removes_queued_activity_tasks(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    item = await fetch(provider)
    await provider.commit_turn(
        item.lock_token,
        commit_for(
            item, event(1), update=update(status=RuntimeStatus.CANCELLED), activity_tasks=[task("a", 1)]
        ),
    )
    assert await provider.purge_instance("a") is True
    assert await provider.fetch_activity(LONG) is None


@conformance_case
async def purge_terminal_before_cutoff(provider: Provider, advance: Advance) -> None:
    for iid in ("a", "b", "c"):
        await start(provider, iid)
    await complete(provider, "a")
    await complete(provider, "b")
    assert await provider.purge_terminal_before(provider.now() - timedelta(hours=1)) == 0
    await advance(0.05)
    assert await provider.purge_terminal_before(provider.now() + timedelta(seconds=1)) == 2
    assert await provider.get_instance("a") is None and await provider.get_instance("b") is None
    record = await provider.get_instance("c")
    assert record is not None and record.status is RuntimeStatus.PENDING


# --- wake-ups -------------------------------------------------------------------------------
@conformance_case
async def wait_for_work_wakes_on_enqueue(provider: Provider, advance: Advance) -> None:
    waiter = asyncio.create_task(provider.wait_for_work("orchestrator", 30.0))
    await asyncio.sleep(0.2)
    assert not waiter.done(), "an idle queue must not return at once"
    began = time.monotonic()
    await provider.enqueue_orchestrator_message(raised("a", "wake"))
    await asyncio.wait_for(waiter, 10)
    assert time.monotonic() - began < 10


@conformance_case
async def wait_for_work_wakes_worker_on_committed_task(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    item = await fetch(provider)
    waiter = asyncio.create_task(provider.wait_for_work("worker", 30.0))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await provider.commit_turn(
        item.lock_token, commit_for(item, event(1), update=update(), activity_tasks=[task("a", 1)])
    )
    await asyncio.wait_for(waiter, 10)


@conformance_case
async def wait_for_instance_change_wakes_on_commit(provider: Provider, advance: Advance) -> None:
    await start(provider, "a")
    item = await fetch(provider)
    waiter = asyncio.create_task(provider.wait_for_instance_change("a", 30.0))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await provider.commit_turn(
        item.lock_token, commit_for(item, event(1), update=update(status=RuntimeStatus.COMPLETED))
    )
    await asyncio.wait_for(waiter, 10)


@conformance_case
async def wait_for_work_times_out(provider: Provider, advance: Advance) -> None:
    await asyncio.wait_for(provider.wait_for_work("worker", 0.2), 10)
    await asyncio.wait_for(provider.wait_for_instance_change("nobody", 0.2), 10)
