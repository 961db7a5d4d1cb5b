"""TLS instances on the Kubernetes runtime, against the API server stand-in.

The stand-in's "kubelet" runs each pod with the configuration Toygres mounts (ConfigMap) and the
certificate it issued (Secret), on Debian's PostgreSQL (OpenSSL); the tests connect like a client
would, with ``sslmode=verify-full``, and read the certificate the server really presents.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

import psycopg
import pytest
from kubernetes.client import CoreV1Api

from tests.standins.kube_apiserver import KubeApiServer
from tests.standins.pg_binaries import SKIP_REASON, tls_pg_bin_dir
from toygres.models import service_dns_names
from toygres.models.connection import tls_route
from toygres.runtimes import manifests
from toygres.runtimes.aks_credentials import KubeconfigClientFactory
from toygres.runtimes.base import DeployError, Endpoint, InstanceSpec
from toygres.runtimes.capabilities import RollingRuntime, TlsRuntime
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.runtimes.tls_secrets import KubernetesSecretCaStore
from toygres.x509 import certificate_info, issued_by

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(240),
    pytest.mark.skipif(tls_pg_bin_dir() is None, reason=SKIP_REASON),
]

NS = "pg-secure"
CONTROL_NS = "toygres-control"
PASSWORD = "Tls-Kube-Pa55word!"
NAMES = service_dns_names("secure", NS, "cluster.local")
SPEC = InstanceSpec(
    instance_id="k8s-tls-1",
    name="secure",
    postgres_version="17",
    storage_size="1Gi",
    username="app",
    memory_request="256Mi",
    memory_limit="256Mi",
    image="postgres:17.6@sha256:00bc86618629af00d2937fdc5a5d63db3ff8450acf52f0636ec813c7f4902929",
    tls_secret="secure-tls",
    tls_dns_names=tuple(NAMES),
    allowed_sources=({"cidr": "10.1.0.0/16"}, {"namespace_selector": {"team": "web"}}),
    server_parameters={"statement_timeout": "15000ms"},
)


def make_runtime(kubeconfig_path: Path) -> KubernetesRuntime:
    return KubernetesRuntime(
        KubeconfigClientFactory(kubeconfig_path),
        namespace=NS,
        request_timeout=10,
        ca_store=KubernetesSecretCaStore(CONTROL_NS, "toygres-ca"),
        control_plane_namespace=CONTROL_NS,
        control_plane_cidrs=("10.9.0.0/24",),
    )


def ready_endpoint(runtime: KubernetesRuntime, api: KubeApiServer, timeout: float = 120) -> Endpoint:
    deadline = time.monotonic() + timeout
    while True:
        status = runtime.status(SPEC)
        try:
            actual = api.endpoint_for_service(NS, SPEC.name)
        except KeyError:
            actual = None
        if status.ready and status.endpoint and (status.endpoint.host, status.endpoint.port) == actual:
            return status.endpoint
        assert time.monotonic() < deadline, f"not ready: {status}"
        time.sleep(0.2)


def served_certificate_sha256(endpoint: Endpoint) -> str:
    """The fingerprint of the certificate the server presents (PostgreSQL's SSLRequest, then TLS)."""
    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        assert raw.recv(1) == b"S"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only reading what is presented; verification is tested below
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def connect(endpoint: Endpoint, ca_file: Path, **extra: object) -> psycopg.Connection[tuple[object, ...]]:
    host, hostaddr = tls_route(NAMES[0], endpoint.host)
    params: dict[str, object] = {
        "host": host,
        "hostaddr": hostaddr,
        "port": endpoint.port,
        "user": "app",
        "password": PASSWORD,
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": str(ca_file),
        "connect_timeout": 10,
        **extra,
    }
    return psycopg.connect(**params)  # type: ignore[arg-type]


def test_tls_instance_verifies_rotates_and_is_removed(
    kubeconfig_path: Path, kube_apiserver: KubeApiServer, tmp_path: Path
) -> None:
    runtime = make_runtime(kubeconfig_path)
    assert isinstance(runtime, TlsRuntime) and isinstance(runtime, RollingRuntime)
    assert runtime.certificate_status(SPEC) is None
    runtime.deploy(SPEC, PASSWORD)

    # namespaces Toygres creates enforce the "restricted" Pod Security profile
    for ns in (NS, CONTROL_NS):
        namespace = kube_apiserver.get_object("namespaces", "", ns)
        assert namespace is not None
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # the CA lives in the control plane's namespace; the instance's certificate chains to it
    ca_secret = kube_apiserver.get_object("secrets", CONTROL_NS, "toygres-ca")
    assert (
        ca_secret is not None and ca_secret["type"] == "kubernetes.io/tls" and "tls.key" in ca_secret["data"]
    )
    ca_pem = runtime.ca_certificate()
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(ca_pem)
    first = runtime.certificate_status(SPEC)
    assert first is not None and set(first.dns_names) == set(NAMES)
    tls_secret = kube_apiserver.get_object("secrets", NS, "secure-tls")
    assert tls_secret is not None and tls_secret["type"] == "kubernetes.io/tls"
    sts = kube_apiserver.get_object("statefulsets", NS, SPEC.name, group="apps")
    assert sts is not None
    assert sts["spec"]["template"]["metadata"]["annotations"][manifests.TLS_CERT_ANNOTATION] == first.sha256
    policy = kube_apiserver.get_object("networkpolicies", NS, SPEC.name, group="networking.k8s.io")
    assert policy is not None
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "10.9.0.0/24"}} in peers and {"ipBlock": {"cidr": "10.1.0.0/16"}} in peers
    assert {"namespaceSelector": {"matchLabels": {"team": "web"}}} in peers

    endpoint = ready_endpoint(runtime, kube_apiserver)
    assert served_certificate_sha256(endpoint) == first.sha256
    with connect(endpoint, ca_file) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None and row[0] is True
        assert conn.execute("SHOW statement_timeout").fetchone() == ("15s",)  # the caller's parameter
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(
            host=endpoint.host,
            port=endpoint.port,
            user="app",
            password=PASSWORD,
            dbname="postgres",
            sslmode="disable",
        )

    # a re-deploy keeps the certificate; a fresh runtime (empty cache) finds the same CA
    runtime.deploy(SPEC, PASSWORD)
    assert runtime.certificate_status(SPEC) == first
    assert make_runtime(kubeconfig_path).ca_certificate() == ca_pem

    # rotation: a new certificate, the pod restarts onto it; a retried rotation changes nothing
    rotated = runtime.rotate_certificate(SPEC, first.sha256)
    assert rotated.sha256 != first.sha256 and issued_by_pem(runtime, rotated.sha256, ca_pem)
    assert runtime.rotate_certificate(SPEC, first.sha256) == rotated
    deadline = time.monotonic() + 120
    while not (status := runtime.rollout_status(SPEC)).complete:
        assert time.monotonic() < deadline, status.message
        time.sleep(0.3)
    endpoint = ready_endpoint(runtime, kube_apiserver)
    assert served_certificate_sha256(endpoint) == rotated.sha256
    with connect(endpoint, ca_file) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    # a replaced CA (its Secret deleted: a new one is made) leaves the certificate without an issuer
    # we trust: the instance counts as having none, and a rotation replaces it
    CoreV1Api(runtime.api_client_factory()).delete_namespaced_secret("toygres-ca", CONTROL_NS)
    fresh = make_runtime(kubeconfig_path)
    new_ca = fresh.ca_certificate()
    assert new_ca != ca_pem and fresh.certificate_status(SPEC) is None
    reissued = fresh.rotate_certificate(SPEC, "")
    assert reissued.sha256 != rotated.sha256 and issued_by_pem(fresh, reissued.sha256, new_ca)
    assert fresh.certificate_status(SPEC) == reissued

    assert runtime.delete(SPEC) is True
    assert kube_apiserver.get_object("secrets", NS, "secure-tls") is None
    assert kube_apiserver.get_object("secrets", CONTROL_NS, "toygres-ca") is not None  # the CA stays


