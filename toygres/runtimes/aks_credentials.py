"""Kubernetes API clients for the kubernetes runtime: from a kubeconfig file or from AKS.

The runtime takes a zero-argument *factory* instead of a client so that
credentials can expire and be renewed transparently: the factories here cache
the ``ApiClient`` and rebuild it shortly before its credentials expire.

AKS path: ARM's ``listClusterUserCredential`` returns a kubeconfig. For clusters
with Entra ID (AAD) integration that kubeconfig authenticates through an
``exec`` plugin (kubelogin), which is not installed in a Functions worker, so
the user entry is replaced by a bearer token for the AKS AAD server application
obtained from the same azure-identity credential.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from kubernetes import config as k8s_config
from kubernetes.client import ApiClient, Configuration

from toygres.runtimes.base import CredentialError, DeployError

#: Application id of the "Azure Kubernetes Service AAD Server" app, the audience of AKS user tokens.
AKS_AAD_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
DEFAULT_ARM_BASE_URL = "https://management.azure.com"
DEFAULT_ARM_SCOPES: tuple[str, ...] = ("https://management.azure.com/.default",)

ApiClientFactory = Callable[[], ApiClient]


def api_client_from_kubeconfig(config_file: str | Path | None, context: str | None = None) -> ApiClient:
    """A fresh client for one cluster (does not touch the process-global kubernetes configuration).

    ``config_file=None``: the in-cluster service account when running in a pod, else the
    default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``).
    """
    if config_file is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return ApiClient(configuration)
    client: ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(config_file) if config_file is not None else None,
        context=context,
        persist_config=False,
    )
    return client


class KubeconfigClientFactory:
    """Client from a kubeconfig file, re-read every ``reload_after`` seconds (exec tokens, rotated certs)."""

    def __init__(
        self,
        config_file: str | Path | None = None,
        *,
        context: str | None = None,
        reload_after: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config_file = Path(config_file) if config_file is not None else None
        self.context = context
        self.reload_after = reload_after
        self._clock = clock
        self._lock = threading.Lock()
        self._client: ApiClient | None = None
        self._expires_at = 0.0

    def __call__(self) -> ApiClient:
        with self._lock:
            now = self._clock()
            if self._client is None or now >= self._expires_at:
                self._client = api_client_from_kubeconfig(self.config_file, self.context)
                self._expires_at = now + self.reload_after
            return self._client

    def invalidate(self) -> None:
        """Re-read the file on next use (e.g. after the API server answered 401)."""
        with self._lock:
            self._client = None


@dataclass(frozen=True)
class AksCluster:
    """Which AKS cluster to talk to."""

    subscription_id: str
    resource_group: str
    cluster_name: str


def _current_user_entry(kubeconfig: dict[str, Any]) -> dict[str, Any] | None:
    contexts = {c.get("name"): c.get("context", {}) for c in kubeconfig.get("contexts") or []}
    context = contexts.get(kubeconfig.get("current-context"))
    if context is None and contexts:
        context = next(iter(contexts.values()))
    if not context:
        return None
    for user in kubeconfig.get("users") or []:
        if user.get("name") == context.get("user"):
            entry: dict[str, Any] = user
            return entry
    return None


def aad_server_id(kubeconfig: dict[str, Any]) -> str | None:
    """The AAD server app id if the kubeconfig's user authenticates via Entra ID, else None.

    Recognises the kubelogin ``exec`` plugin (``--server-id``) and the legacy
    ``auth-provider: azure`` form (``apiserver-id``); other exec plugins fall
    back to the well-known AKS server app id.
    """
    entry = _current_user_entry(kubeconfig)
    user = (entry or {}).get("user") or {}
    if "exec" in user:
        args: Sequence[str] = user["exec"].get("args") or []
        for i, arg in enumerate(args):
            if arg == "--server-id" and i + 1 < len(args):
                return str(args[i + 1])
            if arg.startswith("--server-id="):
                return arg.split("=", 1)[1]
        return AKS_AAD_SERVER_APP_ID
    provider = user.get("auth-provider") or {}
    if provider.get("name") == "azure":
        return str((provider.get("config") or {}).get("apiserver-id") or AKS_AAD_SERVER_APP_ID)
    return None


def with_bearer_token(kubeconfig: dict[str, Any], token: str) -> dict[str, Any]:
    """A copy of ``kubeconfig`` whose current user authenticates with ``token`` only."""
    entry = _current_user_entry(kubeconfig)
    if entry is None:
        raise DeployError("the AKS kubeconfig has no user for its current context", retryable=False)
    users = [
        {"name": u.get("name"), "user": {"token": token}} if u is entry else u
        for u in kubeconfig.get("users") or []
    ]
    return {**kubeconfig, "users": users}


class AksClientFactory:
    """Kubernetes ``ApiClient`` for an AKS cluster, cached until shortly before its credentials expire."""

    def __init__(
        self,
        cluster: AksCluster,
        *,
        credential: TokenCredential | None = None,
        arm_base_url: str = DEFAULT_ARM_BASE_URL,
        arm_scopes: Sequence[str] = DEFAULT_ARM_SCOPES,
        connection_verify: bool | str = True,
        refresh_margin: float = 300.0,
        static_credential_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        arm_client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """``credential`` defaults to ``DefaultAzureCredential()`` (managed identity in Azure).

        ``connection_verify`` is passed to azure-core (a CA bundle path for test
        stand-ins). ``static_credential_ttl`` bounds how long a kubeconfig without
        an expiring token (client certificates) is reused before re-fetching.
        ``arm_client_kwargs`` go to ``ContainerServiceClient`` (e.g. ``retry_total``).
        """
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self.cluster = cluster
        self.credential = credential
        self.arm_base_url = arm_base_url
        self.arm_scopes = tuple(arm_scopes)
        self.connection_verify = connection_verify
        self.refresh_margin = refresh_margin
        self.static_credential_ttl = static_credential_ttl
        self._clock = clock
        self.arm_client_kwargs = dict(arm_client_kwargs or {})
        self._lock = threading.Lock()
        self._client: ApiClient | None = None
        self._expires_at = 0.0

    def __call__(self) -> ApiClient:
        with self._lock:
            if self._client is None or self._clock() >= self._expires_at:
                self._client, self._expires_at = self._build()
            return self._client

    def invalidate(self) -> None:
        """Force a re-fetch on next use (e.g. after the API server answered 401)."""
        with self._lock:
            self._client = None

    def fetch_kubeconfig(self) -> dict[str, Any]:
        """The cluster user kubeconfig from ARM, parsed."""
        from azure.mgmt.containerservice import ContainerServiceClient

        client = ContainerServiceClient(
            self.credential,
            self.cluster.subscription_id,
            base_url=self.arm_base_url,
            credential_scopes=list(self.arm_scopes),
            connection_verify=self.connection_verify,
            **self.arm_client_kwargs,
        )
        try:
            result = client.managed_clusters.list_cluster_user_credentials(
                self.cluster.resource_group, self.cluster.cluster_name
            )
        except ClientAuthenticationError as exc:  # our identity, not the cluster: say so
            raise CredentialError(
                f"no credentials for ARM to list the AKS credentials of {self.cluster.cluster_name}: "
                f"{exc.message}",
                retryable=True,
            ) from None
        except HttpResponseError as exc:
            status = exc.status_code
            retryable = status is None or status >= 500 or status in (408, 429)
            raise DeployError(
                f"listing AKS credentials for {self.cluster.cluster_name} failed: {status} {exc.reason}",
                retryable=retryable,
                status=status,
            ) from None
        except AzureError as exc:
            raise DeployError(
                f"listing AKS credentials failed: {type(exc).__name__}: {exc.message}", retryable=True
            ) from None
        finally:
            client.close()
        kubeconfigs = result.kubeconfigs or []
        if not kubeconfigs or not kubeconfigs[0].value:
            raise DeployError(f"ARM returned no kubeconfig for {self.cluster.cluster_name}", retryable=False)
        parsed = yaml.safe_load(bytes(kubeconfigs[0].value).decode("utf-8"))
        if not isinstance(parsed, dict):
            raise DeployError("ARM returned a kubeconfig that is not a YAML mapping", retryable=False)
        return parsed

    def _build(self) -> tuple[ApiClient, float]:
        kubeconfig = self.fetch_kubeconfig()
        now = self._clock()
        expires_at = now + self.static_credential_ttl
        server_id = aad_server_id(kubeconfig)
        if server_id is not None:
            try:
                token = self.credential.get_token(f"{server_id}/.default")
            except AzureError as exc:
                raise CredentialError(
                    f"no Entra ID token for the cluster {self.cluster.cluster_name}: {exc.message}",
                    retryable=True,
                ) from None
            kubeconfig = with_bearer_token(kubeconfig, token.token)
            expires_at = min(expires_at, float(token.expires_on))
        client: ApiClient = k8s_config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
            kubeconfig, persist_config=False
        )
        # Refresh before expiry, but never cache for less than a few seconds (clock skew, tiny TTLs).
        return client, max(now + 5.0, expires_at - self.refresh_margin)


def client_factory_for(
    *,
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    aks_subscription_id: str | None = None,
    aks_resource_group: str | None = None,
    aks_cluster_name: str | None = None,
    credential: TokenCredential | None = None,
    arm_base_url: str = DEFAULT_ARM_BASE_URL,
) -> ApiClientFactory:
    """Pick the credential source the settings describe: AKS when all three AKS fields are set,
    else the kubeconfig file (or the default kubeconfig / in-cluster config)."""
    aks = (aks_subscription_id, aks_resource_group, aks_cluster_name)
    if all(aks):
        cluster = AksCluster(str(aks_subscription_id), str(aks_resource_group), str(aks_cluster_name))
        return AksClientFactory(cluster, credential=credential, arm_base_url=arm_base_url)
    if any(aks):
        raise ValueError("AKS credentials need aks_subscription_id, aks_resource_group and aks_cluster_name")
    return KubeconfigClientFactory(kubeconfig, context=context)
