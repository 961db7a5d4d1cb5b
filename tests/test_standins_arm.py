"""The ARM stand-in, exercised through the real ``ContainerServiceClient``."""

from __future__ import annotations

import pytest
import yaml
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerservice import ContainerServiceClient
from kubernetes import client, config

from tests.standins import fixtures as standin_fixtures
from tests.standins.arm import ArmServer, StaticTokenCredential
from tests.standins.fixtures import ARM_CLUSTER, ARM_RESOURCE_GROUP, ARM_SUBSCRIPTION
from tests.standins.kube_apiserver import KubeApiServer

pytestmark = pytest.mark.timeout(120)
kube_apiserver = standin_fixtures.kube_apiserver
arm_server = standin_fixtures.arm_server
arm_credential = standin_fixtures.arm_credential


def aks(arm: ArmServer, credential: StaticTokenCredential) -> ContainerServiceClient:
    return ContainerServiceClient(
        credential, ARM_SUBSCRIPTION, base_url=arm.url, connection_verify=str(arm.ca_file)
    )


def test_user_credentials_give_a_working_kubeconfig(
    arm_server: ArmServer,
    arm_credential: StaticTokenCredential,
    kube_apiserver: KubeApiServer,
) -> None:
    direct = config.new_client_from_config_dict(kube_apiserver.kubeconfig_dict())
    client.CoreV1Api(direct).create_namespace({"metadata": {"name": "seen"}})
    result = aks(arm_server, arm_credential).managed_clusters.list_cluster_user_credentials(
        ARM_RESOURCE_GROUP, ARM_CLUSTER
    )
    assert [k.name for k in result.kubeconfigs] == ["clusterUser"]
    kubeconfig = yaml.safe_load(result.kubeconfigs[0].value)
    assert kubeconfig["clusters"][0]["cluster"]["server"] == kube_apiserver.url

    api = config.new_client_from_config_dict(kubeconfig)
    assert [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items] == ["seen"]
    assert arm_credential.scopes_requested  # the SDK really asked the credential for a token
    posts = arm_server.requests("POST", r"/listClusterUserCredential$")
    assert [(e.status, "api-version=" in e.query) for e in posts] == [(200, True)]


def test_get_cluster_and_unknown_cluster(
    arm_server: ArmServer, arm_credential: StaticTokenCredential
) -> None:
    mc_client = aks(arm_server, arm_credential)
    cluster = mc_client.managed_clusters.get(ARM_RESOURCE_GROUP, ARM_CLUSTER)
    assert cluster.name == ARM_CLUSTER and cluster.fqdn and cluster.aad_profile is None

    with pytest.raises(ResourceNotFoundError) as missing:
        mc_client.managed_clusters.list_cluster_user_credentials(ARM_RESOURCE_GROUP, "nope")
    assert missing.value.status_code == 404 and missing.value.error.code == "ResourceNotFound"

    with pytest.raises(ResourceNotFoundError) as no_rg:
        mc_client.managed_clusters.get("other-rg", ARM_CLUSTER)
    assert no_rg.value.error.code == "ResourceGroupNotFound"


def test_aad_cluster_reports_its_profile(
    arm_server: ArmServer, arm_credential: StaticTokenCredential
) -> None:
    arm_server.add_cluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, "aad-aks", aad=True)
    cluster = aks(arm_server, arm_credential).managed_clusters.get(ARM_RESOURCE_GROUP, "aad-aks")
    assert cluster.aad_profile is not None and cluster.aad_profile.managed is True


def test_bad_token_and_injected_fault(arm_server: ArmServer, arm_credential: StaticTokenCredential) -> None:
    with pytest.raises(ClientAuthenticationError) as denied:
        aks(arm_server, StaticTokenCredential("wrong")).managed_clusters.get(ARM_RESOURCE_GROUP, ARM_CLUSTER)
    assert denied.value.status_code == 401

    arm_server.fail_next("POST", r"/listClusterUserCredential$", status=404)
    with pytest.raises(HttpResponseError) as failed:
        aks(arm_server, arm_credential).managed_clusters.list_cluster_user_credentials(
            ARM_RESOURCE_GROUP, ARM_CLUSTER
        )
    assert failed.value.status_code == 404


def test_plain_http_is_refused_by_the_sdk(
    arm_server: ArmServer, arm_credential: StaticTokenCredential
) -> None:
    """Why the stand-in serves TLS: the SDK will not send a bearer token over http."""
    from azure.core.exceptions import ServiceRequestError

    http_client = ContainerServiceClient(
        arm_credential, ARM_SUBSCRIPTION, base_url=arm_server.url.replace("https://", "http://")
    )
    with pytest.raises(ServiceRequestError):
        http_client.managed_clusters.get(ARM_RESOURCE_GROUP, ARM_CLUSTER)
