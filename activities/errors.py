"""Error types activities raise, named so orchestrations and retry policies can tell them apart.

The engine surfaces an activity's exception *type name* to orchestration code, so these names
are part of the contract: ``TransientPlatformError`` is worth retrying, the others are not.
"""

from __future__ import annotations

from toygres.runtimes.base import DeployError


class TransientPlatformError(Exception):
    """The platform (Kubernetes API, ARM, a local process) failed in a way a retry may fix."""


class PlatformCredentialError(TransientPlatformError):
    """The control plane could not authenticate to the platform; the instance may be fine."""


class PermanentPlatformError(Exception):
    """The platform refused the request; retrying the same request cannot help."""


class InstanceNotDeployable(Exception):
    """The metadata says the instance must not run (deleting, deleted, failed or unknown).

    Raised by a deploy that comes after the instance left ``creating``/``running``: a queued or
    redelivered deploy must never bring back something a delete removed.
    """


NON_RETRYABLE = frozenset(
    {
        "PermanentPlatformError",
        "LookupError",
        "ValidationError",
        "InvalidStateTransition",
        "InstanceDeleted",
        "InstanceNotDeployable",
    }
)


def platform_error(exc: DeployError) -> Exception:
    """The activity error for a runtime failure: transient when a retry may help, else permanent."""
    return (TransientPlatformError if exc.retryable else PermanentPlatformError)(str(exc))
