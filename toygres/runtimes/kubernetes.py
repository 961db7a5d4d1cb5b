"""Instances as StatefulSets on a Kubernetes cluster (AKS or any kubeconfig).

Idempotency: Service and StatefulSet are applied with server-side apply
(``application/apply-patch+yaml``, field manager ``toygres``, ``force``), so a
re-run of ``deploy`` converges to the same objects and, when nothing changed,
the API server records no write (no new resourceVersion). The Secret is
created only when missing: the server's data directory is initialised with the
first password, so a retried deploy must never rotate it.

Errors from the API server are mapped to :class:`DeployError` whose
``retryable`` flag the activity layer turns into a retry or a failure.

Test/dev override: when the Service carries the annotation
``standin.toygres.io/host-port`` (``host:port``, or just ``port`` with the host
taken from the load balancer ingress or ``spec.clusterIP``) that address is the
endpoint. The Kubernetes API stand-in used in tests sets it to where it runs
the "pod's" PostgreSQL; a real cluster never sets it.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import urllib3
from azure.core.exceptions import AzureError
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, V1Namespace, V1Secret
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException

from toygres.models import POSTGRES_VERSIONS
from toygres.runtimes import manifests
from toygres.runtimes.base import (
    CredentialError,
    DeployError,
    Endpoint,
    FoundInstance,
    InstanceNotFound,
    InstanceSpec,
    RuntimeStatus,
)

HOST_PORT_ANNOTATION = "standin.toygres.io/host-port"
APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"

T = TypeVar("T")


def _api_message(exc: ApiException) -> str:
    """The human message from a Kubernetes ``Status`` body, falling back to the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    return str(exc.reason or "")


def _is_retryable_status(status: int | None) -> bool:
    return status is None or status >= 500 or status in (401, 408, 429)


