"""How the health check reaches a TLS instance: verify-full against the deployment's CA.

libpq reads the CA from a file, so the CA certificate (public) is written once per process to a
file named by its fingerprint; a new CA gets a new file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from toygres.models import DeploymentConfig
from toygres.models.connection import tls_route
from toygres.runtimes.base import Endpoint

_lock = threading.Lock()
_files: dict[str, Path] = {}


def ca_file(ca_pem: str) -> Path:
    """A file holding ``ca_pem`` (written once per process and CA)."""
    digest = hashlib.sha256(ca_pem.encode()).hexdigest()[:16]
    with _lock:
        path = _files.get(digest)
        if path is not None and path.exists():
            return path
        fd, name = tempfile.mkstemp(prefix=f"toygres-ca-{digest}-", suffix=".crt")
        with os.fdopen(fd, "w") as fh:
            fh.write(ca_pem)
        _files[digest] = Path(name)
        return Path(name)


def tls_connect_kwargs(config: DeploymentConfig, endpoint: Endpoint, ca_pem: str) -> dict[str, Any]:
    """psycopg connection arguments that reach ``endpoint`` and verify the instance's server name."""
    assert config.tls is not None
    host, hostaddr = tls_route(config.tls.server_name, endpoint.host)
    kwargs: dict[str, Any] = {
        "host": host,
        "port": endpoint.port,
        "sslmode": "verify-full",
        "sslrootcert": str(ca_file(ca_pem)),
    }
    if hostaddr is not None:
        kwargs["hostaddr"] = hostaddr
    return kwargs
