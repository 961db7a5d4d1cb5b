"""Settings → live control plane: which runtimes exist, and clear errors when none fits."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from control_plane.bootstrap import ConfigurationError, build_runtimes, open_control_plane
from toygres.models import RuntimeKind
from toygres.runtimes.aks_credentials import AksClientFactory
from toygres.runtimes.base import InstanceSpec
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.runtimes.tls_secrets import KubernetesSecretCaStore
from toygres.settings import CaStoreKind, KubernetesSettings, Settings, TlsSettings


def test_kubernetes_default_without_a_cluster_is_refused_with_the_settings_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TOYGRES_KUBERNETES__KUBECONFIG"):
        build_runtimes(Settings(local_data_dir=tmp_path))
    runtimes = build_runtimes(Settings(default_runtime=RuntimeKind.LOCAL, local_data_dir=tmp_path))
    assert set(runtimes) == {RuntimeKind.LOCAL}


def test_kubeconfig_settings_give_a_working_kubernetes_runtime(kubeconfig_path: Path, tmp_path: Path) -> None:
    settings = Settings(local_data_dir=tmp_path, kubernetes=KubernetesSettings(kubeconfig=kubeconfig_path))
    runtime = build_runtimes(settings)[RuntimeKind.KUBERNETES]
    assert isinstance(runtime, KubernetesRuntime) and runtime.namespace == "toygres"
    spec = InstanceSpec(
        instance_id="i-1", name="absent", postgres_version="17", storage_size="1Gi", username="postgres"
    )
    assert runtime.status(spec).exists is False  # a real round trip to the API server stand-in
    # the hardening's settings reach the runtime: the CA's home, the control plane's peers
    assert isinstance(runtime.ca_store, KubernetesSecretCaStore)
    assert (runtime.ca_store.namespace, runtime.ca_store.name) == ("toygres-system", "toygres-ca")
    assert runtime.control_plane_namespace == "toygres-system" and runtime.internal_load_balancer is False


def test_key_vault_for_the_ca_is_refused_plainly(kubeconfig_path: Path, tmp_path: Path) -> None:
    settings = Settings(
        local_data_dir=tmp_path,
        kubernetes=KubernetesSettings(kubeconfig=kubeconfig_path),
        tls=TlsSettings(ca_store=CaStoreKind.KEY_VAULT, key_vault_url="https://kv.vault.azure.net"),
    )
    with pytest.raises(ConfigurationError, match="key-vault is not supported by this version"):
        build_runtimes(settings)


def test_aks_settings_select_the_aks_credential_path(tmp_path: Path) -> None:
    kube = KubernetesSettings(aks_subscription_id="sub", aks_resource_group="rg", aks_cluster_name="aks")
    runtime = build_runtimes(Settings(local_data_dir=tmp_path, kubernetes=kube))[RuntimeKind.KUBERNETES]
    assert isinstance(runtime, KubernetesRuntime)
    assert isinstance(runtime.api_client_factory, AksClientFactory)
    assert runtime.api_client_factory.cluster.cluster_name == "aks"


async def test_open_control_plane_migrates_both_schemas(pg_dsn: str, tmp_path: Path) -> None:
    settings = Settings(default_runtime=RuntimeKind.LOCAL, local_data_dir=tmp_path, database_url=pg_dsn)
    async with open_control_plane(settings) as plane:
        assert (await plane.list_instances()).items == []
    with psycopg.connect(pg_dsn) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
    assert {"durable", "toygres"} <= schemas
    with pytest.raises(ConfigurationError, match="TOYGRES_DATABASE_URL"):
        async with open_control_plane(Settings(default_runtime=RuntimeKind.LOCAL, local_data_dir=tmp_path)):
            pass
