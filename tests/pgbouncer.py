"""A real PgBouncer (Debian's ``pgbouncer``) in transaction pooling mode, in front of a test server.

Azure Database for PostgreSQL's built-in PgBouncer pools in transaction mode: each transaction
may run on a different server connection, so nothing a session sets (``search_path``, named
prepared statements, LISTEN, session advisory locks) survives from one transaction to the next.
Code that claims to work behind such a pooler is proven here against the real thing.

Fixtures (registered in ``tests/conftest.py``, so any suite can use them):

``pgbouncer``      a started :class:`PgBouncer` in front of the session's embedded server
                   (session scope: one process for the whole run).
``pgbouncer_dsn``  the test's fresh database (``pg_dsn``), reached through that PgBouncer.

When the binary is missing, the fixture installs it with ``apt-get`` if it runs as root (as
``.ci/run`` does up front), fails with what to run if ``apt-get`` exists but it is not root, and
skips only when there is no ``apt-get`` at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from toygres.pgserver import EmbeddedPostgres, free_port

_SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
#: PgBouncer refuses to run as root; as root, the tests run it as the first of these that exists
_SERVICE_USERS = ("postgres", "nobody")
_PR_SET_PDEATHSIG = 1


def find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    for directory in _SEARCH_PATH:
        candidate = Path(directory) / "pgbouncer"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_pgbouncer() -> str:
    """The pgbouncer binary; installed from Debian's archive if missing and we are root."""
    found = find_pgbouncer()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("pgbouncer is not installed and apt-get is not available to install it")
    if os.geteuid() != 0:
        pytest.fail("pgbouncer is not installed: run `sudo apt-get install -y pgbouncer`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [apt, "install", "-y", "--no-install-recommends", "pgbouncer"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run([apt, "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"apt-get install pgbouncer failed:\n{result.stdout}\n{result.stderr}")
    found = find_pgbouncer()
    if found is None:
        pytest.fail("apt-get installed pgbouncer, but no pgbouncer binary was found")
    return found


def _die_with_parent() -> None:  # runs in the child, after the switch to the service user
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class PgBouncer:
    """One pgbouncer process on ``127.0.0.1:port`` pooling every database of ``server_host:server_port``.

    Clients log in as ``user`` without a password (``auth_type = trust``), which is also the
    user pgbouncer logs in to the server with: the embedded test server trusts local clients.
    """

    def __init__(
        self,
        binary: str,
        server_host: str,
        server_port: int,
        *,
        user: str = "postgres",
        pool_mode: str = "transaction",
        pool_size: int = 20,
    ) -> None:
        self.binary = binary
        self.server_host = server_host
        self.server_port = server_port
        self.user = user
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.directory = Path(tempfile.mkdtemp(prefix="toygres-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "pgbouncer.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self) -> Path:
        (self.directory / "users.txt").write_text(f'"{self.user}" ""\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={self.server_host} port={self.server_port} user={self.user}",
                    "[pgbouncer]",
                    f"listen_addr = {self.host}",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.directory / 'users.txt'}",
                    f"pool_mode = {self.pool_mode}",
                    f"default_pool_size = {self.pool_size}",
                    "max_client_conn = 1000",
                    # every test makes a database (a pool of its own) and drops it afterwards
                    "server_idle_timeout = 5",
                    "server_login_retry = 1",
                    "ignore_startup_parameters = extra_float_digits",
                    f"logfile = {self.log_path}",
                    "",
                ]
            )
        )
        return config

    def _run_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"preexec_fn": _die_with_parent}
        if os.geteuid() == 0:
            import pwd

            for name in _SERVICE_USERS:
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    break
            else:
                raise RuntimeError(f"pgbouncer refuses root, and none of {_SERVICE_USERS} exists")
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        return kwargs

    def start(self, timeout: float = 30.0) -> PgBouncer:
        config = self._write_config()
        self.process = subprocess.Popen(
            [self.binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            **self._run_kwargs(),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pgbouncer did not listen on {self.host}:{self.port}:\n{self.log()}")
            time.sleep(0.05)
        with psycopg.connect(self.dsn("postgres"), connect_timeout=10) as conn:
            conn.execute("SELECT 1")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def ensure_running(self) -> None:
        """Restart a pgbouncer that died, with a warning that quotes why.

        Debian bookworm ships PgBouncer 1.18, which can exit with ``FATAL ... disconnect_client():
        bad client state: 0`` when a client closes while its cancel request is in flight
        (pgbouncer/pgbouncer#801, fixed in 1.20). Psycopg sends such requests when a task is
        cancelled mid-query; a test that does so must not take the pooler down for the tests
        after it. Azure's built-in PgBouncer is a later release.
        """
        if self.process is not None and self.process.poll() is None:
            return
        code = None if self.process is None else self.process.returncode
        fatal = [line for line in self.log().splitlines() if "FATAL" in line]
        warnings.warn(
            f"pgbouncer had exited (status {code}); restarting it. {fatal[-1] if fatal else ''}",
            stacklevel=2,
        )
        self.log_path.unlink(missing_ok=True)
        self.start()

    def dsn(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def through(self, dsn: str) -> str:
        """``dsn`` (a URL to the server behind this pooler) pointed at the pooler instead."""
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(netloc=f"{self.user}@{self.host}:{self.port}"))


@pytest.fixture(scope="session")
def pgbouncer(pg_server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    binary = ensure_pgbouncer()
    server = urlsplit(pg_server.dsn("postgres"))
    assert server.hostname is not None and server.port is not None
    bouncer = PgBouncer(binary, server.hostname, server.port, user=server.username or "postgres").start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def pgbouncer_dsn(pgbouncer: PgBouncer, pg_dsn: str) -> str:
    """The test's fresh database, through PgBouncer in transaction pooling mode."""
    pgbouncer.ensure_running()
    return pgbouncer.through(pg_dsn)
