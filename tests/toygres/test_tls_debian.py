"""TLS proven on a real server: Debian's PostgreSQL (with OpenSSL) runs the configuration Toygres
renders for an instance, with certificates from Toygres' CA, and libpq's ``verify-full`` accepts it —
and refuses a wrong CA, a wrong host name, plaintext and TLS older than 1.2.

Skipped (with the reason) when no OpenSSL-enabled server is installed: the embedded binaries have
no OpenSSL. ``.ci/run`` installs Debian's ``postgresql`` package so CI runs these.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from activities.tls_probe import tls_connect_kwargs
from tests.standins.pg_binaries import SKIP_REASON, tls_pg_bin_dir
from toygres.models import DeploymentConfig, InstanceTls, PasswordRef, RuntimeKind, service_dns_names
from toygres.pgserver import EmbeddedPostgres
from toygres.runtimes import manifests
from toygres.runtimes.base import Endpoint, InstanceSpec
from toygres.x509 import CertificateAuthority, issue_server_certificate, new_certificate_authority

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(tls_pg_bin_dir() is None, reason=SKIP_REASON)]

PASSWORD = "tls-proof-Pa55word"
NAMES = service_dns_names("orders-3f2b9c1e", "toygres", "cluster.local")
SPEC = InstanceSpec(
    instance_id="0b7c5f0e-1111-4222-8333-444455556666",
    name="orders-3f2b9c1e",
    postgres_version="17",
    storage_size="1Gi",
    username="app",
    memory_request="256Mi",
    memory_limit="256Mi",
    tls_secret="orders-3f2b9c1e-tls",
    tls_dns_names=tuple(NAMES),
    server_parameters={"statement_timeout": "30000ms"},
)
# the launcher owns the address and socket; every other setting is the ConfigMap's
_LAUNCHER_OWNED = {"listen_addresses", "port", "unix_socket_directories"}
_FILE_SETTINGS = {"ssl_cert_file": "tls.crt", "ssl_key_file": "tls.key", "hba_file": "pg_hba.conf"}


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return new_certificate_authority("Toygres test CA")


@pytest.fixture(scope="module")
def server(ca: CertificateAuthority) -> Iterator[EmbeddedPostgres]:
    issued = issue_server_certificate(ca, NAMES)
    base = Path(tempfile.mkdtemp(prefix="toygres-tls-"))
    files = {
        "tls.crt": issued.cert_pem,
        "tls.key": issued.key_pem,
        "pg_hba.conf": manifests.pg_hba_conf(SPEC),
    }
    data_dir = base / "pgdata"
    settings = {k: v for k, v in manifests.server_settings(SPEC).items() if k not in _LAUNCHER_OWNED}
    for key, name in _FILE_SETTINGS.items():
        settings[key] = str(data_dir / "toygres-files" / name)
    server = EmbeddedPostgres(
        data_dir,
        superuser="app",
        password=PASSWORD,
        server_settings={**settings, "fsync": "off"},
        bin_dir=tls_pg_bin_dir(),
        files=files,
    )
    assert str(server.file_path("tls.crt")) == settings["ssl_cert_file"]
    watchdog = None
    try:
        server.start(timeout=60)
        watchdog = server.stop_when_process_exits()
        yield server
    finally:
        server.stop(mode="immediate")
        if watchdog is not None:
            watchdog.release()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ca_file(ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    path.write_text(ca.cert_pem)
    return path


def _connect(server: EmbeddedPostgres, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    params: dict[str, object] = {
        "hostaddr": "127.0.0.1",
        "port": server.port,
        "user": "app",
        "password": PASSWORD,
        "dbname": "postgres",
        "connect_timeout": 10,
        **kwargs,
    }
    return psycopg.connect(**params)  # type: ignore[arg-type]


def test_verify_full_connects_with_tls_1_2_or_newer(server: EmbeddedPostgres, ca_file: Path) -> None:
    with _connect(server, host=NAMES[0], sslmode="verify-full", sslrootcert=str(ca_file)) as conn:
        ssl, version = conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert ssl is True and version in ("TLSv1.2", "TLSv1.3")
        # the derived and the caller's parameters from the ConfigMap are in force
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SHOW shared_buffers").fetchone() == ("64MB",)
        assert conn.execute("SHOW ssl_min_protocol_version").fetchone() == ("TLSv1.2",)


@pytest.mark.parametrize("name", NAMES)
def test_every_service_name_verifies(server: EmbeddedPostgres, ca_file: Path, name: str) -> None:
    with _connect(server, host=name, sslmode="verify-full", sslrootcert=str(ca_file)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_wrong_ca_is_refused(server: EmbeddedPostgres, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_text(new_certificate_authority("someone else").cert_pem)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(server, host=NAMES[0], sslmode="verify-full", sslrootcert=str(other))


def test_a_wrong_host_name_is_refused(server: EmbeddedPostgres, ca_file: Path) -> None:
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        _connect(
            server,
            host="payments-0a1b2c3d.toygres.svc.cluster.local",
            sslmode="verify-full",
            sslrootcert=str(ca_file),
        )


def test_plaintext_is_rejected_by_the_server(server: EmbeddedPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _connect(server, host=NAMES[0], sslmode="disable")


def test_tls_older_than_1_2_is_refused(server: EmbeddedPostgres, ca_file: Path) -> None:
    with pytest.raises(psycopg.OperationalError):
        _connect(
            server,
            host=NAMES[0],
            sslmode="verify-full",
            sslrootcert=str(ca_file),
            ssl_min_protocol_version="TLSv1",
            ssl_max_protocol_version="TLSv1.1",
        )


def test_the_health_check_route_verifies_the_service_name(
    server: EmbeddedPostgres, ca: CertificateAuthority
) -> None:
    """What the HealthCheck activity does: connect to the endpoint address, verify the server name."""
    config = DeploymentConfig(
        instance_id="0b7c5f0e-1111-4222-8333-444455556666",
        name="orders",
        k8s_name="orders-3f2b9c1e",
        runtime=RuntimeKind.KUBERNETES,
        namespace="toygres",
        postgres_version="17",
        image="postgres:17",
        storage_size="1Gi",
        username="app",
        password_ref=PasswordRef(store="kubernetes-secret", namespace="toygres", name="orders-3f2b9c1e"),
        tls=InstanceTls(server_name=NAMES[0], dns_names=NAMES, secret_name="orders-3f2b9c1e-tls"),
    )
    kwargs = tls_connect_kwargs(config, Endpoint("127.0.0.1", server.port), ca.cert_pem)
    assert kwargs["host"] == NAMES[0] and kwargs["hostaddr"] == "127.0.0.1"
    with psycopg.connect(**kwargs, user="app", password=PASSWORD, dbname="postgres") as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    # and the connection string handed to users reaches the same server the same way
    uri = config.connection_uri("127.0.0.1", server.port)
    assert uri.endswith("?hostaddr=127.0.0.1&sslmode=verify-full") and f"@{NAMES[0]}:" in uri
    with psycopg.connect(uri, password=PASSWORD, sslrootcert=kwargs["sslrootcert"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
