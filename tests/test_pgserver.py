"""The embedded PostgreSQL launcher against real server processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
import pytest

from toygres.pgserver import EmbeddedPostgres, PostgresServerError, free_port

pytestmark = pytest.mark.postgres

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _query(dsn: str, query: str) -> object:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_stop_restart_keeps_data_and_port(pg_tmp_dir: Path) -> None:
    data = pg_tmp_dir / "data"
    pg = EmbeddedPostgres(data, server_settings=FAST)
    try:
        pg.start()
        assert pg.is_running() and pg.pid is not None
        assert (data / "PG_VERSION").exists()
        pg.start()  # idempotent
        assert _query(pg.dsn(), "SHOW max_connections") == "200"
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('survives restart')")
        port = pg.port
        pg.stop()
        assert not pg.is_running() and pg.pid is None
        pg.stop()  # idempotent

        again = EmbeddedPostgres(data, server_settings=FAST)  # a new process would do this
        assert again.port == port
        again.start()
        assert _query(again.dsn(), "SELECT v FROM kept") == "survives restart"
        assert _query(again.dsn(), "SELECT inet_server_port()") == port
    finally:
        pg.stop()


def test_context_manager_and_server_settings(pg_tmp_dir: Path) -> None:
    with EmbeddedPostgres(pg_tmp_dir / "d", server_settings={**FAST, "work_mem": "7MB"}) as pg:
        assert _query(pg.dsn(), "SHOW work_mem") == "7MB"
        assert _query(pg.dsn(), "SHOW fsync") == "off"
        assert _query(pg.dsn(), "SELECT current_user") == "postgres"
    assert not pg.is_running()


def test_password_is_required_and_checked(pg_tmp_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_tmp_dir / "d", superuser="admin", password="c0rrect-h0rse", server_settings=FAST)
    try:
        pg.start()
        dsn = pg.dsn("postgres", with_password=True)
        assert "c0rrect-h0rse" in dsn and "c0rrect-h0rse" not in pg.dsn()
        assert _query(dsn, "SELECT current_user") == "admin"
        assert _query(dsn, "SHOW password_encryption") == "scram-sha-256"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn.replace("c0rrect-h0rse", "wrong"), connect_timeout=10).close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn(), connect_timeout=10).close()  # no password at all
        # the password file given to initdb is gone and was never written into the data dir
        assert not any(
            "c0rrect-h0rse" in p.read_text(errors="ignore") for p in (pg_tmp_dir / "d").glob("*.conf")
        )
    finally:
        pg.stop()


def test_kill_then_restart_recovers(pg_tmp_dir: Path) -> None:
    # synchronous_commit stays on: a committed row must survive SIGKILL (fsync=off is
    # harmless here because the OS page cache outlives the killed processes).
    pg = EmbeddedPostgres(pg_tmp_dir / "d", server_settings={"fsync": "off"})
    try:
        pg.start()
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS v")
        pid = pg.pid
        assert pid is not None
        pg.kill()
        assert not pg.is_running()
        assert pg.pid is None
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn(), connect_timeout=3).close()
        pg.start()  # crash recovery
        assert pg.pid != pid
        assert _query(pg.dsn(), "SELECT v FROM t") == 1
    finally:
        pg.stop()


def test_start_failure_reports_server_log(pg_tmp_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_tmp_dir / "d", server_settings={**FAST, "shared_buffers": "lots"})
    with pytest.raises(PostgresServerError) as info:
        pg.start(timeout=20)
    message = str(info.value)
    assert "failed to start" in message
    assert "shared_buffers" in message  # quoted from the server log
    assert not pg.is_running()


def test_explicit_port_in_use_is_a_clear_error(pg_tmp_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        pg = EmbeddedPostgres(pg_tmp_dir / "d", port=port, server_settings=FAST)
        with pytest.raises(PostgresServerError, match=str(port)):
            pg.start(timeout=20)
        assert not pg.is_running()


def test_auto_port_moves_when_recorded_port_is_taken(pg_tmp_dir: Path) -> None:
    data = pg_tmp_dir / "d"
    pg = EmbeddedPostgres(data, server_settings=FAST)
    pg.start()
    pg.stop()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", pg.port))
        blocker.listen()
        again = EmbeddedPostgres(data, server_settings=FAST)
        try:
            again.start()
            assert again.port != pg.port
            assert _query(again.dsn(), "SELECT 1") == 1
        finally:
            again.stop()


def test_long_data_dir_uses_short_socket_dir(pg_tmp_dir: Path) -> None:
    deep = pg_tmp_dir / ("x" * 60) / ("y" * 60)
    with EmbeddedPostgres(deep, server_settings=FAST) as pg:
        sock_dir = _query(pg.dsn(), "SHOW unix_socket_directories")
        assert isinstance(sock_dir, str) and len(sock_dir) < 60
        assert _query(pg.dsn(), "SELECT 1") == 1
    assert not Path(sock_dir).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the tests run as root")
def test_runs_as_unprivileged_user_when_root(pg_tmp_dir: Path) -> None:
    import psutil

    with EmbeddedPostgres(pg_tmp_dir / "d", server_settings=FAST) as pg:
        assert pg.pid is not None
        assert psutil.Process(pg.pid).username() != "root"


def test_watchdog_stops_server_when_owner_is_killed(pg_tmp_dir: Path) -> None:
    """A test session that dies by SIGKILL must not leave its postmaster behind."""
    import subprocess
    import sys
    import time

    import psutil

    data = pg_tmp_dir / "d"
    owner = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from toygres.pgserver import EmbeddedPostgres\n"
        "pg = EmbeddedPostgres(Path(sys.argv[1]), server_settings={'fsync': 'off'})\n"
        "pg.start()\n"
        "pg.stop_when_process_exits()\n"
        "print(pg.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", owner, str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    pid = int(proc.stdout.strip())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        EmbeddedPostgres(data).kill()
        pytest.fail("the watchdog did not stop the orphaned server")
    assert not EmbeddedPostgres(data).is_running()


def test_dsn_for_database_keeps_the_form_of_the_admin_dsn() -> None:
    from toygres.pgserver import dsn_for_database

    assert (
        dsn_for_database("postgresql://u@127.0.0.1:5432/postgres", "app")
        == "postgresql://u@127.0.0.1:5432/app"
    )
    keyword = dsn_for_database("host=127.0.0.1 port=5432 user=u dbname=postgres", "app")
    assert (
        "dbname=app" in keyword
        and "host=127.0.0.1" in keyword
        and "postgres" not in keyword.split("user=u")[1]
    )
