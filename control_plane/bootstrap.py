"""Wiring from settings to live parts: instance runtimes, connection pool, engine, control plane.

Kept apart from the parts themselves so the HTTP functions, ``toygres serve`` and the CLI
build the control plane the same way, and tests can build it from explicit pieces instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from control_plane.service import ControlPlane, LifecycleTiming
from durable_engine.postgres import Pooler, PostgresProvider
from toygres.cms_migrations import migrate_cms, require_cms
from toygres.database_tokens import entra_password_source
from toygres.metadata import MetadataRepository
from toygres.models import RuntimeKind
from toygres.runtimes.aks_credentials import AksClientFactory, AksCluster, KubeconfigClientFactory
from toygres.runtimes.base import InstanceRuntime
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.runtimes.local import LocalRuntime
from toygres.runtimes.tls_secrets import CaStore, KubernetesSecretCaStore
from toygres.settings import CaStoreKind, DatabaseAuth, DatabasePooler, Settings


class ConfigurationError(Exception):
    """The settings do not describe a usable control plane; the message says what to set."""


def build_runtimes(settings: Settings) -> dict[RuntimeKind, InstanceRuntime]:
    """The local runtime when ``TOYGRES_LOCAL_RUNTIME_ENABLED``; the Kubernetes runtime when AKS
    or a kubeconfig is configured. A request for a runtime that is not here is a 422."""
    runtimes: dict[RuntimeKind, InstanceRuntime] = {}
    if settings.local_runtime_enabled:
        runtimes[RuntimeKind.LOCAL] = LocalRuntime(
            settings.local_data_dir.expanduser(), port_range=settings.local_port_range
        )
    kube = settings.kubernetes
    factory: AksClientFactory | KubeconfigClientFactory | None = None
    if kube.uses_aks:
        assert kube.aks_subscription_id and kube.aks_resource_group and kube.aks_cluster_name
        factory = AksClientFactory(
            AksCluster(kube.aks_subscription_id, kube.aks_resource_group, kube.aks_cluster_name)
        )
    elif kube.kubeconfig is not None:
        factory = KubeconfigClientFactory(kube.kubeconfig.expanduser(), context=kube.context)
    if factory is not None:
        runtimes[RuntimeKind.KUBERNETES] = KubernetesRuntime(
            factory,
            namespace=kube.namespace,
            image_repository=kube.image_repository,
            ca_store=build_ca_store(settings),
            control_plane_namespace=kube.control_plane_namespace,
            control_plane_cidrs=kube.control_plane_cidrs,
            internal_load_balancer=kube.internal_load_balancer,
            server_certificate_validity=timedelta(days=settings.tls.server_certificate_days),
        )
    if settings.default_runtime is RuntimeKind.LOCAL and not settings.local_runtime_enabled:
        raise ConfigurationError(
            "the default runtime is 'local' but TOYGRES_LOCAL_RUNTIME_ENABLED is false: enable it, or "
            "set TOYGRES_DEFAULT_RUNTIME=kubernetes"
        )
    if settings.default_runtime not in runtimes:
        raise ConfigurationError(
            "the default runtime is 'kubernetes' but no cluster is configured: set "
            "TOYGRES_KUBERNETES__AKS_SUBSCRIPTION_ID, __AKS_RESOURCE_GROUP and __AKS_CLUSTER_NAME, or "
            "TOYGRES_KUBERNETES__KUBECONFIG; or set TOYGRES_DEFAULT_RUNTIME=local"
        )
    return runtimes


def build_ca_store(settings: Settings) -> CaStore:
    """Where the CA key lives. Key Vault is the Azure profile's intended store, not built yet: refuse
    it plainly instead of silently keeping the key somewhere else."""
    if settings.tls.ca_store is CaStoreKind.KEY_VAULT:
        raise ConfigurationError(
            "TOYGRES_TLS__CA_STORE=key-vault is not supported by this version; use kubernetes-secret "
            "(the CA then lives in a Secret in TOYGRES_KUBERNETES__CONTROL_PLANE_NAMESPACE)"
        )
    return KubernetesSecretCaStore(settings.kubernetes.control_plane_namespace, settings.tls.ca_secret_name)


@dataclass(frozen=True)
class DatabaseAccess:
    """How every connection to the control plane's database is made, from the settings.

    ``connect_kwargs`` is called for each new connection (Entra tokens rotate); ``pooler`` says a
    transaction-mode pooler sits in front (no prepared statements, no LISTEN); ``migrate`` says
    whether this process applies the schemas or only checks them.
    """

    connect_kwargs: Callable[[], Awaitable[dict[str, Any]]] | None
    pooler: Pooler
    migrate: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseAccess:
        source = (
            entra_password_source(settings.azure_client_id)
            if settings.database_auth is DatabaseAuth.ENTRA
            else None
        )
        pooler: Pooler = "transaction" if settings.database_pooler is DatabasePooler.TRANSACTION else "none"
        return cls(source.connect_kwargs if source else None, pooler, settings.migrate_on_start)

    async def session_kwargs(self) -> dict[str, Any]:
        """``psycopg.AsyncConnection.connect`` keyword arguments of one autocommit connection."""
        kwargs: dict[str, Any] = {"autocommit": True}
        if self.pooler == "transaction":
            kwargs["prepare_threshold"] = None  # server-side prepared statements do not survive the pooler
        if self.connect_kwargs is not None:
            kwargs.update(await self.connect_kwargs())
        return kwargs


@asynccontextmanager
async def open_control_plane(
    settings: Settings,
    *,
    dsn: str | None = None,
    runtimes: dict[RuntimeKind, InstanceRuntime] | None = None,
    timing: LifecycleTiming | None = None,
    pool_size: int = 10,
    access: DatabaseAccess | None = None,
) -> AsyncIterator[ControlPlane]:
    """Migrate (or check) both schemas, open the pools and yield a ready :class:`ControlPlane`.

    ``access`` defaults to what the settings say (:class:`DatabaseAccess`); tests pass their own.
    """
    url = dsn or (settings.database_url.get_secret_value() if settings.database_url else None)
    if not url:
        raise ConfigurationError("TOYGRES_DATABASE_URL is not set")
    access = access or DatabaseAccess.from_settings(settings)
    async with await psycopg.AsyncConnection.connect(url, **(await access.session_kwargs())) as conn:
        if access.migrate:
            await migrate_cms(conn, schema=settings.cms_schema)
        else:
            await require_cms(conn, schema=settings.cms_schema)
    provider = await PostgresProvider.connect(
        url,
        schema=settings.engine_schema,
        max_pool=pool_size,
        pooler=access.pooler,
        connect_kwargs=access.connect_kwargs,
        migrate=access.migrate,
    )
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=pool_size, open=False, kwargs=access.session_kwargs
    )
    try:
        await pool.open()
        yield ControlPlane(
            settings=settings,
            provider=provider,
            metadata=MetadataRepository(pool, schema=settings.cms_schema),
            runtimes=runtimes if runtimes is not None else build_runtimes(settings),
            timing=timing,
        )
    finally:
        await pool.close()
        await provider.close()
