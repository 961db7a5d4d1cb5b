"""From a validated create request and the settings to the :class:`DeploymentConfig` that runs.

Every optional request field is filled here, once, so that orchestrations and activities never
consult the settings again: the placement (runtime, namespace) and the version recorded at creation
are the ones every later step uses, whatever the settings say by then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from uuid import UUID

from toygres.image_catalog import ImageCatalog
from toygres.models import (
    DEFAULT_POSTGRES_VERSION,
    CreateInstanceRequest,
    DeploymentConfig,
    InstanceTls,
    PasswordRef,
    ResourceRequests,
    RuntimeKind,
    ServiceType,
    make_k8s_name,
    service_dns_names,
    tls_secret_name,
)
from toygres.settings import KubernetesSettings, Settings


class PlacementError(ValueError):
    """The request asks for something this control plane cannot provide; ``field`` says which.

    ``code`` is the machine-readable reason the API answers with (a 422).
    """

    def __init__(self, field: str, message: str, *, code: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


def build_deployment_config(
    request: CreateInstanceRequest,
    settings: Settings,
    *,
    instance_id: UUID,
    runtime_versions: Mapping[RuntimeKind, Sequence[str]] | None = None,
    image_catalog: ImageCatalog | None = None,
) -> DeploymentConfig:
    """Fill every optional request field from the settings, producing what the orchestration runs.

    ``runtime_versions`` maps each runtime this control plane has to the PostgreSQL major versions
    it can run (the first is its default). With it, a request for a runtime that is not enabled or
    for a version its runtime cannot provide raises :class:`PlacementError`, so the metadata always
    records what actually runs. Without it (unit tests), every runtime and listed version is taken.

    ``image_catalog`` pins the Kubernetes image by digest; a version it has no entry for is a
    :class:`PlacementError`. Without it the image is ``<repository>:<major>`` (unit tests only).
    Kubernetes instances serve TLS (:func:`instance_tls`); local ones cannot (no OpenSSL).
    """
    runtime = request.runtime or settings.default_runtime
    version = _resolve_version(request, runtime, runtime_versions)
    k8s_name = make_k8s_name(request.name, instance_id)
    kube = settings.kubernetes
    tls: InstanceTls | None = None
    if runtime is RuntimeKind.KUBERNETES:
        namespace: str | None = kube.namespace
        ref = PasswordRef(store="kubernetes-secret", namespace=kube.namespace, name=k8s_name)
        tls = instance_tls(k8s_name, kube)
    else:
        namespace = None
        ref = PasswordRef(store="local-file", name=str(Path(settings.local_data_dir) / k8s_name / "password"))
    service_type = request.service_type or kube.service_type
    return DeploymentConfig(
        instance_id=instance_id,
        name=request.name,
        k8s_name=k8s_name,
        runtime=runtime,
        namespace=namespace,
        postgres_version=version,
        image=_image(
            version, kube.image_repository, image_catalog if runtime is RuntimeKind.KUBERNETES else None
        ),
        storage_size=request.storage_size,
        storage_class=request.storage_class or kube.storage_class,
        resources=request.resources or ResourceRequests(),
        service_type=service_type,
        load_balancer_source_ranges=(
            list(kube.load_balancer_source_ranges) if service_type is ServiceType.LOAD_BALANCER else []
        ),
        username=request.username,
        database=request.database,
        password_ref=ref,
        tls=tls,
        allowed_sources=list(request.allowed_sources),
        server_parameters=dict(request.server_parameters),
    )


def instance_tls(k8s_name: str, kube: KubernetesSettings) -> InstanceTls:
    """The certificate names of an instance's Service, and the Secret its certificate lives in."""
    names = service_dns_names(k8s_name, kube.namespace, kube.cluster_domain)
    return InstanceTls(server_name=names[0], dns_names=names, secret_name=tls_secret_name(k8s_name))


def _image(version: str, repository: str, catalog: ImageCatalog | None) -> str:
    if catalog is None:
        return f"{repository}:{version}"
    try:
        return catalog.reference(version, repository)
    except KeyError:
        listed = ", ".join(catalog.versions)
        raise PlacementError(
            "postgres_version",
            f"the image catalog has no image for PostgreSQL {version} (it lists {listed}); "
            "choose one of those or add the version to the catalog",
            code="version_not_in_catalog",
        ) from None


def _resolve_version(
    request: CreateInstanceRequest,
    runtime: RuntimeKind,
    runtime_versions: Mapping[RuntimeKind, Sequence[str]] | None,
) -> str:
    if runtime_versions is None:
        return request.postgres_version or DEFAULT_POSTGRES_VERSION
    if runtime not in runtime_versions:
        configured = ", ".join(sorted(kind.value for kind in runtime_versions)) or "none"
        raise PlacementError(
            "runtime",
            f"runtime {runtime.value!r} is not configured in this control plane (configured: {configured})",
            code="runtime_not_configured",
        )
    provided = list(runtime_versions[runtime])
    if request.postgres_version is None:
        return DEFAULT_POSTGRES_VERSION if DEFAULT_POSTGRES_VERSION in provided else provided[0]
    if request.postgres_version not in provided:
        raise PlacementError(
            "postgres_version",
            f"the {runtime.value} runtime runs PostgreSQL {', '.join(provided)}; "
            f"omit postgres_version or choose one of those",
            code="version_not_available",
        )
    return request.postgres_version
