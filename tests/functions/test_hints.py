"""Wake-up hints land in the Azurite queues, delayed as asked; failures never propagate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from azure.storage.queue.aio import QueueClient

from functions.config import ACTIVITY_QUEUE, ORCHESTRATION_QUEUE
from functions.hints import MAX_VISIBILITY, StorageQueueHints, visibility_seconds

from .conftest import _free_port


def test_visibility_rounds_up_adds_a_margin_and_clamps_to_seven_days() -> None:
    assert visibility_seconds(None) == 0
    assert visibility_seconds(timedelta(0)) == 0
    assert visibility_seconds(timedelta(seconds=-5)) == 0
    assert visibility_seconds(timedelta(seconds=0.2)) == 2  # never early: 0.2 s + 1 s margin, rounded up
    assert visibility_seconds(timedelta(seconds=30)) == 31
    assert visibility_seconds(timedelta(days=30)) == int(MAX_VISIBILITY.total_seconds()) == 7 * 24 * 3600


@pytest.fixture
async def hints(azurite: str, queues: dict[str, QueueClient]) -> AsyncIterator[StorageQueueHints]:
    sender = StorageQueueHints.from_connection_string(azurite)
    try:
        yield sender
    finally:
        await sender.close()


async def _total(client: QueueClient) -> int:
    """Visible and invisible messages alike."""
    return (await client.get_queue_properties()).approximate_message_count


async def test_immediate_hints_are_visible_at_once(
    hints: StorageQueueHints, queues: dict[str, QueueClient]
) -> None:
    await hints.orchestrations_ready()
    await hints.activities_ready()
    await hints.activities_ready()

    orchestration = [m async for m in queues[ORCHESTRATION_QUEUE].receive_messages(max_messages=32)]
    activity = [m async for m in queues[ACTIVITY_QUEUE].receive_messages(max_messages=32)]
    assert len(orchestration) == 1 and len(activity) == 2
    body = json.loads(orchestration[0].content)  # base64 on the wire, decoded as the host decodes it
    assert body["wake"] == "orchestrations" and body["delay_seconds"] == 0


async def test_delayed_hint_stays_hidden_until_the_timer_is_due(
    hints: StorageQueueHints, queues: dict[str, QueueClient]
) -> None:
    orchestration = queues[ORCHESTRATION_QUEUE]
    await hints.orchestrations_ready(timedelta(minutes=10))
    await hints.orchestrations_ready(timedelta(days=30))  # beyond the 7-day limit: clamped, still sent
    assert await _total(orchestration) == 2
    assert await orchestration.peek_messages(max_messages=32) == []

    sent = time.monotonic()
    await hints.orchestrations_ready(timedelta(seconds=2))  # hidden for 3 s (margin), then visible
    received = []
    while not received:
        assert time.monotonic() - sent < 30, "the delayed hint never became visible"
        received = [m async for m in orchestration.receive_messages(max_messages=32)]
        if not received:
            await asyncio.sleep(0.25)
    assert len(received) == 1
    assert json.loads(received[0].content)["delay_seconds"] == 3
    assert await _total(orchestration) == 3  # the long ones are still waiting


async def test_queues_are_created_when_missing(
    hints: StorageQueueHints, queues: dict[str, QueueClient]
) -> None:
    await queues[ACTIVITY_QUEUE].delete_queue()
    await hints.activities_ready()  # knows the queue existed, finds it gone, creates it again
    assert await _total(queues[ACTIVITY_QUEUE]) == 1


async def test_an_unreachable_queue_service_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()  # nothing listens there
    dead = StorageQueueHints.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    try:
        await dead.orchestrations_ready(timedelta(seconds=5))
        await dead.activities_ready()
    finally:
        await dead.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "toygres.functions.hints"]
    assert len(warnings) == 2 and all("could not send" in w for w in warnings)
    assert not any("a2V5" in w for w in warnings)


def test_from_environment_follows_the_functions_connection_setting(
    monkeypatch: pytest.MonkeyPatch, azurite: str
) -> None:
    for name in (
        "AzureWebJobsStorage",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__accountName",
    ):
        monkeypatch.delenv(name, raising=False)
    assert StorageQueueHints.from_environment() is None  # no storage: the sweep alone makes progress

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    local = StorageQueueHints.from_environment()
    assert local is not None
    assert local._clients["orchestrations"].queue_name == ORCHESTRATION_QUEUE
    assert local._clients["orchestrations"].account_name == "devstoreaccount1"
