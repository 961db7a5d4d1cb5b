"""The deployment's CA, kept in a Kubernetes Secret in the control plane's namespace.

The CA key is read from and written to the cluster only: never into the metadata database,
orchestration inputs, history or logs (activities return fingerprints and dates, nothing else).
The Secret is created on first use; two control-plane workers racing to create it both end up
with the one that won (the loser's create answers 409 and it reads the winner's).

The Azure profile's intended home for the key is Key Vault (``TOYGRES_TLS__CA_STORE=key-vault``);
:class:`CaStore` is the interface such a store implements. This version ships the Kubernetes store
only, because nothing here can exercise Key Vault (docs/control-plane.md, "TLS").
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, Protocol

from kubernetes.client import CoreV1Api, V1Secret

from toygres.runtimes.base import DeployError
from toygres.x509 import CertificateAuthority, certificate_info, key_matches, new_certificate_authority

Call = Callable[[str, Callable[[], Any]], Any]

ROLE_LABEL = "toygres.io/role"
CA_ROLE = "certificate-authority"


class CaStore(Protocol):
    """Where the deployment's CA lives; ``load_or_create`` is safe to call from many workers."""

    def load_or_create(self, core: CoreV1Api, call: Call) -> CertificateAuthority: ...


def _decode(secret: Any, key: str) -> str | None:
    encoded = (secret.data or {}).get(key)
    return base64.b64decode(encoded).decode("ascii") if encoded else None


class KubernetesSecretCaStore:
    """The CA as a ``kubernetes.io/tls`` Secret ``namespace/name``.

    Cached for ``cache_seconds`` (it changes only if someone replaces the Secret, and then every
    worker follows within that time) so health checks do not read the Secret every time.
    """

    def __init__(
        self,
        namespace: str,
        name: str = "toygres-ca",
        *,
        request_timeout: float = 30.0,
        cache_seconds: float = 600.0,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.request_timeout = request_timeout
        self.cache_seconds = cache_seconds
        self._cached: tuple[CertificateAuthority, float] | None = None

    def load_or_create(self, core: CoreV1Api, call: Call) -> CertificateAuthority:
        if self._cached is not None and time.monotonic() - self._cached[1] < self.cache_seconds:
            return self._cached[0]
        ca = self._read(core, call)
        if ca is None:
            ca = self._create(core, call)
        self._cached = (ca, time.monotonic())
        return ca

    def _read(self, core: CoreV1Api, call: Call) -> CertificateAuthority | None:
        where = f"{self.namespace}/{self.name}"
        try:
            secret = call(
                f"read secret {where}",
                lambda: core.read_namespaced_secret(
                    self.name, self.namespace, _request_timeout=self.request_timeout
                ),
            )
        except DeployError as exc:
            if exc.status == 404:
                return None
            raise
        cert, key = _decode(secret, "tls.crt"), _decode(secret, "tls.key")
        if not cert or not key or not key_matches(cert, key):
            raise DeployError(
                f"secret {where} does not hold a CA certificate and its key (tls.crt, tls.key); "
                "fix or delete it (deleting it makes a new CA: every instance then needs new certificates)",
                retryable=False,
            )
        return CertificateAuthority(cert_pem=cert, key_pem=key)

    def _create(self, core: CoreV1Api, call: Call) -> CertificateAuthority:
        ca = new_certificate_authority(f"Toygres instances CA ({self.namespace}/{self.name})")
        body = V1Secret.model_validate(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "toygres", ROLE_LABEL: CA_ROLE},
                    "annotations": {"toygres.io/ca-sha256": certificate_info(ca.cert_pem).sha256},
                },
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64.b64encode(ca.cert_pem.encode()).decode("ascii"),
                    "tls.key": base64.b64encode(ca.key_pem.encode()).decode("ascii"),
                },
            }
        )
        try:
            call(
                f"create secret {self.namespace}/{self.name}",
                lambda: core.create_namespaced_secret(
                    self.namespace, body, _request_timeout=self.request_timeout
                ),
            )
        except DeployError as exc:
            if exc.status != 409:
                raise
            # another worker created it first: use theirs, so every certificate has one issuer
            winner = self._read(core, call)
            if winner is None:
                raise DeployError(
                    "the CA secret vanished while it was being created", retryable=True
                ) from None
            return winner
        return ca
