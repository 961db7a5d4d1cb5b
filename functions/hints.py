"""Wake-up hints over Azure Storage queues: the runtime's ``WorkHints`` for the Functions host.

PostgreSQL holds the real queues; a Storage queue message only makes the Functions host run the
matching dispatcher (and scale it out by queue length). A hint carries nothing the dispatcher needs,
so hints may be lost (the timer sweep finds the work), duplicated (a drain that finds nothing is
cheap) or delayed. That is why every failure here is logged and swallowed: a hint must never fail
the turn or the request that sent it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from functions.config import ACTIVITY_QUEUE, ORCHESTRATION_QUEUE, STORAGE_CONNECTION

log = logging.getLogger("toygres.functions.hints")

#: Storage queues cannot hide a message for longer than seven days
MAX_VISIBILITY = timedelta(days=7)
#: a hint that arrives before its timer is due finds nothing and is spent; arrive a little late instead
TIMER_MARGIN = timedelta(seconds=1)
#: keep a delayed hint alive this long after it becomes visible (the TTL must exceed the delay)
_TTL_AFTER_VISIBLE = timedelta(days=1)
#: a hint is not worth a long stall of the turn that sends it: one quick retry, short timeouts
#: (the SDK's default retries back off for 15 s and more), and a hard cap per hint on top
SEND_TIMEOUT = timedelta(seconds=10)


def _client_options() -> dict[str, Any]:
    return {
        # read by the async client's own ExponentialRetry
        "initial_backoff": 1,
        "increment_base": 2,
        "retry_total": 1,
        "random_jitter_range": 1,
        "connection_timeout": 5,
        "read_timeout": 5,
    }


def visibility_seconds(delay: timedelta | None) -> int:
    """The visibility timeout for a hint about work due after ``delay``: rounded up, margin, clamped."""
    if delay is None or delay <= timedelta(0):
        return 0
    seconds = math.ceil((delay + TIMER_MARGIN).total_seconds())
    return min(seconds, int(MAX_VISIBILITY.total_seconds()))


class StorageQueueHints:
    """Sends wake-up messages to the orchestration and activity hint queues.

    Messages are base64 text, the Functions queue trigger's default ``messageEncoding``. Queues are
    created on first use, so a fresh storage account (or Azurite) needs no setup step.
    """

    def __init__(
        self, orchestrations: QueueClient, activities: QueueClient, *, credential: Any = None
    ) -> None:
        self._clients = {"orchestrations": orchestrations, "activities": activities}
        self._ready: set[str] = set()
        #: an async credential this object created and so must close
        self._credential = credential

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        orchestration_queue: str = ORCHESTRATION_QUEUE,
        activity_queue: str = ACTIVITY_QUEUE,
    ) -> StorageQueueHints:
        def client(queue: str) -> QueueClient:
            return QueueClient.from_connection_string(
                connection_string,
                queue,
                message_encode_policy=TextBase64EncodePolicy(),
                **_client_options(),
            )

        return cls(client(orchestration_queue), client(activity_queue))

    @classmethod
    def from_account_url(
        cls,
        account_url: str,
        credential: Any,
        *,
        orchestration_queue: str = ORCHESTRATION_QUEUE,
        activity_queue: str = ACTIVITY_QUEUE,
    ) -> StorageQueueHints:
        def client(queue: str) -> QueueClient:
            return QueueClient(
                account_url,
                queue,
                credential=credential,
                message_encode_policy=TextBase64EncodePolicy(),
                **_client_options(),
            )

        owned = credential if hasattr(credential, "close") else None
        return cls(client(orchestration_queue), client(activity_queue), credential=owned)

    @classmethod
    def from_environment(cls, setting: str = STORAGE_CONNECTION) -> StorageQueueHints | None:
        """Build from the app setting the queue triggers use, as the Functions host reads it.

        ``<setting>`` is a connection string (``UseDevelopmentStorage=true`` for Azurite); identity-based
        connections set ``<setting>__queueServiceUri`` or ``<setting>__accountName`` instead and
        authenticate with ``DefaultAzureCredential``. Returns ``None`` when nothing is configured:
        the host then relies on the timer sweep alone.
        """
        connection_string = os.environ.get(setting)
        if connection_string:
            return cls.from_connection_string(connection_string)
        url = os.environ.get(f"{setting}__queueServiceUri")
        account = os.environ.get(f"{setting}__accountName")
        if not url and account:
            url = f"https://{account}.queue.core.windows.net"
        if not url:
            log.warning("no %s setting: wake-up hints are off, only the timer sweep makes progress", setting)
            return None
        from azure.identity.aio import DefaultAzureCredential  # local: only identity-based hosts need it

        return cls.from_account_url(url, DefaultAzureCredential())

    async def orchestrations_ready(self, delay: timedelta | None = None) -> None:
        """Wake the orchestration dispatcher now, or once ``delay`` has passed (durable timers)."""
        await self._send("orchestrations", visibility_seconds(delay))

    async def activities_ready(self) -> None:
        """Wake the activity dispatcher."""
        await self._send("activities", 0)

    async def close(self) -> None:
        for client in self._clients.values():
            try:
                await client.close()
            except Exception:
                log.debug("closing a hint queue client failed", exc_info=True)
        if self._credential is not None:
            try:
                await self._credential.close()
            except Exception:
                log.debug("closing the hint credential failed", exc_info=True)

    async def _send(self, kind: str, visibility: int) -> None:
        client = self._clients[kind]
        sent_at = datetime.now(UTC).isoformat()
        body = json.dumps({"wake": kind, "sent_at": sent_at, "delay_seconds": visibility})
        ttl = visibility + int(_TTL_AFTER_VISIBLE.total_seconds())
        try:
            async with asyncio.timeout(SEND_TIMEOUT.total_seconds()):
                await self._ensure_queue(kind, client)
                try:
                    await client.send_message(body, visibility_timeout=visibility or None, time_to_live=ttl)
                except ResourceNotFoundError:  # the queue was deleted since: create it again, once
                    self._ready.discard(kind)
                    await self._ensure_queue(kind, client)
                    await client.send_message(body, visibility_timeout=visibility or None, time_to_live=ttl)
        except Exception as exc:  # best effort: the sweep finds the work; never echo a connection string
            log.warning(
                "could not send a %s hint to queue %r: %s (%s)",
                kind,
                client.queue_name,
                type(exc).__name__,
                getattr(exc, "error_code", None) or "no error code",
            )

    async def _ensure_queue(self, kind: str, client: QueueClient) -> None:
        if kind in self._ready:
            return
        try:
            await client.create_queue()
        except ResourceExistsError:
            pass
        self._ready.add(kind)
