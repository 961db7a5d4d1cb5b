"""The control plane's use cases, shared by the HTTP API, the CLI and the tests.

Each call validates, writes the metadata row and starts (or finds) the durable orchestration
that does the work, then returns at once with an operation id: creation and deletion take
minutes, so callers poll ``get_operation`` instead of holding a request open.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from activities import ActivityDeps, instance_spec, register_activities
from durable_engine import Client, Provider, Registry, RuntimeStatus
from orchestrations import register_orchestrations
from orchestrations.inputs import (
    CertificateRotationInput,
    CreateInstanceInput,
    DeleteInstanceInput,
    ImageRolloutInput,
    ReconcilerInput,
)
from toygres.deployment_planner import build_deployment_config
from toygres.image_catalog import ImageCatalog, load_image_catalog
from toygres.metadata import InstanceDeleted, InstanceNotFound, MetadataRepository
from toygres.models import (
    CreateInstanceRequest,
    CreateInstanceResponse,
    InstanceMetadata,
    InstanceState,
    ListInstancesResponse,
    OperationError,
    OperationKind,
    OperationState,
    OperationStatus,
    RuntimeKind,
    create_operation_id,
    delete_operation_id,
)
from toygres.runtimes.base import InstanceRuntime
from toygres.runtimes.capabilities import TlsRuntime
from toygres.settings import Settings

log = logging.getLogger("toygres.control_plane")

#: called with an orchestration's instance id after it was started (wake-up hints in Azure Functions)
StartedHook = Callable[[str], Awaitable[None]]


class InstanceGone(Exception):
    """The instance exists only as a deleted record."""


class OperationNotFound(LookupError):
    pass


class TlsNotServed(LookupError):
    """The instance does not serve TLS (a local instance, or one created before TLS), so it has no CA."""


@dataclass(frozen=True)
class LifecycleTiming:
    """Durations the orchestrations run with; tests shrink them, settings provide the defaults."""

    health_interval_seconds: float = 30
    readiness_deadline_seconds: float = 600
    readiness_poll_seconds: float = 5
    deploy_attempts: int = 5
    #: how old a ``creating`` row without its operation must be before the reconciler fails it
    stuck_after_seconds: float = 600
    #: how long health checks, and deleted instances (with their operations), are kept
    health_check_retention_seconds: float = 7 * 86400
    deleted_retention_seconds: float = 30 * 86400

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecycleTiming:
        return cls(
            health_interval_seconds=settings.health_check_interval_seconds,
            readiness_deadline_seconds=settings.readiness_deadline_seconds,
            health_check_retention_seconds=settings.health_check_retention_days * 86400,
            deleted_retention_seconds=settings.deleted_instance_retention_days * 86400,
        )


_KINDS = {
    "CreateInstance": OperationKind.CREATE,
    "DeleteInstance": OperationKind.DELETE,
    "RollOutImageCatalog": OperationKind.IMAGE_ROLLOUT,
    "RotateCertificates": OperationKind.CERTIFICATE_ROTATION,
}

#: how often the Reconciler runs by default (the Functions sweep and ``toygres serve``)
RECONCILE_EVERY = timedelta(minutes=5)
#: how often certificates are checked for renewal (a pass is cheap when nothing is due)
ROTATE_CERTIFICATES_EVERY = timedelta(days=1)


def window_id(prefix: str, now: datetime, every: timedelta) -> str:
    """``<prefix>-<window start>Z``: the window of length ``every`` holding ``now`` (UTC, epoch-aligned)."""
    step = max(int(every.total_seconds()), 1)
    epoch = int(now.astimezone(UTC).timestamp())
    start = datetime.fromtimestamp(epoch - epoch % step, UTC)
    return f"{prefix}-{start:%Y%m%dT%H%M%S}Z"


def reconciler_window_id(now: datetime, every: timedelta) -> str:
    """The Reconciler instance id for the window containing ``now``."""
    return window_id("reconciler", now, every)


class ControlPlane:
    def __init__(
        self,
        *,
        settings: Settings,
        provider: Provider,
        metadata: MetadataRepository,
        runtimes: Mapping[RuntimeKind, InstanceRuntime],
        timing: LifecycleTiming | None = None,
        on_started: StartedHook | None = None,
        image_catalog: ImageCatalog | None = None,
    ) -> None:
        self.settings = settings
        #: the pinned images (``TOYGRES_IMAGE_CATALOG_FILE``, else the one shipped with Toygres)
        self.image_catalog = image_catalog or load_image_catalog(settings.image_catalog_file)
        #: best effort: a failing hook is logged, never fails the request (the work is already durable)
        self.on_started = on_started
        self.provider = provider
        self.metadata = metadata
        self.runtimes = dict(runtimes)
        self.timing = timing or LifecycleTiming.from_settings(settings)
        self.client = Client(provider)
        self.registry = Registry()
        self.deps = ActivityDeps(
            metadata=metadata,
            runtimes=self.runtimes,
            client=self.client,
            image_catalog=self.image_catalog,
            image_repository=settings.kubernetes.image_repository,
        )
        register_activities(self.registry, self.deps)
        register_orchestrations(self.registry)

    # --- instances ------------------------------------------------------------------------------
    async def create_instance(self, request: CreateInstanceRequest) -> CreateInstanceResponse:
        instance_id = uuid.uuid4()
        config = build_deployment_config(
            request,
            self.settings,
            instance_id=instance_id,
            runtime_versions={kind: runtime.postgres_versions for kind, runtime in self.runtimes.items()},
            image_catalog=self.image_catalog,
        )
        runtime = self.deps.runtime_for(config)
        operation_id = create_operation_id(instance_id)
        # the unique name index refuses duplicates here, before anything is deployed
        await self.metadata.create_instance(config, create_orchestration_id=operation_id)
        params = CreateInstanceInput(
            config=config,
            readiness_deadline_seconds=self.timing.readiness_deadline_seconds,
            readiness_poll_seconds=self.timing.readiness_poll_seconds,
            health_interval_seconds=self.timing.health_interval_seconds,
            deploy_attempts=self.timing.deploy_attempts,
        )
        try:
            # the password goes straight to its store (Secret / 0600 file), never into
            # orchestration input, history or the metadata row
            password = request.password.get_secret_value()
            await asyncio.to_thread(runtime.store_password, instance_spec(config), password)
        except Exception as exc:
            await self._fail_create(instance_id, f"could not store the password: {exc}")
            raise
        try:
            await self.client.start_orchestration(
                operation_id, "CreateInstance", params.model_dump(mode="json")
            )
        except Exception as exc:
            # a crash right here instead leaves a creating row without its operation: the
            # reconciler fails that one (FindStuckInstances)
            await self._fail_create(
                instance_id, f"could not start the create operation: {type(exc).__name__}"
            )
            raise
        await self._started(operation_id)
        return CreateInstanceResponse(
            instance_id=instance_id,
            operation_id=operation_id,
            name=config.name,
            password_hint=config.password_ref.describe(),
        )

    async def _fail_create(self, instance_id: UUID, reason: str) -> None:
        """Best effort: a create that never started is failed (its name released) at once."""
        try:
            await self.metadata.update_state(
                instance_id, InstanceState.FAILED, reason=reason, expected_from=[InstanceState.CREATING]
            )
        except Exception:
            log.warning("could not mark instance %s failed; the reconciler will", instance_id, exc_info=True)

    async def delete_instance(self, instance_id: UUID) -> str:
        """Start (or find) the delete operation; raises InstanceNotFound / InstanceGone."""
        instance = await self.metadata.get_instance(instance_id)
        if instance is None:
            raise InstanceNotFound(instance_id)
        if instance.state is InstanceState.DELETED:
            raise InstanceGone(f"instance {instance_id} was already deleted")
        if instance.deployment_config is None:
            raise InstanceNotFound(instance_id)
        previous = instance.delete_orchestration_id
        if previous is None:
            operation_id = delete_operation_id(instance_id)
        else:
            status = await self.client.get_status(previous)
            if status is not None and not status.is_terminal:
                return previous  # already deleting: the same operation
            # recorded by a caller that died before starting it: start that one; otherwise the
            # last attempt ended without deleting, and its successor retries the cleanup
            operation_id = previous if status is None else delete_operation_id(instance_id, previous)
        params = DeleteInstanceInput(
            config=instance.deployment_config,
            create_operation_id=instance.create_orchestration_id,
            delete_attempts=self.timing.deploy_attempts,
        )
        # start first (the id is deterministic, so concurrent callers start the same one), then
        # record it; the operation records itself too, so a crash in between loses nothing
        await self.client.start_orchestration(operation_id, "DeleteInstance", params.model_dump(mode="json"))
        try:
            recorded = await self.metadata.claim_delete_operation(instance_id, previous, operation_id)
        except InstanceDeleted:  # deleted while we looked: the operation we started ends at once
            raise InstanceGone(f"instance {instance_id} was already deleted") from None
        await self._started(operation_id)
        return recorded

    async def get_instance(self, instance_id: UUID) -> InstanceMetadata:
        instance = await self.metadata.get_instance(instance_id)
        if instance is None:
            raise InstanceNotFound(instance_id)
        return instance

    async def list_instances(
        self,
        *,
        state: InstanceState | None = None,
        limit: int = 50,
        cursor: str | None = None,
        include_deleted: bool = False,
    ) -> ListInstancesResponse:
        return await self.metadata.list_instances(
            state=state, limit=limit, cursor=cursor, include_deleted=include_deleted
        )

    # --- operations -----------------------------------------------------------------------------
    async def get_operation(self, operation_id: str) -> OperationStatus:
        status = await self.client.get_status(operation_id)
        if status is None or status.name not in _KINDS:
            raise OperationNotFound(f"operation {operation_id!r} does not exist")
        config: dict[str, Any] = (status.input or {}).get("config", {})
        custom = status.custom_status if isinstance(status.custom_status, dict) else {}
        error = None
        if status.error is not None:
            error = OperationError(message=status.error.message, category=status.error.category.value)
        return OperationStatus(
            operation_id=operation_id,
            kind=_KINDS[status.name],
            instance_id=config.get("instance_id"),
            status=OperationState(status.status.value),
            phase=custom.get("phase"),
            custom_status=status.custom_status,
            error=error,
            created_at=status.created_at,
            updated_at=status.updated_at,
        )

    async def run_reconciler(self, *, now: datetime | None = None, every: timedelta = RECONCILE_EVERY) -> str:
        """Start this time window's Reconciler pass, unless it exists; returns its instance id.

        One pass per window makes the call idempotent: late, repeated or concurrent sweeps (and
        several ``toygres serve`` processes) start it at most once. Finished passes of earlier
        windows are purged, so the engine does not collect one record per pass forever.
        """
        reconciler_id = reconciler_window_id(now or datetime.now(UTC), every)
        if await self.client.get_status(reconciler_id) is None:
            params = ReconcilerInput(
                health_interval_seconds=self.timing.health_interval_seconds,
                stuck_after_seconds=self.timing.stuck_after_seconds,
                delete_attempts=self.timing.deploy_attempts,
                health_check_retention_seconds=self.timing.health_check_retention_seconds,
                deleted_retention_seconds=self.timing.deleted_retention_seconds,
            )
            await self.client.start_orchestration(reconciler_id, "Reconciler", params.model_dump(mode="json"))
            await self._started(reconciler_id)
        await self._purge_earlier_windows("Reconciler", reconciler_id)
        return reconciler_id

    async def _purge_earlier_windows(self, name: str, current_id: str) -> None:
        """Purge completed passes of earlier windows (ids sort by window start): bounded storage."""
        finished = await self.client.list_instances(name=name, status=RuntimeStatus.COMPLETED, limit=100)
        for old in finished.items:
            if old.instance_id < current_id:
                await self.client.purge(old.instance_id)

    async def get_instance_ca(self, instance_id: UUID) -> str:
        """The CA certificate (PEM) that the instance's server certificate chains to."""
        instance = await self.get_instance(instance_id)
        config = instance.deployment_config
        runtime = self.runtimes.get(config.runtime) if config is not None else None
        if config is None or config.tls is None or not isinstance(runtime, TlsRuntime):
            raise TlsNotServed(
                f"instance {instance_id} does not serve TLS ({instance.runtime.value} runtime); "
                "it has no CA certificate"
            )
        return await asyncio.to_thread(runtime.ca_certificate)

    async def start_image_rollout(self) -> str:
        """Start rolling running instances onto the catalog's images; returns the operation id.

        The id names the catalog's content, so asking twice while a rollout of the same catalog runs
        returns that rollout; after it ended, a new request starts a new pass (e.g. to retry).
        """
        digest = hashlib.sha256(self.image_catalog.model_dump_json().encode()).hexdigest()[:12]
        operation_id = f"image-rollout-{digest}"
        previous = await self.client.get_status(operation_id)
        if previous is not None:
            if not previous.is_terminal:
                return operation_id
            operation_id = f"{operation_id}-{uuid.uuid4().hex[:8]}"
        params = ImageRolloutInput(
            rollout_deadline_seconds=self.timing.readiness_deadline_seconds,
            poll_seconds=self.timing.readiness_poll_seconds,
            deploy_attempts=self.timing.deploy_attempts,
        )
        await self.client.start_orchestration(
            operation_id, "RollOutImageCatalog", params.model_dump(mode="json")
        )
        await self._started(operation_id)
        return operation_id

    async def run_certificate_rotation(
        self, *, now: datetime | None = None, every: timedelta = ROTATE_CERTIFICATES_EVERY
    ) -> str:
        """Start this window's certificate renewal pass unless it exists; returns its id."""
        rotation_id = window_id("certificates", now or datetime.now(UTC), every)
        if await self.client.get_status(rotation_id) is None:
            params = CertificateRotationInput(
                renew_before_days=self.settings.tls.renew_before_days,
                rollout_deadline_seconds=self.timing.readiness_deadline_seconds,
                poll_seconds=self.timing.readiness_poll_seconds,
            )
            await self.client.start_orchestration(
                rotation_id, "RotateCertificates", params.model_dump(mode="json")
            )
            await self._started(rotation_id)
        await self._purge_earlier_windows("RotateCertificates", rotation_id)
        return rotation_id

    async def _started(self, instance_id: str) -> None:
        if self.on_started is None:
            return
        try:
            await self.on_started(instance_id)
        except Exception:  # the orchestration is durably started; a lost notification only delays it
            log.warning("the on_started hook failed for %s", instance_id, exc_info=True)

    async def monitor_status(self, instance_id: UUID) -> RuntimeStatus | None:
        instance = await self.get_instance(instance_id)
        if instance.health_monitor_id is None:
            return None
        status = await self.client.get_status(instance.health_monitor_id)
        return status.status if status else None
