"""The client: start, query, signal, cancel and purge orchestration instances.

It talks only to the provider, so any process that can reach the store (an HTTP function,
the CLI) can drive instances without running a runtime.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ._errors import ErrorInfo, InstanceNotFoundError, InvalidInputError
from ._history import HistoryEvent
from ._messages import MessageKind, OrchestratorMessage
from ._provider import InstanceRecord, NewInstance, Provider
from ._serialization import ensure_json
from ._status import InstancePage, OrchestrationStatus, RuntimeStatus

if TYPE_CHECKING:
    from ._runtime import Runtime

MAX_INSTANCE_ID_LENGTH = 256
#: waits rely on change notifications; this bounds the damage of one that never comes
_FALLBACK_POLL = 5.0


def _seconds(timeout: float | timedelta) -> float:
    return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)


def to_status(record: InstanceRecord) -> OrchestrationStatus:
    assert record.created_at is not None and record.updated_at is not None
    return OrchestrationStatus(
        instance_id=record.instance_id,
        name=record.name,
        version=record.version,
        status=record.status,
        input=record.input,
        output=record.output,
        error=ErrorInfo.from_dict(record.error) if record.error else None,
        custom_status=record.custom_status,
        execution_id=record.execution_id,
        parent_instance_id=record.parent_instance_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


class Client:
    """``runtime``: a runtime running in this process, if any.

    With one, a new instance is created already locked and its first turn runs here at once,
    instead of waiting for a dispatcher to be woken and to fetch it (same durability: the
    start is committed before ``start_orchestration`` returns).
    """

    def __init__(self, provider: Provider, runtime: Runtime | None = None) -> None:
        self.provider = provider
        self.runtime = runtime
        #: first turns this client handed to its runtime, until they finish
        self._local_turns: dict[str, asyncio.Task[None]] = {}

    async def start_orchestration(
        self, instance_id: str, name: str, input: Any = None, version: str | None = None
    ) -> bool:
        """Create an instance; True if created, False if the id already existed (idempotent)."""
        if not instance_id or len(instance_id) > MAX_INSTANCE_ID_LENGTH:
            raise InvalidInputError(f"instance_id must be 1 to {MAX_INSTANCE_ID_LENGTH} characters")
        if not name:
            raise InvalidInputError("orchestration name must not be empty")
        ensure_json(input, f"the input of orchestration {name!r}")
        instance = NewInstance(instance_id, name, version, input)
        dispatch = await self.runtime.try_dispatch_locally() if self.runtime is not None else None
        if dispatch is None:
            return await self.provider.create_instance(instance)
        item = None
        try:
            assert self.runtime is not None
            item = await self.provider.create_instance_locked(instance, self.runtime.options.lock_timeout)
        finally:
            turn = dispatch(item)
        if turn is not None:
            self._local_turns[instance_id] = turn
            turn.add_done_callback(lambda _: self._local_turns.pop(instance_id, None))
        return item is not None

    async def get_status(self, instance_id: str) -> OrchestrationStatus | None:
        record = await self.provider.get_instance(instance_id)
        return to_status(record) if record else None

    async def wait_for_completion(
        self, instance_id: str, timeout: float | timedelta = 60.0
    ) -> OrchestrationStatus:
        """Wait until the instance is Completed, Failed or Cancelled; TimeoutError otherwise."""
        deadline = time.monotonic() + _seconds(timeout)
        local_turn = self._local_turns.get(instance_id)
        if local_turn is not None:
            # its first turn runs in this process: reading the status meanwhile would only
            # compete with it (it often finishes the whole orchestration)
            await asyncio.wait([local_turn], timeout=max(deadline - time.monotonic(), 0.0))
        while True:
            # start watching before reading, so a change between the read and the wait still
            # wakes us (providers register the watch before their first await)
            left = max(deadline - time.monotonic(), 0.0)
            change = asyncio.ensure_future(
                self.provider.wait_for_instance_change(instance_id, min(left, _FALLBACK_POLL))
            )
            await asyncio.sleep(0)
            try:
                status = await self.get_status(instance_id)
                if status is None:
                    raise InstanceNotFoundError(instance_id)
                if status.is_terminal:
                    return status
                if left <= 0:
                    waited = _seconds(timeout)
                    state = status.status.value
                    raise TimeoutError(f"orchestration {instance_id!r} is still {state} after {waited} s")
                await change
            finally:
                change.cancel()

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Deliver an external event; it is kept until the orchestration waits for it."""
        ensure_json(data, f"the data of event {name!r}")
        if await self.provider.get_instance(instance_id) is None:
            raise InstanceNotFoundError(instance_id)
        await self.provider.enqueue_orchestrator_message(
            OrchestratorMessage(kind=MessageKind.EVENT_RAISED, instance_id=instance_id, name=name, data=data)
        )

    async def cancel(self, instance_id: str, reason: str = "cancelled by client") -> bool:
        """Request cancellation; False when the instance has already finished."""
        record = await self.provider.get_instance(instance_id)
        if record is None:
            raise InstanceNotFoundError(instance_id)
        if record.status.is_terminal:
            return False
        await self.provider.enqueue_orchestrator_message(
            OrchestratorMessage(kind=MessageKind.CANCEL, instance_id=instance_id, data=reason)
        )
        return True

    async def list_instances(
        self,
        *,
        status: RuntimeStatus | str | None = None,
        name: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> InstancePage:
        if not 1 <= limit <= 1000:
            raise InvalidInputError("limit must be between 1 and 1000")
        wanted = RuntimeStatus(status) if status is not None else None
        records, next_cursor = await self.provider.list_instances(
            status=wanted, name=name, limit=limit, cursor=cursor
        )
        return InstancePage([to_status(r) for r in records], next_cursor)

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history (earlier executions are dropped by continue-as-new)."""
        if await self.provider.get_instance(instance_id) is None:
            raise InstanceNotFoundError(instance_id)
        return await self.provider.read_history(instance_id)

    async def purge(self, instance_id: str | None = None, *, completed_before: datetime | None = None) -> int:
        """Delete one finished instance, or every finished instance last updated before a cutoff."""
        if (instance_id is None) == (completed_before is None):
            raise InvalidInputError("purge takes either an instance_id or completed_before")
        if instance_id is not None:
            return int(await self.provider.purge_instance(instance_id))
        assert completed_before is not None
        return await self.provider.purge_terminal_before(completed_before)
