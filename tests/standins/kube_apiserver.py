"""A Kubernetes API server stand-in that the real ``kubernetes`` Python client talks to
over a socket on 127.0.0.1.

Usage::

    with KubeApiServer() as api:                 # or the ``kube_apiserver`` fixture
        api.write_kubeconfig(path)               # token user, http:// (or https:// with tls=True)
        client = kubernetes.config.new_client_from_config(str(path))
        ...
        api.endpoint_for_service("ns", "svc")    # -> ("127.0.0.1", <real postgres port>)

What a runtime under test must know:

* Connect to PostgreSQL through the Service: its reachable port is in the annotation
  ``standin.toygres.io/host-port`` when present, else ``spec.ports[0].port``; the host
  is ``spec.clusterIP`` (``127.0.0.1``) or, for ``LoadBalancer`` services,
  ``status.loadBalancer.ingress[0].ip`` (also ``127.0.0.1``).
* Pods of a StatefulSet run a real PostgreSQL: superuser ``POSTGRES_USER`` (default
  ``postgres``), password ``POSTGRES_PASSWORD`` (literal or ``secretKeyRef``), database
  ``POSTGRES_DB`` created if set. Pod ``Ready`` means a real login succeeded.
* Authentication is a bearer token (the kubeconfig user's ``token``); anything else
  is answered with a 401 Status.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.standins.httpbase import Request, Response, StandinHttpServer
from tests.standins.kube_api import KubeApi
from tests.standins.kube_controller import HOST_PORT_ANNOTATION, Controller
from tests.standins.kube_objects import (
    NAMESPACES,
    RESOURCES,
    ApiError,
    Resource,
    Store,
    failure_status,
)
from tests.standins.tls import TlsMaterial, make_tls_material

__all__ = ["HOST_PORT_ANNOTATION", "KubeApiServer"]

KUBE_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-standin",
    "gitCommit": "standin",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_ANONYMOUS_PATHS = {"/version", "/healthz", "/livez", "/readyz"}


def _true(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "")


def _manager(request: Request) -> str:
    """The field manager of a write: ``fieldManager``, else (like the real server) the product
    name of the client's User-Agent."""
    given = request.param("fieldManager")
    if given:
        return given
    agent = request.headers.get("user-agent") or "unknown"
    return agent.split("/", 1)[0] or "unknown"


