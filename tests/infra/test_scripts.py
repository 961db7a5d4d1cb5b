"""scripts/azure/deploy.sh and teardown.sh against recording stand-ins for az, func, psql, toygres, curl.

The stand-ins (tests/infra/stub_cli.py) come first on PATH, answer like the real tools, remember
what they created (so a re-run sees it) and log every call. The tests assert the call sequence,
that a re-run creates nothing, that a failing step stops the script with a helpful message, and
that no token ever appears in a recorded argument or in the scripts' output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra import stub_cli
from tests.infra.bicep import ROOT

DEPLOY = ROOT / "scripts" / "azure" / "deploy.sh"
TEARDOWN = ROOT / "scripts" / "azure" / "teardown.sh"
STUBBED = ("az", "func", "psql", "toygres", "curl")
SECRET_MARK = "FAKE-SECRET"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]

    def commands(self) -> list[str]:
        """``prog word word`` of each call (the part before the first option)."""
        out = []
        for call in self.calls:
            words = [call["prog"]]
            for arg in call["argv"]:
                if arg.startswith("-"):
                    break
                words.append(arg)
            out.append(" ".join(words))
        return out

    def calls_of(self, command: str) -> list[dict[str, Any]]:
        return [c for c, name in zip(self.calls, self.commands(), strict=True) if name == command]


@pytest.fixture
def sandbox(tmp_path: Path) -> Callable[..., Run]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in STUBBED:
        wrapper = bin_dir / prog
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{stub_cli.__file__}" {prog} "$@"\n')
        wrapper.chmod(0o755)
    state = tmp_path / "state.json"
    system_path = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
    python_dir = str(Path(shutil.which("python3") or sys.executable).parent)

    def run(script: Path, *args: str, env: dict[str, str] | None = None, path: str | None = None) -> Run:
        log = tmp_path / "calls.jsonl"
        log.write_text("")
        environment = {
            "PATH": path
            if path is not None
            else f"{bin_dir}{os.pathsep}{python_dir}{os.pathsep}{system_path}",
            "HOME": str(tmp_path),
            "STUB_STATE": str(state),
            "STUB_LOG": str(log),
            "TOYGRES_SMOKE_DELAY": "0",
            "TOYGRES_SMOKE_ATTEMPTS": "3",
            **(env or {}),
        }
        done = subprocess.run(
            ["bash", str(script), *args],
            capture_output=True,
            text=True,
            env=environment,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines() if line]
        return Run(done.returncode, done.stdout, done.stderr, calls)

    return run


TEARDOWN_ARGS = ("--env", "dev", "--resource-group", "rg-toygres-dev", "--yes")
DEPLOY_ARGS = ("--env", "dev", "--resource-group", "rg-toygres-dev", "--location", "swedencentral")

FIRST_RUN = [
    "az account show",
    "az account show",
    "az ad signed-in-user show",
    "az ad signed-in-user show",
    "az ad app list",
    "az ad app create",
    "az ad app show",
    "az rest",
    "az ad app update",
    "az ad sp show",
    "az ad sp create",
    "az rest",
    "az rest",
    "curl",
    "az group create",
    "az deployment group create",
    "az aks command invoke",
    "func azure functionapp publish func-toygres-dev-abc",
    "az account get-access-token",
    "psql",
    "psql",
    "toygres migrate",
    "psql",
    "az account get-access-token",
    "curl",
]


def assert_no_secret(run: Run) -> None:
    for call in run.calls:
        for arg in call["argv"]:
            assert SECRET_MARK not in arg, f"a token is on the command line of {call['prog']}: {arg}"
    assert SECRET_MARK not in run.stdout
    assert SECRET_MARK not in run.stderr


def test_deploy_runs_every_step_in_order(sandbox: Callable[..., Run]) -> None:
    run = sandbox(DEPLOY, *DEPLOY_ARGS)
    assert run.returncode == 0, run.stderr
    assert run.commands() == FIRST_RUN

    [create] = run.calls_of("az deployment group create")
    argv = create["argv"]
    assert argv[argv.index("--template-file") + 1].endswith("infra/bicep/main.bicep")
    assert argv[argv.index("--parameters") + 1].endswith("infra/bicep/main.parameters.json")
    assert "apiClientId=" + stub_cli.APP_ID in argv
    assert f"postgresClientIp={stub_cli.PUBLIC_IP}" in argv
    assert "postgresPrivateAccess=false" in argv
    assert f"deployerPrincipalId={stub_cli.DEPLOYER_ID}" in argv

    [invoke] = run.calls_of("az aks command invoke")
    assert "allowVolumeExpansion: true" in invoke["files"]["storage-class.yaml"]
    assert "name: toygres-premium" in invoke["files"]["storage-class.yaml"]
    assert "kind: Namespace" in invoke["files"]["namespace.yaml"]

    # the database steps authenticate with the deployer's Entra token, through the environment only
    migrate = run.calls_of("toygres migrate")[0]["env"]
    assert migrate["PGPASSWORD"] == stub_cli.token("oss-rdbms")
    assert migrate["TOYGRES_DATABASE_URL"] == (
        f"postgresql://{stub_cli.DEPLOYER_UPN}@{stub_cli.OUTPUTS['POSTGRES_HOST']}:5432/toygres?sslmode=require"
    )
    psql = run.calls_of("psql")
    assert all(c["env"]["PGPORT"] == "5432" and c["env"]["PGUSER"] == stub_cli.DEPLOYER_UPN for c in psql)
    assert any("pgaadauth_create_principal" in " ".join(c["argv"]) for c in psql)
    assert psql[-1]["argv"][-1].endswith("scripts/azure/grant-control-plane.sql")
    assert "identity=id-toygres-dev-abc" in psql[-1]["argv"]

    # the smoke test sends the API token on stdin, never as an argument
    smoke = run.calls_of("curl")[-1]
    assert smoke["argv"][-1] == stub_cli.OUTPUTS["API_BASE_URL"] + "/health"
    assert "Authorization: Bearer eyFAKE-SECRET" in smoke["stdin_header"]
    assert "healthy" in run.stdout
    assert_no_secret(run)


def test_a_second_run_creates_nothing(sandbox: Callable[..., Run]) -> None:
    first = sandbox(DEPLOY, *DEPLOY_ARGS)
    assert first.returncode == 0, first.stderr
    second = sandbox(DEPLOY, *DEPLOY_ARGS)
    assert second.returncode == 0, second.stderr
    commands = second.commands()
    for created in ("az ad app create", "az ad sp create"):
        assert created not in commands
    assert [c["argv"][c["argv"].index("--method") + 1] for c in second.calls_of("az rest")] == [
        "PATCH",
        "GET",
    ]
    assert not any("pgaadauth_create_principal" in " ".join(c["argv"]) for c in second.calls_of("psql"))
    # what stays is idempotent by nature: ARM deployments, kubectl apply, publish, migrations, GRANTs
    assert "az deployment group create" in commands
    assert "exists" in second.stdout
    assert_no_secret(second)


def test_a_failing_step_stops_the_script_and_says_what_to_do(sandbox: Callable[..., Run]) -> None:
    run = sandbox(DEPLOY, *DEPLOY_ARGS, env={"STUB_FAIL": "az deployment group create"})
    assert run.returncode != 0
    assert run.commands()[-1] == "az deployment group create", "nothing may run after the failure"
    assert 'step "infra" failed' in run.stderr
    assert "what to do:" in run.stderr
    assert "az deployment operation group list" in run.stderr
    assert_no_secret(run)


def test_a_failing_database_step_points_at_the_network(sandbox: Callable[..., Run]) -> None:
    run = sandbox(DEPLOY, *DEPLOY_ARGS, env={"STUB_FAIL": "toygres migrate"})
    assert run.returncode != 0
    assert 'step "database" failed' in run.stderr
    assert "port 5432" in run.stderr
    assert run.commands()[-1] == "toygres migrate", "nothing may run after the failed migration"
    assert_no_secret(run)


def test_an_unhealthy_api_fails_after_retries(sandbox: Callable[..., Run]) -> None:
    run = sandbox(DEPLOY, *DEPLOY_ARGS, env={"STUB_HEALTH_FAILURES": "5"})
    assert run.returncode != 0
    health = [c for c in run.calls_of("curl") if "ipify" not in c["argv"][-1]]
    assert len(health) == 3  # TOYGRES_SMOKE_ATTEMPTS
    assert "kept failing after 3 attempts" in run.stderr
    assert "docs/deploy.md" in run.stderr


def test_a_slow_start_is_retried(sandbox: Callable[..., Run]) -> None:
    run = sandbox(DEPLOY, *DEPLOY_ARGS, env={"STUB_HEALTH_FAILURES": "2"})
    assert run.returncode == 0, run.stderr
    assert len([c for c in run.calls_of("curl") if "ipify" not in c["argv"][-1]]) == 3


def test_what_if_changes_nothing(sandbox: Callable[..., Run]) -> None:
    run = sandbox(DEPLOY, *DEPLOY_ARGS, "--what-if", "--client-ip", "198.51.100.4")
    assert run.returncode == 0, run.stderr
    commands = run.commands()
    assert commands[-1] == "az deployment group what-if"
    assert "az deployment group create" not in commands and "curl" not in commands
    assert "postgresClientIp=198.51.100.4" in run.calls[-1]["argv"]


def test_private_postgres_needs_no_client_ip(sandbox: Callable[..., Run]) -> None:
    run = sandbox(DEPLOY, *DEPLOY_ARGS, "--postgres-private", "--only", "entra,infra")
    assert run.returncode == 0, run.stderr
    [create] = run.calls_of("az deployment group create")
    assert "postgresPrivateAccess=true" in create["argv"]
    assert "postgresClientIp=" in create["argv"]
    assert not [c for c in run.calls_of("curl")]


def test_only_reads_outputs_of_the_last_deployment(sandbox: Callable[..., Run]) -> None:
    assert sandbox(DEPLOY, *DEPLOY_ARGS, "--only", "entra,infra").returncode == 0
    run = sandbox(DEPLOY, *DEPLOY_ARGS, "--only", "smoke")
    assert run.returncode == 0, run.stderr
    assert "az deployment group show" in run.commands()
    assert "az deployment group create" not in run.commands()


def test_azd_hooks_read_outputs_from_the_environment(sandbox: Callable[..., Run]) -> None:
    outputs = {k: str(v) for k, v in stub_cli.OUTPUTS.items()}
    assert sandbox(DEPLOY, *DEPLOY_ARGS, "--only", "entra").returncode == 0
    run = sandbox(DEPLOY, *DEPLOY_ARGS, "--azd", "--only", "cluster,database,smoke", env=outputs)
    assert run.returncode == 0, run.stderr
    assert "az deployment group show" not in run.commands()
    assert "az aks command invoke" in run.commands()


def test_missing_tools_and_login_are_reported_before_anything_runs(
    sandbox: Callable[..., Run], tmp_path: Path
) -> None:
    no_func = tmp_path / "no-func"
    no_func.mkdir()
    for prog in ("az", "psql", "toygres", "curl"):
        (no_func / prog).symlink_to(tmp_path / "bin" / prog)
    python_dir = str(Path(shutil.which("python3") or sys.executable).parent)
    run = sandbox(DEPLOY, *DEPLOY_ARGS, path=f"{no_func}{os.pathsep}{python_dir}{os.pathsep}/usr/bin:/bin")
    assert run.returncode == 1
    assert "'func' is not installed" in run.stderr and "azure-functions-core-tools" in run.stderr
    assert run.calls == []

    logged_out = sandbox(DEPLOY, *DEPLOY_ARGS, env={"STUB_LOGGED_OUT": "1"})
    assert logged_out.returncode == 1
    assert "not logged in to Azure" in logged_out.stderr and "az login" in logged_out.stderr
    assert logged_out.commands() == ["az account show"]


def test_bad_arguments_are_refused(sandbox: Callable[..., Run]) -> None:
    assert "unknown step 'nope'" in sandbox(DEPLOY, *DEPLOY_ARGS, "--only", "nope").stderr
    assert "--env must be lowercase" in sandbox(DEPLOY, "--env", "Dev!", "--resource-group", "rg").stderr
    assert "--resource-group is required" in sandbox(DEPLOY, "--env", "dev").stderr


def test_teardown_deletes_once_and_refuses_without_consent(sandbox: Callable[..., Run]) -> None:
    assert sandbox(DEPLOY, *DEPLOY_ARGS, "--only", "entra,infra").returncode == 0

    refused = sandbox(TEARDOWN, "--env", "dev", "--resource-group", "rg-toygres-dev")
    assert refused.returncode == 1 and "without --yes" in refused.stderr
    assert "az group delete" not in refused.commands()

    first = sandbox(
        TEARDOWN, "--env", "dev", "--resource-group", "rg-toygres-dev", "--yes", "--delete-app-registration"
    )
    assert first.returncode == 0, first.stderr
    assert first.commands() == [
        "az account show",
        "az group exists",
        "az group delete",
        "az ad app list",
        "az ad app delete",
    ]
    again = sandbox(
        TEARDOWN, "--env", "dev", "--resource-group", "rg-toygres-dev", "--yes", "--delete-app-registration"
    )
    assert again.returncode == 0, again.stderr
    assert "az group delete" not in again.commands() and "az ad app delete" not in again.commands()
    assert "nothing to delete" in again.stdout


def test_teardown_failure_says_rerun_is_safe(sandbox: Callable[..., Run]) -> None:
    assert sandbox(DEPLOY, *DEPLOY_ARGS, "--only", "entra,infra").returncode == 0
    run = sandbox(
        TEARDOWN,
        "--env",
        "dev",
        "--resource-group",
        "rg-toygres-dev",
        "--yes",
        env={"STUB_FAIL": "az group delete"},
    )
    assert run.returncode != 0
    assert "re-run" in run.stderr
