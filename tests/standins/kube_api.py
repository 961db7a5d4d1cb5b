"""Verb semantics of the Kubernetes API stand-in: create, get, list, replace, patch,
server-side apply and delete, with the defaults, validation and Status errors the
real API server produces for the resources Toygres uses.

Faithful where a client can notice: resourceVersion only moves when an object
really changes (so re-applying an unchanged manifest is a no-op), spec changes bump
``metadata.generation``, immutable StatefulSet/PVC fields are rejected with 422,
objects with finalizers (namespaces, PVCs) and pods are deleted gracefully.

Field ownership is modelled in :mod:`tests.standins.kube_ownership` (``managedFields``, 409
apply conflicts, ``force``); apply is otherwise a create-or-merge (maps merge, lists replace,
fields dropped from a later apply are *not* removed). Not modelled: watches, pagination
(``limit``/``continue`` return everything in one page).
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import re
import uuid
from typing import Any

import yaml

from tests.standins import kube_ownership
from tests.standins.kube_objects import (
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
    Resource,
    Store,
    already_exists,
    conflict,
    invalid,
    json_patch,
    label_selector_matches,
    labels_match,
    merge_patch,
    not_found,
    now_rfc3339,
    parse_label_selector,
    success_status,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAMED = {NAMESPACES, SERVICES}

# StatefulSet spec fields a client may change after creation (the rest is immutable).
_STS_MUTABLE = {
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
}

PATCH_TYPES = {
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
}


def _comparable(obj: Obj) -> Obj:
    clone = copy.deepcopy(obj)
    clone.get("metadata", {}).pop("resourceVersion", None)
    clone.get("metadata", {}).pop("managedFields", None)
    return clone


class KubeApi:
    """The verbs. Every method raises :class:`ApiError` for a Status response."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._node_port = 30000

    # -- helpers -------------------------------------------------------------------------------
    def _require_namespace(self, res: Resource, namespace: str, name: str, creating: bool) -> None:
        if not res.namespaced:
            return
        ns = self.store.get(NAMESPACES, "", namespace)
        if ns is None:
            raise not_found(NAMESPACES, namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                f'{res.qualified} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                "Forbidden",
                {"name": name, "kind": res.plural},
            )

    def _check_type(self, res: Resource, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind is not None and kind != res.kind:
            raise ApiError(400, f"the kind in the data ({kind}) does not match the expected kind {res.kind}")
        if api_version is not None and api_version != res.api_version:
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({res.api_version})",
            )
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        obj.setdefault("metadata", {})
        if obj["metadata"] is None:
            obj["metadata"] = {}
        return obj

    def _validate_name(self, res: Resource, name: str) -> None:
        pattern, limit = (_DNS_LABEL, 63) if res in _LABEL_NAMED else (_DNS_SUBDOMAIN, 253)
        if len(name) > limit or not pattern.match(name):
            raise invalid(
                res,
                name,
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 '
                f"{'label' if res in _LABEL_NAMED else 'subdomain'} must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )

    # -- per-kind defaults and validation ------------------------------------------------------
    def _prepare(self, res: Resource, obj: Obj, old: Obj | None) -> None:
        name = obj["metadata"]["name"]
        spec = obj.get("spec")
        if res is NAMESPACES:
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]} if old is None else old.get("spec", {})
            if old is None:
                obj["status"] = {"phase": "Active"}
        elif res is SECRETS:
            if old is not None and old.get("immutable"):
                if obj.get("data") != old.get("data") or obj.get("stringData"):
                    raise invalid(res, name, "data", "Forbidden: field is immutable when `immutable` is set")
            data = dict(obj.get("data") or {})
            for key, value in data.items():
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, TypeError) as exc:
                    raise ApiError(
                        400,
                        f'Secret in version "v1" cannot be handled as a Secret: illegal '
                        f"base64 data for key {key!r}",
                    ) from exc
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            if data:
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        elif res is SERVICES:
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            old_spec = (old or {}).get("spec", {})
            if spec.get("clusterIP") in (None, ""):
                spec["clusterIP"] = old_spec.get("clusterIP", "127.0.0.1")
            elif old is not None and spec["clusterIP"] != old_spec.get("clusterIP"):
                raise invalid(res, name, "spec.clusterIPs[0]", "Invalid value: field is immutable")
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            old_ports = {p.get("port"): p for p in old_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                if "port" not in port:
                    raise invalid(res, name, "spec.ports[0].port", "Required value")
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port["port"])
                if spec["type"] in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                    previous = old_ports.get(port["port"], {}).get("nodePort")
                    if previous is None:
                        self._node_port += 1
                        previous = self._node_port
                    port["nodePort"] = previous
            if old is None:
                obj["status"] = {"loadBalancer": {}}
        elif res is PVCS:
            spec = obj.setdefault("spec", {})
            spec.setdefault("volumeMode", "Filesystem")
            spec.setdefault("storageClassName", "default")
            if old is not None:

                def strip(s: Obj) -> Obj:
                    s = copy.deepcopy(s)
                    s.get("resources", {}).pop("requests", None)
                    s.pop("volumeName", None)
                    return s

                if strip(spec) != strip(old.get("spec", {})):
                    raise invalid(
                        res,
                        name,
                        "spec",
                        "Forbidden: spec is immutable after creation except "
                        "resources.requests and volumeAttributesClassName for "
                        "bound claims",
                    )
                spec.setdefault("volumeName", old.get("spec", {}).get("volumeName"))
            else:
                obj["metadata"].setdefault("finalizers", ["kubernetes.io/pvc-protection"])
                obj["status"] = {"phase": "Pending"}
        elif res is PODS:
            spec = obj.setdefault("spec", {})
            if not spec.get("containers"):
                raise invalid(res, name, "spec.containers", "Required value")
            spec.setdefault("restartPolicy", "Always")
            if old is None:
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif res is STATEFULSETS:
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
            spec.setdefault(
                "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
            )
            template = spec.get("template") or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            if not spec.get("selector"):
                raise invalid(res, name, "spec.selector", "Required value")
            if not label_selector_matches(spec["selector"], labels):
                raise invalid(
                    res,
                    name,
                    "spec.template.metadata.labels",
                    f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                )
            if not (template.get("spec") or {}).get("containers"):
                raise invalid(res, name, "spec.template.spec.containers", "Required value")
            for vct in spec.get("volumeClaimTemplates") or []:
                vct.setdefault("apiVersion", "v1")
                vct.setdefault("kind", "PersistentVolumeClaim")
                vct_spec = vct.setdefault("spec", {})
                vct_spec.setdefault("volumeMode", "Filesystem")
                vct.setdefault("status", {"phase": "Pending"})
            if old is not None:
                old_spec = old.get("spec", {})
                frozen_new = {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
                frozen_old = {k: v for k, v in old_spec.items() if k not in _STS_MUTABLE}
                if frozen_new != frozen_old:
                    raise invalid(
                        res,
                        name,
                        "spec",
                        "Forbidden: updates to statefulset spec for fields other than 'replicas', "
                        "'ordinals', 'template', 'updateStrategy', "
                        "'persistentVolumeClaimRetentionPolicy' and "
                        "'minReadySeconds' are forbidden",
                    )
            else:
                obj["status"] = {"replicas": 0, "availableReplicas": 0}
        elif res is NETWORK_POLICIES:
            spec = obj.get("spec")
            if not isinstance(spec, dict) or not isinstance(spec.get("podSelector"), dict):
                raise invalid(res, name, "spec.podSelector", "Required value")
            for direction, peers_key in (("ingress", "from"), ("egress", "to")):
                for i, rule in enumerate(spec.get(direction) or []):
                    for port in rule.get("ports") or []:
                        port.setdefault("protocol", "TCP")
                    for j, peer in enumerate(rule.get(peers_key) or []):
                        block = peer.get("ipBlock")
                        if block is not None and not _cidr_ok(block.get("cidr")):
                            raise invalid(
                                res,
                                name,
                                f"spec.{direction}[{i}].{peers_key}[{j}].ipBlock.cidr",
                                f"Invalid value: {block.get('cidr')!r}: must be a valid CIDR",
                            )
            if not spec.get("policyTypes"):
                spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
        elif res is PDBS:
            spec = obj.setdefault("spec", {})
            if "minAvailable" in spec and "maxUnavailable" in spec:
                raise invalid(
                    res, name, "spec", "Invalid value: minAvailable and maxUnavailable cannot be both set"
                )
            if old is None:
                obj["status"] = {
                    "currentHealthy": 0,
                    "desiredHealthy": 0,
                    "disruptionsAllowed": 0,
                    "expectedPods": 0,
                }

    # -- verbs -----------------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.store.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def list(
        self, res: Resource, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> Obj:
        if namespace is not None and res.namespaced and self.store.get(NAMESPACES, "", namespace) is None:
            items: list[Obj] = []
        else:
            items = list(self.store.items(res, namespace if res.namespaced else None))
        if label_selector:
            reqs = parse_label_selector(label_selector)
            items = [o for o in items if labels_match(o["metadata"].get("labels") or {}, reqs)]
        if field_selector:
            for term in [t for t in field_selector.split(",") if t]:
                negate = "!=" in term
                key, value = re.split(r"!=|==|=", term, maxsplit=1)
                items = [o for o in items if (self._field(o, key.strip()) == value.strip()) != negate]
        for item in items:  # like the real server, list items carry no kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": self.store.current_rv},
            "items": items,
        }

    @staticmethod
    def _field(obj: Obj, path: str) -> str:
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    def create(
        self,
        res: Resource,
        namespace: str,
        body: Any,
        dry_run: bool = False,
        manager: str = "unknown",
        applied: Obj | None = None,
    ) -> Obj:
        """``applied``: the apply configuration, when an apply creates the object."""
        obj = self._check_type(res, body)
        meta = obj["metadata"]
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise invalid(res, "", "metadata.name", "Required value: name or generateName is required")
        name = meta["name"]
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        self._validate_name(res, name)
        for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(k, None)
        with self.store.lock:
            self._require_namespace(res, namespace, name, creating=True)
            if self.store.get(res, namespace, name) is not None:
                raise already_exists(res, name)
            if res.has_status:
                obj.pop("status", None)
            self._prepare(res, obj, None)
            self.store.new_meta_fields(meta)
            if applied is not None:
                kube_ownership.record_apply(None, obj, applied, manager)
            else:
                kube_ownership.record_update(None, obj, manager)
            if dry_run:
                return obj
            return self.store.put(res, obj)

    def _write(self, res: Resource, existing: Obj, new: Obj, subresource: str | None, dry_run: bool) -> Obj:
        """Finish an update of ``existing`` to ``new``: keep server-owned fields, validate, and
        store only if something actually changed (the real server keeps resourceVersion then)."""
        name = existing["metadata"]["name"]
        if subresource == "status":
            result = copy.deepcopy(existing)
            result["status"] = new.get("status")
        else:
            result = new
            meta, old_meta = result["metadata"], existing["metadata"]
            if meta.get("name", name) != name:
                raise ApiError(
                    400,
                    f"the name of the object ({meta.get('name')}) does not match the name on "
                    f"the URL ({name})",
                )
            for k in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
            if res.has_status:
                if "status" in existing:
                    result["status"] = existing["status"]
                else:
                    result.pop("status", None)
            self._prepare(res, result, existing)
            if result.get("spec") != existing.get("spec"):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if _comparable(result) == _comparable(existing):
            return existing
        if dry_run:
            return result
        if (
            result["metadata"].get("deletionTimestamp")
            and not result["metadata"].get("finalizers")
            and res not in (PODS, NAMESPACES)
        ):
            self.store.remove(res, existing["metadata"].get("namespace", ""), name)
            return result
        return self.store.put(res, result)

    def replace(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: Any,
        subresource: str | None,
        dry_run: bool = False,
        manager: str = "unknown",
    ) -> Obj:
        obj = self._check_type(res, body)
        with self.store.lock:
            existing = self.store.get(res, namespace, name)
            if existing is None:
                raise not_found(res, name)
            rv = obj["metadata"].get("resourceVersion")
            if rv and rv != existing["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if subresource is None:
                obj["metadata"]["managedFields"] = existing["metadata"].get("managedFields")
                kube_ownership.record_update(existing, obj, manager)
            return self._write(res, existing, obj, subresource, dry_run)

    def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: bytes,
        content_type: str,
        subresource: str | None,
        field_manager: str | None,
        force: bool,
        dry_run: bool = False,
    ) -> tuple[int, Obj]:
        if content_type not in PATCH_TYPES:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(sorted(PATCH_TYPES))}",
            )
        try:
            patch = yaml.safe_load(body) if content_type.endswith("yaml") else yaml.safe_load(body or b"null")
        except yaml.YAMLError as exc:
            raise ApiError(400, f"error decoding patch: {exc}") from exc
        with self.store.lock:
            existing = self.store.get(res, namespace, name)
            if content_type == "application/apply-patch+yaml":
                if not field_manager:
                    raise invalid(res, name, "fieldManager", "Required value: is required for apply patch")
                applied = self._check_type(res, patch)
                if not patch.get("kind") or not patch.get("apiVersion"):
                    raise ApiError(400, "Object 'Kind' is missing in apply configuration")
                if applied["metadata"].get("name", name) != name:
                    raise ApiError(
                        400,
                        f"the name of the object ({applied['metadata'].get('name')}) does not "
                        f"match the name on the URL ({name})",
                    )
                if existing is None:
                    if subresource:
                        raise not_found(res, name)
                    applied["metadata"]["name"] = name
                    return 201, self.create(res, namespace, applied, dry_run, field_manager, applied)
                config = _drop_nulls(applied)
                kube_ownership.check_apply(existing, config, field_manager, force, res.api_version)
                merged = merge_patch(existing, config)
                kube_ownership.record_apply(existing, merged, config, field_manager)
                return 200, self._write(res, existing, merged, subresource, dry_run)
            if existing is None:
                raise not_found(res, name)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise ApiError(400, "json patch must be a list of operations")
                merged = json_patch(existing, patch)
            else:
                if not isinstance(patch, dict):
                    raise ApiError(400, "patch body must be a JSON object")
                merged = merge_patch(existing, patch)
            merged = self._check_type(res, merged)
            rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            if rv and rv != existing["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if subresource is None:
                kube_ownership.record_update(existing, merged, field_manager or "unknown")
            return 200, self._write(res, existing, merged, subresource, dry_run)

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        propagation: str | None,
        grace_period: int | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Objects with finalizers, pods and namespaces are deleted gracefully: they get a
        ``deletionTimestamp`` and the controller removes them; the response is the object.
        Everything else disappears at once and the response is a ``Success`` Status."""
        with self.store.lock:
            existing = self.store.get(res, namespace, name)
            if existing is None:
                raise not_found(res, name)
            if dry_run:
                return existing
            meta = existing["metadata"]
            if res is STATEFULSETS and propagation == "Orphan":
                self._orphan_dependents(namespace, meta["uid"])
            if meta.get("finalizers") or res in (PODS, NAMESPACES):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = now_rfc3339()
                    if res is PODS:
                        meta["deletionGracePeriodSeconds"] = 30 if grace_period is None else grace_period
                    if res is NAMESPACES:
                        existing["status"] = {"phase": "Terminating"}
                    return self.store.put(res, existing)
                return existing
            self.store.remove(res, namespace, name)
            if res is SERVICES:
                # the real API server's Service storage sets ReturnDeletedObject: the client's
                # delete_namespaced_service deserialises the answer as a V1Service
                return existing
            return success_status(res, name, meta["uid"])

    def _orphan_dependents(self, namespace: str, owner_uid: str) -> None:
        for dep_res in (PODS, PVCS):
            for obj in self.store.items(dep_res, namespace):
                refs = obj["metadata"].get("ownerReferences") or []
                kept = [r for r in refs if r.get("uid") != owner_uid]
                if len(kept) != len(refs):
                    obj["metadata"]["ownerReferences"] = kept
                    self.store.put(dep_res, obj)


def _cidr_ok(value: Any) -> bool:
    try:
        ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        return False
    return True


def _drop_nulls(obj: Any) -> Any:
    """An apply configuration's explicit nulls mean "not set", not "delete"."""
    if isinstance(obj, dict):
        return {k: _drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_nulls(v) for v in obj]
    return obj
