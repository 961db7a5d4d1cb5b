"""The deployment's certificate authority and the server certificates it issues (``cryptography``).

Pure functions over PEM text, no I/O: where the CA key is kept is the caller's business
(``toygres.runtimes.tls_secrets`` keeps it in a Kubernetes Secret), which keeps this module
testable and keeps the key out of anything that is logged or stored: :class:`CertificateAuthority`
and :class:`IssuedCertificate` hide their keys from ``repr``.

Keys are ECDSA P-256: small, fast to generate in an activity, and accepted by every OpenSSL that
PostgreSQL links. Server certificates are leaf certificates (``CA:FALSE``, ``serverAuth``) whose
subject alternative names are the instance's Service names, which is what libpq's
``sslmode=verify-full`` checks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=90)
#: certificates start being valid a little in the past: clocks of clients and nodes drift
_BACKDATE = timedelta(minutes=5)


class CertificateError(ValueError):
    """A PEM text is not a usable certificate or key."""


@dataclass(frozen=True)
class CertificateAuthority:
    """The deployment's CA: its certificate (public) and private key (never logged or stored in the DB)."""

    cert_pem: str
    key_pem: str = field(repr=False)


@dataclass(frozen=True)
class IssuedCertificate:
    """A server certificate and its private key, as PEM."""

    cert_pem: str
    key_pem: str = field(repr=False)


@dataclass(frozen=True)
class CertificateInfo:
    """What the control plane needs to know about a certificate, none of it secret."""

    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: str
    sha256: str

    def covers(self, names: list[str] | tuple[str, ...]) -> bool:
        return set(names) <= set(self.dns_names) | set(self.ip_addresses)


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a server signs handshakes and agrees on (EC) keys."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def new_certificate_authority(
    common_name: str, *, valid_for: timedelta = CA_VALIDITY, now: datetime | None = None
) -> CertificateAuthority:
    """A self-signed CA that may sign leaf certificates only (``pathlen:0``)."""
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Toygres"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = _now(now) - _BACKDATE
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def _load_ca(ca: CertificateAuthority) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
        key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    except ValueError as exc:
        raise CertificateError(f"the CA certificate or key is not valid PEM: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the CA key is not an ECDSA key")
    return cert, key


def issue_server_certificate(
    ca: CertificateAuthority,
    dns_names: list[str] | tuple[str, ...],
    *,
    ip_addresses: list[str] | tuple[str, ...] = (),
    valid_for: timedelta = SERVER_VALIDITY,
    now: datetime | None = None,
) -> IssuedCertificate:
    """A server certificate for ``dns_names`` (the first is the subject's common name)."""
    if not dns_names:
        raise CertificateError("a server certificate needs at least one DNS name")
    ca_cert, ca_key = _load_ca(ca)
    key = _new_key()
    start = _now(now) - _BACKDATE
    not_after = min(start + valid_for, ca_cert.not_valid_after_utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return IssuedCertificate(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def certificate_info(cert_pem: str) -> CertificateInfo:
    """Names, validity and fingerprint of the first certificate in ``cert_pem``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise CertificateError("not a PEM certificate") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns_names,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=format(cert.serial_number, "x"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def issued_by(cert_pem: str, ca_cert_pem: str) -> bool:
    """True when ``cert_pem`` carries a valid signature of the CA in ``ca_cert_pem``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert_pem: str, key_pem: str) -> bool:
    """True when ``key_pem`` is the private key of ``cert_pem`` (a Secret edited by hand may not be)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(serialization.Encoding.PEM, public)
        == key.public_key().public_bytes(serialization.Encoding.PEM, public)
    )
