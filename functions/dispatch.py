"""Queue-triggered dispatchers: a hint message wakes a drain of the matching PostgreSQL queue.

The message itself is never trusted or needed: it may be empty, garbled, duplicated or stale. Each
invocation runs turns (or activities) until PostgreSQL has nothing visible or the time budget ends,
and never raises, so no hint is retried into a poison queue: failures are logged and the timer
sweep picks up whatever was left.

No ``from __future__ import annotations`` here: the Functions worker binds trigger arguments by
their annotations, which must be real classes, not strings.
"""

import logging
import time
from collections.abc import Awaitable, Callable

import azure.functions as func

from functions.config import ACTIVITY_QUEUE, ORCHESTRATION_QUEUE, STORAGE_CONNECTION
from functions.host_state import Host, get_host

log = logging.getLogger("toygres.functions.dispatch")

#: the least a drain that waited for its turn at the gate still gets (it must look at least once)
MIN_BUDGET_SECONDS = 1.0

bp = func.Blueprint()  # type: ignore[no-untyped-call]


def describe(msg: func.QueueMessage) -> str:
    """A log-safe description of a hint: its id and delivery count, never its body."""
    try:
        return f"hint {msg.id} (delivery {msg.dequeue_count})"
    except Exception:  # a message object that cannot even describe itself is still a wake-up
        return "hint (undescribable)"


async def orchestration_hint(msg: func.QueueMessage) -> None:
    """Run orchestration turns until the orchestrator queue is empty or the budget ends."""
    await drain(
        ORCHESTRATION_QUEUE,
        describe(msg),
        lambda host: host.settings.orchestration_budget_seconds,
        lambda host, budget: host.runtime.run_orchestrations(time_budget=budget),
    )


async def activity_hint(msg: func.QueueMessage) -> None:
    """Run activities until the worker queue is empty or the budget ends."""
    await drain(
        ACTIVITY_QUEUE,
        describe(msg),
        lambda host: host.settings.activity_budget_seconds,
        lambda host, budget: host.runtime.run_activities(time_budget=budget),
    )


async def drain(
    queue: str,
    cause: str,
    budget_of: Callable[[Host], float],
    run: Callable[[Host, float], Awaitable[int]],
) -> int:
    """Run one drain behind the queue's per-process gate; returns the items processed (0 on failure).

    The gate bounds how many drains (and so database connections) one worker runs for a burst of
    hints; time spent waiting at the gate counts against the budget, since the host's
    ``functionTimeout`` counts it too.
    """
    started = time.monotonic()
    try:
        host = await get_host()
        async with host.gate(queue):
            budget = max(budget_of(host) - (time.monotonic() - started), MIN_BUDGET_SECONDS)
            done = await run(host, budget)
    except Exception:
        log.exception("draining %s after %s failed; the sweep will retry", queue, cause)
        return 0
    log.info("%s: %s processed %d item(s) in %.1fs", queue, cause, done, time.monotonic() - started)
    return done


bp.function_name(name="orchestration_hints")(
    bp.queue_trigger(arg_name="msg", queue_name=ORCHESTRATION_QUEUE, connection=STORAGE_CONNECTION)(
        orchestration_hint
    )
)
bp.function_name(name="activity_hints")(
    bp.queue_trigger(arg_name="msg", queue_name=ACTIVITY_QUEUE, connection=STORAGE_CONNECTION)(activity_hint)
)
