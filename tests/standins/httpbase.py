"""Shared HTTP plumbing for the stand-ins: a threaded server bound to 127.0.0.1,
optional TLS, an access log, and fault switches.

Why hand-rolled on ``http.server``: the stand-ins must start and stop inside a test
in milliseconds, answer from several threads at once (the SDK clients keep pools of
connections), and close every connection on shutdown so no thread outlives the
test. ``ThreadingHTTPServer`` does all that with no event loop to manage.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class AccessLogEntry:
    """One request the stand-in answered: what the tests assert on."""

    method: str
    path: str
    query: str
    status: int
    content_type: str = ""


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]
    body: bytes

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class FaultSwitches:
    """Thread-safe fault injection and request log shared by a server's handlers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._latency = 0.0
        self._log: list[AccessLogEntry] = []

    def fail_next(self, method: str, path_regex: str, status: int = 500, count: int = 1) -> None:
        """Answer the next ``count`` requests matching ``method`` ("*" for any) and
        ``path_regex`` (``re.search`` on the path, without the query) with ``status``."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._latency = 0.0

    def set_latency(self, seconds: float) -> None:
        """Delay every request by ``seconds`` before it is handled."""
        with self._lock:
            self._latency = max(0.0, seconds)

    def take_fault(self, method: str, path: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.method in ("*", method) and fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault.status
        return None

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    def record(self, entry: AccessLogEntry) -> None:
        with self._lock:
            self._log.append(entry)

    def access_log(self) -> list[AccessLogEntry]:
        with self._lock:
            return list(self._log)

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[AccessLogEntry]:
        """Logged requests filtered by method and a ``re.search`` on the path."""
        pattern = re.compile(path_regex) if path_regex else None
        return [
            e
            for e in self.access_log()
            if (method is None or e.method == method.upper()) and (pattern is None or pattern.search(e.path))
        ]


Handler = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: StandinHttpServer) -> None:
        self.app = app
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        ctx = self.server.app.ssl_context
        if ctx is not None:
            # Handshake here, in the connection's own thread, not in the accept loop.
            self.request = ctx.wrap_socket(self.request, server_side=True)
        with self.server.conn_lock:
            self.server.open_connections.add(self.request)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.open_connections.discard(self.request)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr log; the access log is kept in memory."""

    def _handle(self) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            raw_query=split.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        latency = app.faults.latency
        if latency:
            time.sleep(latency)
        try:
            injected = app.faults.take_fault(request.method, request.path)
            if injected is not None:
                response = app.fault_response(request, injected)
            else:
                response = app.handle(request)
        except Exception as exc:  # a bug in the stand-in must show up as a 500, not a hang
            response = app.fault_response(request, 500, f"stand-in error: {exc!r}")
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        headers = {"Content-Type": "application/json", **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        app.faults.record(
            AccessLogEntry(
                request.method, request.path, request.raw_query, response.status, request.content_type
            )
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class StandinHttpServer:
    """Base class: subclasses implement :meth:`handle` and :meth:`fault_response`."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.faults = FaultSwitches()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start_http(self) -> None:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{type(self).__name__}-http",
            daemon=True,
        )
        self._thread.start()

    def stop_http(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.conn_lock:
            connections = list(server.open_connections)
        for conn in connections:  # wake keep-alive handler threads blocked on read
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- fault switches (delegated) ---------------------------------------------------------
    def fail_next(self, method: str, path_regex: str, status: int = 500, count: int = 1) -> None:
        self.faults.fail_next(method, path_regex, status, count)

    def set_latency(self, seconds: float) -> None:
        self.faults.set_latency(seconds)

    def access_log(self) -> list[AccessLogEntry]:
        return self.faults.access_log()

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[AccessLogEntry]:
        return self.faults.requests(method, path_regex)

    # -- to implement ------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def fault_response(self, request: Request, status: int, message: str | None = None) -> Response:
        raise NotImplementedError
