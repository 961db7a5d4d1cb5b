"""RollOutImageCatalog: move running instances onto the catalog's pinned images, one at a time.

For each instance whose image differs from the catalog's: record the new deployment (intent first,
so a retry or drift correction moves forward), re-apply it (the StatefulSet replaces the pod), and
wait until the new revision is ready before touching the next instance. The first instance that
does not come back stops the rollout, so a bad image reaches one instance, not the fleet; the
operation ends Failed naming it and the instances not yet rolled.
"""

from __future__ import annotations

from typing import Any

from activities import DEPLOY_POSTGRES, GET_INSTANCE_RECORD, PLAN_IMAGE_ROLLOUT, SET_DEPLOYMENT_CONFIG
from activities.results import DeploymentRecorded, RolloutPlan
from durable_engine import OrchestrationContext, TaskFailedError
from toygres.models import InstanceMetadata, InstanceState, load_stored

from .inputs import ImageRolloutInput
from .rollout_steps import RolloutNotCompleteError, wait_for_rollout
from .steps import PLATFORM_RETRY, platform_retry

NAME = "RollOutImageCatalog"
VERSION = "1.0.0"


class ImageRolloutError(Exception):
    """An instance did not come back on its new image; the rollout stopped there."""


async def roll_out_image_catalog(ctx: OrchestrationContext, raw: dict[str, Any] | None) -> dict[str, Any]:
    params = ImageRolloutInput.model_validate(raw or {})
    ctx.set_custom_status({"phase": "planning"})
    plan = await ctx.schedule_activity(
        PLAN_IMAGE_ROLLOUT, None, retry=PLATFORM_RETRY, result_type=RolloutPlan
    )
    changes = plan.changes
    rolled: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = list(plan.skipped)
    for index, change in enumerate(changes):
        instance_id, config = change.instance_id, change.config
        ctx.set_custom_status(
            {"phase": "rolling", "instance_id": instance_id, "done": len(rolled), "total": len(changes)}
        )
        raw_record = await ctx.schedule_activity(GET_INSTANCE_RECORD, instance_id, retry=PLATFORM_RETRY)
        # a stored row, read as tolerantly as the store reads it (newer versions may add fields)
        record = load_stored(InstanceMetadata, raw_record) if raw_record is not None else None
        if record is None or record.state is not InstanceState.RUNNING:
            skipped.append({"instance_id": instance_id, "reason": "no longer running"})
            continue
        recorded = await ctx.schedule_activity(
            SET_DEPLOYMENT_CONFIG,
            {"instance_id": instance_id, "config": config},
            retry=PLATFORM_RETRY,
            result_type=DeploymentRecorded,
        )
        if not recorded.updated:
            skipped.append({"instance_id": instance_id, "reason": "no longer running"})
            continue
        try:
            await ctx.schedule_activity(DEPLOY_POSTGRES, config, retry=platform_retry(params.deploy_attempts))
            await wait_for_rollout(
                ctx,
                config,
                deadline_seconds=params.rollout_deadline_seconds,
                poll_seconds=params.poll_seconds,
            )
        except (TaskFailedError, RolloutNotCompleteError) as exc:
            left = [c.instance_id for c in changes[index + 1 :]]
            ctx.set_custom_status({"phase": "stopped", "rolled": rolled, "failed": instance_id, "left": left})
            raise ImageRolloutError(
                f"instance {instance_id} did not come back on {config['image']}: {exc}; "
                f"stopped with {len(left)} instance(s) not rolled"
            ) from None
        rolled.append({"instance_id": instance_id, "from": change.previous_image, "to": config["image"]})
    result = {"rolled": rolled, "skipped": skipped}
    ctx.set_custom_status({"phase": "done", **result})
    return result
