"""The ``toygres`` CLI against a real API server (uvicorn on a free port, real control plane)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from api.app import create_app
from cli.main import app
from durable_engine import PostgresProvider
from toygres.models import RuntimeKind
from toygres.pgserver import free_port
from toygres.runtimes.local import LocalRuntime

from .plane import control_plane, kill_local_instances, local_settings

pytestmark = pytest.mark.postgres

PASSWORD = "a-cli-password-of-some-length"


class ApiThread:
    """The API with its control plane and runtime on their own event loop in a background thread."""

    def __init__(self, dsn: str, root: Path) -> None:
        self.dsn = dsn
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="api-under-test", daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(60), "the API did not start"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(60)
        assert not self._thread.is_alive(), "the API thread did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        provider = await PostgresProvider.connect(self.dsn)
        try:
            runtimes = {RuntimeKind.LOCAL: LocalRuntime(self.root)}
            settings = local_settings(self.root)
            async with control_plane(self.dsn, provider, runtimes, settings=settings) as (cp, _):
                config = uvicorn.Config(
                    create_app(lambda: cp), host="127.0.0.1", port=self.port, log_config=None, lifespan="off"
                )
                self._server = uvicorn.Server(config)
                serving = asyncio.create_task(self._server.serve())
                while not self._server.started and not serving.done():
                    await asyncio.sleep(0.05)
                self._ready.set()
                await serving
        finally:
            await provider.close()


@pytest.fixture
def api_url(pg_dsn: str, pg_tmp_dir: Path) -> Iterator[str]:
    root = pg_tmp_dir / "instances"
    server = ApiThread(pg_dsn, root)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        kill_local_instances(root)


def run(args: list[str], url: str | None = None, stdin: str | None = None, columns: int = 160) -> Result:
    env = {"COLUMNS": str(columns)}  # Rich's width when not on a terminal
    if url:
        env["TOYGRES_API_URL"] = url
    return CliRunner().invoke(app, args, env=env, input=stdin)


def flat(text: str) -> str:
    """Output without Rich's box drawing and line wrapping, for phrase matching."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_create_list_get_delete(api_url: str) -> None:
    args = ["instances", "create", "clidb", "--password-stdin", "--wait", "--json"]
    created = run(args, api_url, PASSWORD + "\n")
    assert created.exit_code == 0, created.output
    instance = json.loads(created.stdout)
    assert instance["name"] == "clidb" and instance["state"] == "running"
    assert instance["connection_string"].startswith("postgresql://postgres@127.0.0.1:")
    assert PASSWORD not in created.output

    table = run(["instances", "list"], api_url)
    assert table.exit_code == 0, table.output
    assert "clidb" in table.stdout and "running" in table.stdout and instance["id"] in table.stdout
    for columns in (80, 200):  # whole cells, one row per instance, within the terminal
        narrow = run(["instances", "list"], api_url, columns=columns)
        row = next(line for line in narrow.stdout.splitlines() if instance["id"] in line)
        assert "clidb" in row.split() and "running" in row.split()
        assert max(len(line.rstrip()) for line in narrow.stdout.splitlines()) <= columns
    wide = run(["instances", "list", "--wide"], api_url, columns=80)
    row = next(line for line in wide.stdout.splitlines() if instance["id"] in line)
    assert instance["postgres_version"] in row.split() and instance["storage_size"] in row.split()
    listed = json.loads(run(["instances", "list", "--json"], api_url).stdout)
    assert [item["id"] for item in listed["items"]] == [instance["id"]]

    shown = run(["instances", "get", instance["id"]], api_url)
    assert shown.exit_code == 0, shown.output
    assert instance["connection_string"] in flat(shown.stdout)
    assert "password" in shown.stdout and PASSWORD not in shown.output

    dup = run(["instances", "create", "clidb"], api_url)
    assert dup.exit_code == 1
    assert "already exists" in flat(dup.stderr) and "409" in dup.stderr

    deleted = run(["instances", "delete", instance["id"], "--wait"], api_url)
    assert deleted.exit_code == 0, deleted.output
    assert "deleted" in deleted.stdout
    after: dict[str, Any] = json.loads(run(["instances", "get", instance["id"], "--json"], api_url).stdout)
    assert after["state"] == "deleted"
    operation = json.loads(run(["operations", "get", f"delete-{instance['id']}", "--json"], api_url).stdout)
    assert operation["status"] == "Completed" and operation["kind"] == "delete"

    again = run(["instances", "delete", instance["id"]], api_url)
    assert again.exit_code == 1 and "already deleted" in flat(again.stderr)
    missing = run(["operations", "get", "create-missing"], api_url)
    assert missing.exit_code == 1 and "does not exist" in flat(missing.stderr)


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["instances", "create", "Bad_Name"], "Invalid value for 'NAME': name must be a DNS-1123 label"),
        (["instances", "create", "ok", "--storage", "10XB"], "'--storage': storage_size must be a"),
        (["instances", "create", "ok", "--version", "9"], "'--version': postgres_version must be one of"),
        (["instances", "create", "ok", "--runtime", "docker"], "'--runtime'"),
        (["instances", "create", "ok", "--username", "select"], "reserved SQL key word"),
        (["instances", "get", "not-a-uuid"], "Invalid value for 'ID'"),
        (["instances", "list", "--limit", "0"], "'--limit'"),
        (["instances", "list", "--url", "ftp://x"], "must be an http:// or https:// URL"),
        (["instances", "create"], "Missing argument"),
        (["instances", "create", "ok", "--param", "fsync=off"], "'--param': server_parameters.fsync is not"),
        (["instances", "create", "ok", "--param", "novalue"], "write NAME=VALUE"),
        (["instances", "create", "ok", "--allow", "10.0.0.0/99"], "'--allow': allowed_sources.cidr must be"),
        (["instances", "create", "ok", "--allow", "ns:team"], "write ns:LABEL=VALUE"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], phrase: str) -> None:
    result = run(args, "http://127.0.0.1:9/api")  # nothing listens there: no request may be needed
    assert result.exit_code == 2, result.output
    assert phrase in flat(result.output)


