"""Prototypes of proposed engine fixes, applied to one benchmark process only.

The engine (``durable_engine/``) is owned by other engineers and is not changed here; these
wrappers patch one ``PostgresProvider`` *instance* so the benchmark can show what a fix would
buy (``python -m bench.engine_bench --toygres-args=--prototype-wake-fixes``). The proposals
themselves, with evidence, are in ``docs/performance.md``.
"""

from __future__ import annotations

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


_VISIBLE_WORK = {
    "orchestrator": "SELECT EXISTS (SELECT 1 FROM orchestrator_queue AS q WHERE q.visible_at <= now()"
                    " AND NOT EXISTS (SELECT 1 FROM instance_locks AS l WHERE l.instance_id = q.instance_id"
                    " AND l.locked_until > now()))",
    "worker": "SELECT EXISTS (SELECT 1 FROM activity_queue WHERE visible_at <= now())",
}


def prototype_recheck_before_sleep(provider: PostgresProvider) -> None:
    """Prototype of the second proposed fix: an idle dispatcher re-checks for *visible* work.

    The runtime fetches, gets nothing, and only then captures the wake-up event in
    ``wait_for_work``; a NOTIFY that lands between the start of the fetch and that capture
    is lost, and ``seconds_until_work`` only looks at *future* work, so the dispatcher sleeps
    ``idle_wait`` with work visible. Here the check after the capture also asks "is anything
    fetchable now?" (an extra round trip in this prototype; folded into
    ``seconds_until_work`` it would cost nothing).
    """
    wait = provider.wait_for_work
    listener = provider._listener

    async def checked_wait(queue: Any, timeout: float) -> None:
        event = listener.current(queue)
        if await provider._scalar(_VISIBLE_WORK[queue]) and not event.is_set():
            return
        await wait(queue, timeout)

    setattr(provider, "wait_for_work", checked_wait)  # noqa: B010 - patching one instance on purpose


def apply_wake_fixes(provider: PostgresProvider) -> None:
    prototype_wake_after_commit(provider)
    prototype_recheck_before_sleep(provider)
