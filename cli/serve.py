"""``toygres serve``: the API, the durable runtime and a periodic reconciler in one process.

Outside Azure Functions this is how Toygres runs: one control plane (one set of pools), the
engine's long-running dispatcher loops (LISTEN/NOTIFY wake-ups instead of storage-queue hints),
a Reconciler pass every few minutes, and uvicorn serving :func:`api.app.create_app`.

The database is ``TOYGRES_DATABASE_URL`` when set, else an embedded PostgreSQL in ``data_dir``
that keeps its data across restarts (trust authentication on 127.0.0.1 only). Without a cluster
configured the default runtime is ``local``.

SIGINT/SIGTERM stop it gracefully, in reverse order of start: the API stops accepting requests,
the reconciler stops, the runtime lets in-flight work finish (bounded), pools close, the
embedded server stops. Local instances keep running (they are separate servers that a restarted
control plane re-attaches to).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from pydantic import ValidationError

from api.app import create_app
from control_plane.bootstrap import ConfigurationError, build_runtimes, open_control_plane
from control_plane.service import ControlPlane
from durable_engine import Runtime, RuntimeOptions
from toygres.models import RuntimeKind, validation_errors
from toygres.pgserver import EmbeddedPostgres, PostgresServerError
from toygres.settings import AuthMode, AuthSettings, Settings

log = logging.getLogger("toygres.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7071
DEFAULT_DATA_DIR = Path(".toygres/control-plane-pg")
DEFAULT_INSTANCES_DIR = Path(".toygres/instances")
DEFAULT_RECONCILE_INTERVAL = 300.0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class ListenError(Exception):
    """The API address cannot be bound (in use, not local, no permission)."""


@dataclass(frozen=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    #: None: ``TOYGRES_LOCAL_DATA_DIR`` when set, else ``.toygres/instances``
    instances_dir: Path | None = None
    reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL
    log_format: str = "text"
    log_level: str = "INFO"
    #: how long shutdown lets running turns and activities finish
    shutdown_grace: float = 10.0


# --------------------------------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI copy of the message
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Root logging to stderr; uvicorn's loggers propagate to it (``log_config=None``)."""
    if log_format not in ("text", "json"):
        raise ValueError("log format must be 'text' or 'json'")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


def serve_settings(settings: Settings, options: ServeOptions) -> Settings:
    """The settings ``serve`` runs with: local runtime by default when no cluster is configured.

    An explicit ``TOYGRES_DEFAULT_RUNTIME=kubernetes`` without a cluster is kept, so that
    ``build_runtimes`` refuses it with the settings to set instead of silently running locally.
    """
    update: dict[str, Any] = {}
    kube = settings.kubernetes
    has_cluster = kube.uses_aks or kube.kubeconfig is not None
    if not has_cluster and "default_runtime" not in settings.model_fields_set:
        update["default_runtime"] = RuntimeKind.LOCAL
    if options.instances_dir is not None:
        update["local_data_dir"] = options.instances_dir.expanduser().absolute()
    elif "local_data_dir" not in settings.model_fields_set:
        update["local_data_dir"] = DEFAULT_INSTANCES_DIR.absolute()
    else:
        update["local_data_dir"] = settings.local_data_dir.absolute()
    return settings.model_copy(update=update)


def describe_database_url(url: str) -> str:
    """``user@host:port/db`` of a libpq URL — for logs, so never with the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return "(unparseable URL)"
    user, host = parts.get("user") or "?", parts.get("host") or "localhost"
    return f"{user}@{host}:{parts.get('port') or 5432}/{parts.get('dbname') or '?'}"


def _bind(host: str, port: int) -> socket.socket:
    """Bind the API socket before anything else starts, so a busy port fails fast."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@asynccontextmanager
async def _database(settings: Settings, data_dir: Path) -> AsyncIterator[str]:
    """The control-plane DSN: the configured URL, or an embedded server started (and stopped) here."""
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        log.info("database: %s (TOYGRES_DATABASE_URL)", describe_database_url(url))
        yield url
        return
    server = EmbeddedPostgres(data_dir)
    log.info("database: embedded PostgreSQL in %s (starting)", server.data_dir)
    await asyncio.to_thread(server.start, 60.0)
    # if this process dies without cleaning up, the watchdog stops the server
    watchdog = server.stop_when_process_exits()
    try:
        log.info("database: embedded PostgreSQL on %s:%d", server.host, server.port)
        yield server.dsn("postgres")
    finally:
        log.info("stopping the embedded PostgreSQL")
        try:
            await asyncio.to_thread(server.stop, "fast")
        finally:
            await asyncio.to_thread(watchdog.release)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns SIGINT/SIGTERM.

    uvicorn re-raises a captured signal after it stops, which would kill the process before the
    runtime, the pools and the embedded server are shut down.
    """

    def __init__(self, config: uvicorn.Config, *, started_message: str) -> None:
        super().__init__(config)
        self._started_message = started_message

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            log.info("%s", self._started_message)


async def _reconcile_periodically(plane: ControlPlane, interval: float) -> None:
    """A Reconciler pass at start (monitors lost while we were down) and every ``interval`` seconds."""
    while True:
        try:
            reconciler_id = await plane.run_reconciler(every=timedelta(seconds=interval))
            log.info("reconciler pass started: %s", reconciler_id)
        except Exception:
            log.exception("could not start a reconciler pass; retrying in %.0f s", interval)
        await _rotate_certificates(plane)
        await asyncio.sleep(interval)


async def _rotate_certificates(plane: ControlPlane) -> None:
    """Start the day's certificate renewal pass (at most one per day, whoever asks)."""
    try:
        rotation_id = await plane.run_certificate_rotation()
        log.debug("certificate rotation pass of this window: %s", rotation_id)
    except Exception:
        log.exception("could not start the certificate rotation pass; the next reconcile tries again")


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


