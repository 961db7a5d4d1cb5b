"""The runtime: dispatchers that fetch work from a provider and run it.

Two ways to drive it, over the same processing code:
- ``await runtime.start()`` starts long-running loops (a standalone process, ``toygres serve``);
  idle loops sleep in ``Provider.wait_for_work`` (LISTEN/NOTIFY on PostgreSQL), not in hot polls.
- ``await runtime.run_orchestrations(...)`` / ``run_activities(...)`` / ``run_until_idle(...)``
  process until the queue is empty or a time budget ends (Azure Functions triggers).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from ._context import ActivityContext
from ._errors import ErrorCategory, ErrorInfo, LockLostError
from ._messages import MessageKind, OrchestratorMessage
from ._provider import ActivityItem, ClaimedTask, OrchestrationItem, Provider, QueueName, TurnCommit
from ._registry import Registry
from ._serialization import ensure_json
from ._threads import DaemonCall, in_daemon_thread
from ._turn import TurnDeferred, TurnLimits, can_chain, merge_commits, next_item, plan_failure, plan_turn

log = logging.getLogger("durable_engine.runtime")


@dataclass
class RuntimeOptions:
    orchestration_concurrency: int = 4
    activity_concurrency: int = 8
    #: how long a dispatcher owns an instance for one turn before another may take it
    lock_timeout: timedelta = timedelta(seconds=30)
    #: how long a worker owns an activity between renewals
    activity_lock_timeout: timedelta = timedelta(seconds=60)
    #: renewal period of a running activity's lock; default a third of ``activity_lock_timeout``
    lock_renewal_interval: timedelta | None = None
    #: the longest an idle dispatcher sleeps before looking again (wake-ups usually come sooner)
    idle_wait: float = 5.0
    history_cap: int = 10_000
    #: deliveries after which a message is poison and its instance or activity fails
    max_dequeue_count: int = 10
    #: how long a failed fetch/commit waits before the item is retried
    error_backoff: timedelta = timedelta(seconds=1)
    #: how long ``shutdown`` waits for in-flight work before abandoning it
    shutdown_grace: float = 10.0
    #: run the activities a turn schedules right here, and the turns their results unblock,
    #: before committing: one commit instead of one per turn and activity (see docs/engine.md)
    inline_activities: bool = True
    #: how long one dispatch may chain turns; activities still running then are handed over
    #: (stored locked by this runtime, which completes them like any worker would)
    inline_budget: timedelta = timedelta(seconds=1)
    #: the longest orchestration code may run in one turn (it runs off the event loop, so a
    #: blocking call stalls only its own turn); past it the instance fails with ``TurnTimeout``
    turn_timeout: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if self.orchestration_concurrency < 1 or self.activity_concurrency < 1:
            raise ValueError("RuntimeOptions concurrencies must be at least 1")
        if self.lock_timeout <= timedelta(0) or self.activity_lock_timeout <= timedelta(0):
            raise ValueError("RuntimeOptions lock timeouts must be positive")
        if self.turn_timeout <= timedelta(0):
            raise ValueError("RuntimeOptions.turn_timeout must be positive")

    @property
    def renewal_interval(self) -> float:
        interval = self.lock_renewal_interval or self.activity_lock_timeout / 3
        return max(interval.total_seconds(), 0.01)


class WorkHints(Protocol):
    """Optional wake-up hints for hosts without long-running loops (Azure Storage queues)."""

    async def orchestrations_ready(self, delay: timedelta | None = None) -> None: ...

    async def activities_ready(self) -> None: ...


class Runtime:
    def __init__(
        self,
        provider: Provider,
        registry: Registry,
        options: RuntimeOptions | None = None,
        *,
        hints: WorkHints | None = None,
    ) -> None:
        self.provider = provider
        self.registry = registry
        self.options = options or RuntimeOptions()
        self.hints = hints
        self._limits = TurnLimits(self.options.history_cap, self.options.max_dequeue_count)
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        #: turns in flight, whether fetched by the loop or handed over by a local client
        self._orchestration_slots = asyncio.Semaphore(self.options.orchestration_concurrency)
        #: activities running inline right now; capped by ``activity_concurrency`` like the worker
        #: loop, so a dispatcher never piles up more executions than a worker would take
        self._inline_running = 0

    # --- long-running mode ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._loops:
            raise RuntimeError("the runtime is already started")
        self._stopping.clear()
        self._loops = [
            asyncio.create_task(
                self._loop(
                    "orchestrator",
                    self._fetch_orchestration,
                    self.process_orchestration_item,
                    self._orchestration_slots,
                ),
                name="orchestration-dispatcher",
            ),
            asyncio.create_task(
                self._loop(
                    "worker",
                    self._fetch_activity,
                    self.process_activity_item,
                    asyncio.Semaphore(self.options.activity_concurrency),
                ),
                name="activity-dispatcher",
            ),
        ]

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop fetching; let in-flight work finish within ``grace``, then abandon the rest."""
        self._stopping.set()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        pending = set(self._inflight)
        if pending:
            _, still_running = await asyncio.wait(
                pending, timeout=self.options.shutdown_grace if grace is None else grace
            )
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def _loop(
        self,
        queue: QueueName,
        fetch: Callable[[], Awaitable[Any]],
        process: Callable[[Any], Coroutine[Any, Any, None]],
        slots: asyncio.Semaphore,
    ) -> None:
        while not self._stopping.is_set():
            await slots.acquire()
            try:
                item = await fetch()
            except Exception:
                slots.release()
                log.exception("fetching from the %s queue failed; retrying", queue)
                await self._sleep_unless_stopping(self.options.error_backoff.total_seconds())
                continue
            if item is None:
                slots.release()
                await self._wait_for_work(queue)
                continue
            task: asyncio.Task[None] = asyncio.create_task(process(item))
            self._inflight.add(task)
            task.add_done_callback(functools.partial(self._done, slots))

    async def try_dispatch_locally(
        self,
    ) -> Callable[[OrchestrationItem | None], asyncio.Task[None] | None] | None:
        """Reserve a turn slot for an item a local client is about to create locked.

        Returns None when the runtime is not running or has no free slot (the client then
        creates the instance the ordinary way); else a function that takes the locked item
        (or None if nothing was created) and runs its turn in a background task it returns.
        """
        if not self._loops or self._stopping.is_set() or self._orchestration_slots.locked():
            return None
        slots = self._orchestration_slots
        await slots.acquire()  # a slot is free: this returns at once

        def run(item: OrchestrationItem | None) -> asyncio.Task[None] | None:
            if item is None:
                slots.release()
                return None
            task: asyncio.Task[None] = asyncio.create_task(self.process_orchestration_item(item))
            self._inflight.add(task)
            task.add_done_callback(functools.partial(self._done, slots))
            return task

        return run

    def _done(self, slots: asyncio.Semaphore, task: asyncio.Task[Any]) -> None:
        slots.release()
        self._inflight.discard(task)

    async def _wait_for_work(self, queue: QueueName) -> None:
        waiter = asyncio.ensure_future(self.provider.wait_for_work(queue, self.options.idle_wait))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (waiter, stopper):
                fut.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- run-until-empty mode -------------------------------------------------------------------
    async def run_orchestrations(
        self, *, time_budget: float | None = None, max_items: int | None = None
    ) -> int:
        """Run turns until the orchestrator queue has nothing visible or the budget ends."""
        return await self._drain(
            self._fetch_orchestration,
            self.process_orchestration_item,
            self.options.orchestration_concurrency,
            time_budget,
            max_items,
        )

    async def run_activities(self, *, time_budget: float | None = None, max_items: int | None = None) -> int:
        """Run activities until the worker queue has nothing visible or the budget ends."""
        return await self._drain(
            self._fetch_activity,
            self.process_activity_item,
            self.options.activity_concurrency,
            time_budget,
            max_items,
        )

    async def run_until_idle(self, *, time_budget: float | None = None) -> int:
        """Alternate both queues until neither has visible work (tests, demos, sweeps)."""
        deadline = None if time_budget is None else time.monotonic() + time_budget
        total = 0
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done = await self.run_orchestrations(time_budget=left)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done += await self.run_activities(time_budget=left)
            total += done
            if done == 0 or (deadline is not None and time.monotonic() >= deadline):
                return total

    async def _drain(
        self,
        fetch: Callable[[], Awaitable[Any]],
        process: Callable[[Any], Awaitable[None]],
        concurrency: int,
        time_budget: float | None,
        max_items: int | None,
    ) -> int:
        deadline = None if time_budget is None else time.monotonic() + time_budget
        count = 0

        async def worker() -> None:
            nonlocal count
            while deadline is None or time.monotonic() < deadline:
                if max_items is not None and count >= max_items:
                    return
                item = await fetch()
                if item is None:
                    return
                count += 1
                await process(item)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if self._inflight and not self._loops:
            # activities handed over by inline chaining finish here, within the budget; the
            # caller (a Functions invocation) may freeze the process once this returns
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            await asyncio.wait(set(self._inflight), timeout=left)
        return count

    # --- orchestration turns --------------------------------------------------------------------
    async def _fetch_orchestration(self) -> OrchestrationItem | None:
        return await self.provider.fetch_orchestration_item(self.options.lock_timeout)

    async def process_orchestration_item(self, item: OrchestrationItem) -> None:
        # the turn keeps its instance however long it takes: planning runs off the loop, and
        # inline activities and the commit may together outlive lock_timeout
        renewer = asyncio.create_task(self._renew_turn_lock(item))
        try:
            await self._process_orchestration_item(item, renewer)
        finally:
            renewer.cancel()

    async def _process_orchestration_item(self, item: OrchestrationItem, renewer: asyncio.Task[None]) -> None:
        inline: list[_InlineRun] = []
        fetched = time.monotonic()
        try:
            commit = await self._plan(item)
            if self.options.inline_activities:
                commit = await self._chain_inline(item, commit, inline, fetched)
        except asyncio.CancelledError:
            _cancel_all(inline)
            await self._abandon_quietly(self.provider.abandon_orchestration_item(item.lock_token))
            raise
        except TurnDeferred as deferred:
            _cancel_all(inline)
            log.info("deferring a turn: %s", deferred)
            await self._abandon_quietly(
                self.provider.abandon_orchestration_item(item.lock_token, self.options.error_backoff)
            )
            return
        except Exception:
            _cancel_all(inline)
            log.exception("planning a turn of %s failed; the messages will be redelivered", item.instance_id)
            await self._abandon_quietly(
                self.provider.abandon_orchestration_item(item.lock_token, self.options.error_backoff)
            )
            return
        renewer.cancel()  # the commit releases the lock; a renewal racing it would only log noise
        try:
            await self.provider.commit_turn(item.lock_token, commit)
        except LockLostError:
            _cancel_all(inline)
            log.warning(
                "lost the lock on %s before committing; another dispatcher redoes the turn", item.instance_id
            )
            return
        except asyncio.CancelledError:
            _cancel_all(inline)
            await self._abandon_quietly(self.provider.abandon_orchestration_item(item.lock_token))
            raise
        except Exception:
            _cancel_all(inline)
            log.exception(
                "committing a turn of %s failed; the messages will be redelivered", item.instance_id
            )
            await self._abandon_quietly(
                self.provider.abandon_orchestration_item(item.lock_token, self.options.error_backoff)
            )
            return
        for run in inline:  # handed over: finish them like a worker that fetched them
            finisher = asyncio.create_task(self._complete_running(run.item, run.execution))
            self._inflight.add(finisher)
            finisher.add_done_callback(self._inflight.discard)
        await self._send_hints(commit)

    async def _chain_inline(
        self, item: OrchestrationItem, commit: TurnCommit, running: list[_InlineRun], fetched: float
    ) -> TurnCommit:
        """Run the turn's activities here and chain the turns they unblock, within the budget.

        Each chained turn is planned exactly as if its completions had come through the queue;
        the merged commit then applies all of them at once. Activities still running when the
        budget ends (or the instance stops running) become claimed tasks of this runtime.
        """
        # never work past half the instance lock: a dispatcher that stalled (a long turn, a
        # frozen VM) would run activities for a commit that is going to be refused
        lock_deadline = fetched + self.options.lock_timeout.total_seconds() / 2
        deadline = min(time.monotonic() + self.options.inline_budget.total_seconds(), lock_deadline)
        merged, latest, current = commit, commit, item
        while True:
            queued = []
            for task in merged.activity_tasks:
                if self._inline_running >= self.options.activity_concurrency or time.monotonic() >= deadline:
                    queued.append(task)  # no inline slot: workers take it from the queue
                    continue
                # a crash loses inline runs with the dispatch: when the turn's messages come
                # back, so does their delivery count, and the activity sees a later attempt
                activity = ActivityItem(task, uuid.uuid4().hex, dequeue_count=item.dequeue_count)
                execution = asyncio.ensure_future(self._run_activity(activity))
                self._inline_running += 1
                execution.add_done_callback(self._inline_finished)
                running.append(_InlineRun(activity, execution))
            merged.activity_tasks = queued
            remaining = deadline - time.monotonic()
            if not running or remaining <= 0 or not can_chain(current, latest):
                break
            await asyncio.wait(
                [r.execution for r in running], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            finished = [r for r in running if r.execution.done()]
            if not finished:
                break
            running[:] = [r for r in running if not r.execution.done()]
            current = next_item(current, latest, [r.execution.result() for r in finished])
            latest = await self._plan(current)
            merged = merge_commits(merged, latest)
        locked_until = self.provider.now() + self.options.activity_lock_timeout
        merged.claimed_tasks = [
            ClaimedTask(r.item.task, r.item.lock_token, locked_until, r.item.dequeue_count) for r in running
        ]
        return merged

    async def _plan(self, item: OrchestrationItem) -> TurnCommit:
        """Plan a turn on a thread of its own, within ``turn_timeout``.

        Orchestration code is user code: a ``time.sleep``, a busy loop or a huge replay on the
        event loop would stall every dispatcher, lock renewal and the provider's wake-ups of the
        process. Off the loop it stalls only its own turn; past the limit the instance fails with
        a ``TurnTimeout`` that says why, and the thread is interrupted (best effort).
        """
        now = self.provider.now()
        call = DaemonCall(f"turn-{item.instance_id}", plan_turn, item, self.registry, now, self._limits)
        limit = self.options.turn_timeout.total_seconds()
        try:
            commit: TurnCommit = await asyncio.wait_for(asyncio.shield(call.future), limit)
            return commit
        except TimeoutError:
            call.future.cancel()
            call.interrupt()
            log.error(
                "a turn of %s ran longer than %.1f s; failing the instance (orchestration code blocked)",
                item.instance_id,
                limit,
            )
            return plan_failure(
                item,
                now,
                ErrorInfo(
                    ErrorCategory.CONFIGURATION,
                    "TurnTimeout",
                    f"a turn of this orchestration ran longer than {limit:.1f} s "
                    "(RuntimeOptions.turn_timeout): orchestration code must not block - no time.sleep, "
                    "I/O or long computations; use activities for work and ctx.schedule_timer to wait",
                ),
            )
        except asyncio.CancelledError:
            call.future.cancel()
            raise

    async def _renew_turn_lock(self, item: OrchestrationItem) -> None:
        """Keep the instance locked while its turn runs (a third of ``lock_timeout`` at a time)."""
        interval = max(self.options.lock_timeout.total_seconds() / 3, 0.01)
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.provider.renew_orchestration_lock(
                    item.lock_token, self.options.lock_timeout
                ):
                    log.warning("the turn of %s lost its instance lock while running", item.instance_id)
                    return
            except Exception:
                log.warning("renewing an instance lock failed; will retry", exc_info=True)

    def _inline_finished(self, _: asyncio.Future[OrchestratorMessage]) -> None:
        self._inline_running -= 1

    async def _send_hints(self, commit: TurnCommit) -> None:
        if self.hints is None:
            return
        try:
            if commit.activity_tasks:
                await self.hints.activities_ready()
            now = self.provider.now()
            for timed in commit.orchestrator_messages:
                delay = None if timed.visible_at is None else max(timed.visible_at - now, timedelta(0))
                await self.hints.orchestrations_ready(delay)
            if commit.new_instances:
                await self.hints.orchestrations_ready(None)
        except Exception:  # hints are best effort: the sweep finds the work anyway
            log.warning("sending a wake-up hint failed", exc_info=True)

    # --- activities -------------------------------------------------------------------------------
    async def _fetch_activity(self) -> ActivityItem | None:
        return await self.provider.fetch_activity(self.options.activity_lock_timeout)

    async def process_activity_item(self, item: ActivityItem) -> None:
        await self._complete_running(item, asyncio.ensure_future(self._run_activity(item)))

    async def _complete_running(
        self, item: ActivityItem, execution: asyncio.Future[OrchestratorMessage]
    ) -> None:
        """Keep the task's lock while ``execution`` runs, then record its result."""
        task = item.task
        renewer = asyncio.create_task(self._renew_while_running(item))
        try:
            completion = await execution
        except asyncio.CancelledError:
            execution.cancel()
            await self._abandon_quietly(self.provider.abandon_activity(item.lock_token))
            raise
        finally:
            renewer.cancel()
        try:
            delivered = await self.provider.complete_activity(item.lock_token, completion)
        except Exception:
            log.exception(
                "recording the result of activity %s for %s failed; it will run again",
                task.name,
                task.instance_id,
            )
            await self._abandon_quietly(
                self.provider.abandon_activity(item.lock_token, self.options.error_backoff)
            )
            return
        if not delivered:
            log.warning(
                "activity %s for %s lost its lock; its result was discarded (it runs again)",
                task.name,
                task.instance_id,
            )
            return
        if self.hints is not None:
            try:
                await self.hints.orchestrations_ready(None)
            except Exception:
                log.warning("sending a wake-up hint failed", exc_info=True)

    async def _run_activity(self, item: ActivityItem) -> OrchestratorMessage:
        task = item.task

        def outcome(
            kind: MessageKind, *, data: Any = None, error: ErrorInfo | None = None
        ) -> OrchestratorMessage:
            return OrchestratorMessage(
                kind=kind,
                instance_id=task.instance_id,
                execution_id=task.execution_id,
                corr_id=task.corr_id,
                name=task.name,
                data=data,
                error=error.to_dict() if error else None,
            )

        if item.dequeue_count > self.options.max_dequeue_count:
            return outcome(
                MessageKind.ACTIVITY_FAILED,
                error=ErrorInfo(
                    ErrorCategory.INFRASTRUCTURE,
                    "PoisonMessage",
                    f"activity {task.name!r} was delivered {item.dequeue_count} times without completing",
                ),
            )
        registered = self.registry.get_activity(task.name)
        if registered is None:
            return outcome(
                MessageKind.ACTIVITY_FAILED,
                error=ErrorInfo(
                    ErrorCategory.CONFIGURATION,
                    "UnknownActivity",
                    f"activity {task.name!r} is not registered with this runtime "
                    f"(registered: {', '.join(self.registry.activity_names()) or 'none'})",
                ),
            )
        ctx = ActivityContext(
            instance_id=task.instance_id,
            execution_id=task.execution_id,
            activity_name=task.name,
            corr_id=task.corr_id,
            attempt=item.dequeue_count,
            logger=logging.LoggerAdapter(
                logging.getLogger(f"durable_engine.activity.{task.name}"),
                {"instance_id": task.instance_id, "activity": task.name},
            ),
        )
        try:
            if registered.is_async:
                result = await registered.fn(ctx, task.input)
            else:
                result = await in_daemon_thread(f"activity-{task.name}", registered.fn, ctx, task.input)
            ensure_json(result, f"the result of activity {task.name!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return outcome(MessageKind.ACTIVITY_FAILED, error=ErrorInfo.from_exception(exc))
        return outcome(MessageKind.ACTIVITY_COMPLETED, data=result)

    async def _renew_while_running(self, item: ActivityItem) -> None:
        interval = self.options.renewal_interval
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.provider.renew_activity_lock(
                    item.lock_token, self.options.activity_lock_timeout
                ):
                    log.warning(
                        "activity %s for %s lost its lock while running",
                        item.task.name,
                        item.task.instance_id,
                    )
                    return
            except Exception:
                log.warning("renewing an activity lock failed; will retry", exc_info=True)

    @staticmethod
    async def _abandon_quietly(call: Awaitable[None]) -> None:
        try:
            await asyncio.shield(call)
        except Exception:
            log.warning("abandoning a locked item failed; its lock will expire", exc_info=True)


@dataclass
class _InlineRun:
    """An activity started inline by an orchestration dispatch, under a lock token of its own."""

    item: ActivityItem
    execution: asyncio.Future[OrchestratorMessage]


def _cancel_all(runs: list[_InlineRun]) -> None:
    for run in runs:
        run.execution.cancel()  # a sync activity's thread runs on; its result is dropped
