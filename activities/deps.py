"""What Toygres activities need from the outside world, bundled so tests can build it too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from durable_engine import Client
from toygres.image_catalog import ImageCatalog
from toygres.metadata import MetadataRepository
from toygres.models import DeploymentConfig, RuntimeKind, load_stored
from toygres.runtimes.base import InstanceRuntime, InstanceSpec


@dataclass
class ActivityDeps:
    metadata: MetadataRepository
    runtimes: Mapping[RuntimeKind, InstanceRuntime]
    #: the engine client, for activities that manage other orchestrations (monitors)
    client: Client
    #: how long one health-check connection attempt may take
    health_check_timeout: float = 5.0
    #: the pinned images instances should run (image rollouts compare against it)
    image_catalog: ImageCatalog | None = None
    #: the repository catalog references are built with (``TOYGRES_KUBERNETES__IMAGE_REPOSITORY``)
    image_repository: str = "postgres"

    def runtime_for(self, config: DeploymentConfig) -> InstanceRuntime:
        try:
            return self.runtimes[config.runtime]
        except KeyError:
            configured = ", ".join(kind.value for kind in self.runtimes) or "none"
            raise LookupError(
                f"runtime {config.runtime.value!r} is not configured in this control plane "
                f"(configured: {configured})"
            ) from None


def load_config(raw: Any) -> DeploymentConfig:
    """An activity's config input, written by any version of the orchestrations (tolerant)."""
    return load_stored(DeploymentConfig, raw)


def instance_spec(config: DeploymentConfig) -> InstanceSpec:
    """The runtime's view of an instance; object names are the collision-free ``k8s_name``."""
    return InstanceSpec(
        instance_id=str(config.instance_id),
        name=config.k8s_name,
        postgres_version=config.postgres_version,
        storage_size=config.storage_size,
        storage_class=config.storage_class,
        cpu_request=config.resources.cpu,
        memory_request=config.resources.memory,
        # memory limit = request: predictable eviction; no CPU limit: throttling hurts latency
        memory_limit=config.resources.memory,
        username=config.username,
        database=config.database,
        service_type=config.service_type.value,
        load_balancer_source_ranges=tuple(config.load_balancer_source_ranges),
        image=config.image,
        tls_secret=config.tls.secret_name if config.tls else None,
        tls_dns_names=tuple(config.tls.dns_names) if config.tls else (),
        allowed_sources=tuple(s.model_dump(exclude_none=True) for s in config.allowed_sources),
        server_parameters=dict(config.server_parameters),
        # placement is recorded at creation and used by every later activity (invariant 6)
        namespace=config.namespace,
    )
