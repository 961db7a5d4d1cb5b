"""pytest fixtures for the Kubernetes and ARM stand-ins.

Register them once in the root ``tests/conftest.py``::

    pytest_plugins = ["tests.standins.fixtures"]

or bind them in a test module (``kube_apiserver = fixtures.kube_apiserver``).

``kube_apiserver``   a started :class:`KubeApiServer` (plain HTTP, bearer token), stopped
                     with all its PostgreSQL backends at teardown; pods that serve TLS run on
                     Debian's PostgreSQL when it is installed (``tls_pg_bin_dir``).
``kubeconfig_path``  a kubeconfig file (YAML, token user) for ``kube_apiserver``.
``arm_server``       a started HTTPS :class:`ArmServer` with cluster
                     ``ARM_SUBSCRIPTION``/``ARM_RESOURCE_GROUP``/``ARM_CLUSTER`` whose
                     credentials point at ``kube_apiserver``.
``arm_credential``   a :class:`StaticTokenCredential` the ARM stand-in accepts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.standins.arm import ArmServer, StaticTokenCredential
from tests.standins.kube_apiserver import KubeApiServer
from tests.standins.pg_binaries import tls_pg_bin_dir

ARM_SUBSCRIPTION = "00000000-0000-0000-0000-00000000a11c"
ARM_RESOURCE_GROUP = "toygres-rg"
ARM_CLUSTER = "toygres-aks"


@pytest.fixture
def kube_apiserver() -> Iterator[KubeApiServer]:
    server = KubeApiServer(restart_delay=0.5, tls_bin_dir=tls_pg_bin_dir()).start()
    try:
        yield server
    finally:
        server.stop()
        if server.controller.errors:
            warnings.warn(f"kube stand-in controller errors: {server.controller.errors}", stacklevel=1)


@pytest.fixture
def kubeconfig_path(kube_apiserver: KubeApiServer, tmp_path: Path) -> Path:
    return kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig.yaml")


@pytest.fixture
def arm_server(kube_apiserver: KubeApiServer) -> Iterator[ArmServer]:
    server = ArmServer(kube_apiserver).start()
    server.add_cluster(ARM_SUBSCRIPTION, ARM_RESOURCE_GROUP, ARM_CLUSTER)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def arm_credential() -> StaticTokenCredential:
    return StaticTokenCredential()
