"""Daemon threads for code the event loop must not wait on: sync activities and orchestration turns.

Why not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one abandoned call
(a sync activity past ``shutdown``'s grace, a turn past its time limit) kept the host process
alive until it returned, and a pool shut down by ``shutdown`` refused the work of a restarted
runtime. Abandoned work is redone anyway (activities run at least once; a turn is replanned or
failed), so dying with the process is fine. Concurrency stays bounded by the dispatch loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
from collections.abc import Callable
from typing import Any


class ThreadInterrupted(BaseException):
    """Raised inside an abandoned call's thread to stop it (a BaseException: code rarely catches it)."""


class DaemonCall:
    """``fn(*args)`` on a daemon thread of its own; ``future`` settles on the calling loop."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = loop.create_future()
        self._returned = threading.Event()

        def settle(result: Any, error: BaseException | None) -> None:
            if self.future.done():  # cancelled: the call was abandoned
                return
            if error is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(error)

        def target() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except StopIteration as exc:  # a future refuses StopIteration: it would never settle
                error = RuntimeError(f"{name} raised StopIteration({exc})")
            except BaseException as exc:  # handed to the awaiting task, which classifies it
                error = exc
            self._returned.set()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, result, error)

        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def interrupt(self) -> bool:
        """Best effort: raise :class:`ThreadInterrupted` in the thread at its next bytecode.

        Stops busy loops; a blocking C call (``time.sleep``, a socket read) sees it when it
        returns. Returns False if the call had already returned.
        """
        ident = self._thread.ident
        if ident is None or self._returned.is_set():
            return False
        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        changed = set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(ThreadInterrupted))
        return bool(changed == 1)


def in_daemon_thread(name: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` on a daemon thread; the future settles on the calling loop."""
    return DaemonCall(name, fn, *args).future