async def serve(options: ServeOptions, settings: Settings | None = None) -> None:
    """Run until SIGINT/SIGTERM. Raises ConfigurationError / PostgresServerError / OSError at start-up."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    servers: list[uvicorn.Server] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("%s again: not waiting for open connections", sig.name)
            for srv in servers:
                srv.force_exit = True
            return
        log.info("%s received: shutting down", sig.name)
        stop.set()
        for srv in servers:
            srv.should_exit = True

    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(sig, on_signal, sig)
            handled.append(sig)
    try:
        effective = serve_settings(settings or Settings(), options)
        _refuse_open_access(options.host, effective.auth)
        runtimes = build_runtimes(effective)
        sock = _bind(options.host, options.port)
        async with AsyncExitStack() as stack:
            stack.callback(sock.close)
            dsn = await stack.enter_async_context(_database(effective, options.data_dir))
            if stop.is_set():
                return
            plane = await stack.enter_async_context(open_control_plane(effective, dsn=dsn, runtimes=runtimes))
            runtime = Runtime(plane.provider, plane.registry, RuntimeOptions())
            await runtime.start()
            plane.client.runtime = runtime  # API starts run their first turn in this process at once
            stack.push_async_callback(runtime.shutdown, options.shutdown_grace)
            _log_runtimes(effective, runtimes)
            if options.reconcile_interval > 0:
                reconciler = asyncio.create_task(
                    _reconcile_periodically(plane, options.reconcile_interval), name="reconciler"
                )
                stack.push_async_callback(_cancel, reconciler)
                log.info("reconciler: a pass every %.0f s", options.reconcile_interval)
            else:
                log.info("reconciler: disabled")
            if stop.is_set():
                return
            app = create_app(lambda: plane, auth=effective.auth)
            config = uvicorn.Config(
                app,
                host=options.host,
                port=options.port,
                log_config=None,
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=max(1, round(options.shutdown_grace)),
            )
            host, port = sock.getsockname()[:2]
            base = f"http://{f'[{host}]' if ':' in host else host}:{port}/api"
            server = _Server(config, started_message=f"API listening on {base} (docs: {base}/docs)")
            servers.append(server)
            await server.serve(sockets=[sock])
            log.info("API stopped; shutting down the runtime")
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    log.info("stopped cleanly")


def _refuse_open_access(host: str, auth: AuthSettings) -> None:
    """Without authentication every caller may create and delete databases: loopback only."""
    if auth.mode is not AuthMode.NONE or _is_loopback(host):
        return
    raise ConfigurationError(
        f"refusing to listen on {host} without authentication: every caller could create and delete "
        "instances. Set TOYGRES_AUTH__MODE=jwt (with TOYGRES_AUTH__ISSUER, __AUDIENCE and __JWKS_URL), "
        "or listen on 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def _log_runtimes(settings: Settings, runtimes: dict[RuntimeKind, Any]) -> None:
    names = ", ".join(sorted(kind.value for kind in runtimes))
    log.info("runtimes configured: %s; default runtime: %s", names, settings.default_runtime.value)
    if RuntimeKind.LOCAL in runtimes:
        log.info("local runtime: instances are PostgreSQL processes under %s", settings.local_data_dir)
    if RuntimeKind.KUBERNETES not in runtimes:
        log.info(
            "no Kubernetes cluster configured (TOYGRES_KUBERNETES__AKS_* or __KUBECONFIG): "
            "instances run locally"
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run(options: ServeOptions) -> int:
    """Entry point of ``toygres serve``: configures logging, serves, maps failures to exit codes."""
    configure_logging(options.log_format, options.log_level)
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in validation_errors(exc):
            variable = "TOYGRES_" + err["field"].upper().replace(".", "__")
            log.error("invalid setting %s: %s", variable, err["message"])
        return EXIT_CONFIG
    try:
        asyncio.run(serve(options, settings))
    except ConfigurationError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except ListenError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except psycopg.OperationalError as exc:  # libpq messages name host and port, never the password
        log.error("cannot use the control-plane database: %s", str(exc).strip())
        return EXIT_FAILURE
    except PostgresServerError as exc:
        log.error("the embedded PostgreSQL did not start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK
