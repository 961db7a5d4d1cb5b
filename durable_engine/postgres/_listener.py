"""One LISTEN connection per provider, fanned out to every local waiter.

Why one: idle dispatchers and ``wait_for_completion`` callers must cost nothing, and a
connection per waiter would exhaust the server. The listener task blocks on the socket;
each NOTIFY sets an :class:`asyncio.Event` that waiters captured *before* they looked at
the database, so a notification racing their query is never lost.

Without a way to LISTEN (behind a transaction-mode pooler, with no direct connection) the
listener only fans out this process's own wake-ups; waiters then also poll the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

_log = logging.getLogger("durable_engine.postgres")


class Listener:
    """LISTENs on ``channels`` (kind -> channel name) and wakes waiters on each NOTIFY.

    ``connect`` opens a session connection to LISTEN on; None: no LISTEN (local wake-ups only).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]] | None,
        channels: dict[str, str],
    ) -> None:
        self._open = connect
        self._channels = channels
        self._kind_of = {ch: kind for kind, ch in channels.items()}
        self._events: dict[str, asyncio.Event] = {kind: asyncio.Event() for kind in channels}
        self._instance_waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._open is not None

    async def start(self) -> None:
        """Connect once now (so a bad DSN fails ``connect``), then keep listening in a task."""
        if self._open is None:
            return
        conn = await self._connect()
        self._task = asyncio.create_task(self._run(conn), name="durable-engine-listener")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.wake_all()

    def current(self, kind: str) -> asyncio.Event:
        """The event the next NOTIFY on ``kind`` sets; capture it before reading the database."""
        return self._events[kind]

    def watch_instance(self, instance_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._instance_waiters.setdefault(instance_id, set()).add(event)
        return event

    def unwatch_instance(self, instance_id: str, event: asyncio.Event) -> None:
        waiters = self._instance_waiters.get(instance_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._instance_waiters[instance_id]

    def wake_instance(self, instance_id: str) -> None:
        """Wake this process's waiters on one instance now (its NOTIFY follows; spurious is fine)."""
        for event in self._instance_waiters.get(instance_id, ()):
            event.set()

    def wake_local(self, kind: str) -> None:
        """This process made work fetchable: wake its own idle waiters (used when not listening)."""
        self._fire(kind)

    def wake_all(self) -> None:
        """Wake everyone (spurious wake-ups are allowed): used after a reconnect or on close."""
        for kind in list(self._events):
            self._fire(kind)
        for waiters in self._instance_waiters.values():
            for event in waiters:
                event.set()

    # --- internals ------------------------------------------------------------------------
    def _fire(self, kind: str) -> None:
        event = self._events[kind]
        self._events[kind] = asyncio.Event()
        event.set()

    def _dispatch(self, channel: str, payload: str) -> None:
        kind = self._kind_of.get(channel)
        if kind is None:
            return
        if kind == "status":
            for event in self._instance_waiters.get(payload, ()):
                event.set()
        else:
            self._fire(kind)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        assert self._open is not None
        conn = await self._open()
        try:
            for channel in self._channels.values():
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        delay = 0.1
        while not self._closed:
            try:
                if conn is None:
                    conn = await self._connect()
                    # notifications may have been missed while disconnected
                    self.wake_all()
                    delay = 0.1
                async for notify in conn.notifies():
                    self._dispatch(notify.channel, notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: reconnect with backoff
                if self._closed:
                    break
                _log.warning("durable engine LISTEN connection failed (%s); reconnecting", type(exc).__name__)
                self.wake_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if conn is not None and (self._closed or conn.broken or conn.closed):
                    with contextlib.suppress(Exception):
                        await conn.close()
                    conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
