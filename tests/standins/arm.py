"""An Azure Resource Manager stand-in for the AKS calls Toygres makes, served over HTTPS
on 127.0.0.1 so the real ``azure.mgmt.containerservice.ContainerServiceClient`` works
unmodified.

Why HTTPS: azure-core's ``BearerTokenCredentialPolicy`` refuses to send a token over
plain HTTP (``ServiceRequestError``) unless every operation is called with
``enforce_https=False`` - a per-call escape hatch production code should not carry.
So the stand-in serves TLS with a throw-away CA and the client trusts it::

    client = ContainerServiceClient(StaticTokenCredential(), sub, base_url=arm.url,
                                    connection_verify=str(arm.ca_file))

Endpoints (``api-version`` query parameter required, ``Authorization: Bearer`` required):

* ``GET  .../managedClusters/{name}`` - a minimal ManagedCluster resource.
* ``POST .../managedClusters/{name}/listClusterUserCredential`` and
  ``.../listClusterAdminCredential`` - ``{"kubeconfigs":[{"name":"clusterUser","value":<base64 yaml>}]}``.

Unknown clusters get ``404 {"error":{"code":"ResourceNotFound",...}}``, unknown
resource groups ``404 ResourceGroupNotFound``, like ARM.
"""

from __future__ import annotations

import base64
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from azure.core.credentials import AccessToken, AccessTokenInfo

from tests.standins.httpbase import Request, Response, StandinHttpServer
from tests.standins.kube_apiserver import KubeApiServer
from tests.standins.tls import make_tls_material

__all__ = ["ArmServer", "ManagedCluster", "StaticTokenCredential"]

DEFAULT_ARM_TOKEN = "standin-arm-token"

_CLUSTER_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.ContainerService/managedClusters/(?P<name>[^/]+)(?:/(?P<action>[^/]+))?$",
    re.IGNORECASE,
)


class StaticTokenCredential:
    """A test ``TokenCredential``: always returns the same token (default matches ArmServer's)."""

    def __init__(self, token: str = DEFAULT_ARM_TOKEN, lifetime: int = 3600) -> None:
        self.token = token
        self.lifetime = lifetime
        self.scopes_requested: list[tuple[str, ...]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes_requested.append(scopes)
        return AccessToken(self.token, int(time.time()) + self.lifetime)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes_requested.append(scopes)
        return AccessTokenInfo(self.token, int(time.time()) + self.lifetime)

    def close(self) -> None:
        pass

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(self, *args: object) -> None:
        pass


@dataclass
class ManagedCluster:
    subscription: str
    resource_group: str
    name: str
    kubeconfig: dict[str, Any] | None  # None: built from the attached KubeApiServer on each call
    location: str = "eastus"
    aad: bool = False

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.ContainerService/managedClusters/{self.name}"
        )


def arm_error(status: int, code: str, message: str) -> Response:
    return Response(
        status,
        {"error": {"code": code, "message": message}},
        {"x-ms-request-id": str(uuid.uuid4()), "x-ms-failure-cause": "gateway"},
    )


class ArmServer(StandinHttpServer):
    """ARM subset. ``add_cluster`` registers AKS clusters whose credentials point at ``kube``."""

    def __init__(self, kube: KubeApiServer | None = None, token: str = DEFAULT_ARM_TOKEN) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="arm-standin-"))
        self.tls = make_tls_material(self._tmp / "tls", "arm-standin")
        super().__init__(self.tls.server_context())
        self.kube = kube
        self.token = token
        self._clusters: dict[tuple[str, str, str], ManagedCluster] = {}

    @property
    def ca_file(self) -> Path:
        """PEM CA bundle to pass as ``connection_verify`` to azure SDK clients."""
        return self.tls.ca_file

    def start(self) -> ArmServer:
        self.start_http()
        return self

    def stop(self) -> None:
        self.stop_http()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ArmServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add_cluster(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        *,
        kubeconfig: dict[str, Any] | None = None,
        aad: bool = False,
        location: str = "eastus",
    ) -> ManagedCluster:
        """Register a managed cluster; its credentials are ``kubeconfig`` or the kube stand-in's."""
        if kubeconfig is None and self.kube is None:
            raise ValueError("pass a kubeconfig or construct ArmServer with a KubeApiServer")
        cluster = ManagedCluster(subscription, resource_group, name, kubeconfig, location, aad)
        self._clusters[(subscription.lower(), resource_group.lower(), name.lower())] = cluster
        return cluster

    def remove_cluster(self, subscription: str, resource_group: str, name: str) -> None:
        self._clusters.pop((subscription.lower(), resource_group.lower(), name.lower()), None)

    # -- HTTP ------------------------------------------------------------------------------------
    def fault_response(self, request: Request, status: int, message: str | None = None) -> Response:
        code = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "InternalServerError")
        response = arm_error(status, code, message or "standin: injected failure")
        if status == 429:
            response.headers["Retry-After"] = "1"
        return response

    def handle(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return arm_error(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        if auth != f"Bearer {self.token}":
            return arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if not request.param("api-version"):
            return arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        match = _CLUSTER_PATH.match(request.path)
        if match is None:
            return arm_error(
                404, "InvalidResourceType", f"The resource type could not be found for path '{request.path}'."
            )
        sub, rg, name, action = (
            match.group("sub"),
            match.group("rg"),
            match.group("name"),
            match.group("action"),
        )
        if not any(k[0] == sub.lower() and k[1] == rg.lower() for k in self._clusters):
            return arm_error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        cluster = self._clusters.get((sub.lower(), rg.lower(), name.lower()))
        if cluster is None:
            return arm_error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ContainerService/managedClusters/{name}' under resource group "
                f"'{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        if action is None and request.method == "GET":
            return Response(200, self._resource(cluster))
        if (
            action is not None
            and request.method == "POST"
            and action.lower() in ("listclusterusercredential", "listclusteradmincredential")
        ):
            kind = "clusterUser" if action.lower() == "listclusterusercredential" else "clusterAdmin"
            value = base64.b64encode(self._kubeconfig_yaml(cluster).encode()).decode()
            return Response(200, {"kubeconfigs": [{"name": kind, "value": value}]})
        return arm_error(405, "MethodNotAllowed", f"{request.method} is not supported on this resource")

    def _kubeconfig_yaml(self, cluster: ManagedCluster) -> str:
        if cluster.kubeconfig is not None:
            return str(yaml.safe_dump(cluster.kubeconfig, sort_keys=False))
        assert self.kube is not None
        return str(self.kube.kubeconfig_yaml(context=cluster.name))

    def _resource(self, cluster: ManagedCluster) -> dict[str, Any]:
        fqdn = f"{cluster.name}-dns-standin.hcp.{cluster.location}.azmk8s.io"
        aad = (
            {
                "managed": True,
                "enableAzureRBAC": True,
                "adminGroupObjectIDs": [],
                "tenantID": "00000000-0000-0000-0000-000000000000",
            }
            if cluster.aad
            else None
        )
        return {
            "id": cluster.resource_id,
            "name": cluster.name,
            "type": "Microsoft.ContainerService/ManagedClusters",
            "location": cluster.location,
            "properties": {
                "provisioningState": "Succeeded",
                "powerState": {"code": "Running"},
                "kubernetesVersion": "1.30.0",
                "currentKubernetesVersion": "1.30.0",
                "dnsPrefix": f"{cluster.name}-dns",
                "fqdn": fqdn,
                "azurePortalFQDN": fqdn,
                "aadProfile": aad,
                "enableRBAC": True,
                "nodeResourceGroup": f"MC_{cluster.resource_group}_{cluster.name}_{cluster.location}",
            },
        }