class KubernetesRuntime:
    """An :class:`~toygres.runtimes.base.InstanceRuntime` running each instance as a StatefulSet."""

    kind = "kubernetes"
    postgres_versions = POSTGRES_VERSIONS

    def __init__(
        self,
        api_client_factory: Callable[[], ApiClient],
        namespace: str = "toygres",
        *,
        image_repository: str = "postgres",
        field_manager: str = "toygres",
        request_timeout: float = 30.0,
        manage_namespace: bool = True,
    ) -> None:
        """``api_client_factory`` is called for every operation so credentials can rotate
        (see :mod:`toygres.runtimes.aks_credentials`); ``manage_namespace=False`` skips
        creating the namespace when the identity may only act inside it."""
        self.api_client_factory = api_client_factory
        self.namespace = namespace
        self.image_repository = image_repository
        self.field_manager = field_manager
        self.request_timeout = request_timeout
        self.manage_namespace = manage_namespace
        #: how long a delete waits for the instance's pod to be gone before it fails (retryably)
        self.pod_gone_timeout = 60.0
        self.pod_gone_poll = 0.5
        #: namespaces known to exist (created or seen), so each is checked once per process
        self._namespaces_ready: set[str] = set()

    # ------------------------------------------------------------------ plumbing

    def _apis(self) -> tuple[CoreV1Api, AppsV1Api]:
        try:
            client = self.api_client_factory()
        except (ConfigException, OSError) as exc:  # missing/invalid kubeconfig: retrying will not help
            raise DeployError(f"cannot build a Kubernetes client: {exc}", retryable=False) from None
        except AzureError as exc:  # a credential that was not mapped where it was fetched
            raise CredentialError(
                f"no credentials for the cluster: {type(exc).__name__}: {exc}", retryable=True
            ) from None
        return CoreV1Api(client), AppsV1Api(client)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call, translating transport and API failures into :class:`DeployError`."""
        try:
            return fn()
        except ApiException as exc:
            if exc.status == 401:
                invalidate = getattr(self.api_client_factory, "invalidate", None)
                if callable(invalidate):
                    invalidate()  # stale token: the retry will fetch fresh credentials
            error = CredentialError if exc.status in (401, 403) else DeployError
            raise error(
                f"{what}: {exc.status} {_api_message(exc)}",
                retryable=_is_retryable_status(exc.status),
                status=exc.status,
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise DeployError(
                f"{what}: cannot reach the Kubernetes API: {type(exc).__name__}", retryable=True
            ) from None
        except ConfigException as exc:
            raise DeployError(
                f"{what}: bad Kubernetes client configuration: {exc}", retryable=False
            ) from None

    def _ignore_404(self, what: str, fn: Callable[[], T]) -> T | None:
        try:
            return self._call(what, fn)
        except DeployError as exc:
            if exc.status == 404:
                return None
            raise

    def namespace_of(self, spec: InstanceSpec) -> str:
        """Where the instance lives: the namespace it was created in (recorded in its spec), so a
        control plane reconfigured for another namespace still finds it; else the configured one."""
        return spec.namespace or self.namespace

    def _password_ref(self, spec: InstanceSpec) -> str:
        secret = manifests.object_names(spec).secret
        return f"k8s-secret:{self.namespace_of(spec)}/{secret}#{manifests.SECRET_PASSWORD_KEY}"

    # ------------------------------------------------------------------ deploy

    def _ensure_namespace(self, core: CoreV1Api, ns: str) -> None:
        if ns in self._namespaces_ready or not self.manage_namespace:
            return
        try:
            self._call(
                f"read namespace {ns}", lambda: core.read_namespace(ns, _request_timeout=self.request_timeout)
            )
        except DeployError as exc:
            if exc.status == 403:
                # Namespace-scoped identity: it cannot see namespaces, so assume the operator made it.
                self._namespaces_ready.add(ns)
                return
            if exc.status != 404:
                raise
            try:
                body = V1Namespace.model_validate(manifests.namespace_manifest(ns))
                self._call(
                    f"create namespace {ns}",
                    lambda: core.create_namespace(body, _request_timeout=self.request_timeout),
                )
            except DeployError as create_exc:
                if create_exc.status != 409:
                    raise
        self._namespaces_ready.add(ns)

    def _ensure_secret(self, core: CoreV1Api, spec: InstanceSpec, password: str) -> None:
        name = manifests.object_names(spec).secret
        ns = self.namespace_of(spec)
        existing = self._ignore_404(
            f"read secret {ns}/{name}",
            lambda: core.read_namespaced_secret(name, ns, _request_timeout=self.request_timeout),
        )
        if existing is None:
            body = V1Secret.model_validate(manifests.secret_manifest(spec, ns, password))
            try:
                self._call(
                    f"create secret {ns}/{name}",
                    lambda: core.create_namespaced_secret(ns, body, _request_timeout=self.request_timeout),
                )
            except DeployError as exc:
                if exc.status != 409:  # 409: a concurrent attempt created it first; keep that one
                    raise
            return
        existing_labels = (existing.metadata.labels if existing.metadata else None) or {}
        owner = existing_labels.get(manifests.INSTANCE_ID_LABEL)
        if owner != spec.instance_id:
            raise DeployError(
                f"secret {ns}/{name} exists and belongs to instance {owner!r}, not {spec.instance_id!r}",
                retryable=False,
                status=409,
            )

    def store_password(self, spec: InstanceSpec, password: str) -> str:
        """Create the credentials Secret ahead of ``deploy`` (e.g. for a user-chosen password).

        Like ``deploy``, keeps an existing Secret: the first stored password wins.
        """
        core, _ = self._apis()
        self._ensure_namespace(core, self.namespace_of(spec))
        self._ensure_secret(core, spec, password)
        return self._password_ref(spec)

    def deploy(self, spec: InstanceSpec, password: str) -> str:
        self._apply_objects(spec, password, force=True)
        return self._password_ref(spec)

    def converge(self, spec: InstanceSpec, password: str) -> list[str]:
        """Deploy again, reporting the fields other managers had changed (drift) that it took back.

        Each object is applied without ``force`` first: the API server answers a conflict for
        every field another field manager (``kubectl edit``, an operator) set to something else.
        Those are reported, then the object is applied with ``force``, which takes them back.
        """
        return self._apply_objects(spec, password, force=False)

    def _apply_objects(self, spec: InstanceSpec, password: str, *, force: bool) -> list[str]:
        """Server-side apply the Service and the StatefulSet (after the Secret); returns the
        conflicts a first apply without ``force`` met (none when ``force``)."""
        core, apps = self._apis()
        ns = self.namespace_of(spec)
        names = manifests.object_names(spec)
        self._ensure_namespace(core, ns)
        self._ensure_secret(core, spec, password)
        service = manifests.service_manifest(spec, ns)
        statefulset = manifests.statefulset_manifest(spec, ns, image_repository=self.image_repository)
        conflicts = self._apply(
            f"service {ns}/{names.service}",
            functools.partial(core.patch_namespaced_service, names.service, ns, service),
            force=force,
        )
        conflicts += self._apply(
            f"statefulset {ns}/{names.statefulset}",
            functools.partial(apps.patch_namespaced_stateful_set, names.statefulset, ns, statefulset),
            force=force,
        )
        return conflicts

    def _apply(self, what: str, patch: Callable[..., Any], *, force: bool) -> list[str]:
        options: dict[str, Any] = {
            "field_manager": self.field_manager,
            "_content_type": APPLY_PATCH_CONTENT_TYPE,
            "_request_timeout": self.request_timeout,
        }
        if not force:
            try:
                self._call(f"apply {what}", lambda: patch(force=False, **options))
                return []
            except DeployError as exc:
                if exc.status != 409:
                    raise
                conflicts = [f"{what}: {exc}"]
        else:
            conflicts = []
        self._call(f"apply {what}", lambda: patch(force=True, **options))
        return conflicts

    # ------------------------------------------------------------------ status

    def _endpoint(self, service: Any) -> Endpoint | None:
        """Where clients connect: LoadBalancer ingress, else the cluster DNS name.

        Test/dev override: annotation ``standin.toygres.io/host-port`` holding
        ``host:port`` or just ``port`` (host then from the LB ingress or ``spec.clusterIP``).
        """
        annotations = (service.metadata.annotations if service.metadata else None) or {}
        override = str(annotations.get(HOST_PORT_ANNOTATION) or "")
        lb_host: str | None = None
        lb = service.status.load_balancer if service.status else None
        for ingress in (lb.ingress if lb else None) or []:
            if ingress.ip or ingress.hostname:
                lb_host = str(ingress.ip or ingress.hostname)
                break
        is_lb = service.spec is not None and service.spec.type == "LoadBalancer"
        if override:
            host, _, port = override.rpartition(":")
            if not host:
                cluster_ip = service.spec.cluster_ip if service.spec else None
                host = (lb_host if is_lb else None) or (
                    cluster_ip if cluster_ip and cluster_ip != "None" else "127.0.0.1"
                )
            return Endpoint(host.strip("[]"), int(port))
        if is_lb:
            return Endpoint(lb_host, manifests.POSTGRES_PORT) if lb_host else None
        name, ns = service.metadata.name, service.metadata.namespace or self.namespace
        return Endpoint(f"{name}.{ns}.svc.cluster.local", manifests.POSTGRES_PORT)

    def status(self, spec: InstanceSpec) -> RuntimeStatus:
        core, apps = self._apis()
        ns = self.namespace_of(spec)
        names = manifests.object_names(spec)
        timeout = self.request_timeout
        sts = self._ignore_404(
            f"read statefulset {ns}/{names.statefulset}",
            lambda: apps.read_namespaced_stateful_set(names.statefulset, ns, _request_timeout=timeout),
        )
        if sts is None:
            return RuntimeStatus(
                exists=False,
                ready=False,
                phase="NotFound",
                message=f"statefulset {ns}/{names.statefulset} not found",
            )
        service = self._ignore_404(
            f"read service {ns}/{names.service}",
            lambda: core.read_namespaced_service(names.service, ns, _request_timeout=self.request_timeout),
        )
        endpoint = self._endpoint(service) if service is not None else None
        pod = self._ignore_404(
            f"read pod {ns}/{names.pod}",
            lambda: core.read_namespaced_pod(names.pod, ns, _request_timeout=self.request_timeout),
        )
        if pod is None:
            return RuntimeStatus(
                exists=True,
                ready=False,
                phase="Pending",
                message=f"pod {names.pod} not created yet",
                endpoint=endpoint,
            )
        pod_status = pod.status
        phase = str(pod_status.phase or "Pending") if pod_status else "Pending"
        conditions = (pod_status.conditions if pod_status else None) or []
        pod_ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        if pod.metadata is not None and pod.metadata.deletion_timestamp is not None:
            pod_ready, phase = False, "Terminating"
        message = self._pod_message(pod, pod_ready)
        if pod_ready and service is None:
            message = f"service {names.service} not found"
        elif pod_ready and endpoint is None:
            message = "waiting for the load balancer address"
        return RuntimeStatus(
            exists=True,
            ready=pod_ready and endpoint is not None,
            phase=phase,
            message=message,
            endpoint=endpoint,
        )

    @staticmethod
    def _pod_message(pod: Any, ready: bool) -> str:
        if ready:
            return "pod ready"
        for cs in (pod.status.container_statuses if pod.status else None) or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting is not None and waiting.reason:
                return f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
        return "pod not ready"

    # ------------------------------------------------------------------ delete

    def delete(self, spec: InstanceSpec) -> bool:
        return self._delete_objects(self.namespace_of(spec), spec.name, spec.instance_id)

    def _delete_objects(self, ns: str, name: str, instance_id: str) -> bool:
        """Delete the StatefulSet, Service and Secret called ``name`` and the instance's PVCs."""
        core, apps = self._apis()
        names = manifests.names_for(name)
        raw: dict[str, Any] = {"_request_timeout": self.request_timeout, "_preload_content": False}
        removed = [
            self._delete(
                f"statefulset {ns}/{names.statefulset}",
                lambda: apps.delete_namespaced_stateful_set(
                    names.statefulset, ns, propagation_policy="Background", **raw
                ),
            ),
            self._delete(
                f"service {ns}/{names.service}",
                lambda: core.delete_namespaced_service(names.service, ns, **raw),
            ),
            self._delete(
                f"secret {ns}/{names.secret}", lambda: core.delete_namespaced_secret(names.secret, ns, **raw)
            ),
        ]
        selector = manifests.label_selector_for(name, instance_id)
        pvcs = self._call(
            f"list pvcs {ns} {selector}",
            lambda: core.list_namespaced_persistent_volume_claim(
                ns, label_selector=selector, _request_timeout=self.request_timeout
            ),
        )
        for pvc in pvcs.items or []:
            # A PVC already terminating (pvc-protection waits for the pod to go) needs nothing
            # more from us, and must not make a repeated delete report "removed" again.
            meta = pvc.metadata
            if meta is not None and meta.name and meta.deletion_timestamp is None:
                delete_pvc = functools.partial(
                    core.delete_namespaced_persistent_volume_claim, meta.name, ns, **raw
                )
                removed.append(self._delete(f"pvc {ns}/{meta.name}", delete_pvc))
        self._wait_until_gone(core, ns, names.pod)
        return any(removed)

    def _wait_until_gone(self, core: CoreV1Api, ns: str, pod: str) -> None:
        """Return once the pod no longer exists: "deleted" must mean no PostgreSQL runs any more.

        Bounded by ``pod_gone_timeout``; a pod still terminating then is a retryable failure
        (the delete activity is retried, and checks again)."""
        deadline = time.monotonic() + self.pod_gone_timeout
        while True:
            found = self._ignore_404(
                f"read pod {ns}/{pod}",
                lambda: core.read_namespaced_pod(pod, ns, _request_timeout=self.request_timeout),
            )
            if found is None:
                return
            if time.monotonic() >= deadline:
                raise DeployError(f"pod {ns}/{pod} is still terminating", retryable=True)
            time.sleep(self.pod_gone_poll)

    def list_instances(self, namespaces: Sequence[str] = ()) -> list[FoundInstance]:
        """Instances with labelled objects (StatefulSet, Service, Secret, PVC) in our namespaces."""
        core, apps = self._apis()
        selector = f"app.kubernetes.io/managed-by={manifests.MANAGED_BY}"
        timeout = self.request_timeout
        found: set[FoundInstance] = set()
        for ns in sorted({self.namespace, *namespaces}):
            listers: dict[str, Callable[..., Any]] = {
                "statefulsets": apps.list_namespaced_stateful_set,
                "services": core.list_namespaced_service,
                "secrets": core.list_namespaced_secret,
                "pvcs": core.list_namespaced_persistent_volume_claim,
            }
            for kind, lister in listers.items():
                listed = self._call(
                    f"list {kind} in {ns}",
                    functools.partial(lister, ns, label_selector=selector, _request_timeout=timeout),
                )
                for obj in listed.items or []:
                    labels = (obj.metadata.labels if obj.metadata else None) or {}
                    instance_id, name = (
                        labels.get(manifests.INSTANCE_ID_LABEL),
                        labels.get(manifests.INSTANCE_LABEL),
                    )
                    if instance_id and name:
                        found.add(FoundInstance(instance_id=instance_id, name=name, namespace=ns))
        return sorted(found)

    def remove(self, found: FoundInstance) -> bool:
        return self._delete_objects(found.namespace or self.namespace, found.name, found.instance_id)

    def _delete(self, what: str, fn: Callable[[], Any]) -> bool:
        """Run a delete without deserialising its answer: servers return either the object or a
        ``Status`` there, and only the HTTP status matters. True if it existed."""
        response = self._ignore_404(f"delete {what}", fn)
        if response is None:
            return False
        response.drain_conn()
        response.release_conn()
        return True

    # ------------------------------------------------------------------ secrets / metadata

    def read_password(self, spec: InstanceSpec) -> str:
        core, _ = self._apis()
        ns = self.namespace_of(spec)
        name = manifests.object_names(spec).secret
        secret = self._ignore_404(
            f"read secret {ns}/{name}",
            lambda: core.read_namespaced_secret(name, ns, _request_timeout=self.request_timeout),
        )
        encoded = (secret.data or {}).get(manifests.SECRET_PASSWORD_KEY) if secret is not None else None
        if encoded is None:
            raise InstanceNotFound(f"no password in secret {ns}/{name}")
        return base64.b64decode(encoded).decode("utf-8")

    def describe(self, spec: InstanceSpec) -> dict[str, Any]:
        return {
            "runtime": self.kind,
            "namespace": self.namespace_of(spec),
            **manifests.object_names(spec).as_dict(),
            "password_ref": self._password_ref(spec),
        }
