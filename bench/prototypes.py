"""Prototypes of proposed engine fixes, applied to one benchmark process only.

The engine (``durable_engine/``) is owned by other engineers and is not changed here; these
wrappers patch one ``PostgresProvider`` *instance* so the benchmark can show what a fix would
buy (``python -m bench.engine_bench --toygres-args=--prototype-wake-fixes``). The proposals
themselves, with evidence, are in ``docs/performance.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from durable_engine.postgres import PostgresProvider


def prototype_wake_after_commit(provider: PostgresProvider) -> None:
    """Prototype of a proposed engine fix, applied to this process only (the engine is untouched).

    ``fetch_orchestration_item`` skips a locked instance; completions that arrive during its
    turn are visible but their NOTIFY was already consumed by that empty fetch, and
    ``commit_turn`` sends no NOTIFY when it leaves unconsumed messages behind, so they wait
    for the next unrelated NOTIFY or ``idle_wait`` (5 s). Waking the local orchestrator
    dispatcher after every commit emulates "commit_turn notifies when the instance still has
    visible messages".
    """
    commit = provider.commit_turn
    listener = provider._listener

    async def commit_and_wake(lock_token: str, turn: Any) -> None:
        await commit(lock_token, turn)
        listener._fire("orchestrator")

    setattr(provider, "commit_turn", commit_and_wake)  # noqa: B010 - patching one instance on purpose


#: "seconds until work" that also answers 0 for work fetchable *now* (the engine's
#: ``seconds_until_work`` only looks at future visibility and lock expiry)
_UNTIL_WORK = {
    "orchestrator": "SELECT CASE WHEN EXISTS (SELECT 1 FROM orchestrator_queue AS q"
                    " WHERE q.visible_at <= now() AND NOT EXISTS (SELECT 1 FROM instance_locks AS l"
                    " WHERE l.instance_id = q.instance_id AND l.locked_until > now()))"
                    " THEN 0.0 ELSE seconds_until_work('orchestrator') END",
    "worker": "SELECT CASE WHEN EXISTS (SELECT 1 FROM activity_queue WHERE visible_at <= now())"
              " THEN 0.0 ELSE seconds_until_work('worker') END",
}
_MAX_IDLE_SLEEP = 30.0


def prototype_recheck_before_sleep(provider: PostgresProvider) -> None:
    """Prototype of the second proposed fix: an idle dispatcher re-checks for *visible* work.

    The runtime fetches, gets nothing, and only then captures the wake-up event in
    ``wait_for_work``; a NOTIFY that lands between the start of the fetch and that capture
    is lost, and ``seconds_until_work`` only looks at *future* work, so the dispatcher sleeps
    ``idle_wait`` with work visible. This replacement captures the event, then asks one
    question - "seconds until work, 0 if something is fetchable now" - so anything committed
    before the capture is seen by the query and anything after it sets the event. Same round
    trips as the engine's version.
    """
    listener = provider._listener

    async def checked_wait(queue: Any, timeout: float) -> None:
        event = listener.current(queue)
        budget = max(0.0, min(timeout, _MAX_IDLE_SLEEP))
        until_work = await provider._scalar(_UNTIL_WORK[queue])
        if until_work is not None:
            budget = min(budget, max(0.0, float(until_work) + 0.002))
        if event.is_set() or budget <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), budget)

    setattr(provider, "wait_for_work", checked_wait)  # noqa: B010 - patching one instance on purpose


def apply_wake_fixes(provider: PostgresProvider) -> None:
    prototype_wake_after_commit(provider)
    prototype_recheck_before_sleep(provider)
