"""Fixtures for the Functions adapters: a real Azurite queue service, a real host on PostgreSQL.

The Functions host (func core tools) cannot run here, so tests call the *registered* handlers of
``function_app.app`` with real ``azure.functions`` objects, and move hint messages between the
Azurite queues and the handlers themselves (:class:`HintPump`), as the host would.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage as HostQueueMessage
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from control_plane.service import LifecycleTiming
from durable_engine import RuntimeOptions
from functions import host_state
from functions.config import ACTIVITY_QUEUE, ORCHESTRATION_QUEUE, FunctionsSettings
from functions.hints import StorageQueueHints
from functions.host_state import Host, HostConfig
from tests.toygres.plane import kill_local_instances
from toygres.models import RuntimeKind
from toygres.runtimes.local import LocalRuntime
from toygres.settings import Settings

REPO = Path(__file__).resolve().parents[2]
# the storage emulator's documented, public development key (not a secret)
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

FAST = LifecycleTiming(
    health_interval_seconds=1, readiness_deadline_seconds=90, readiness_poll_seconds=0.3, deploy_attempts=3
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """An Azurite queue service on a free loopback port; yields its connection string."""
    binary = REPO / "node_modules" / ".bin" / "azurite-queue"
    if not binary.exists():
        pytest.skip("Azurite is not installed: run `npm install` at the repository root")
    workdir = Path(tempfile.mkdtemp(prefix="toygres-azurite-"))
    port = _free_port()
    log = (workdir / "azurite.log").open("wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(port),
            "--location",
            str(workdir),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file, not a pipe: a pipe nobody reads could fill up and stall Azurite
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = (workdir / "azurite.log").read_text(errors="replace")
                pytest.fail(f"Azurite exited with {proc.returncode}: {err[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("Azurite did not start listening within 30 s")
                time.sleep(0.1)
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={DEV_KEY};QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def reader(connection: str, queue: str) -> QueueClient:
    """A test-side client that decodes what the hint sender encoded (as the Functions host does)."""
    return QueueClient.from_connection_string(
        connection, queue, message_decode_policy=TextBase64DecodePolicy()
    )


@pytest.fixture
async def queues(azurite: str) -> AsyncIterator[dict[str, QueueClient]]:
    """Both hint queues, existing and empty at the start of the test."""
    clients = {
        ORCHESTRATION_QUEUE: reader(azurite, ORCHESTRATION_QUEUE),
        ACTIVITY_QUEUE: reader(azurite, ACTIVITY_QUEUE),
    }
    for client in clients.values():
        try:
            await client.create_queue()
        except ResourceExistsError:
            pass
        await client.clear_messages()
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


@dataclass
class Handlers:
    """The user functions as registered in ``function_app.app`` (what the host would invoke)."""

    functions: dict[str, Any]

    def __getitem__(self, name: str) -> Callable[..., Awaitable[Any]]:
        return self.functions[name].get_user_function()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def registered() -> Handlers:
    import function_app

    # get_functions() may be called once per app: it refuses names it has already seen
    return Handlers({f.get_function_name(): f for f in function_app.app.get_functions()})


def local_host_config(dsn: str, root: Path, **overrides: Any) -> HostConfig:
    """A Functions host on the test database and the local runtime under ``root``, fast timings."""
    values: dict[str, Any] = {
        "settings": Settings(default_runtime=RuntimeKind.LOCAL, local_data_dir=root),
        "functions": fast_functions(),
        "dsn": dsn,
        "runtimes": {RuntimeKind.LOCAL: LocalRuntime(root)},
        "timing": FAST,
    }
    return HostConfig(**{**values, **overrides})


def fast_functions(**extra: Any) -> FunctionsSettings:
    values: dict[str, Any] = {
        "orchestration_budget_seconds": 20,
        "activity_budget_seconds": 20,
        "sweep_budget_seconds": 20,
        "reconcile_every_minutes": 1,
    }
    values.update(extra)
    return FunctionsSettings(**values)


@pytest.fixture
async def host(
    request: pytest.FixtureRequest, pg_dsn: str, pg_tmp_dir: Path, azurite: str
) -> AsyncIterator[Host]:
    """The process-wide host, built as a worker would, on this test's database and Azurite.

    Inline activities (the engine running a turn's activities in the orchestration dispatch) are
    off unless a test asks for them (``@pytest.mark.parametrize("host", [True], indirect=True)``),
    so activities go through the activity queue and its hints.
    """
    inline = bool(getattr(request, "param", False))
    root = pg_tmp_dir / "instances"
    host_state.configure(
        local_host_config(
            pg_dsn,
            root,
            runtime_options=RuntimeOptions(
                idle_wait=0.3,
                orchestration_concurrency=2,
                activity_concurrency=4,
                error_backoff=timedelta(milliseconds=200),
                inline_activities=inline,
            ),
            hints=lambda: StorageQueueHints.from_connection_string(azurite),
        )
    )
    try:
        yield await host_state.get_host()
    finally:
        await host_state.close_host()
        host_state.configure(HostConfig())
        kill_local_instances(root)


def queue_message(message: Any) -> func.QueueMessage:
    """What the Functions worker hands the trigger for a received Storage message."""
    return HostQueueMessage(
        id=message.id,
        body=message.content.encode() if isinstance(message.content, str) else message.content,
        dequeue_count=message.dequeue_count,
        insertion_time=message.inserted_on,
        expiration_time=message.expires_on,
        pop_receipt=message.pop_receipt,
    )


class HintPump:
    """Plays the Functions host's queue listener: receive hints, invoke the trigger, delete on success."""

    def __init__(self, queues: dict[str, QueueClient], handlers: Handlers) -> None:
        self.routes = [
            (queues[ORCHESTRATION_QUEUE], handlers["orchestration_hints"]),
            (queues[ACTIVITY_QUEUE], handlers["activity_hints"]),
        ]
        self.delivered = {ORCHESTRATION_QUEUE: 0, ACTIVITY_QUEUE: 0}

    async def pump_once(self) -> int:
        count = 0
        for client, handler in self.routes:
            received = [m async for m in client.receive_messages(max_messages=32, visibility_timeout=60)]
            for message in received:
                await handler(queue_message(message))
                await client.delete_message(message)
                self.delivered[client.queue_name] += 1
                count += 1
        return count

    async def until(self, done: Callable[[], Awaitable[bool]], timeout: float = 120) -> None:
        """Deliver hints until ``done()``; fails if hints run out for good before it is."""
        deadline = time.monotonic() + timeout
        while not await done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not done after {timeout}s of hint-driven dispatch ({self.delivered})")
            if await self.pump_once() == 0:
                await asyncio.sleep(0.2)  # delayed hints (timers) become visible later
