"""Typed results of the Toygres activities.

An activity returns ``Model(...).model_dump(mode="json")`` (history keeps JSON) and the
orchestration reads it back with ``await ctx.schedule_activity(..., result_type=Model)``, so a
result is checked where it is used instead of being indexed as a raw dict (a result that does not
fit fails the step with ``ResultValidationError``, which the orchestration can catch).

Results tolerate fields they do not know (``extra="ignore"``): an activity of a newer version may
add one while an older orchestration still reads its result, and history written by either must
stay readable after an upgrade or a rollback.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from toygres.models import DeploymentConfig, InstanceState, RuntimeKind


class ActivityResult(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Endpoint(ActivityResult):
    host: str
    port: int


class DeployResult(ActivityResult):
    password_ref: str
    objects: dict[str, Any] = Field(default_factory=dict)


class InstanceStatusResult(ActivityResult):
    exists: bool
    ready: bool
    phase: str
    message: str
    endpoint: Endpoint | None = None


class DeleteResult(ActivityResult):
    removed: bool


class ConnectionResult(ActivityResult):
    host: str
    port: int
    connection_string: str
    password_hint: str


class MetadataResult(ActivityResult):
    #: the instance's state after the change (absent for health records)
    state: InstanceState | None = None
    recorded: bool = False


class StopResult(ActivityResult):
    cancelled: bool


class OperationStatusResult(ActivityResult):
    """An engine orchestration as the control plane sees it (a create, a delete, a monitor)."""

    exists: bool
    status: str | None = None
    terminal: bool = False


class Orphan(ActivityResult):
    """Something a runtime runs for an instance the metadata does not call live."""

    runtime: RuntimeKind
    instance_id: str
    name: str
    namespace: str | None = None
    reason: str


class OrphanRemoval(ActivityResult):
    removed: bool
    #: why nothing was removed, when nothing was
    skipped: str | None = None


class StuckInstance(ActivityResult):
    """A ``creating`` or ``deleting`` row whose operation is missing or ended: what to do with it.

    ``fail``: mark it failed with ``reason``; ``resume_delete``: start delete ``operation_id``.
    Carries a :class:`DeploymentConfig`: read it with ``load_stored`` (tolerant at every level).
    """

    instance_id: str
    state: InstanceState
    action: Literal["fail", "resume_delete"]
    reason: str
    operation_id: str | None = None
    create_operation_id: str | None = None
    config: DeploymentConfig | None = None


class RunningInstance(ActivityResult):
    """A ``running`` instance as the reconciler sees it (read ``config`` with ``load_stored``)."""

    instance_id: str
    config: DeploymentConfig
    #: the monitor the row names, and whether it is running (or about to)
    monitor_id: str | None = None
    monitor_live: bool = False


class ConvergeResult(ActivityResult):
    """One instance brought back to its spec by the reconciler."""

    instance_id: str
    #: why nothing was done (the instance is no longer running)
    skipped: str | None = None
    #: it was not ready, and was deployed again (a stopped local server is started)
    restarted: bool = False
    #: its endpoint changed, and the metadata now records the new one
    moved: bool = False
    ready: bool = False
    #: what had drifted from the spec (fields another manager changed) and was taken back
    conflicts: list[str] = Field(default_factory=list)


class PruneResult(ActivityResult):
    """What one retention pass removed."""

    health_checks: int = 0
    instances: int = 0
    #: finished orchestrations (creates, deletes, monitors) of the removed instances
    operations: int = 0


class CertificateDue(ActivityResult):
    """A running instance whose server certificate is missing or expires within the window."""

    instance_id: str
    config: dict[str, Any]
    #: fingerprint of the certificate to replace ("" when there is none)
    sha256: str = ""
    not_after: str | None = None


class RotatedCertificate(ActivityResult):
    sha256: str
    not_after: str


class RolloutChange(ActivityResult):
    instance_id: str
    previous_image: str = Field(alias="from")
    config: dict[str, Any]


class RolloutPlan(ActivityResult):
    changes: list[RolloutChange] = Field(default_factory=list)
    skipped: list[dict[str, str]] = Field(default_factory=list)


class DeploymentRecorded(ActivityResult):
    updated: bool


class RolloutProgress(ActivityResult):
    complete: bool
    message: str
