"""Object model of the Kubernetes API stand-in: resource table, Status bodies,
patch algebra and label selectors.

Kept apart from the HTTP layer so the controller can use the same store and the
same rules (resourceVersion, generation) without going through sockets.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``statefulsets.apps`` / ``secrets``: how the real server names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: dict[tuple[str, str], Resource] = {
    (r.group, r.plural): r
    for r in (
        Resource("", "v1", "namespaces", "Namespace", namespaced=False, has_status=True),
        Resource("", "v1", "secrets", "Secret", namespaced=True, has_status=False),
        Resource("", "v1", "configmaps", "ConfigMap", namespaced=True, has_status=False),
        Resource("", "v1", "services", "Service", namespaced=True, has_status=True),
        Resource(
            "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", namespaced=True, has_status=True
        ),
        Resource("", "v1", "pods", "Pod", namespaced=True, has_status=True),
        Resource("apps", "v1", "statefulsets", "StatefulSet", namespaced=True, has_status=True),
        Resource(
            "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", namespaced=True, has_status=False
        ),
        Resource(
            "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", namespaced=True, has_status=True
        ),
    )
}

NAMESPACES = RESOURCES[("", "namespaces")]
SECRETS = RESOURCES[("", "secrets")]
SERVICES = RESOURCES[("", "services")]
PVCS = RESOURCES[("", "persistentvolumeclaims")]
PODS = RESOURCES[("", "pods")]
CONFIGMAPS = RESOURCES[("", "configmaps")]
STATEFULSETS = RESOURCES[("apps", "statefulsets")]
NETWORK_POLICIES = RESOURCES[("networking.k8s.io", "networkpolicies")]
PDBS = RESOURCES[("policy", "poddisruptionbudgets")]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- Status bodies -------------------------------------------------------------------------------

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """Raised anywhere in request handling; becomes a ``Status`` body with ``code``."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "InternalError")
        self.details = details

    def status(self) -> Obj:
        return failure_status(self.code, self.message, self.reason, self.details)


def failure_status(code: int, message: str, reason: str, details: dict[str, Any] | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(res: Resource, name: str) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = res.plural
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', "NotFound", _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, f'{res.qualified} "{name}" already exists', "AlreadyExists", _details(res, name))


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "Conflict",
        _details(res, name),
    )


def invalid(res: Resource, name: str, field: str, message: str) -> ApiError:
    details = _details(res, name)
    details["causes"] = [{"reason": "FieldValueInvalid", "message": message, "field": field}]
    return ApiError(
        422,
        f"{res.kind}.{res.group or ''}".rstrip(".") + f' "{name}" is invalid: {field}: {message}',
        "Invalid",
        details,
    )


def success_status(res: Resource, name: str, uid: str) -> Obj:
    details = _details(res, name)
    details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


# -- patch algebra -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """A compact RFC 6902 implementation (add, remove, replace, test) - the subset clients send."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, "invalid JSON patch operation")
        parts = _pointer(op["path"])
        if not parts:
            if op["op"] in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise ApiError(422, "cannot remove the document root")
        parent = doc
        for part in parts[:-1]:
            try:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            except (KeyError, IndexError, ValueError) as exc:
                raise ApiError(
                    422, f"jsonpatch {op['op']} operation does not apply: doc is missing path: {op['path']}"
                ) from exc
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "remove":
                parent.pop(index)
            elif kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            elif kind == "test":
                if parent[index] != op["value"]:
                    raise ApiError(422, f"testing value {op['path']} failed")
            else:
                raise ApiError(422, f"unsupported JSON patch op {kind!r}")
        elif isinstance(parent, dict):
            if kind == "add":
                parent[last] = copy.deepcopy(op["value"])
            elif kind in ("remove", "replace", "test") and last not in parent:
                raise ApiError(
                    422, f"jsonpatch {kind} operation does not apply: doc is missing path: {op['path']}"
                )
            elif kind == "remove":
                del parent[last]
            elif kind == "replace":
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "test":
                if parent[last] != op["value"]:
                    raise ApiError(422, f"testing value {op['path']} failed")
            else:
                raise ApiError(422, f"unsupported JSON patch op {kind!r}")
        else:
            raise ApiError(422, f"jsonpatch path {op['path']} does not apply")
    return doc


# -- label selectors -----------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str) -> list[tuple[str, str, set[str]]]:
    """Parse ``a=b,c!=d,e,!f,g in (h,i)`` into (key, operator, values) requirements."""
    reqs: list[tuple[str, str, set[str]]] = []
    for term in _split_selector(selector):
        m = _SET_RE.match(term)
        if m:
            reqs.append((m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            reqs.append((key.strip(), "!=", {value.strip()}))
        elif "==" in term:
            key, value = term.split("==", 1)
            reqs.append((key.strip(), "=", {value.strip()}))
        elif "=" in term:
            key, value = term.split("=", 1)
            reqs.append((key.strip(), "=", {value.strip()}))
        elif term.startswith("!"):
            reqs.append((term[1:].strip(), "!exists", set()))
        elif re.fullmatch(r"[\w./-]+", term):
            reqs.append((term, "exists", set()))
        else:
            raise ApiError(400, f"unable to parse requirement: {term!r}")
    return reqs


def labels_match(labels: dict[str, str], reqs: list[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        if op in ("=", "in") and (not present or labels[key] not in values):
            return False
        if op in ("!=", "notin") and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


def selector_matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """A Service-style map selector; an empty selector selects nothing (like Services)."""
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A ``LabelSelector`` (matchLabels + matchExpressions), as used by StatefulSets."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}[expr["operator"]]
        if not labels_match(labels, [(expr["key"], op, set(expr.get("values") or []))]):
            return False
    return True


# -- the store -----------------------------------------------------------------------------------

Key = tuple[Resource, str, str]  # (resource, namespace or "", name)


class Store:
    """All objects, a monotonic resourceVersion, and a change signal for the controller."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.on_change: Callable[[], None] | None = None  # the controller's wake-up hook
        self._objects: dict[Key, Obj] = {}
        self._rv = 1000

    def next_rv(self) -> str:
        with self.lock:
            self._rv += 1
            return str(self._rv)

    @property
    def current_rv(self) -> str:
        with self.lock:
            return str(self._rv)

    def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self._objects.get((res, namespace if res.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def items(self, res: Resource, namespace: str | None = None) -> Iterator[Obj]:
        with self.lock:
            found = [
                copy.deepcopy(obj)
                for (r, ns, _), obj in self._objects.items()
                if r == res and (namespace is None or ns == namespace)
            ]
        found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return iter(found)

    def put(self, res: Resource, obj: Obj) -> Obj:
        """Store ``obj`` with a fresh resourceVersion; returns a copy of what was stored."""
        with self.lock:
            meta = obj["metadata"]
            meta["resourceVersion"] = self.next_rv()
            key = (res, meta.get("namespace", "") if res.namespaced else "", meta["name"])
            self._objects[key] = copy.deepcopy(obj)
        self._notify()
        return copy.deepcopy(obj)

    def _notify(self) -> None:
        hook = self.on_change
        if hook is not None:
            hook()

    def remove(self, res: Resource, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self._objects.pop((res, namespace if res.namespaced else "", name), None)
            if obj is not None:
                self._rv += 1
        if obj is not None:
            self._notify()
        return obj

    def new_meta_fields(self, meta: Obj) -> None:
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta.setdefault("generation", 1)
