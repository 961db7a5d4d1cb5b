"""What some runtimes can do beyond :class:`~toygres.runtimes.base.InstanceRuntime`.

Kept out of the base protocol so the local runtime, which cannot serve TLS (the embedded binaries
have no OpenSSL) and has no rollouts, does not have to pretend. Activities ask with ``isinstance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from toygres.runtimes.base import InstanceSpec
from toygres.x509 import CertificateInfo


@dataclass(frozen=True)
class RolloutStatus:
    """Whether the running pod is the one the last apply asked for, and ready."""

    complete: bool
    message: str


@runtime_checkable
class TlsRuntime(Protocol):
    """A runtime whose instances serve TLS with certificates from the deployment's CA."""

    def ca_certificate(self) -> str:
        """The CA certificate (PEM) clients verify instances with; created on first use."""
        ...

    def certificate_status(self, spec: InstanceSpec) -> CertificateInfo | None:
        """The instance's server certificate, or None when it has none the current CA issued."""
        ...

    def rotate_certificate(self, spec: InstanceSpec, replaces_sha256: str) -> CertificateInfo:
        """Issue a new server certificate if the current one is still ``replaces_sha256`` or is not
        usable (so a retry does not rotate twice), restart the instance onto it; return the current one."""
        ...


@runtime_checkable
class RollingRuntime(Protocol):
    """A runtime that replaces pods when their template changes (new image, certificate, config)."""

    def rollout_status(self, spec: InstanceSpec) -> RolloutStatus: ...
