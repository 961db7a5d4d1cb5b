"""The stand-in's controllers: what kube-controller-manager and the kubelet would do for
the objects Toygres creates, with each StatefulSet pod backed by a real PostgreSQL.

- StatefulSet controller: pods ``<sts>-<i>`` (OrderedReady), PVCs
  ``<claim>-<sts>-<i>`` from ``volumeClaimTemplates``, rolling replacement of pods whose
  template revision is stale, ``status`` counters.
- "Kubelet": each StatefulSet pod runs ``toygres.pgserver.EmbeddedPostgres`` with the
  superuser/password from the container env (``POSTGRES_USER``, ``POSTGRES_PASSWORD``
  incl. ``valueFrom.secretKeyRef``, or ``POSTGRES_PASSWORD_FILE`` read from a mounted
  Secret/ConfigMap volume, ``POSTGRES_DB``) and, when the container's args name a
  ``config_file`` on a mounted volume, the settings of that file (files it names, such as
  the certificate, key and ``hba_file``, are read from their volumes too). Listen address,
  port and socket directory are the stand-in's; memory-hungry settings are shrunk
  (``_PG_SETTINGS``) because many pods share one small machine. Pods whose configuration
  turns ``ssl`` on run on ``tls_bin_dir`` (PostgreSQL with OpenSSL, e.g. Debian's) when
  the stand-in has one, else they fail to start as such a container would. The pod is
  Ready once a real login + ``select 1`` succeeds. The data directory lives on the PVC
  (kept across pod restarts and StatefulSet re-creation, removed when the PVC is deleted).
- Garbage collector / namespace controller / PVC protection: orphaned pods go away, a
  terminating namespace is emptied then removed, a deleted PVC disappears once no pod
  uses it.
- Service "load balancer": ``status.loadBalancer.ingress[0].ip = 127.0.0.1`` for
  ``LoadBalancer`` services, and annotation ``standin.toygres.io/host-port`` with the
  real TCP port of the PostgreSQL behind the service's selector.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.standins.kube_api import KubeApi
from tests.standins.kube_objects import (
    CONFIGMAPS,
    NAMESPACES,
    NETWORK_POLICIES,
    PDBS,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    ApiError,
    Obj,
    Store,
    label_selector_matches,
    now_rfc3339,
    selector_matches,
)
from toygres.pgserver import EmbeddedPostgres, Watchdog

HOST_PORT_ANNOTATION = "standin.toygres.io/host-port"
POD_IP = "127.0.0.1"

_PG_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",  # SIGKILL-safe: writes reach the OS
    "shared_buffers": "16MB",
    "max_connections": "50",
}
#: settings a pod's configuration file may not decide here: the stand-in owns the address
_LAUNCHER_SETTINGS = {
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "include_if_exists",
    "include",
    "include_dir",
}
#: settings that name a file, which the "kubelet" reads from the pod's volumes
_FILE_SETTINGS = ("hba_file", "ident_file", "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file")


@dataclass
class Backend:
    """The "container" of one pod: a PostgreSQL server and its lifecycle state."""

    namespace: str
    pod: str
    pod_uid: str
    revision: str
    data_dir: Path
    ephemeral: bool
    state: str = "pending"  # pending|starting|running|crashed|config-error|failed|stopping|stopped
    ready: bool = False
    message: str = ""
    pg: EmbeddedPostgres | None = None
    watchdog: Watchdog | None = None
    port: int | None = None
    restarts: int = 0
    restart_at: float | None = None
    started_at: str | None = None
    held: bool = False
    busy: bool = False  # a worker thread is starting/stopping it
    stop_requested: bool = False
    kill_on_stop: bool = False
    env: dict[str, str] = field(default_factory=dict)
    bin_dir: Path | None = None  # None: the embedded binaries


class ConfigError(Exception):
    """The pod's env refers to a missing Secret/key: kubelet's CreateContainerConfigError."""


def template_hash(template: Obj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class Controller:
    """Runs the reconcile loop in one thread; PostgreSQL starts/stops run in worker threads."""

    def __init__(
        self,
        store: Store,
        api: KubeApi,
        work_dir: Path,
        restart_delay: float,
        tls_bin_dir: Path | None = None,
    ) -> None:
        self._services_lock = threading.Lock()
        self.tls_bin_dir = tls_bin_dir
        self.store = store
        self.api = api
        self.work_dir = work_dir
        self.restart_delay = restart_delay
        #: how long a deleted pod stays (terminating) after its container stopped; real pods take
        #: their grace period, volume unmounts, and the kubelet's next sync
        self.pod_termination_delay = 0.0
        self.lock = threading.RLock()
        self.backends: dict[tuple[str, str], Backend] = {}
        self.never_ready: set[tuple[str | None, str]] = set()
        self._held: set[tuple[str, str]] = set()
        self._terminating_since: dict[tuple[str, str, str], float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self.errors: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.store.on_change = self.wake
        self._thread = threading.Thread(target=self._loop, name="kube-standin-controller", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for worker in list(self._workers):
            worker.join(timeout=90)
        with self.lock:
            backends = [b for b in self.backends.values() if b.state != "stopped"]
            for b in backends:
                b.stop_requested, b.busy = True, True
        for backend in backends:
            self._stop_worker(backend)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.reconcile()
            except Exception as exc:  # keep the controller alive; tests can inspect .errors
                if len(self.errors) < 100:
                    self.errors.append(repr(exc))

    # -- fault switches ------------------------------------------------------------------------
    def kill_pod(self, namespace: str, pod: str) -> None:
        backend = self._backend(namespace, pod)
        with self.lock:
            if backend.busy:
                raise RuntimeError(f"pod {namespace}/{pod} is starting or stopping; wait until it is Ready")
            # busy keeps the reconcile loop from restarting it while the kill is in flight
            backend.busy, backend.state, backend.ready = True, "crashed", False
            backend.message = "killed by the stand-in (SIGKILL)"
        try:
            if backend.pg is not None:
                backend.pg.kill()
        finally:
            with self.lock:
                backend.busy = False
                backend.restart_at = None if backend.held else time.monotonic() + self.restart_delay
                stop = backend.stop_requested
            if stop:
                self._request_stop_after_busy(backend)
        self.wake()

    def hold_down(self, namespace: str, pod: str, held: bool = True) -> None:
        with self.lock:
            if held:
                self._held.add((namespace, pod))
            else:
                self._held.discard((namespace, pod))
            backend = self.backends.get((namespace, pod))
            if backend is not None:
                backend.held = held
                if not held and backend.state in ("crashed", "failed") and backend.restart_at is None:
                    backend.restart_at = time.monotonic() + self.restart_delay
        self.wake()

    def restart_pod(self, namespace: str, pod: str) -> None:
        """Bring a crashed or held-down pod back now (a running one is killed first)."""
        backend = self._backend(namespace, pod)
        if backend.state == "running":
            self.kill_pod(namespace, pod)
        with self.lock:
            self._held.discard((namespace, pod))
            backend.held = False
            backend.restart_at = time.monotonic()
        self.wake()

    def pod_never_ready(self, sts_name: str, namespace: str | None = None, enabled: bool = True) -> None:
        with self.lock:
            if enabled:
                self.never_ready.add((namespace, sts_name))
            else:
                self.never_ready.discard((namespace, sts_name))
        self.wake()

    def _backend(self, namespace: str, pod: str) -> Backend:
        with self.lock:
            backend = self.backends.get((namespace, pod))
        if backend is None:
            raise KeyError(f"pod {namespace}/{pod} has no running backend")
        return backend

    def endpoint_for_pod(self, namespace: str, pod: str) -> tuple[str, int] | None:
        with self.lock:
            backend = self.backends.get((namespace, pod))
            if backend is None or backend.port is None:
                return None
            return POD_IP, backend.port

    # -- reconcile -----------------------------------------------------------------------------
    def reconcile(self) -> None:
        self._namespaces()
        sts_by_uid = {s["metadata"]["uid"]: s for s in self.store.items(STATEFULSETS)}
        self._garbage_collect(set(sts_by_uid))
        for sts in sts_by_uid.values():
            if not sts["metadata"].get("deletionTimestamp"):
                self._statefulset(sts)
        self._pods(sts_by_uid)
        for sts in sts_by_uid.values():
            self._statefulset_status(sts)
        self._pvcs()
        self._services()
        self._disruption_budgets()

    def _namespaces(self) -> None:
        for ns in self.store.items(NAMESPACES):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            for res in (STATEFULSETS, SERVICES, SECRETS, CONFIGMAPS, NETWORK_POLICIES, PDBS):
                for obj in self.store.items(res, name):
                    self.store.remove(res, name, obj["metadata"]["name"])
            remaining = 0
            for res in (PODS, PVCS):
                for obj in self.store.items(res, name):
                    remaining += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete(res, name, obj["metadata"]["name"])
            if remaining == 0:
                self.store.remove(NAMESPACES, "", name)

    def _delete(self, res: Any, namespace: str, name: str) -> None:
        try:
            self.api.delete(res, namespace, name, propagation=None)
        except ApiError:
            pass  # already gone

    def _garbage_collect(self, sts_uids: set[str]) -> None:
        for res in (PODS, PVCS):
            for obj in self.store.items(res):
                meta = obj["metadata"]
                refs = [r for r in meta.get("ownerReferences") or [] if r.get("kind") == "StatefulSet"]
                if refs and not meta.get("deletionTimestamp") and not any(r["uid"] in sts_uids for r in refs):
                    self._delete(res, meta["namespace"], meta["name"])

    def _statefulset(self, sts: Obj) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        ns, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        revision = template_hash(spec["template"])
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        owner = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": name,
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        for i in range(replicas):
            self._ensure_pvcs(sts, i, owner)
            pod_name = f"{name}-{i}"
            pod = self.store.get(PODS, ns, pod_name)
            if pod is None:
                try:
                    self.api.create(PODS, ns, self._pod_for(sts, i, revision, owner))
                except ApiError:
                    pass
                if ordered:
                    break
                continue
            stale = pod["metadata"].get("labels", {}).get("controller-revision-hash") != f"{name}-{revision}"
            if stale and not pod["metadata"].get("deletionTimestamp"):
                self._delete(PODS, ns, pod_name)  # rolling update: replaced once it is gone
            if ordered and not _pod_ready(pod):
                break
        for pod in self.store.items(PODS, ns):
            pmeta = pod["metadata"]
            refs = pmeta.get("ownerReferences") or []
            if any(r.get("uid") == meta["uid"] for r in refs) and not pmeta.get("deletionTimestamp"):
                ordinal = pmeta.get("labels", {}).get("apps.kubernetes.io/pod-index", "0")
                if int(ordinal) >= replicas:
                    self._delete(PODS, ns, pmeta["name"])

    def _ensure_pvcs(self, sts: Obj, ordinal: int, owner: Obj) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        for vct in spec.get("volumeClaimTemplates") or []:
            claim = f"{vct['metadata']['name']}-{meta['name']}-{ordinal}"
            existing = self.store.get(PVCS, meta["namespace"], claim)
            if existing is not None:
                self._follow_retention_policy(existing, owner, policy.get("whenDeleted") == "Delete")
                continue
            labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
            labels.update((vct.get("metadata") or {}).get("labels") or {})
            pvc_meta: Obj = {"name": claim, "namespace": meta["namespace"], "labels": labels}
            if policy.get("whenDeleted") == "Delete":
                pvc_meta["ownerReferences"] = [owner]
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": pvc_meta,
                "spec": copy.deepcopy(vct.get("spec") or {}),
            }
            try:
                self.api.create(PVCS, meta["namespace"], body)
            except ApiError:
                pass

    def _follow_retention_policy(self, pvc: Obj, owner: Obj, delete_with_owner: bool) -> None:
        """Like the StatefulSet controller (StatefulSetAutoDeletePVC): a claim is owned by its
        StatefulSet exactly when ``whenDeleted: Delete``, so changing the policy of an existing
        StatefulSet decides whether deleting it takes the data along."""
        with self.store.lock:
            current = self.store.get(PVCS, pvc["metadata"]["namespace"], pvc["metadata"]["name"])
            if current is None or current["metadata"].get("deletionTimestamp"):
                return
            refs = current["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != owner["uid"]]
            wanted = [*kept, owner] if delete_with_owner else kept
            if wanted != refs:
                if wanted:
                    current["metadata"]["ownerReferences"] = wanted
                else:
                    current["metadata"].pop("ownerReferences", None)
                self.store.put(PVCS, current)

    def _pod_for(self, sts: Obj, ordinal: int, revision: str, owner: Obj) -> Obj:
        meta, spec = sts["metadata"], sts["spec"]
        template = copy.deepcopy(spec["template"])
        tmeta = template.get("metadata") or {}
        name = f"{meta['name']}-{ordinal}"
        labels = dict(tmeta.get("labels") or {})
        labels.update(
            {
                "statefulset.kubernetes.io/pod-name": name,
                "apps.kubernetes.io/pod-index": str(ordinal),
                "controller-revision-hash": f"{meta['name']}-{revision}",
            }
        )
        pod_spec = template.get("spec") or {}
        pod_spec["hostname"] = name
        if spec.get("serviceName"):
            pod_spec["subdomain"] = spec["serviceName"]
        volumes = pod_spec.setdefault("volumes", [])
        for vct in spec.get("volumeClaimTemplates") or []:
            vname = vct["metadata"]["name"]
            if not any(v.get("name") == vname for v in volumes):
                volumes.append(
                    {
                        "name": vname,
                        "persistentVolumeClaim": {"claimName": f"{vname}-{meta['name']}-{ordinal}"},
                    }
                )
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [owner],
            },
            "spec": pod_spec,
        }

    # -- pods and their PostgreSQL -------------------------------------------------------------
    def _pods(self, sts_by_uid: dict[str, Obj]) -> None:
        live: dict[tuple[str, str], str] = {}
        for pod in self.store.items(PODS):
            meta = pod["metadata"]
            key = (meta["namespace"], meta["name"])
            live[key] = meta["uid"]
            sts = next(
                (
                    sts_by_uid[r["uid"]]
                    for r in meta.get("ownerReferences") or []
                    if r.get("uid") in sts_by_uid
                ),
                None,
            )
            with self.lock:
                backend = self.backends.get(key)
                if backend is not None and backend.pod_uid != meta["uid"]:
                    backend = None  # same name, new pod: the old backend is being stopped
            if meta.get("deletionTimestamp"):
                self._terminate(pod, backend)
                continue
            if sts is None:
                continue  # a bare pod: nothing runs it (the stand-in only backs StatefulSet pods)
            if backend is None:
                backend = self._new_backend(pod, sts)
                if backend is None:
                    continue
            self._drive(backend, pod)
            self._write_pod_status(pod, backend, sts)
        with self.lock:
            gone = [b for k, b in self.backends.items() if live.get(k) != b.pod_uid]
        for backend in gone:
            self._request_stop(backend, kill=False)

    def _new_backend(self, pod: Obj, sts: Obj) -> Backend | None:
        meta = pod["metadata"]
        ns = meta["namespace"]
        claim = _data_claim(pod, sts)
        if claim is not None:
            pvc = self.store.get(PVCS, ns, claim)
            if pvc is None or pvc["metadata"].get("deletionTimestamp"):
                return None  # kubelet waits for the volume
            data_dir, ephemeral = self.work_dir / "volumes" / pvc["metadata"]["uid"], False
        else:
            data_dir, ephemeral = self.work_dir / "pods" / meta["uid"], True
        with self.lock:
            if (ns, meta["name"]) in self.backends:
                return None  # the previous incarnation is still stopping
            backend = Backend(
                ns,
                meta["name"],
                meta["uid"],
                meta["labels"].get("controller-revision-hash", ""),
                data_dir / "pgdata",
                ephemeral,
                held=(ns, meta["name"]) in self._held,
            )
            self.backends[(ns, meta["name"])] = backend
        return backend

    def _drive(self, backend: Backend, pod: Obj) -> None:
        with self.lock:
            if backend.busy or backend.stop_requested:
                return
            if backend.state == "running" and backend.pg is not None and not backend.pg.is_running():
                backend.state, backend.ready = "crashed", False
                backend.message = "postgres exited"
                backend.restart_at = None if backend.held else time.monotonic() + self.restart_delay
            start = backend.state == "pending" or (
                backend.state in ("crashed", "failed", "config-error")
                and not backend.held
                and backend.restart_at is not None
                and time.monotonic() >= backend.restart_at
            )
            if (
                backend.state in ("crashed", "failed", "config-error")
                and backend.restart_at is None
                and not backend.held
            ):
                backend.restart_at = time.monotonic() + self.restart_delay
            if not start:
                return
            if backend.state != "pending":
                backend.restarts += 1
            backend.busy, backend.state, backend.restart_at = True, "starting", None
        self._spawn(self._start_backend, backend, copy.deepcopy(pod))

    def _spawn(self, target: Any, *args: Any) -> None:
        self._workers = [w for w in self._workers if w.is_alive()]
        worker = threading.Thread(target=target, args=args, daemon=True, name="kube-standin-worker")
        self._workers.append(worker)
        worker.start()

    def _start_backend(self, backend: Backend, pod: Obj) -> None:
        try:
            try:
                env = self._resolve_env(pod)
                settings, files = self._server_config(pod, backend.data_dir)
            except ConfigError as exc:
                with self.lock:
                    backend.state, backend.message = "config-error", str(exc)
                    backend.restart_at = time.monotonic() + min(self.restart_delay, 1.0)
                return
            user = env.get("POSTGRES_USER") or "postgres"
            password = env.get("POSTGRES_PASSWORD") or None
            backend.bin_dir = self.tls_bin_dir if settings.get("ssl") == "on" else None
            pg = EmbeddedPostgres(
                backend.data_dir,
                port=backend.port,
                superuser=user,
                password=password,
                server_settings={**settings, **_PG_SETTINGS},
                bin_dir=backend.bin_dir,
                files=files,
            )
            pg.start(timeout=90)
            with self.lock:
                backend.pg, backend.port = pg, pg.port
            if backend.watchdog is None:
                backend.watchdog = pg.stop_when_process_exits()
            _probe(pg, user, password, env.get("POSTGRES_DB") or user)
            with self.lock:
                backend.state, backend.ready, backend.message = "running", True, ""
                backend.started_at = now_rfc3339()
        except Exception as exc:
            with self.lock:
                backend.state, backend.ready = "failed", False
                backend.message = f"{type(exc).__name__}: {exc}"[:2000]
                backend.restart_at = time.monotonic() + self.restart_delay
        finally:
            with self.lock:
                stop = backend.stop_requested
                if not stop:
                    backend.busy = False
            if stop:
                self._stop_worker(backend)
            self.wake()

    @staticmethod
    def _container(pod: Obj) -> Obj:
        """The PostgreSQL container: the one given a password, else the first."""
        containers = pod["spec"].get("containers") or []
        wanted = ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE")
        return next(
            (c for c in containers if any(e.get("name") in wanted for e in c.get("env") or [])),
            containers[0] if containers else {},
        )

    def _mounted_file(self, pod: Obj, path: str) -> str:
        """The text of ``path`` inside the container, projected from a Secret or ConfigMap volume
        the way kubelet projects it (``items`` map keys to paths; without them every key is a file)."""
        ns = pod["metadata"]["namespace"]
        volumes = {v.get("name"): v for v in pod["spec"].get("volumes") or []}
        for mount in self._container(pod).get("volumeMounts") or []:
            root = str(mount.get("mountPath", "")).rstrip("/")
            if not path.startswith(root + "/"):
                continue
            relative = path[len(root) + 1 :]
            volume = volumes.get(mount.get("name")) or {}
            if "secret" in volume:
                res, source, name = SECRETS, volume["secret"], volume["secret"].get("secretName")
            elif "configMap" in volume:
                res, source, name = CONFIGMAPS, volume["configMap"], volume["configMap"].get("name")
            else:
                raise ConfigError(
                    f"{path} is on volume {mount.get('name')!r}, which holds no Secret or ConfigMap"
                )
            data = self._ref_data(ns, res, str(name), bool(source.get("optional")))
            items = source.get("items")
            key = {i["path"]: i["key"] for i in items}.get(relative) if items else relative
            if key is None or key not in data:
                raise ConfigError(f"MountVolume.SetUp failed: no key for {path} in {res.kind} {ns}/{name}")
            return data[key]
        raise ConfigError(f"no volume is mounted at {path}")

    def _server_config(self, pod: Obj, data_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
        """(settings, files) from the ``config_file`` the container's args name, if any."""
        container = self._container(pod)
        args = [*(container.get("command") or []), *(container.get("args") or [])]
        config_file = next((a.split("=", 1)[1] for a in args if a.startswith("config_file=")), None)
        if config_file is None:
            return {}, {}
        settings = {
            k: v
            for k, v in _parse_postgresql_conf(self._mounted_file(pod, config_file)).items()
            if k not in _LAUNCHER_SETTINGS
        }
        files: dict[str, str] = {}
        for key in _FILE_SETTINGS:
            if key in settings:
                name = f"{key}-{Path(settings[key]).name}"
                files[name] = self._mounted_file(pod, settings[key])
                settings[key] = str(EmbeddedPostgres.files_dir(data_dir) / name)
        return settings, files

    def _resolve_env(self, pod: Obj) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        container = self._container(pod)
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef") or source.get("configMapRef")
            if ref is None:
                continue
            data = self._ref_data(
                ns, SECRETS if "secretRef" in source else CONFIGMAPS, ref["name"], bool(ref.get("optional"))
            )
            env.update({source.get("prefix", "") + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            value_from = var.get("valueFrom") or {}
            ref = value_from.get("secretKeyRef") or value_from.get("configMapKeyRef")
            if ref is None:
                continue
            res = SECRETS if "secretKeyRef" in value_from else CONFIGMAPS
            data = self._ref_data(ns, res, ref["name"], bool(ref.get("optional")))
            if ref["key"] in data:
                env[var["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                raise ConfigError(f"couldn't find key {ref['key']} in {res.kind} {ns}/{ref['name']}")
        if "POSTGRES_PASSWORD_FILE" in env and not env.get("POSTGRES_PASSWORD"):
            # the image's entrypoint reads it like "$(< file)", which drops trailing newlines
            env["POSTGRES_PASSWORD"] = self._mounted_file(pod, env["POSTGRES_PASSWORD_FILE"]).rstrip("\n")
        return env

    def _ref_data(self, ns: str, res: Any, name: str, optional: bool) -> dict[str, str]:
        obj = self.store.get(res, ns, name)
        if obj is None:
            if optional:
                return {}
            raise ConfigError(f'{res.plural[:-1]} "{name}" not found')
        if res is SECRETS:
            return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    def _terminate(self, pod: Obj, backend: Backend | None) -> None:
        meta = pod["metadata"]
        if backend is None or backend.state == "stopped":
            if not self._termination_delay_passed(meta):
                return
            with self.lock:
                if backend is not None:
                    self.backends.pop((meta["namespace"], meta["name"]), None)
            self.store.remove(PODS, meta["namespace"], meta["name"])
            return
        self._request_stop(backend, kill=meta.get("deletionGracePeriodSeconds") == 0)

    def _termination_delay_passed(self, meta: Obj) -> bool:
        if self.pod_termination_delay <= 0:
            return True
        key = (meta["namespace"], meta["name"], meta["uid"])
        first_seen = self._terminating_since.setdefault(key, time.monotonic())
        if time.monotonic() - first_seen < self.pod_termination_delay:
            return False
        self._terminating_since.pop(key, None)
        return True

    def _request_stop(self, backend: Backend, kill: bool) -> None:
        """Stop a backend once; a backend that is still starting is stopped by its start worker."""
        with self.lock:
            backend.kill_on_stop = backend.kill_on_stop or kill
            if backend.stop_requested:
                return
            backend.stop_requested = True
            if backend.busy:
                return
            backend.busy = True
        self._spawn(self._stop_worker, backend)

    def _request_stop_after_busy(self, backend: Backend) -> None:
        with self.lock:
            if backend.busy or backend.state in ("stopping", "stopped"):
                return
            backend.busy = True
        self._spawn(self._stop_worker, backend)

    def _stop_worker(self, backend: Backend) -> None:
        with self.lock:
            backend.state, backend.ready = "stopping", False
        pg = backend.pg
        try:
            if pg is None and (backend.data_dir / "PG_VERSION").exists():
                pg = EmbeddedPostgres(backend.data_dir, bin_dir=backend.bin_dir)
            if pg is not None:
                if backend.kill_on_stop:
                    pg.kill()
                else:
                    try:
                        pg.stop(mode="fast")
                    except Exception:
                        pg.kill()
        finally:
            watchdog, backend.watchdog = backend.watchdog, None
            if watchdog is not None:
                watchdog.release()
            if backend.ephemeral:
                shutil.rmtree(backend.data_dir.parent, ignore_errors=True)
            with self.lock:
                backend.state, backend.busy = "stopped", False
                pod = self.store.get(PODS, backend.namespace, backend.pod)
                if self.backends.get((backend.namespace, backend.pod)) is backend and (
                    pod is None or pod["metadata"]["uid"] != backend.pod_uid
                ):
                    self.backends.pop((backend.namespace, backend.pod), None)
            self.wake()

    def _write_pod_status(self, pod: Obj, backend: Backend, sts: Obj) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        sts_name = sts["metadata"]["name"]
        with self.lock:
            never = (None, sts_name) in self.never_ready or (ns, sts_name) in self.never_ready
            state, message = backend.state, backend.message
            ready = backend.ready and not never
            restarts, started_at = backend.restarts, backend.started_at
        if ready:
            # like kube-proxy endpoints: the Service knows the backend before clients see Ready
            self._services()
        with self.store.lock:
            current = self.store.get(PODS, ns, name)
            if current is None or current["metadata"]["uid"] != backend.pod_uid:
                return
            old = current.get("status") or {}
            status = _pod_status(current, old, state, message, ready, restarts, started_at)
            if status != old:
                current["status"] = status
                self.store.put(PODS, current)

    def _statefulset_status(self, sts: Obj) -> None:
        meta = sts["metadata"]
        revision = f"{meta['name']}-{template_hash(sts['spec']['template'])}"
        pods = [
            p
            for p in self.store.items(PODS, meta["namespace"])
            if any(r.get("uid") == meta["uid"] for r in p["metadata"].get("ownerReferences") or [])
        ]
        ready = sum(1 for p in pods if _pod_ready(p))
        updated = sum(1 for p in pods if p["metadata"]["labels"].get("controller-revision-hash") == revision)
        status: Obj = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(pods),
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        for key, value in (
            ("readyReplicas", ready),
            ("currentReplicas", updated),
            ("updatedReplicas", updated),
            ("availableReplicas", ready),
        ):
            if value:
                status[key] = value
        if "availableReplicas" not in status:
            status["availableReplicas"] = 0
        with self.store.lock:
            current = self.store.get(STATEFULSETS, meta["namespace"], meta["name"])
            if current is None or current["metadata"]["uid"] != meta["uid"]:
                return
            if current.get("status") != status:
                current["status"] = status
                self.store.put(STATEFULSETS, current)

    # -- PVCs and Services ---------------------------------------------------------------------
    def _pvcs(self) -> None:
        pods = list(self.store.items(PODS))
        for pvc in self.store.items(PVCS):
            meta = pvc["metadata"]
            ns, name = meta["namespace"], meta["name"]
            with self.store.lock:
                current = self.store.get(PVCS, ns, name)
                if current is None:
                    continue
                if meta.get("deletionTimestamp"):
                    in_use = any(
                        v.get("persistentVolumeClaim", {}).get("claimName") == name
                        for p in pods
                        if p["metadata"]["namespace"] == ns
                        for v in p["spec"].get("volumes") or []
                    )
                    finalizers = [
                        f for f in meta.get("finalizers") or [] if f != "kubernetes.io/pvc-protection"
                    ]
                    if not in_use and finalizers != meta.get("finalizers"):
                        current["metadata"]["finalizers"] = finalizers
                        if finalizers:
                            self.store.put(PVCS, current)
                        else:
                            self.store.remove(PVCS, ns, name)
                            shutil.rmtree(self.work_dir / "volumes" / meta["uid"], ignore_errors=True)
                    continue
                status = current.get("status") or {}
                if status.get("phase") != "Bound":
                    requests = (current["spec"].get("resources") or {}).get("requests") or {}
                    current["spec"]["volumeName"] = f"pvc-{meta['uid']}"
                    current["status"] = {
                        "phase": "Bound",
                        "accessModes": current["spec"].get("accessModes", []),
                        "capacity": {"storage": requests.get("storage", "1Gi")},
                    }
                    self.store.put(PVCS, current)

    def _services(self) -> None:
        # the reconcile loop and pod drivers both call this: one at a time, or a stale pass that
        # looked before a backend had its port could remove the annotation a newer pass just wrote
        with self._services_lock:
            self._services_locked()

    def _services_locked(self) -> None:
        pods = [p for p in self.store.items(PODS) if not p["metadata"].get("deletionTimestamp")]
        for svc in self.store.items(SERVICES):
            meta = svc["metadata"]
            ns = meta["namespace"]
            selector = (svc.get("spec") or {}).get("selector")
            port = None
            for pod in pods:
                if pod["metadata"]["namespace"] == ns and selector_matches(
                    selector, pod["metadata"].get("labels") or {}
                ):
                    endpoint = self.endpoint_for_pod(ns, pod["metadata"]["name"])
                    if endpoint is not None:
                        port = endpoint[1]
                        if _pod_ready(pod):
                            break
            with self.store.lock:
                current = self.store.get(SERVICES, ns, meta["name"])
                if current is None or current["metadata"]["uid"] != meta["uid"]:
                    continue
                updated = copy.deepcopy(current)
                annotations = updated["metadata"].setdefault("annotations", {})
                if port is not None:
                    annotations[HOST_PORT_ANNOTATION] = str(port)
                else:
                    annotations.pop(HOST_PORT_ANNOTATION, None)
                if not annotations:
                    updated["metadata"].pop("annotations")
                if updated["spec"].get("type") == "LoadBalancer":
                    updated["status"] = {"loadBalancer": {"ingress": [{"ip": POD_IP, "ipMode": "VIP"}]}}
                else:
                    updated["status"] = {"loadBalancer": {}}
                if updated != current:
                    self.store.put(SERVICES, updated)

    def _disruption_budgets(self) -> None:
        """PodDisruptionBudget status, as the disruption controller computes it (minAvailable only)."""
        for pdb in self.store.items(PDBS):
            meta, spec = pdb["metadata"], pdb.get("spec") or {}
            pods = [
                p
                for p in self.store.items(PODS, meta["namespace"])
                if label_selector_matches(spec.get("selector"), p["metadata"].get("labels") or {})
                and not p["metadata"].get("deletionTimestamp")
            ]
            healthy = sum(1 for p in pods if _pod_ready(p))
            desired = int(spec.get("minAvailable", 0)) if isinstance(spec.get("minAvailable"), int) else 0
            status = {
                "observedGeneration": meta.get("generation", 1),
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "disruptionsAllowed": max(healthy - desired, 0),
                "expectedPods": len(pods),
            }
            with self.store.lock:
                current = self.store.get(PDBS, meta["namespace"], meta["name"])
                if current is not None and current.get("status") != status:
                    current["status"] = status
                    self.store.put(PDBS, current)

    # -- helpers for tests -----------------------------------------------------------------------
    def endpoint_for_service(self, namespace: str, name: str) -> tuple[str, int]:
        svc = self.store.get(SERVICES, namespace, name)
        if svc is None:
            raise KeyError(f"service {namespace}/{name} not found")
        selector = svc["spec"].get("selector")
        for pod in self.store.items(PODS, namespace):
            if selector_matches(selector, pod["metadata"].get("labels") or {}) and not pod["metadata"].get(
                "deletionTimestamp"
            ):
                endpoint = self.endpoint_for_pod(namespace, pod["metadata"]["name"])
                if endpoint is not None:
                    return endpoint
        raise KeyError(f"service {namespace}/{name} has no running backend")

    def backend_pids(self) -> list[int]:
        with self.lock:
            return [pid for b in self.backends.values() if b.pg is not None and (pid := b.pg.pid) is not None]


_CONF_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*('(?:[^']|'')*'|[^\s#]*)\s*(#.*)?$")


def _parse_postgresql_conf(text: str) -> dict[str, str]:
    """``name = value`` lines as PostgreSQL reads them (quotes, doubled quotes, comments); later wins."""
    settings: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _CONF_LINE.match(line)
        if match is None:
            raise ConfigError(f"syntax error in the configuration file, line {number}")
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1].replace("''", "'")
        settings[match.group(1).lower()] = value
    return settings


def _data_claim(pod: Obj, sts: Obj) -> str | None:
    """The PVC holding PGDATA: the first volumeClaimTemplate's claim for this pod."""
    vcts = sts["spec"].get("volumeClaimTemplates") or []
    if not vcts:
        return None
    wanted = vcts[0]["metadata"]["name"]
    for volume in pod["spec"].get("volumes") or []:
        if volume.get("name") == wanted and volume.get("persistentVolumeClaim"):
            return str(volume["persistentVolumeClaim"]["claimName"])
    return None


def _pod_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _condition(old: Obj, kind: str, value: bool, reason: str | None = None) -> Obj:
    status = "True" if value else "False"
    previous = next((c for c in old.get("conditions") or [] if c.get("type") == kind), None)
    cond: Obj = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": previous["lastTransitionTime"]
        if previous and previous.get("status") == status
        else now_rfc3339(),
    }
    if reason and not value:
        cond["reason"] = reason
    return cond


def _pod_status(
    pod: Obj, old: Obj, state: str, message: str, ready: bool, restarts: int, started_at: str | None
) -> Obj:
    containers = pod["spec"].get("containers") or []
    running = state == "running"
    scheduled = state not in ("pending",)
    if running:
        cstate: Obj = {"running": {"startedAt": started_at}}
    elif state == "config-error":
        cstate = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
    elif state in ("crashed", "failed"):
        cstate = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
    else:
        cstate = {"waiting": {"reason": "ContainerCreating"}}
    statuses = []
    for i, c in enumerate(containers):
        entry: Obj = {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": ready,
            "restartCount": restarts,
            "started": running,
            "state": cstate,
        }
        if i == 0 and running:
            entry["containerID"] = "standin://" + pod["metadata"]["uid"]
        statuses.append(entry)
    phase = "Running" if running or (restarts and state != "pending") else "Pending"
    reason = None if ready else "ContainersNotReady"
    return {
        "phase": phase,
        "conditions": [
            _condition(old, "PodReadyToStartContainers", scheduled),
            _condition(old, "Initialized", True),
            _condition(old, "Ready", ready, reason),
            _condition(old, "ContainersReady", ready, reason),
            _condition(old, "PodScheduled", True),
        ],
        "hostIP": POD_IP,
        "hostIPs": [{"ip": POD_IP}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "startTime": old.get("startTime") or now_rfc3339(),
        "containerStatuses": statuses,
        "qosClass": old.get("qosClass", "BestEffort"),
    }


def _probe(pg: EmbeddedPostgres, user: str, password: str | None, dbname: str) -> None:
    """Readiness: a real login; also create ``POSTGRES_DB`` like the postgres image's entrypoint."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(
                host=POD_IP,
                port=pg.port,
                user=user,
                password=password,
                dbname="postgres",
                connect_timeout=5,
                autocommit=True,
            ) as conn:
                conn.execute("select 1")
                if dbname != "postgres":
                    exists = conn.execute(
                        "select 1 from pg_database where datname = %s", (dbname,)
                    ).fetchone()
                    if not exists:
                        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
