"""Validated inputs of the Toygres orchestrations (they arrive as JSON from history)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from toygres.models import DeploymentConfig


class _Input(BaseModel):
    # tolerant: history written by a newer version (then rolled back) may carry fields we do not know
    model_config = ConfigDict(extra="ignore")


class CreateInstanceInput(_Input):
    config: DeploymentConfig
    readiness_deadline_seconds: float = Field(default=600, gt=0)
    readiness_poll_seconds: float = Field(default=5, gt=0)
    health_interval_seconds: float = Field(default=30, gt=0)
    deploy_attempts: int = Field(default=5, ge=1)


class DeleteInstanceInput(_Input):
    config: DeploymentConfig
    #: the create orchestration to stop if it is still running
    create_operation_id: str | None = None
    #: attempts at removing the resources before the delete fails (and can be retried)
    delete_attempts: int = Field(default=5, ge=1)
    #: how often, and how many times, to look whether a stopped create has settled
    settle_poll_seconds: float = Field(default=2, gt=0)
    settle_polls: int = Field(default=150, ge=0)


class HealthMonitorInput(_Input):
    config: DeploymentConfig
    interval_seconds: float = Field(default=30, gt=0)
    #: how many checks this monitor has run across continue-as-new generations
    checks: int = Field(default=0, ge=0)


class ReconcilerInput(_Input):
    health_interval_seconds: float = Field(default=30, gt=0)
    #: a ``creating`` row without its operation is failed once it is this old
    stuck_after_seconds: float = Field(default=600, ge=0)
    #: attempts of a delete the reconciler resumes
    delete_attempts: int = Field(default=5, ge=1)
    #: retention of health checks, and of deleted instances with their operations
    health_check_retention_seconds: float = Field(default=7 * 86400, gt=0)
    deleted_retention_seconds: float = Field(default=30 * 86400, gt=0)


class CertificateRotationInput(_Input):
    #: renew certificates that expire within this many days
    renew_before_days: float = Field(default=30, gt=0)
    rollout_deadline_seconds: float = Field(default=600, gt=0)
    poll_seconds: float = Field(default=5, gt=0)
    attempts: int = Field(default=3, ge=1)


class ImageRolloutInput(_Input):
    rollout_deadline_seconds: float = Field(default=600, gt=0)
    poll_seconds: float = Field(default=5, gt=0)
    deploy_attempts: int = Field(default=5, ge=1)
