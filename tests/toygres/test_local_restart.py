"""Invariant 7: local instances survive a host restart.

A host that goes down takes the instances' servers with it (SIGKILL, stale pid files left
behind) and may come back with their ports taken; the reconciler starts what should run and
records where it runs now. Ports come from outside the kernel's ephemeral range, a stale pid
file never makes Toygres signal somebody else's process, the password file's mode is enforced
on every use, and an initdb killed half-way is cleaned up and done again.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import psycopg
import pytest

from control_plane.bootstrap import build_runtimes
from control_plane.service import ControlPlane
from durable_engine import ManualClock, Runtime, RuntimeStatus
from toygres.models import CreateInstanceRequest, HealthStatus, InstanceState, RuntimeKind
from toygres.runtimes.base import DeployError, InstanceSpec
from toygres.runtimes.local import LocalRuntime
from toygres.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

PASSWORD = "survives-restarts-42"


def spec(name: str) -> InstanceSpec:
    return InstanceSpec(
        instance_id=f"{name}-id", name=name, postgres_version="18", storage_size="1Gi", username="owner"
    )


def ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def postmaster_pid(root: Path, name: str) -> int:
    return int((root / name / "pgdata" / "postmaster.pid").read_text().split()[0])


def power_off(pid: int) -> None:
    """What a host going down does to a server: SIGKILL to it and its children, pid file left."""
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


async def test_after_a_host_restart_the_reconciler_brings_instances_back_and_records_where(
    stepped_local: tuple[ControlPlane, Runtime, ManualClock, Path],
) -> None:
    cp, engine, clock, root = stepped_local
    created = await cp.create_instance(CreateInstanceRequest(name="durable", password=PASSWORD))
    await engine.run_until_idle()
    before = await cp.get_instance(created.instance_id)
    assert before.state is InstanceState.RUNNING and before.port is not None

    power_off(postmaster_pid(root, before.k8s_name))
    # the host comes back and something else got the instance's port first
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, as servers do
        squatter.bind(("127.0.0.1", before.port))
        squatter.listen()
        clock.advance(timedelta(minutes=5))
        reconciler_id = await cp.run_reconciler(now=clock.now())
        await engine.run_until_idle()
        result = await cp.client.get_status(reconciler_id)
        assert result is not None and result.status == RuntimeStatus.COMPLETED, result.error
        assert [c["instance_id"] for c in result.output["converged"] if c["restarted"]] == [
            str(created.instance_id)
        ]

        after = await cp.get_instance(created.instance_id)
        assert after.port is not None and after.port != before.port
        assert after.connection_string is not None
        async with await psycopg.AsyncConnection.connect(after.connection_string, password=PASSWORD) as conn:
            await conn.execute("SELECT 1")
        # and the monitor sees it healthy
        clock.advance(timedelta(seconds=31))
        await engine.run_until_idle()
        assert (await cp.get_instance(created.instance_id)).health_status is HealthStatus.HEALTHY


def test_local_ports_are_outside_the_ephemeral_range(
    local_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = local_root
    monkeypatch.setenv("TOYGRES_LOCAL_PORT_RANGE", "21000-21999")
    settings = Settings(_env_file=None, default_runtime=RuntimeKind.LOCAL, local_data_dir=root)  # type: ignore[call-arg]
    runtime = build_runtimes(settings)[RuntimeKind.LOCAL]
    low, high = ephemeral_range()
    for name in ("first", "second"):
        runtime.deploy(spec(name), PASSWORD)
        endpoint = runtime.status(spec(name)).endpoint
        assert endpoint is not None and not low <= endpoint.port <= high, endpoint
        assert 21000 <= endpoint.port <= 21999


def test_a_stale_pid_file_never_signals_an_unrelated_process(local_root: Path) -> None:
    root = local_root
    runtime = LocalRuntime(root)
    mine, theirs = spec("mine"), spec("theirs")
    runtime.deploy(mine, PASSWORD)
    runtime.deploy(theirs, PASSWORD)
    power_off(postmaster_pid(root, "mine"))
    # the pid in mine's stale pid file now belongs to another postgres (pids are reused)
    pid_file = root / "mine" / "pgdata" / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    other = postmaster_pid(root, "theirs")
    pid_file.write_text("\n".join([str(other), *lines[1:]]) + "\n")

    assert not runtime.status(mine).ready
    assert runtime.delete(mine) is True
    time.sleep(0.5)
    assert psutil.pid_exists(other) and psutil.Process(other).status() != psutil.STATUS_ZOMBIE
    assert runtime.status(theirs).ready


def test_the_password_file_mode_is_enforced_on_every_use(local_root: Path) -> None:
    root = local_root
    runtime = LocalRuntime(root)
    runtime.deploy(spec("guarded"), PASSWORD)
    password_file = root / "guarded" / "password"
    for use in (
        lambda: runtime.read_password(spec("guarded")),
        lambda: runtime.status(spec("guarded")),
        lambda: runtime.deploy(spec("guarded"), PASSWORD),
    ):
        password_file.chmod(0o644)
        use()
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600


def test_an_interrupted_initdb_is_cleaned_and_retried(local_root: Path) -> None:
    root = local_root
    runtime = LocalRuntime(root)
    victim = spec("interrupted")
    killed = threading.Event()

    def kill_initdb() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed.is_set():
            for proc in psutil.process_iter(["name", "cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if proc.info["name"] == "initdb" and str(root / "interrupted") in cmdline:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.set()
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_initdb)
    killer.start()
    with pytest.raises(DeployError):
        runtime.deploy(victim, PASSWORD)
    killer.join()
    assert killed.is_set(), "initdb finished before it could be killed"

    runtime.deploy(victim, PASSWORD)  # the half-made cluster is cleaned and made again
    status = runtime.status(victim)
    assert status.ready and status.endpoint is not None
    with psycopg.connect(
        host="127.0.0.1", port=status.endpoint.port, user="owner", password=PASSWORD, dbname="postgres"
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
