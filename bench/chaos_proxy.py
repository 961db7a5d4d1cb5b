"""A TCP proxy that cuts connections on command: the network faults of the chaos suite.

The runtimes reach PostgreSQL only through it. Three faults, each healed by :meth:`heal`:

- :meth:`drop` aborts every open connection at once (both sides), as a reset middlebox would;
  clients reconnect at once.
- :meth:`blackhole` stops forwarding: bytes already sent wait in the proxy, new connections are
  accepted and then hang. Queries neither fail nor finish, exactly like a network partition
  before TCP gives up; locks expire meanwhile. :meth:`heal` lets everything through again (the
  partition healed in time) — or :meth:`drop` first, then heal (TCP gave up).

It runs on the caller's event loop; blocking work on that loop stalls the proxy too, so the
driver runs its blocking calls (``pg_ctl``) in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class ChaosProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._connections: set[_Connection] = set()
        self.accepted = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._flowing.set()
        self.drop()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    def drop(self) -> int:
        """Abort every open connection; returns how many there were."""
        doomed = list(self._connections)
        for conn in doomed:
            conn.abort()
        self._connections.difference_update(doomed)
        return len(doomed)

    def blackhole(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Connection(writer)
        self._connections.add(conn)
        try:
            await self._flowing.wait()  # a black hole swallows new connections too
            try:
                up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            except OSError:  # the server is down (restarting): refuse like it would
                return
            conn.upstream = up_writer
            if conn not in self._connections:  # dropped while connecting
                up_writer.transport.abort()
                return
            conn.tasks = [
                asyncio.create_task(self._pipe(reader, up_writer, conn)),
                asyncio.create_task(self._pipe(up_reader, writer, conn)),
            ]
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._connections.discard(conn)
            conn.abort()
            for task in conn.tasks:
                task.cancel()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Connection) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await src.read(65536)
                if not data:
                    return
                if not self._flowing.is_set():
                    await self._flowing.wait()
                if conn not in self._connections:
                    return
                dst.write(data)
                await dst.drain()
