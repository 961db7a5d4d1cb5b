"""Waiting for a restarted instance: poll its rollout with durable timers until done or a deadline.

Shared by certificate rotation and image rollouts, which both change the pod template and must not
move on to the next instance before this one serves again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities import GET_ROLLOUT_STATUS
from activities.results import RolloutProgress
from durable_engine import OrchestrationContext

from .steps import PLATFORM_RETRY


class RolloutNotCompleteError(Exception):
    """The instance did not run the new revision, ready, before the deadline."""


async def wait_for_rollout(
    ctx: OrchestrationContext, config: dict[str, Any], *, deadline_seconds: float, poll_seconds: float
) -> str:
    """Return the runtime's message once the rollout is complete; raise when the deadline passes."""
    deadline = ctx.utc_now() + timedelta(seconds=deadline_seconds)
    while True:
        status = await ctx.schedule_activity(
            GET_ROLLOUT_STATUS, config, retry=PLATFORM_RETRY, result_type=RolloutProgress
        )
        if status.complete:
            return status.message
        if ctx.utc_now() >= deadline:
            raise RolloutNotCompleteError(
                f"the restarted instance was not ready within {deadline_seconds:g} s ({status.message})"
            )
        await ctx.schedule_timer(timedelta(seconds=poll_seconds))
