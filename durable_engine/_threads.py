"""Daemon threads for code the event loop must not wait on: sync activities and orchestration turns.

Why not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one abandoned call
(a sync activity past ``shutdown``'s grace, a turn past its time limit) kept the host process
alive until it returned, and a pool shut down by ``shutdown`` refused the work of a restarted
runtime. Abandoned work is redone anyway (activities run at least once; a turn is replanned or
failed), so dying with the process is fine.

Why a pool of our own rather than a thread per call: every turn is planned off the loop, and
starting a thread costs about as much as the hop itself; idle threads wait for the next call
and leave after a minute without one. A call never waits for a busy thread (a new one starts),
so a stuck call cannot delay another; concurrency stays bounded by the dispatch loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

#: an idle thread leaves after this long without work
_IDLE_SECONDS = 60.0


class ThreadInterrupted(BaseException):
    """Raised inside an abandoned call's thread to stop it (a BaseException: code rarely catches it)."""


class _Job:
    def __init__(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any]
    ) -> None:
        self.name = name
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = future.get_loop()
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._returned = False

    def run(self, worker: _Worker) -> None:
        with self._lock:
            self._worker = worker
        result: Any = None
        error: BaseException | None = None
        try:
            result = self.fn(*self.args)
        except StopIteration as exc:  # a future refuses StopIteration: it would never settle
            error = RuntimeError(f"{self.name} raised StopIteration({exc})")
        except ThreadInterrupted:
            raise
        except BaseException as exc:  # handed to the awaiting task, which classifies it
            error = exc
        with self._lock:
            self._returned = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._settle, result, error)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():  # cancelled: the call was abandoned
            return
        if error is None:
            self.future.set_result(result)
        else:
            self.future.set_exception(error)

    def interrupt(self) -> bool:
        with self._lock:
            worker = self._worker
            if worker is None or self._returned or worker.ident is None:
                return False
            worker.retiring = True  # whatever happens next, this thread takes no other call
            set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
            changed = set_async_exc(ctypes.c_ulong(worker.ident), ctypes.py_object(ThreadInterrupted))
        return bool(changed == 1)


class _Worker(threading.Thread):
    def __init__(self, pool: _Pool, first: _Job) -> None:
        super().__init__(name="durable-engine-worker", daemon=True)
        self._pool = pool
        self._first: _Job | None = first
        #: set when one of its calls was interrupted: an interrupt must never reach another call
        self.retiring = False

    def run(self) -> None:
        try:
            job = self._first
            self._first = None
            while job is not None:
                self.name = job.name
                job.run(self)
                if self.retiring:
                    return
                self.name = "durable-engine-worker"
                job = self._pool.next_job()
        except ThreadInterrupted:
            return  # arrived just after its call returned: retire


class _Pool:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: threads waiting for work that no submitted call has claimed yet
        self._idle = 0

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # that waiting thread is this call's
                self._jobs.put(job)
                return
        _Worker(self, job).start()

    def next_job(self) -> _Job | None:
        """The next call for a thread that finished one; None when it should leave."""
        with self._lock:
            self._idle += 1
        while True:
            try:
                return self._jobs.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # unclaimed: leave (calls claimed meanwhile have others)
                        self._idle -= 1
                        return None
                # every waiting thread is claimed, this one included: its call is on the way


_pool = _Pool()


def _reset_after_fork() -> None:  # the child has none of the parent's threads
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_reset_after_fork)


class DaemonCall:
    """``fn(*args)`` on a daemon thread; ``future`` settles on the calling loop."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._job = _Job(name, fn, args, self.future)
        _pool.submit(self._job)

    def interrupt(self) -> bool:
        """Best effort: raise :class:`ThreadInterrupted` in the call's thread at its next bytecode.

        Stops busy loops; a blocking C call (``time.sleep``, a socket read) sees it when it
        returns. The thread then retires, so the interrupt can never reach another call.
        Returns False if the call had not started or had already returned.
        """
        return self._job.interrupt()


def in_daemon_thread(name: str, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` on a daemon thread; the future settles on the calling loop."""
    return DaemonCall(name, fn, *args).future