class KubeApiServer(StandinHttpServer):
    """The API server, its object store, and the controller that makes pods real."""

    def __init__(
        self,
        token: str = "standin-kube-token",
        *,
        tls: bool = False,
        restart_delay: float = 1.0,
        work_dir: Path | None = None,
        tls_bin_dir: Path | None = None,
    ) -> None:
        """``tls_bin_dir``: PostgreSQL binaries with OpenSSL for pods whose configuration turns
        ``ssl`` on (see :mod:`tests.standins.pg_binaries`); without it such pods fail to start."""
        self._own_work_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="kube-standin-")) if work_dir is None else work_dir
        self.tls: TlsMaterial | None = make_tls_material(self.work_dir / "tls") if tls else None
        super().__init__(self.tls.server_context() if self.tls else None)
        self.token = token
        self.store = Store()
        self.api = KubeApi(self.store)
        self.controller = Controller(self.store, self.api, self.work_dir, restart_delay, tls_bin_dir)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> KubeApiServer:
        self.start_http()
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop serving, stop every backing PostgreSQL, remove the work dir if we made it."""
        self.stop_http()
        self.controller.shutdown()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- kubeconfig ------------------------------------------------------------------------------
    def kubeconfig_dict(self, token: str | None = None, context: str = "standin") -> dict[str, Any]:
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.tls.ca_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": context,
            "preferences": {},
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": f"{context}-user", "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-user"}}],
        }

    def kubeconfig_yaml(self, token: str | None = None, context: str = "standin") -> str:
        return str(yaml.safe_dump(self.kubeconfig_dict(token, context), sort_keys=False))

    def write_kubeconfig(self, path: Path, token: str | None = None, context: str = "standin") -> Path:
        path.write_text(self.kubeconfig_yaml(token, context))
        path.chmod(0o600)
        return path

    # -- test helpers / fault switches -----------------------------------------------------------
    def endpoint_for_service(self, namespace: str, name: str) -> tuple[str, int]:
        """``(host, port)`` where the PostgreSQL behind a Service really listens."""
        return self.controller.endpoint_for_service(namespace, name)

    def endpoint_for_pod(self, namespace: str, pod: str) -> tuple[str, int] | None:
        return self.controller.endpoint_for_pod(namespace, pod)

    def pod_never_ready(self, sts_name: str, namespace: str | None = None, enabled: bool = True) -> None:
        """Pods of ``sts_name`` run but never report Ready (``enabled=False`` undoes it)."""
        self.controller.pod_never_ready(sts_name, namespace, enabled)

    def kill_pod(self, namespace: str, pod_name: str) -> None:
        """SIGKILL the pod's PostgreSQL; the pod goes NotReady and restarts after ``restart_delay``."""
        self.controller.kill_pod(namespace, pod_name)

    def hold_down(self, namespace: str, pod_name: str, held: bool = True) -> None:
        """While held, a crashed pod is not restarted (``held=False`` releases it)."""
        self.controller.hold_down(namespace, pod_name, held)

    def restart_pod(self, namespace: str, pod_name: str) -> None:
        self.controller.restart_pod(namespace, pod_name)

    @property
    def restart_delay(self) -> float:
        return self.controller.restart_delay

    @restart_delay.setter
    def restart_delay(self, seconds: float) -> None:
        self.controller.restart_delay = seconds

    @property
    def pod_termination_delay(self) -> float:
        """Seconds a deleted pod stays terminating after its PostgreSQL stopped (default 0)."""
        return self.controller.pod_termination_delay

    @pod_termination_delay.setter
    def pod_termination_delay(self, seconds: float) -> None:
        self.controller.pod_termination_delay = seconds

    def backend_pids(self) -> list[int]:
        """PIDs of the postmasters currently backing pods."""
        return self.controller.backend_pids()

    def get_object(self, resource: str, namespace: str, name: str, group: str = "") -> dict[str, Any] | None:
        """Peek at the store without HTTP (``resource`` is the plural, e.g. ``"pods"``)."""
        return self.store.get(RESOURCES[(group, resource)], namespace, name)

    # -- HTTP ------------------------------------------------------------------------------------
    def fault_response(self, request: Request, status: int, message: str | None = None) -> Response:
        err = ApiError(status, message or f"standin: injected failure for {request.method} {request.path}")
        headers = {"Retry-After": "1"} if status == 429 else {}
        return Response(status, err.status(), headers)

    def handle(self, request: Request) -> Response:
        auth = request.headers.get("authorization")
        if auth != f"Bearer {self.token}" and not (auth is None and request.path in _ANONYMOUS_PATHS):
            return Response(401, failure_status(401, "Unauthorized", "Unauthorized"))
        try:
            return self._route(request)
        except ApiError as err:
            return Response(err.code, err.status())

    def _discovery(self, request: Request) -> Response | None:
        path = request.path.rstrip("/") or "/"
        if path == "/version":
            return Response(200, KUBE_VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, None)
        if path == "/api":
            return Response(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                },
            )
        groups = sorted({r.group for r in RESOURCES.values() if r.group})
        if path == "/apis":
            return Response(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": group,
                            "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
                            "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"},
                        }
                        for group in groups
                    ],
                },
            )
        if path == "/api/v1" or path in {f"/apis/{group}/v1" for group in groups}:
            group = "" if path == "/api/v1" else path.split("/")[2]
            resources = [
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update"],
                }
                for r in RESOURCES.values()
                if r.group == group
            ]
            return Response(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": path.removeprefix("/api/").removeprefix("/apis/"),
                    "resources": resources,
                },
            )
        return None

    def _route(self, request: Request) -> Response:
        found = self._discovery(request)
        if found is not None:
            return found
        segs = [s for s in request.path.split("/") if s]
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if version != "v1" or not rest:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")

        namespace: str | None = None
        name: str | None = None
        sub: str | None = None
        if rest[0] == "namespaces" and group == "" and (len(rest) <= 2 or rest[2] in ("status", "finalize")):
            res = NAMESPACES
            name = rest[1] if len(rest) >= 2 else None
            sub = rest[2] if len(rest) >= 3 else None
            namespace = ""
        elif rest[0] == "namespaces" and len(rest) >= 3:
            namespace, plural = rest[1], rest[2]
            res = self._resource(group, plural)
            name = rest[3] if len(rest) >= 4 else None
            sub = rest[4] if len(rest) >= 5 else None
            if len(rest) > 5 or not res.namespaced:
                raise ApiError(404, "the server could not find the requested resource", "NotFound")
        elif len(rest) == 1:
            res = self._resource(group, rest[0])
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if sub not in (None, "status", "finalize"):
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return self._dispatch(request, res, namespace, name, sub)

    @staticmethod
    def _resource(group: str, plural: str) -> Resource:
        res = RESOURCES.get((group, plural))
        if res is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        return res

    def _dispatch(
        self, request: Request, res: Resource, namespace: str | None, name: str | None, sub: str | None
    ) -> Response:
        method = request.method
        dry_run = request.param("dryRun") == "All"
        if _true(request.param("watch")):
            raise ApiError(
                405, "watch is not supported by the Toygres stand-in; poll with list/get", "MethodNotAllowed"
            )
        if name is None:
            if method == "GET":
                return Response(
                    200,
                    self.api.list(
                        res, namespace, request.param("labelSelector"), request.param("fieldSelector")
                    ),
                )
            if method == "POST" and namespace is not None:
                obj = self.api.create(res, namespace, self._json(request), dry_run, _manager(request))
                return Response(201, obj)
            raise ApiError(
                405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
            )
        ns = namespace or ""
        if method == "GET":
            return Response(200, self.api.get(res, ns, name))
        if method == "PUT":
            obj = self.api.replace(res, ns, name, self._json(request), sub, dry_run, _manager(request))
            return Response(200, obj)
        if method == "PATCH":
            apply = request.content_type == "application/apply-patch+yaml"
            code, obj = self.api.patch(
                res,
                ns,
                name,
                request.body,
                request.content_type,
                sub,
                request.param("fieldManager") if apply else _manager(request),
                _true(request.param("force")),
                dry_run,
            )
            return Response(code, obj)
        if method == "DELETE":
            options = self._json(request) if request.body else {}
            propagation = request.param("propagationPolicy") or (options or {}).get("propagationPolicy")
            grace = request.param("gracePeriodSeconds") or (options or {}).get("gracePeriodSeconds")
            if _true(request.param("orphanDependents")):
                propagation = "Orphan"
            obj = self.api.delete(res, ns, name, propagation, None if grace is None else int(grace), dry_run)
            return Response(200, obj)
        raise ApiError(
            405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
        )

    @staticmethod
    def _json(request: Request) -> Any:
        try:
            return yaml.safe_load(request.body) if request.body else None
        except yaml.YAMLError as exc:
            raise ApiError(400, f"error decoding request body: {exc}") from exc