def test_a_short_password_on_stdin_is_refused_locally_and_not_printed() -> None:
    result = run(["instances", "create", "ok", "--password-stdin"], "http://127.0.0.1:9/api", "tiny-pw\n")
    assert result.exit_code == 2
    assert "'--password-stdin': password must have between 12 and 128 characters" in flat(result.output)
    assert "tiny-pw" not in result.output


def test_an_unreachable_api_is_exit_1_with_a_hint() -> None:
    result = run(["instances", "list"], f"http://127.0.0.1:{free_port()}/api")
    assert result.exit_code == 1
    assert "cannot reach the Toygres API" in flat(result.stderr)
    assert "TOYGRES_API_URL" in flat(result.stderr)


def test_migrate_applies_both_schemas_once(pg_dsn: str) -> None:
    first = CliRunner().invoke(app, ["migrate"], env={"TOYGRES_DATABASE_URL": pg_dsn})
    assert first.exit_code == 0, first.output
    lines = dict(line.split(": ", 1) for line in first.stdout.splitlines())
    assert lines["durable"].startswith("0001_") and lines["toygres"].startswith("0001_")
    second = CliRunner().invoke(app, ["migrate"], env={"TOYGRES_DATABASE_URL": pg_dsn})
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines() == ["durable: up to date", "toygres: up to date"]


def test_migrate_without_a_database_url_exits_2() -> None:
    result = CliRunner().invoke(app, ["migrate"], env={"TOYGRES_DATABASE_URL": None})
    assert result.exit_code == 2
    assert "TOYGRES_DATABASE_URL is not set" in flat(result.stderr)


def test_ca_and_catalog_commands(api_url: str, tmp_path: Path) -> None:
    catalog = run(["catalog", "show"], api_url)
    assert catalog.exit_code == 0, catalog.output
    assert re.search(r"17\s+postgres:17\.\d+@sha256:[0-9a-f]{64}", catalog.stdout)
    rollout = run(["catalog", "rollout", "--wait", "--poll-interval", "0.2"], api_url)
    assert rollout.exit_code == 0, rollout.output
    assert "0 instance(s) rolled" in flat(rollout.stdout)
    created = run(
        [
            "instances",
            "create",
            "tuned",
            "--param",
            "statement_timeout=5s",
            "--allow",
            "ns:team=web",
            "--json",
        ],
        api_url,
    )
    assert created.exit_code == 0, created.output
    instance_id = json.loads(created.stdout)["instance_id"]
    missing = run(["instances", "ca", instance_id, "-o", str(tmp_path / "ca.crt")], api_url)
    assert missing.exit_code == 1 and "does not serve TLS" in flat(missing.stderr)
    assert not (tmp_path / "ca.crt").exists()
