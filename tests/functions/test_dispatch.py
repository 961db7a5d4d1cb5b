"""End to end, driven only by hint messages: Azurite queue -> registered trigger -> PostgreSQL queues.

No runtime loop and no sweep runs here: if a hint were missing (an activity scheduled without an
activity hint, a timer without a delayed orchestration hint, a start without a hint), the pump
would run dry and the test would time out.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import psycopg
import pytest
from azure.functions.queue import QueueMessage as HostQueueMessage
from azure.storage.queue.aio import QueueClient

from durable_engine import EventKind, OrchestrationContext, RuntimeStatus
from functions.config import ACTIVITY_QUEUE, ORCHESTRATION_QUEUE
from functions.host_state import Host

from .conftest import Handlers, HintPump

pytestmark = pytest.mark.postgres


def register_tiny(host: Host, calls: list[int]) -> None:
    """A small orchestration that needs all three kinds of hint: start, activities, a timer."""
    registry = host.plane.registry

    @registry.activity("Double")
    def double(ctx: Any, value: int) -> int:
        calls.append(value)
        return value * 2

    @registry.orchestration("Tiny")
    async def tiny(ctx: OrchestrationContext, value: int) -> list[int]:
        first = await ctx.schedule_activity("Double", value)
        await ctx.schedule_timer(timedelta(seconds=1))
        rest = await ctx.join(
            [ctx.schedule_activity("Double", first), ctx.schedule_activity("Double", first + 1)]
        )
        return [first, *rest]


async def _completed(host: Host, instance_id: str) -> bool:
    status = await host.plane.client.get_status(instance_id)
    assert status is not None
    assert status.status in (RuntimeStatus.PENDING, RuntimeStatus.RUNNING, RuntimeStatus.COMPLETED), (
        status.error
    )
    return status.status is RuntimeStatus.COMPLETED


async def test_tiny_orchestration_completes_on_activity_and_timer_hints(
    host: Host, queues: dict[str, QueueClient], registered: Handlers
) -> None:
    calls: list[int] = []
    register_tiny(host, calls)
    await host.plane.client.start_orchestration("tiny-1", "Tiny", 5)
    assert host.hints is not None
    await host.hints.orchestrations_ready()  # what the HTTP function's on_started hook sends

    pump = HintPump(queues, registered)
    await pump.until(lambda: _completed(host, "tiny-1"), timeout=60)

    status = await host.plane.client.get_status("tiny-1")
    assert status is not None and status.output == [10, 20, 22]
    assert sorted(calls) == [5, 10, 11]
    # start, activity completions and the timer each woke the orchestration dispatcher;
    # two scheduling turns woke the activity dispatcher
    assert pump.delivered[ORCHESTRATION_QUEUE] >= 3 and pump.delivered[ACTIVITY_QUEUE] >= 2


@pytest.mark.parametrize("host", [True], indirect=True)
async def test_tiny_orchestration_with_inline_activities_needs_only_orchestration_hints(
    host: Host, queues: dict[str, QueueClient], registered: Handlers
) -> None:
    """The engine's default: a dispatch runs the turn's activities itself; the timer still needs a hint."""
    calls: list[int] = []
    register_tiny(host, calls)
    await host.plane.client.start_orchestration("tiny-inline", "Tiny", 5)
    assert host.hints is not None
    await host.hints.orchestrations_ready()

    pump = HintPump(queues, registered)
    await pump.until(lambda: _completed(host, "tiny-inline"), timeout=60)
    status = await host.plane.client.get_status("tiny-inline")
    assert status is not None and status.output == [10, 20, 22]
    assert sorted(calls) == [5, 10, 11]
    assert pump.delivered[ORCHESTRATION_QUEUE] >= 2  # the start, then the timer


async def test_duplicated_and_malformed_hints_are_harmless(
    host: Host, queues: dict[str, QueueClient], registered: Handlers
) -> None:
    calls: list[int] = []
    register_tiny(host, calls)
    orchestration_hints, activity_hints = registered["orchestration_hints"], registered["activity_hints"]
    garbage = [
        HostQueueMessage(body=b"\xff\xfe\x00 not json, not utf-8", dequeue_count=1),
        HostQueueMessage(body=b""),
        HostQueueMessage(id=None, body=None, dequeue_count=None),
        HostQueueMessage(id="x", body=json.dumps({"wake": "nonsense", "delay_seconds": -1}).encode()),
        HostQueueMessage(id="again", body=b"{}", dequeue_count=99),
    ]
    # wake-ups about nothing: no work exists yet, nothing fails
    for message in garbage:
        assert await orchestration_hints(message) is None
        assert await activity_hints(message) is None

    await host.plane.client.start_orchestration("tiny-dup", "Tiny", 1)
    assert host.hints is not None
    for _ in range(5):  # the same hint five times over
        await host.hints.orchestrations_ready()
        await host.hints.activities_ready()

    pump = HintPump(queues, registered)

    async def done() -> bool:
        # a malformed wake-up works as well as a real one, interleaved with the real hints
        await orchestration_hints(garbage[0])
        await activity_hints(garbage[2])
        return await _completed(host, "tiny-dup")

    await pump.until(done, timeout=60)
    status = await host.plane.client.get_status("tiny-dup")
    assert status is not None and status.output == [2, 4, 6]
    assert sorted(calls) == [1, 2, 3]  # duplicated hints never ran an activity twice
    history = await host.plane.client.get_history("tiny-dup")
    assert [e.kind for e in history].count(EventKind.ORCHESTRATION_COMPLETED) == 1
    assert [e.kind for e in history].count(EventKind.ACTIVITY_COMPLETED) == 3


async def test_toygres_create_and_delete_through_http_on_hints_alone(
    host: Host, queues: dict[str, QueueClient], registered: Handlers
) -> None:
    http = registered["http_api"]

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = func.HttpRequest(
            method=method,
            url=f"http://localhost:7071{path}",
            headers={"content-type": "application/json"},
            body=json.dumps(body).encode() if body is not None else b"",
        )
        response = await http(request, _Context())
        text = response.get_body().decode()
        return response.status_code, json.loads(text) if text else None

    code, health = await call("GET", "/api/health")
    assert code == 200 and health["database"] == "ok"

    code, created = await call(
        "POST", "/api/instances", {"name": "orders", "password": "correct-horse-battery"}
    )
    assert code == 202, created
    operation_id = created["operation_id"]
    # the accepted request left a hint for the orchestration dispatcher
    assert len(await queues[ORCHESTRATION_QUEUE].peek_messages(max_messages=32)) >= 1

    async def operation_done(op: str) -> bool:
        code, body = await call("GET", f"/api/operations/{op}")
        assert code == 200, body
        assert body["status"] in ("Pending", "Running", "Completed"), body
        return bool(body["status"] == "Completed")

    pump = HintPump(queues, registered)
    await pump.until(lambda: operation_done(operation_id), timeout=180)

    code, instance = await call("GET", f"/api/instances/{created['instance_id']}")
    assert code == 200 and instance["state"] == "running", instance
    async with await psycopg.AsyncConnection.connect(
        instance["connection_string"], password="correct-horse-battery", autocommit=True
    ) as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)

    code, deleted = await call("DELETE", f"/api/instances/{created['instance_id']}")
    assert code == 202, deleted
    await pump.until(lambda: operation_done(deleted["operation_id"]), timeout=120)
    code, instance = await call("GET", f"/api/instances/{created['instance_id']}")
    assert code == 200 and instance["state"] == "deleted", instance


class _Context:
    """The slice of ``func.Context`` the ASGI middleware reads."""

    function_directory = "."
    function_name = "http_api"
    invocation_id = "test-invocation"
    thread_local_storage = None
    trace_context = None
    retry_context = None
