"""One control plane and one runtime per Functions worker process, created on first use.

The Python worker keeps its process (and its event loop) alive between invocations, so every
trigger in the process shares one connection pool, one engine provider (with its LISTEN
connection), one registry and one hint sender instead of paying for them per invocation. The
host is built lazily because a worker indexes ``function_app.py`` before any setting may be
usable, and a failed build is not cached: the next invocation tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from control_plane.service import ControlPlane, LifecycleTiming, StartedHook
from durable_engine import Runtime, RuntimeOptions
from functions.config import FunctionsSettings
from functions.hints import StorageQueueHints
from toygres.models import RuntimeKind
from toygres.runtimes.base import InstanceRuntime
from toygres.settings import Settings, get_settings

log = logging.getLogger("toygres.functions.host")

HintsFactory = Callable[[], StorageQueueHints | None]

#: how long closing the host lets running activities finish before abandoning them
SHUTDOWN_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class HostConfig:
    """How the host is built. The defaults read the environment (app settings); tests override parts."""

    settings: Settings | None = None
    functions: FunctionsSettings | None = None
    dsn: str | None = None
    runtimes: Mapping[RuntimeKind, InstanceRuntime] | None = None
    timing: LifecycleTiming | None = None
    runtime_options: RuntimeOptions | None = None
    hints: HintsFactory = StorageQueueHints.from_environment


@dataclass
class Host:
    """The shared parts every trigger uses."""

    plane: ControlPlane
    runtime: Runtime
    hints: StorageQueueHints | None
    settings: FunctionsSettings
    #: per queue name: how many drains may run at once in this process (see FunctionsSettings)
    gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def gate(self, queue: str) -> asyncio.Semaphore:
        if queue not in self.gates:
            self.gates[queue] = asyncio.Semaphore(self.settings.max_concurrent_drains)
        return self.gates[queue]


_config = HostConfig()
_host: Host | None = None
_stack: contextlib.AsyncExitStack | None = None
_lock: asyncio.Lock | None = None


def configure(config: HostConfig) -> None:
    """Replace how the host is built; only while no host is open (tests, custom entry points)."""
    global _config
    if _host is not None:
        raise RuntimeError("the Functions host is already open; close_host() first")
    _config = config


async def get_host() -> Host:
    """The process-wide host, built on first call (concurrent first calls build it once)."""
    global _lock
    if _host is not None:
        return _host
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _host is None:
            await _open(_config)
        assert _host is not None
        return _host


async def close_host() -> None:
    """Close the pools and clients (worker shutdown, end of a test); the next ``get_host`` reopens."""
    global _host, _stack, _lock
    host, stack, _host, _stack, _lock = _host, _stack, None, None, None
    if host is not None:  # activities handed over by inline chaining get a moment to record results
        await host.runtime.shutdown(grace=SHUTDOWN_GRACE_SECONDS)
    if stack is not None:
        await stack.aclose()


async def _open(config: HostConfig) -> None:
    global _host, _stack
    functions = config.functions or FunctionsSettings()
    settings = config.settings or get_settings()
    # local: importing the bootstrap pulls in the Kubernetes and Azure SDKs, which the HTTP function's
    # cold start (indexing function_app.py) does not need
    from control_plane.bootstrap import open_control_plane

    stack = contextlib.AsyncExitStack()
    try:
        plane = await stack.enter_async_context(
            open_control_plane(
                settings,
                dsn=config.dsn,
                runtimes=dict(config.runtimes) if config.runtimes is not None else None,
                timing=config.timing,
                pool_size=functions.pool_size,
            )
        )
        hints = _build_hints(config.hints)
        if hints is not None:
            stack.push_async_callback(hints.close)
            plane.on_started = _wake_orchestrations(hints)
        options = config.runtime_options or RuntimeOptions(
            orchestration_concurrency=functions.orchestration_concurrency,
            activity_concurrency=functions.activity_concurrency,
        )
        runtime = Runtime(plane.provider, plane.registry, options, hints=hints)
    except BaseException:
        await stack.aclose()
        raise
    _host, _stack = Host(plane=plane, runtime=runtime, hints=hints, settings=functions), stack
    log.info("Functions host ready (hints %s)", "on" if hints is not None else "off")


def _wake_orchestrations(hints: StorageQueueHints) -> StartedHook:
    """After the API or the sweep starts an orchestration, wake a dispatcher for its first turn."""

    async def on_started(instance_id: str) -> None:
        await hints.orchestrations_ready(None)

    return on_started


def _build_hints(factory: HintsFactory) -> StorageQueueHints | None:
    """Hints are an optimisation: a storage setting that cannot be used leaves the sweep to do the work."""
    try:
        return factory()
    except Exception as exc:  # e.g. a malformed connection string; never echo it
        log.error("wake-up hints are off, the storage setting is unusable: %s", type(exc).__name__)
        return None
