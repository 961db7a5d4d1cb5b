"""RotateCertificates: renew the server certificates that expire soon, one instance at a time.

One pass per day (``certificates-<window>``, started by ``toygres serve`` and the Functions sweep).
Each renewal writes a new certificate into the instance's Secret and restarts its pod onto it (the
certificate's fingerprint is on the pod template); the pass waits for the pod to be ready before
the next instance, so a bad certificate stops at the first instance. Failures do not stop the pass:
it renews what it can, then ends Failed naming the instances that still need attention (the next
day's pass tries them again, well before they expire).
"""

from __future__ import annotations

from typing import Any

from activities import FIND_CERTIFICATES_DUE, ROTATE_SERVER_CERTIFICATE
from activities.results import CertificateDue, RotatedCertificate
from durable_engine import OrchestrationContext, TaskFailedError

from .inputs import CertificateRotationInput
from .rollout_steps import RolloutNotCompleteError, wait_for_rollout
from .steps import PLATFORM_RETRY, platform_retry

NAME = "RotateCertificates"
VERSION = "1.0.0"


class CertificateRotationError(Exception):
    """Some certificates could not be renewed; the message names the instances."""


async def rotate_certificates(ctx: OrchestrationContext, raw: dict[str, Any] | None) -> dict[str, Any]:
    params = CertificateRotationInput.model_validate(raw or {})
    now = ctx.utc_now()
    ctx.set_custom_status({"phase": "finding certificates due"})
    due = await ctx.schedule_activity(
        FIND_CERTIFICATES_DUE,
        {"now": now.isoformat(), "renew_before_days": params.renew_before_days},
        retry=PLATFORM_RETRY,
        result_type=list[CertificateDue],
    )
    rotated: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for item in due:
        instance_id = item.instance_id
        ctx.set_custom_status({"phase": "rotating", "instance_id": instance_id, "done": len(rotated)})
        try:
            certificate = await ctx.schedule_activity(
                ROTATE_SERVER_CERTIFICATE,
                {"config": item.config, "replaces_sha256": item.sha256},
                retry=platform_retry(params.attempts),
                result_type=RotatedCertificate,
            )
            await wait_for_rollout(
                ctx,
                item.config,
                deadline_seconds=params.rollout_deadline_seconds,
                poll_seconds=params.poll_seconds,
            )
        except (TaskFailedError, RolloutNotCompleteError) as exc:
            failed.append({"instance_id": instance_id, "reason": str(exc)})
            continue
        rotated.append(
            {"instance_id": instance_id, "previous_not_after": item.not_after, **certificate.model_dump()}
        )
    result = {"checked_at": now.isoformat(), "due": len(due), "rotated": rotated, "failed": failed}
    ctx.set_custom_status({"phase": "done", **result})
    if failed:
        names = "; ".join(f"{f['instance_id']}: {f['reason']}" for f in failed)
        raise CertificateRotationError(f"{len(failed)} of {len(due)} certificate(s) not renewed: {names}")
    return result
