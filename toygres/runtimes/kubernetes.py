"""Instances as StatefulSets on a Kubernetes cluster (AKS or any kubeconfig).

Idempotency: Service and StatefulSet are applied with server-side apply
(``application/apply-patch+yaml``, field manager ``toygres``, ``force``), so a
re-run of ``deploy`` converges to the same objects and, when nothing changed,
the API server records no write (no new resourceVersion). The Secret is
created only when missing: the server's data directory is initialised with the
first password, so a retried deploy must never rotate it.

Errors from the API server are mapped to :class:`DeployError` whose
``retryable`` flag the activity layer turns into a retry or a failure.

An instance is a Secret (credentials), a ConfigMap (server configuration), a
server-certificate Secret issued by the deployment's CA (TLS instances), a
Service, a NetworkPolicy, a PodDisruptionBudget and the StatefulSet; see
:mod:`toygres.runtimes.manifests`. The CA lives in a Secret in the control
plane's namespace (:mod:`toygres.runtimes.tls_secrets`).

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
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import urllib3
from azure.core.exceptions import AzureError
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    CoreV1Api,
    NetworkingV1Api,
    PolicyV1Api,
    V1Namespace,
    V1Secret,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException

from toygres.models import POSTGRES_VERSIONS, tls_secret_name
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
from toygres.runtimes.capabilities import RolloutStatus
from toygres.runtimes.tls_secrets import CaStore, KubernetesSecretCaStore
from toygres.x509 import (
    SERVER_VALIDITY,
    CertificateAuthority,
    CertificateError,
    CertificateInfo,
    certificate_info,
    issue_server_certificate,
    issued_by,
    key_matches,
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
        ca_store: CaStore | None = None,
        control_plane_namespace: str = "toygres-system",
        control_plane_cidrs: Sequence[str] = (),
        internal_load_balancer: bool = False,
        server_certificate_validity: timedelta = SERVER_VALIDITY,
    ) -> None:
        """``api_client_factory`` is called for every operation so credentials can rotate
        (see :mod:`toygres.runtimes.aks_credentials`); ``manage_namespace=False`` skips
        creating the namespace when the identity may only act inside it.

        ``ca_store`` keeps the deployment's CA (default: the Secret ``toygres-ca`` in
        ``control_plane_namespace``). ``control_plane_namespace`` and ``control_plane_cidrs`` are
        admitted by every instance's NetworkPolicy."""
        self.api_client_factory = api_client_factory
        self.namespace = namespace
        self.image_repository = image_repository
        self.field_manager = field_manager
        self.request_timeout = request_timeout
        self.manage_namespace = manage_namespace
        #: the deployment's CA: by default a Secret in the control plane's namespace
        self.ca_store: CaStore = ca_store or KubernetesSecretCaStore(control_plane_namespace)
        self.control_plane_namespace = control_plane_namespace
        self.control_plane_cidrs = tuple(control_plane_cidrs)
        self.internal_load_balancer = internal_load_balancer
        self.server_certificate_validity = server_certificate_validity
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
        """Create the namespace (labelled for the "restricted" Pod Security profile) when missing."""
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
        """Server-side apply every object of the instance (after the Secrets); returns the
        conflicts a first apply without ``force`` met (none when ``force``)."""
        core, apps = self._apis()
        client = core.api_client
        networking, policy = NetworkingV1Api(client), PolicyV1Api(client)
        ns = self.namespace_of(spec)
        names = manifests.object_names(spec)
        self._ensure_namespace(core, ns)
        self._ensure_secret(core, spec, password)
        fingerprint = self._ensure_server_certificate(core, spec).sha256 if spec.tls_secret else None
        config_map = manifests.config_map_manifest(spec, ns)
        service = manifests.service_manifest(spec, ns, internal_load_balancer=self.internal_load_balancer)
        network_policy = manifests.network_policy_manifest(
            spec,
            ns,
            control_plane_namespace=self.control_plane_namespace,
            control_plane_cidrs=self.control_plane_cidrs,
        )
        budget = manifests.pod_disruption_budget_manifest(spec, ns)
        conflicts = self._apply(
            f"configmap {ns}/{names.config_map}",
            functools.partial(core.patch_namespaced_config_map, names.config_map, ns, config_map),
            force=force,
        )
        conflicts += self._apply(
            f"service {ns}/{names.service}",
            functools.partial(core.patch_namespaced_service, names.service, ns, service),
            force=force,
        )
        conflicts += self._apply(
            f"networkpolicy {ns}/{names.network_policy}",
            functools.partial(
                networking.patch_namespaced_network_policy, names.network_policy, ns, network_policy
            ),
            force=force,
        )
        conflicts += self._apply(
            f"poddisruptionbudget {ns}/{names.pod_disruption_budget}",
            functools.partial(
                policy.patch_namespaced_pod_disruption_budget, names.pod_disruption_budget, ns, budget
            ),
            force=force,
        )
        conflicts += self._apply_statefulset(apps, spec, fingerprint, force=force)
        return conflicts

    def _apply_statefulset(
        self, apps: AppsV1Api, spec: InstanceSpec, fingerprint: str | None, *, force: bool = True
    ) -> list[str]:
        ns, name = self.namespace_of(spec), manifests.object_names(spec).statefulset
        statefulset = manifests.statefulset_manifest(
            spec, ns, image_repository=self.image_repository, tls_certificate_sha256=fingerprint
        )
        return self._apply(
            f"statefulset {ns}/{name}",
            functools.partial(apps.patch_namespaced_stateful_set, name, ns, statefulset),
            force=force,
        )

    def _apply(self, what: str, patch: Callable[..., Any], *, force: bool) -> list[str]:
        """One server-side apply; without ``force``, a conflict is reported and then forced."""
        options: dict[str, Any] = {
            "field_manager": self.field_manager,
            "_content_type": APPLY_PATCH_CONTENT_TYPE,
            "_request_timeout": self.request_timeout,
        }
        conflicts: list[str] = []
        if not force:
            try:
                self._call(f"apply {what}", lambda: patch(force=False, **options))
                return []
            except DeployError as exc:
                if exc.status != 409:
                    raise
                conflicts = [f"{what}: {exc}"]
        self._call(f"apply {what}", lambda: patch(force=True, **options))
        return conflicts

    # ------------------------------------------------------------------ TLS

    def _ca(self, core: CoreV1Api) -> CertificateAuthority:
        self._ensure_namespace(core, self.control_plane_namespace)
        return self.ca_store.load_or_create(core, self._call)

    def ca_certificate(self) -> str:
        core, _ = self._apis()
        return self._ca(core).cert_pem

    def _read_tls_secret(self, core: CoreV1Api, spec: InstanceSpec) -> Any:
        name, ns = spec.tls_secret, self.namespace_of(spec)
        assert name is not None
        secret = self._ignore_404(
            f"read secret {ns}/{name}",
            lambda: core.read_namespaced_secret(name, ns, _request_timeout=self.request_timeout),
        )
        if secret is not None:
            owner = ((secret.metadata.labels if secret.metadata else None) or {}).get(
                manifests.INSTANCE_ID_LABEL
            )
            if owner != spec.instance_id:
                raise DeployError(
                    f"secret {ns}/{name} exists and belongs to instance {owner!r}, not {spec.instance_id!r}",
                    retryable=False,
                    status=409,
                )
        return secret

    @staticmethod
    def _secret_text(secret: Any, key: str) -> str:
        encoded = (secret.data or {}).get(key)
        return base64.b64decode(encoded).decode("ascii") if encoded else ""

    def _usable(self, secret: Any, spec: InstanceSpec, ca: CertificateAuthority) -> CertificateInfo | None:
        """The certificate in ``secret`` if it can keep serving: our CA's, all names, its own key, not
        about to expire (renewal ahead of that is the rotation orchestration's job)."""
        cert, key = (
            self._secret_text(secret, manifests.TLS_CERT_KEY),
            self._secret_text(secret, manifests.TLS_KEY_KEY),
        )
        try:
            info = certificate_info(cert)
        except CertificateError:
            return None
        fresh = info.not_after > datetime.now(UTC) + timedelta(days=1)
        if (
            issued_by(cert, ca.cert_pem)
            and key_matches(cert, key)
            and info.covers(spec.tls_dns_names)
            and fresh
        ):
            return info
        return None

    def _write_certificate(
        self, core: CoreV1Api, spec: InstanceSpec, ca: CertificateAuthority, existing: Any
    ) -> CertificateInfo:
        """Issue a certificate and store it; replacing ``existing`` only if nobody changed it since."""
        ns, name = self.namespace_of(spec), spec.tls_secret
        assert name is not None
        issued = issue_server_certificate(
            ca, list(spec.tls_dns_names), valid_for=self.server_certificate_validity
        )
        manifest = manifests.tls_secret_manifest(
            spec, ns, cert_pem=issued.cert_pem, key_pem=issued.key_pem, ca_pem=ca.cert_pem
        )
        if existing is None:
            body = V1Secret.model_validate(manifest)
            try:
                self._call(
                    f"create secret {ns}/{name}",
                    lambda: core.create_namespaced_secret(ns, body, _request_timeout=self.request_timeout),
                )
            except DeployError as exc:
                if exc.status != 409:
                    raise
                raise DeployError(
                    f"secret {ns}/{name} was created concurrently; retry", retryable=True
                ) from None
        else:
            # the resourceVersion makes the replace a compare-and-set: a concurrent writer gets a 409
            manifest["metadata"]["resourceVersion"] = existing.metadata.resource_version
            body = V1Secret.model_validate(manifest)
            try:
                self._call(
                    f"replace secret {ns}/{name}",
                    lambda: core.replace_namespaced_secret(
                        name, ns, body, _request_timeout=self.request_timeout
                    ),
                )
            except DeployError as exc:
                if exc.status != 409:
                    raise
                raise DeployError(f"secret {ns}/{name} changed concurrently; retry", retryable=True) from None
        return certificate_info(issued.cert_pem)

    def _ensure_server_certificate(self, core: CoreV1Api, spec: InstanceSpec) -> CertificateInfo:
        ca = self._ca(core)
        existing = self._read_tls_secret(core, spec)
        if existing is not None:
            info = self._usable(existing, spec, ca)
            if info is not None:
                return info
        return self._write_certificate(core, spec, ca, existing)

    def certificate_status(self, spec: InstanceSpec) -> CertificateInfo | None:
        """The certificate in the instance's Secret; None when there is none, or none from our CA
        (after the CA was replaced), so the rotation pass renews it."""
        if spec.tls_secret is None:
            return None
        core, _ = self._apis()
        secret = self._read_tls_secret(core, spec)
        if secret is None:
            return None
        cert = self._secret_text(secret, manifests.TLS_CERT_KEY)
        try:
            info = certificate_info(cert)
        except CertificateError:
            return None
        return info if issued_by(cert, self._ca(core).cert_pem) else None

    def rotate_certificate(self, spec: InstanceSpec, replaces_sha256: str) -> CertificateInfo:
        if spec.tls_secret is None:
            raise DeployError(f"instance {spec.name} does not serve TLS", retryable=False)
        core, apps = self._apis()
        ca = self._ca(core)
        existing = self._read_tls_secret(core, spec)
        current = None
        if existing is not None:
            try:
                current = certificate_info(self._secret_text(existing, manifests.TLS_CERT_KEY))
            except CertificateError:
                current = None
        unusable = existing is None or self._usable(existing, spec, ca) is None
        if current is None or current.sha256 == replaces_sha256 or unusable:
            current = self._write_certificate(core, spec, ca, existing)
        # the new fingerprint on the pod template restarts the pod onto the new certificate; a
        # retried rotation re-applies the same value, which changes nothing
        self._apply_statefulset(apps, spec, current.sha256)
        return current

    # ------------------------------------------------------------------ rollouts

    def rollout_status(self, spec: InstanceSpec) -> RolloutStatus:
        """Complete when the StatefulSet's newest revision runs in a ready pod."""
        core, apps = self._apis()
        ns, names = self.namespace_of(spec), manifests.object_names(spec)
        sts = self._ignore_404(
            f"read statefulset {ns}/{names.statefulset}",
            lambda: apps.read_namespaced_stateful_set(
                names.statefulset, ns, _request_timeout=self.request_timeout
            ),
        )
        if sts is None:
            return RolloutStatus(False, f"statefulset {ns}/{names.statefulset} not found")
        status, generation = sts.status, sts.metadata.generation if sts.metadata else None
        if status is None or generation is None or (status.observed_generation or 0) < generation:
            return RolloutStatus(False, "the StatefulSet controller has not seen the change yet")
        revision = status.update_revision
        pod = self._ignore_404(
            f"read pod {ns}/{names.pod}",
            lambda: core.read_namespaced_pod(names.pod, ns, _request_timeout=self.request_timeout),
        )
        if pod is None or pod.metadata is None or pod.metadata.deletion_timestamp is not None:
            return RolloutStatus(False, f"pod {names.pod} is being replaced")
        pod_revision = (pod.metadata.labels or {}).get("controller-revision-hash")
        if revision and pod_revision != revision:
            return RolloutStatus(False, f"pod {names.pod} still runs revision {pod_revision}")
        conditions = (pod.status.conditions if pod.status else None) or []
        if not any(c.type == "Ready" and c.status == "True" for c in conditions):
            return RolloutStatus(False, f"pod {names.pod} runs revision {revision} but is not ready")
        return RolloutStatus(True, f"pod {names.pod} runs revision {revision} and is ready")

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
        # the pod before the Service: an address published before the pod turned ready is then
        # never paired with an older reading of the Service
        pod = self._ignore_404(
            f"read pod {ns}/{names.pod}",
            lambda: core.read_namespaced_pod(names.pod, ns, _request_timeout=self.request_timeout),
        )
        service = self._ignore_404(
            f"read service {ns}/{names.service}",
            lambda: core.read_namespaced_service(names.service, ns, _request_timeout=self.request_timeout),
        )
        endpoint = self._endpoint(service) if service is not None else None
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
        """Delete every object called ``name`` (and the instance's PVCs); return once its pod is gone."""
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
            self._delete(
                f"configmap {ns}/{names.config_map}",
                lambda: core.delete_namespaced_config_map(names.config_map, ns, **raw),
            ),
            self._delete(
                f"networkpolicy {ns}/{names.network_policy}",
                lambda: NetworkingV1Api(core.api_client).delete_namespaced_network_policy(
                    names.network_policy, ns, **raw
                ),
            ),
            self._delete(
                f"poddisruptionbudget {ns}/{names.pod_disruption_budget}",
                lambda: PolicyV1Api(core.api_client).delete_namespaced_pod_disruption_budget(
                    names.pod_disruption_budget, ns, **raw
                ),
            ),
        ]
        # the server-certificate Secret, whatever the caller knows of the instance's TLS (the delete
        # of an orphan knows only its name); a missing one is no error
        tls_secret = tls_secret_name(name)
        removed.append(
            self._delete(
                f"secret {ns}/{tls_secret}", lambda: core.delete_namespaced_secret(tls_secret, ns, **raw)
            )
        )
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
