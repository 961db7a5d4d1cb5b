"""``toygres serve`` as a user runs it: a subprocess with an embedded PostgreSQL, driven over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from cli.serve import JsonFormatter, ServeOptions, describe_database_url, serve_settings
from toygres.models import RuntimeKind
from toygres.pgserver import free_port
from toygres.settings import KubernetesSettings, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "serve-test-password-0451"


def processes_under(directory: Path) -> list[psutil.Process]:
    """Processes whose command line mentions ``directory`` (postmasters, the watchdog)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(directory) in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
    return found


class Serve:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOYGRES_")}
        env["PYTHONPATH"] = str(REPO_ROOT)  # the checkout, whatever the venv's install looks like
        args = [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.workdir / "control-plane-pg"),
            "--instances-dir",
            str(self.workdir / "instances"),
            "--log-format",
            "json",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"serve exited early:\n{self.log()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"serve did not become healthy:\n{self.log()}"
            time.sleep(0.3)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # not tmp_path: as root, the unprivileged PostgreSQL user cannot traverse pytest's 0700 dirs
    path = Path(tempfile.mkdtemp(prefix="toygres-serve-test-"))
    try:
        yield path
    finally:
        for proc in processes_under(path):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(path, ignore_errors=True)


def wait_operation(client: httpx.Client, location: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(location).json()
        if body["status"] in ("Completed", "Failed", "Cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.postgres
def test_serve_runs_the_whole_lifecycle_and_stops_cleanly(workdir: Path) -> None:
    serve = Serve(workdir)
    try:
        serve.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{serve.port}", timeout=30) as client:
            health = client.get("/api/health").json()
            assert health["default_runtime"] == "local" and health["runtimes"] == ["local"]
            response = client.post(
                "/api/instances", json={"name": "served", "runtime": "local", "password": PASSWORD}
            )
            assert response.status_code == 202, response.text
            created = response.json()
            operation = wait_operation(client, response.headers["location"])
            assert operation["status"] == "Completed", operation
            instance = client.get(f"/api/instances/{created['instance_id']}").json()
            assert instance["state"] == "running"
            assert instance["connection_string"].startswith("postgresql://postgres@127.0.0.1:")
            assert (workdir / "instances" / instance["k8s_name"]).is_dir()

            deleted = client.delete(f"/api/instances/{created['instance_id']}")
            assert deleted.status_code == 202, deleted.text
            assert wait_operation(client, deleted.headers["location"])["status"] == "Completed"
            assert client.get(f"/api/instances/{created['instance_id']}").json()["state"] == "deleted"

        assert serve.terminate() == 0, serve.log()
        lines = [json.loads(line) for line in serve.log().splitlines() if line.startswith("{")]
        messages = [entry["message"] for entry in lines]
        assert any(m.startswith(f"API listening on {serve.url}") for m in messages), messages
        assert any("default runtime: local" in m for m in messages), messages
        assert any("embedded PostgreSQL" in m for m in messages), messages
        assert messages[-1] == "stopped cleanly", messages
        assert PASSWORD not in serve.log()
        assert processes_under(workdir) == []  # embedded server, watchdog and instance all gone

        # the embedded database keeps its data across restarts
        again = Serve(workdir)
        try:
            again.start()
            everything = httpx.get(f"{again.url}/instances", params={"include_deleted": "true"}).json()
            assert [item["id"] for item in everything["items"]] == [created["instance_id"]]
            assert again.terminate() == 0, again.log()
        finally:
            again.kill()
        assert processes_under(workdir) == []
    finally:
        serve.kill()


def test_serve_refuses_a_busy_port_with_a_clear_message(workdir: Path) -> None:
    serve = Serve(workdir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", serve.port))
        busy.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOYGRES_")}
        env["PYTHONPATH"] = str(REPO_ROOT)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "serve",
                "--port",
                str(serve.port),
                "--data-dir",
                str(workdir / "pg"),
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{serve.port}" in result.stderr
    assert not (workdir / "pg").exists()  # failed before starting anything


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from defaults only: no TOYGRES_* variables, no .env file."""
    for key in list(os.environ):
        if key.startswith("TOYGRES_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_serve_defaults_to_the_local_runtime_only_without_a_cluster(tmp_path: Path) -> None:
    options = ServeOptions(instances_dir=tmp_path / "inst")
    plain = serve_settings(Settings(), options)
    assert plain.default_runtime is RuntimeKind.LOCAL
    assert plain.local_data_dir == tmp_path / "inst"
    # an explicit choice is kept, so that build_runtimes can refuse it with the settings to set
    explicit = serve_settings(Settings(default_runtime=RuntimeKind.KUBERNETES), options)
    assert explicit.default_runtime is RuntimeKind.KUBERNETES
    with_cluster = Settings(kubernetes=KubernetesSettings(kubeconfig=tmp_path / "kubeconfig"))
    assert serve_settings(with_cluster, options).default_runtime is RuntimeKind.KUBERNETES
    default_dir = serve_settings(Settings(), ServeOptions()).local_data_dir
    assert default_dir.is_absolute() and default_dir.parts[-2:] == (".toygres", "instances")


def test_database_urls_are_logged_without_their_password() -> None:
    described = describe_database_url("postgresql://app:s3cret-pw@db.example:6543/toygres")
    assert described == "app@db.example:6543/toygres"
    assert "s3cret" not in describe_database_url("host=db password=s3cret-pw dbname=x user=u")


def test_json_log_lines_carry_message_extras_and_exceptions() -> None:
    import logging

    record = logging.LogRecord("toygres.x", logging.ERROR, __file__, 1, "hello %s", ("world",), None)
    record.instance_id = "abc"
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello world" and entry["level"] == "ERROR" and entry["logger"] == "toygres.x"
    assert entry["instance_id"] == "abc" and "ValueError: boom" in entry["exc"]