def issued_by_pem(runtime: KubernetesRuntime, sha256: str, ca_pem: str) -> bool:
    """The certificate in the instance's Secret has this fingerprint and the CA's signature."""
    data = CoreV1Api(runtime.api_client_factory()).read_namespaced_secret("secure-tls", NS).data
    cert = base64.b64decode(data["tls.crt"]).decode()
    return certificate_info(cert).sha256 == sha256 and issued_by(cert, ca_pem)


def test_racing_workers_share_one_ca_and_a_broken_ca_secret_is_refused(
    kubeconfig_path: Path, kube_apiserver: KubeApiServer
) -> None:
    runtimes = [make_runtime(kubeconfig_path) for _ in range(4)]
    results: list[str] = []
    threads = [threading.Thread(target=lambda r=r: results.append(r.ca_certificate())) for r in runtimes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1

    secret = kube_apiserver.get_object("secrets", CONTROL_NS, "toygres-ca")
    assert secret is not None
    other = KubernetesRuntime(
        KubeconfigClientFactory(kubeconfig_path),
        namespace=NS,
        ca_store=KubernetesSecretCaStore(CONTROL_NS, "not-a-ca"),
        control_plane_namespace=CONTROL_NS,
    )
    CoreV1Api(other.api_client_factory()).create_namespaced_secret(
        CONTROL_NS,
        {
            "metadata": {"name": "not-a-ca"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "", "tls.key": ""},
        },
    )
    with pytest.raises(DeployError, match="does not hold a CA certificate") as info:
        other.ca_certificate()
    assert info.value.retryable is False
