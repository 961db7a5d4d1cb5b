"""The composition root: the control plane's use cases and the wiring from settings to live parts.

:class:`ControlPlane` registers the orchestrations and activities on one engine registry and
offers the use cases (create, delete, get, list, operations, reconcile) that the entry points
(HTTP API, CLI, ``serve``, Azure Functions) call. :mod:`control_plane.bootstrap` builds it from
settings. This is the only layer that sees orchestrations, activities and the domain together.
"""

from .service import (
    RECONCILE_EVERY,
    ControlPlane,
    InstanceGone,
    LifecycleTiming,
    OperationNotFound,
    StartedHook,
    TlsNotServed,
    reconciler_window_id,
)

__all__ = [
    "RECONCILE_EVERY",
    "ControlPlane",
    "InstanceGone",
    "LifecycleTiming",
    "OperationNotFound",
    "StartedHook",
    "TlsNotServed",
    "reconciler_window_id",
]
