"""In-memory provider: the reference implementation of the storage contract, for fast tests.

Everything lives in dicts guarded by the event loop (no awaits inside a critical section),
which makes every method trivially atomic. Payloads are deep-copied through JSON on the way
in and out so tests catch code that would only work because objects were shared.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ._clock import Clock, ManualClock, SystemClock
from ._errors import LockLostError
from ._history import HistoryEvent
from ._messages import ActivityTask, MessageKind, OrchestratorMessage
from ._provider import (
    ActivityItem,
    InstanceRecord,
    NewInstance,
    OrchestrationItem,
    QueueName,
    TurnCommit,
)
from ._status import RuntimeStatus


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


@dataclass
class _QueuedMessage:
    id: int
    payload: dict[str, Any]
    visible_at: datetime
    dequeue_count: int = 0
    lock_token: str | None = None


@dataclass
class _QueuedTask:
    id: int
    payload: dict[str, Any]
    visible_at: datetime
    dequeue_count: int = 0
    lock_token: str | None = None
    locked_until: datetime | None = None


@dataclass
class _InstanceLock:
    token: str
    locked_until: datetime
    message_ids: list[int] = field(default_factory=list)


class InMemoryProvider:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._instances: dict[str, InstanceRecord] = {}
        self._history: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._messages: dict[int, tuple[str, _QueuedMessage]] = {}
        self._tasks: dict[int, _QueuedTask] = {}
        self._locks: dict[str, _InstanceLock] = {}
        self._seq = 0
        self._created_seq: dict[str, int] = {}
        self._wake = {"orchestrator": asyncio.Event(), "worker": asyncio.Event()}
        self._status_waiters: dict[str, list[asyncio.Event]] = {}
        if isinstance(self.clock, ManualClock):
            for event in self._wake.values():
                self.clock.subscribe(event)

    def now(self) -> datetime:
        return self.clock.now()

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    # --- enqueue helpers --------------------------------------------------------------------
    def _put_message(self, msg: OrchestratorMessage, visible_at: datetime | None) -> None:
        qid = self._next_id()
        self._messages[qid] = (
            msg.instance_id,
            _QueuedMessage(qid, _copy(msg.to_dict()), visible_at or self.now()),
        )
        self._wake["orchestrator"].set()

    def _put_task(self, task: ActivityTask) -> None:
        qid = self._next_id()
        self._tasks[qid] = _QueuedTask(qid, _copy(task.to_dict()), self.now())
        self._wake["worker"].set()

    def _create(self, inst: NewInstance) -> bool:
        if inst.instance_id in self._instances:
            return False
        now = self.now()
        self._instances[inst.instance_id] = InstanceRecord(
            instance_id=inst.instance_id,
            name=inst.name,
            version=inst.version,
            status=RuntimeStatus.PENDING,
            execution_id=1,
            input=_copy(inst.input),
            parent_instance_id=(inst.parent or {}).get("instance"),
            created_at=now,
            updated_at=now,
        )
        self._created_seq[inst.instance_id] = self._next_id()
        self._put_message(
            OrchestratorMessage(
                kind=MessageKind.START,
                instance_id=inst.instance_id,
                execution_id=1,
                name=inst.name,
                version=inst.version,
                data=inst.input,
                parent=inst.parent,
            ),
            None,
        )
        self._notify_status(inst.instance_id)
        return True

    def _notify_status(self, instance_id: str) -> None:
        for event in self._status_waiters.pop(instance_id, []):
            event.set()

    # --- protocol ---------------------------------------------------------------------------
    async def create_instance(self, instance: NewInstance) -> bool:
        return self._create(instance)

    async def create_instance_locked(
        self, instance: NewInstance, lock_timeout: timedelta
    ) -> OrchestrationItem | None:
        if not self._create(instance):
            return None
        now = self.now()
        start_id = max(mid for mid, (iid, _) in self._messages.items() if iid == instance.instance_id)
        message = self._messages[start_id][1]
        token = uuid.uuid4().hex
        message.dequeue_count, message.lock_token = 1, token
        self._locks[instance.instance_id] = _InstanceLock(token, now + lock_timeout, [start_id])
        record = self._instances[instance.instance_id]
        return OrchestrationItem(
            instance_id=instance.instance_id,
            lock_token=token,
            instance=_copy_record(record),
            history=[],
            messages=[OrchestratorMessage.from_dict(_copy(message.payload), id=start_id)],
            dequeue_count=1,
        )

    async def enqueue_orchestrator_message(
        self, message: OrchestratorMessage, visible_at: datetime | None = None
    ) -> None:
        self._put_message(message, visible_at)

    def _lock_free(self, instance_id: str, now: datetime) -> bool:
        lock = self._locks.get(instance_id)
        return lock is None or lock.locked_until <= now

    async def fetch_orchestration_item(self, lock_timeout: timedelta) -> OrchestrationItem | None:
        now = self.now()
        chosen: str | None = None
        for instance_id, msg in sorted(self._messages.values(), key=lambda m: m[1].id):
            if msg.visible_at <= now and self._lock_free(instance_id, now):
                chosen = instance_id
                break
        if chosen is None:
            return None
        visible = sorted(
            (m for iid, m in self._messages.values() if iid == chosen and m.visible_at <= now),
            key=lambda m: m.id,
        )
        token = uuid.uuid4().hex
        self._locks[chosen] = _InstanceLock(token, now + lock_timeout, [m.id for m in visible])
        for m in visible:
            m.dequeue_count += 1
            m.lock_token = token
        record = self._instances.get(chosen)
        history: list[HistoryEvent] = []
        if record is not None:
            history = [
                HistoryEvent.from_dict(_copy(e)) for e in self._history.get((chosen, record.execution_id), [])
            ]
        return OrchestrationItem(
            instance_id=chosen,
            lock_token=token,
            instance=_copy_record(record) if record else None,
            history=history,
            messages=[OrchestratorMessage.from_dict(_copy(m.payload), id=m.id) for m in visible],
            dequeue_count=max(m.dequeue_count for m in visible),
        )

    def _owned_lock(self, instance_id: str, token: str) -> _InstanceLock:
        lock = self._locks.get(instance_id)
        if lock is None or lock.token != token:
            raise LockLostError(f"the lock on instance {instance_id!r} was lost before the turn committed")
        return lock

    async def commit_turn(self, lock_token: str, commit: TurnCommit) -> None:
        iid = commit.instance_id
        self._owned_lock(iid, lock_token)
        key = (iid, commit.execution_id)
        existing = self._history.get(key, [])
        seen = {e["event_id"] for e in existing}
        new_ids = [e.event_id for e in commit.new_events]
        if len(set(new_ids)) != len(new_ids) or seen.intersection(new_ids):
            raise ValueError(f"duplicate history event id in commit for {iid!r}")
        # validation done: from here on nothing can fail, so the turn applies as a whole
        events = [_copy(e.to_dict()) for e in commit.new_events]
        self._history[key] = existing + events
        for mid in commit.consumed_message_ids:
            entry = self._messages.get(mid)
            if entry is not None and entry[0] == iid:
                del self._messages[mid]
        record = self._instances.get(iid)
        if commit.update is not None and record is not None:
            up = commit.update
            if up.execution_id > record.execution_id:
                for k in [k for k in self._history if k[0] == iid and k[1] < up.execution_id]:
                    del self._history[k]
            record.name = up.name
            record.version = up.version
            record.status = up.status
            record.execution_id = up.execution_id
            record.input = _copy(up.input)
            record.output = _copy(up.output)
            record.error = _copy(up.error)
            record.custom_status = _copy(up.custom_status)
            record.updated_at = self.now()
        for timed in commit.orchestrator_messages:
            self._put_message(timed.message, timed.visible_at)
        for task in commit.activity_tasks:
            self._put_task(task)
        for claimed in commit.claimed_tasks:
            qid = self._next_id()
            self._tasks[qid] = _QueuedTask(
                qid,
                _copy(claimed.task.to_dict()),
                self.now(),
                dequeue_count=claimed.dequeue_count,
                lock_token=claimed.lock_token,
                locked_until=claimed.locked_until,
            )
        for inst in commit.new_instances:
            self._create(inst)
        del self._locks[iid]
        for m in self._messages.values():
            if m[0] == iid:
                m[1].lock_token = None
        self._notify_status(iid)

    async def abandon_orchestration_item(self, lock_token: str, delay: timedelta | None = None) -> None:
        for iid, lock in list(self._locks.items()):
            if lock.token == lock_token:
                visible_at = self.now() + (delay or timedelta(0))
                for mid in lock.message_ids:
                    entry = self._messages.get(mid)
                    if entry is not None:
                        entry[1].visible_at = visible_at
                        entry[1].lock_token = None
                if visible_at > self.now():
                    # the instance itself backs off: what arrives meanwhile waits for the fetched
                    # messages, so a ContinueAsNew is never overtaken by a later message
                    self._locks[iid] = _InstanceLock(f"backoff:{uuid.uuid4().hex}", visible_at)
                else:
                    del self._locks[iid]
                self._wake["orchestrator"].set()
                return

    async def fetch_activity(self, lock_timeout: timedelta) -> ActivityItem | None:
        now = self.now()
        for task in sorted(self._tasks.values(), key=lambda t: t.id):
            if task.visible_at <= now and (task.locked_until is None or task.locked_until <= now):
                task.lock_token = uuid.uuid4().hex
                task.locked_until = now + lock_timeout
                task.dequeue_count += 1
                return ActivityItem(
                    ActivityTask.from_dict(_copy(task.payload)), task.lock_token, task.dequeue_count
                )
        return None

    def _task_by_token(self, token: str) -> _QueuedTask | None:
        for task in self._tasks.values():
            if task.lock_token == token:
                return task
        return None

    async def renew_activity_lock(self, lock_token: str, lock_timeout: timedelta) -> bool:
        task = self._task_by_token(lock_token)
        if task is None:
            return False
        task.locked_until = self.now() + lock_timeout
        return True

    async def complete_activity(self, lock_token: str, completion: OrchestratorMessage) -> bool:
        task = self._task_by_token(lock_token)
        if task is None:
            return False
        del self._tasks[task.id]
        self._put_message(completion, None)
        return True

    async def abandon_activity(self, lock_token: str, delay: timedelta | None = None) -> None:
        task = self._task_by_token(lock_token)
        if task is not None:
            task.lock_token = None
            task.locked_until = None
            task.visible_at = self.now() + (delay or timedelta(0))
            self._wake["worker"].set()

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        record = self._instances.get(instance_id)
        return _copy_record(record) if record else None

    async def list_instances(
        self,
        *,
        status: RuntimeStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[InstanceRecord], str | None]:
        after = int(cursor) if cursor else 0
        rows = sorted(
            (
                (self._created_seq[r.instance_id], r)
                for r in self._instances.values()
                if (status is None or r.status == status) and (name is None or r.name == name)
            ),
            key=lambda pair: pair[0],
        )
        rows = [pair for pair in rows if pair[0] > after]
        page = rows[:limit]
        next_cursor = str(page[-1][0]) if len(rows) > limit else None
        return [_copy_record(r) for _, r in page], next_cursor

    async def read_history(self, instance_id: str) -> list[HistoryEvent]:
        record = self._instances.get(instance_id)
        if record is None:
            return []
        events = self._history.get((instance_id, record.execution_id), [])
        return [HistoryEvent.from_dict(_copy(e)) for e in events]

    async def purge_instance(self, instance_id: str) -> bool:
        record = self._instances.get(instance_id)
        if record is None or not record.status.is_terminal:
            return False
        del self._instances[instance_id]
        self._created_seq.pop(instance_id, None)
        for k in [k for k in self._history if k[0] == instance_id]:
            del self._history[k]
        for mid in [mid for mid, (iid, _) in self._messages.items() if iid == instance_id]:
            del self._messages[mid]
        for tid in [tid for tid, t in self._tasks.items() if t.payload["instance_id"] == instance_id]:
            del self._tasks[tid]
        return True

    async def purge_terminal_before(self, cutoff: datetime) -> int:
        doomed = [
            r.instance_id
            for r in self._instances.values()
            if r.status.is_terminal and r.updated_at is not None and r.updated_at < cutoff
        ]
        for iid in doomed:
            await self.purge_instance(iid)
        return len(doomed)

    def _next_visible(self, queue: QueueName) -> datetime | None:
        if queue == "orchestrator":
            times = [m.visible_at for _, m in self._messages.values()]
            times += [lock.locked_until for lock in self._locks.values()]
        else:
            times = [t.locked_until or t.visible_at for t in self._tasks.values()]
        return min(times, default=None)

    async def wait_for_work(self, queue: QueueName, timeout: float) -> None:
        event = self._wake[queue]
        if not self.clock.manual:
            nxt = self._next_visible(queue)
            if nxt is not None:
                timeout = min(timeout, max((nxt - self.now()).total_seconds(), 0.0))
        if timeout <= 0:
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            event.clear()

    async def wait_for_instance_change(self, instance_id: str, timeout: float) -> None:
        event = asyncio.Event()
        self._status_waiters.setdefault(instance_id, []).append(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    async def close(self) -> None:
        return None


def _copy_record(record: InstanceRecord) -> InstanceRecord:
    return InstanceRecord(
        instance_id=record.instance_id,
        name=record.name,
        version=record.version,
        status=record.status,
        execution_id=record.execution_id,
        input=_copy(record.input),
        output=_copy(record.output),
        error=_copy(record.error),
        custom_status=_copy(record.custom_status),
        parent_instance_id=record.parent_instance_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
