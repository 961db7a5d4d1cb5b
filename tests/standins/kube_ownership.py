"""Field ownership of the Kubernetes stand-in: ``metadata.managedFields`` and apply conflicts.

What a client of server-side apply can notice, and nothing more:

- every write records which field manager set which fields (``managedFields``, ``FieldsV1``);
- an apply *without* ``force`` that would change a field another manager set answers 409
  ``Conflict`` with a ``FieldManagerConflict`` cause per field, as the real API server does;
- an apply *with* ``force`` takes those fields over; an update (merge patch, PUT) makes its
  manager the owner of the fields it changed.

Simplified: lists are owned as a whole (the real server keys list items by their merge key), and
ownership is kept per manager, not per manager and operation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.standins.kube_objects import ApiError, Obj

Path = tuple[str, ...]
_SKIP_TOP = {"apiVersion", "kind", "status"}
_OWNED_METADATA = {"labels", "annotations"}


def leaf_paths(obj: Obj) -> dict[Path, Any]:
    """The fields of ``obj`` a manager can own, with their values (lists and scalars are leaves)."""
    out: dict[Path, Any] = {}

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(child, (*path, str(key)))
        else:
            out[path] = value

    for key, value in obj.items():
        if key in _SKIP_TOP:
            continue
        if key == "metadata":
            for meta_key in _OWNED_METADATA & set(value or {}):
                walk(value[meta_key], ("metadata", meta_key))
            continue
        walk(value, (key,))
    return out


def field_path(path: Path) -> str:
    return "".join(f".{part}" for part in path)


def _to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def _from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, child in tree.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        paths |= _from_fields_v1(child, path) if child else {path}
    return paths


def owners(obj: Obj) -> dict[str, set[Path]]:
    """Manager -> the fields it owns, from ``metadata.managedFields``."""
    found: dict[str, set[Path]] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        found.setdefault(entry["manager"], set()).update(_from_fields_v1(entry.get("fieldsV1") or {}))
    return found


def _write_owners(obj: Obj, owned: dict[str, set[Path]], operations: dict[str, str]) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj["metadata"]["managedFields"] = [
        {
            "manager": manager,
            "operation": operations.get(manager, "Update"),
            "apiVersion": obj.get("apiVersion", "v1"),
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": _to_fields_v1(paths),
        }
        for manager, paths in sorted(owned.items())
        if paths
    ]


def _operations(obj: Obj) -> dict[str, str]:
    return {e["manager"]: e.get("operation", "Update") for e in obj["metadata"].get("managedFields") or []}


def check_apply(existing: Obj, applied: Obj, manager: str, force: bool, api_version: str) -> None:
    """Refuse (409) an apply that would change fields another manager owns, unless forced."""
    if force:
        return
    current = leaf_paths(existing)
    conflicts = [
        (path, other)
        for path, value in leaf_paths(applied).items()
        for other, paths in owners(existing).items()
        if other != manager and path in paths and current.get(path) != value
    ]
    if not conflicts:
        return
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{other}" using {api_version}',
            "field": field_path(p),
        }
        for p, other in sorted(conflicts)
    ]
    listed = "; ".join(
        f'conflict with "{c["message"].split(chr(34))[1]}" using {api_version}: {c["field"]}' for c in causes
    )
    plural = "conflict" if len(causes) == 1 else "conflicts"
    raise ApiError(409, f"Apply failed with {len(causes)} {plural}: {listed}", "Conflict", {"causes": causes})


def record_apply(existing: Obj | None, result: Obj, applied: Obj, manager: str) -> None:
    """After an apply: the applier owns what it applied; fields it changed are taken from others."""
    owned = owners(existing) if existing is not None else {}
    before = leaf_paths(existing) if existing is not None else {}
    applied_paths = leaf_paths(applied)
    for other, paths in owned.items():
        if other != manager:
            paths -= {p for p, v in applied_paths.items() if before.get(p) != v}
    owned[manager] = set(applied_paths)
    operations = _operations(existing) if existing is not None else {}
    operations[manager] = "Apply"
    _write_owners(result, owned, operations)


def record_update(existing: Obj | None, result: Obj, manager: str) -> None:
    """After a create, merge patch or PUT: the manager owns the fields it set or changed."""
    owned = owners(existing) if existing is not None else {}
    before = leaf_paths(existing) if existing is not None else {}
    changed = {p for p, v in leaf_paths(result).items() if before.get(p, object()) != v}
    for other, paths in owned.items():
        if other != manager:
            paths -= changed
    owned.setdefault(manager, set()).update(changed)
    operations = _operations(existing) if existing is not None else {}
    operations.setdefault(manager, "Update")
    _write_owners(result, owned, operations)
