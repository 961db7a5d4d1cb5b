"""Throw-away TLS material for the stand-ins.

The Azure SDK refuses to send a bearer token over plain HTTP, so the ARM stand-in
serves HTTPS. Instead of teaching the SDK to skip that check we give it what a real
client expects: a certificate chain it can verify. A tiny CA signs a leaf
certificate for ``127.0.0.1``/``localhost``; clients trust the CA file
(``connection_verify=ca_file`` for azure-core, ``certificate-authority-data`` in a
kubeconfig for the kubernetes client).
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from toygres.x509 import issue_server_certificate, new_certificate_authority


@dataclass(frozen=True)
class TlsMaterial:
    """Paths and PEM bytes of a CA and a server certificate signed by it."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    ca_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


def make_tls_material(directory: Path, common_name: str = "toygres-standin") -> TlsMaterial:
    """Create a CA and a ``127.0.0.1``/``localhost`` server certificate in ``directory`` (valid two days),
    with the same code that issues instances' certificates (:mod:`toygres.x509`)."""
    directory.mkdir(parents=True, exist_ok=True)
    lifetime = dt.timedelta(days=2)
    ca = new_certificate_authority(f"{common_name} CA", valid_for=lifetime)
    issued = issue_server_certificate(ca, ["localhost"], ip_addresses=["127.0.0.1"], valid_for=lifetime)
    ca_file = directory / "ca.pem"
    cert_file = directory / "server.pem"
    key_file = directory / "server-key.pem"
    ca_file.write_text(ca.cert_pem)
    cert_file.write_text(issued.cert_pem)
    key_file.touch(mode=0o600)
    key_file.write_text(issued.key_pem)
    return TlsMaterial(ca_file=ca_file, cert_file=cert_file, key_file=key_file, ca_pem=ca.cert_pem.encode())
