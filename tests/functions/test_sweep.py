"""The timer sweep alone makes progress when every hint is lost, and starts one Reconciler per window."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue.aio import QueueClient

from control_plane.service import reconciler_window_id
from durable_engine import RuntimeStatus
from functions.host_state import Host
from functions.sweep import run_sweep

from .conftest import Handlers
from .test_dispatch import register_tiny

pytestmark = pytest.mark.postgres


def test_reconciler_windows_are_aligned_and_stable() -> None:
    assert (
        reconciler_window_id(datetime(2030, 1, 1, 0, 4, 59, tzinfo=UTC), timedelta(minutes=5))
        == "reconciler-20300101T000000Z"
    )
    assert (
        reconciler_window_id(datetime(2030, 1, 1, 0, 5, 0, tzinfo=UTC), timedelta(minutes=5))
        == "reconciler-20300101T000500Z"
    )
    assert (
        reconciler_window_id(datetime(2030, 1, 1, 0, 7, tzinfo=UTC), timedelta(minutes=1))
        == "reconciler-20300101T000700Z"
    )


async def _purge(queues: dict[str, QueueClient]) -> None:
    for client in queues.values():
        await client.clear_messages()


async def test_sweep_alone_completes_work_whose_hints_were_all_lost(
    host: Host, queues: dict[str, QueueClient], registered: Handlers
) -> None:
    calls: list[int] = []
    register_tiny(host, calls)
    sweep = registered["sweep"]
    await host.plane.client.start_orchestration("tiny-lost", "Tiny", 3)
    assert host.hints is not None
    await host.hints.orchestrations_ready()

    deadline = time.monotonic() + 60
    sweeps = 0
    while True:
        await _purge(queues)  # every hint is lost, including those the sweep itself sends
        status = await host.plane.client.get_status("tiny-lost")
        assert status is not None
        if status.status is RuntimeStatus.COMPLETED:
            break
        assert status.status in (RuntimeStatus.PENDING, RuntimeStatus.RUNNING), status.error
        assert time.monotonic() < deadline, "the sweep did not finish the work"
        assert await sweep(TimerRequest(past_due=sweeps % 2 == 1)) is None
        sweeps += 1
        await asyncio.sleep(0.3)  # the timer in Tiny is due a second after it was created

    assert status.output == [6, 12, 14]
    assert sorted(calls) == [3, 6, 7]
    assert sweeps >= 2  # the timer needed a later sweep than the one that started the work


async def test_one_reconciler_pass_per_window_and_the_sweep_runs_it(host: Host) -> None:
    now = datetime(2030, 1, 1, 0, 3, tzinfo=UTC)
    host.settings = host.settings.model_copy(update={"reconcile_every_minutes": 5})
    first = await run_sweep(host, now)
    again = await run_sweep(host, now.replace(minute=4, second=59))  # same window: no second pass
    later = await run_sweep(host, now.replace(minute=5))

    assert first.reconciler_id == again.reconciler_id == "reconciler-20300101T000000Z"
    assert later.reconciler_id == "reconciler-20300101T000500Z"
    # the first pass ran to completion in its sweep, and was purged when the next window began
    assert await host.plane.client.get_status(first.reconciler_id) is None
    page = await host.plane.client.list_instances(name="Reconciler", limit=10)
    assert [s.instance_id for s in page.items] == [later.reconciler_id]
    status = await host.plane.client.get_status(later.reconciler_id)
    assert status is not None and status.status is RuntimeStatus.COMPLETED, status  # the sweep ran it


async def test_reconciler_can_be_turned_off(host: Host) -> None:
    host.settings = host.settings.model_copy(update={"reconcile_every_minutes": 0})
    result = await run_sweep(host, datetime(2030, 1, 1, tzinfo=UTC))
    assert result.reconciler_id is None
    page = await host.plane.client.list_instances(name="Reconciler", limit=10)
    assert list(page.items) == []


async def test_a_failing_sweep_never_raises(host: Host, registered: Handlers) -> None:
    await host.plane.provider.close()  # the database connection is gone
    assert await registered["sweep"](TimerRequest()) is None
    assert await registered["orchestration_hints"](QueueMessage(body=b"x")) is None
    assert await registered["activity_hints"](QueueMessage(body=b"x")) is None
