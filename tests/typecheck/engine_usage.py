"""What a user's type checker sees of the engine; ``tests/engine/test_public_surface.py`` runs
``mypy --strict`` on this file (never pytest: nothing here is collected or run).

Every ``assert_type`` fails the check if the engine's typing regresses: ``PostgresProvider``
typed ``object`` by the lazy import, or typed results falling back to ``Any``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, assert_type

from pydantic import BaseModel

from durable_engine import DurableFuture, OrchestrationContext, PostgresProvider, RetryPolicy
from durable_engine import postgres as engine_postgres


class Deployment(BaseModel):
    endpoint: str
    ready: bool


@dataclass
class Probe:
    healthy: bool


async def lazy_provider_is_the_real_class(dsn: str) -> None:
    provider = await PostgresProvider.connect(dsn, schema="durable")
    assert_type(provider, engine_postgres.PostgresProvider)
    await provider.close()


async def results_are_typed_by_result_type(ctx: OrchestrationContext) -> None:
    assert_type(ctx.schedule_activity("Deploy", {"name": "pg1"}), DurableFuture[Any])
    assert_type(ctx.schedule_activity("Deploy", result_type=Deployment), DurableFuture[Deployment])

    deployment = await ctx.schedule_activity("Deploy", {"name": "pg1"}, result_type=Deployment)
    assert_type(deployment, Deployment)
    probe = await ctx.schedule_activity("Probe", retry=RetryPolicy(max_attempts=2), result_type=Probe)
    assert_type(probe, Probe)
    names = await ctx.schedule_activity("List", result_type=list[str])
    assert_type(names, list[str])
    child = await ctx.schedule_sub_orchestration("Child", None, instance_id="c-1", result_type=Deployment)
    assert_type(child, Deployment)
    untyped = await ctx.schedule_activity("Deploy")
    assert_type(untyped, Any)
