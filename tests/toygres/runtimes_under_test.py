"""Real runtimes for race tests: the local runtime and the Kubernetes runtime on the stand-in,
plus a gate that holds a deploy open inside the runtime, and probes for what actually runs.

The gate is the only addition: it blocks ``deploy`` before the real deploy starts, which is
where a slow API server or a slow ``initdb`` keeps a real deploy busy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client as k8s

from tests.standins.kube_apiserver import KubeApiServer
from toygres.runtimes.aks_credentials import KubeconfigClientFactory
from toygres.runtimes.base import InstanceSpec
from toygres.runtimes.kubernetes import KubernetesRuntime
from toygres.runtimes.local import LocalRuntime

NAMESPACE = "toygres"


class Gate:
    """Holds every deploy until :meth:`open`; ``entered`` / ``left`` tell where deploys are."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.left = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    @contextmanager
    def passage(self) -> Iterator[None]:
        self.entered.set()
        try:
            self._open.wait(120)
            yield
        finally:
            self.left.set()


class GatedLocalRuntime(LocalRuntime):
    def __init__(self, root: Path, gate: Gate) -> None:
        super().__init__(root)
        self.gate = gate

    def deploy(self, spec: InstanceSpec, password: str) -> str:
        with self.gate.passage():
            return super().deploy(spec, password)


class GatedKubernetesRuntime(KubernetesRuntime):
    def __init__(self, kubeconfig: Path, gate: Gate) -> None:
        super().__init__(KubeconfigClientFactory(kubeconfig), namespace=NAMESPACE)
        self.gate = gate

    def deploy(self, spec: InstanceSpec, password: str) -> str:
        with self.gate.passage():
            return super().deploy(spec, password)


def local_postmasters(root: Path) -> dict[str, int]:
    """Instance directory name -> pid of every live PostgreSQL under ``root``."""
    found: dict[str, int] = {}
    for child in sorted(root.iterdir()) if root.exists() else []:
        pid_file = child / "pgdata" / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and "postgres" in proc.name():
                found[child.name] = pid
        except psutil.NoSuchProcess:
            continue
    return found


def kube_objects(
    kubeconfig: Path,
    label_selector: str = "app.kubernetes.io/managed-by=toygres",
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    """Names of the labelled objects in the namespace, by kind."""
    api = KubeconfigClientFactory(kubeconfig)()
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    ns, selector = namespace, label_selector
    found = {
        "statefulsets": apps.list_namespaced_stateful_set(ns, label_selector=selector).items,
        "services": core.list_namespaced_service(ns, label_selector=selector).items,
        "secrets": core.list_namespaced_secret(ns, label_selector=selector).items,
        "pvcs": core.list_namespaced_persistent_volume_claim(ns, label_selector=selector).items,
        "pods": core.list_namespaced_pod(ns, label_selector=selector).items,
    }
    return {kind: sorted(o.metadata.name for o in items) for kind, items in found.items() if items}


def kube_backends(server: KubeApiServer) -> list[int]:
    return server.backend_pids()
