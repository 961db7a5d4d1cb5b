"""Stand-ins for az, func, psql, toygres and curl that record their calls for the script tests.

Run as ``python stub_cli.py <program> <args...>`` (tests put tiny wrappers named after the programs
first on PATH). Each call appends ``{"prog", "argv", "env"}`` to ``$STUB_LOG`` (JSON lines) and
keeps what it "created" in ``$STUB_STATE`` (JSON), so a second run sees the first run's results
the way Azure would. ``$STUB_FAIL`` (``prog word word``) makes matching calls fail with exit 1.
Tokens handed out contain ``FAKE-SECRET`` so tests can prove no secret reaches a command line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

SUBSCRIPTION = "00000000-0000-0000-0000-00000000aaaa"
DEPLOYER_ID = "00000000-0000-0000-0000-00000000bbbb"
DEPLOYER_UPN = "dev@contoso.example"
APP_ID = "11111111-2222-3333-4444-555555555555"
APP_OBJECT_ID = "11111111-2222-3333-4444-000000000001"
SP_ID = "11111111-2222-3333-4444-000000000002"
PUBLIC_IP = "203.0.113.7"

OUTPUTS = {
    "API_BASE_URL": "https://func-toygres-dev-abc.azurewebsites.net/api",
    "FUNCTION_APP_NAME": "func-toygres-dev-abc",
    "POSTGRES_HOST": "psql-toygres-dev-abc.postgres.database.azure.com",
    "POSTGRES_DATABASE": "toygres",
    "POSTGRES_PRIVATE_ACCESS": False,
    "AKS_NAME": "aks-toygres-dev-abc",
    "AKS_RESOURCE_GROUP": "rg-toygres-dev",
    "AKS_SUBSCRIPTION_ID": SUBSCRIPTION,
    "INSTANCES_NAMESPACE": "toygres",
    "STORAGE_CLASS": "toygres-premium",
    "IDENTITY_NAME": "id-toygres-dev-abc",
    "IDENTITY_CLIENT_ID": "99999999-0000-0000-0000-000000000001",
    "API_CLIENT_ID": APP_ID,
}


def token(resource: str) -> str:
    return f"eyFAKE-SECRET-{resource}-token"


class Stub:
    def __init__(self, prog: str, argv: list[str]) -> None:
        self.prog = prog
        self.argv = argv
        self.state_path = Path(os.environ["STUB_STATE"])
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        )

    def words(self) -> list[str]:
        out = []
        for arg in self.argv:
            if arg.startswith("-"):
                break
            out.append(arg)
        return out

    def option(self, name: str) -> str | None:
        values = self.options(name)
        return values[0] if values else None

    def options(self, name: str) -> list[str]:
        return [self.argv[i + 1] for i, arg in enumerate(self.argv[:-1]) if arg == name]

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state))

    def record(self, extra: dict[str, Any] | None = None) -> None:
        entry = {
            "prog": self.prog,
            "argv": self.argv,
            "env": {
                "PGPASSWORD": os.environ.get("PGPASSWORD"),
                "TOYGRES_DATABASE_URL": os.environ.get("TOYGRES_DATABASE_URL"),
                "PGUSER": os.environ.get("PGUSER"),
                "PGHOST": os.environ.get("PGHOST"),
                "PGPORT": os.environ.get("PGPORT"),
            },
            **(extra or {}),
        }
        with open(os.environ["STUB_LOG"], "a") as log:
            log.write(json.dumps(entry) + "\n")

    def fail_requested(self) -> bool:
        wanted = os.environ.get("STUB_FAIL", "").split()
        have = [self.prog, *self.words()]
        return bool(wanted) and have[: len(wanted)] == wanted

    def run(self) -> int:
        extra: dict[str, Any] = {}
        if self.prog == "curl" and "-H" in self.argv and self.option("-H") == "@-":
            extra["stdin_header"] = sys.stdin.read()
        if self.prog == "az" and self.words()[:3] == ["aks", "command", "invoke"]:
            extra["files"] = {Path(f).name: Path(f).read_text() for f in self.options("--file")}
        self.record(extra)
        if self.fail_requested():
            print(f"ERROR: {self.prog} {' '.join(self.words())} failed (stub)", file=sys.stderr)
            return 1
        handler = getattr(self, f"do_{self.prog}")
        code: int = handler(extra)
        self.save()
        return code

    # ------------------------------------------------------------------ az
    def do_az(self, extra: dict[str, Any]) -> int:
        words = " ".join(self.words())
        query = self.option("--query") or ""
        if os.environ.get("STUB_LOGGED_OUT") and words.startswith("account"):
            print("ERROR: Please run 'az login' to setup account.", file=sys.stderr)
            return 1
        if words == "account set":
            return 0
        if words == "account show":
            print({"id": SUBSCRIPTION, "user.type": "user", "user.name": DEPLOYER_UPN}[query])
            return 0
        if words == "ad signed-in-user show":
            print({"id": DEPLOYER_ID, "userPrincipalName": DEPLOYER_UPN}[query])
            return 0
        if words == "group create":
            self.state["group"] = self.option("--name")
            return 0
        if words == "group exists":
            print("true" if self.state.get("group") == self.option("--name") else "false")
            return 0
        if words == "group delete":
            self.state.pop("group", None)
            return 0
        if words == "ad app list":
            print(APP_ID if self.state.get("app") else "")
            return 0
        if words == "ad app create":
            self.state["app"] = self.option("--display-name")
            print(APP_ID)
            return 0
        if words == "ad app show":
            print(APP_OBJECT_ID)
            return 0
        if words in ("ad app update", "ad app delete"):
            if words.endswith("delete"):
                self.state.pop("app", None)
            return 0
        if words == "ad sp show":
            if not self.state.get("sp"):
                print("ERROR: Resource does not exist", file=sys.stderr)
                return 3
            print(SP_ID)
            return 0
        if words == "ad sp create":
            self.state["sp"] = True
            print(SP_ID)
            return 0
        if words == "rest":
            method = self.option("--method")
            if method == "GET":
                print("1" if self.state.get("admin_role") else "0")
            elif method == "POST":
                self.state["admin_role"] = True
            return 0
        if words == "deployment group what-if":
            print("Resource changes: 0 to create, 0 to modify (stub)")
            return 0
        if words == "deployment group create":
            self.state["deployed"] = True
            print(json.dumps({k: {"type": "String", "value": v} for k, v in OUTPUTS.items()}))
            return 0
        if words == "deployment group show":
            if not self.state.get("deployed"):
                print("ERROR: DeploymentNotFound", file=sys.stderr)
                return 3
            print(json.dumps({k: {"type": "String", "value": v} for k, v in OUTPUTS.items()}))
            return 0
        if words == "aks command invoke":
            print(os.environ.get("STUB_KUBECTL_EXIT", "0"))
            return 0
        if words == "account get-access-token":
            print(token(self.option("--resource-type") or self.option("--scope") or "arm"))
            return 0
        print(f"stub az: unexpected command: {words}", file=sys.stderr)
        return 2

    # ------------------------------------------------------------------ others
    def do_func(self, extra: dict[str, Any]) -> int:
        if self.words()[:3] != ["azure", "functionapp", "publish"]:
            return 2
        print("Deployment completed successfully. (stub)")
        return 0

    def do_psql(self, extra: dict[str, Any]) -> int:
        if os.environ.get("PGPASSWORD") != token("oss-rdbms"):
            print("psql: error: password authentication failed (stub: no Entra token)", file=sys.stderr)
            return 2
        command = self.option("-c") or ""
        if "pg_roles" in command:
            print("1" if self.state.get("pg_role") else "0")
        elif "pgaadauth_create_principal" in command:
            self.state["pg_role"] = True
            print("Created role for id-toygres-dev-abc")
        elif self.option("-f"):
            self.state["granted"] = True
        return 0

    def do_toygres(self, extra: dict[str, Any]) -> int:
        url = os.environ.get("TOYGRES_DATABASE_URL", "")
        if self.words() != ["migrate"] or ":5432/" not in url or os.environ.get("PGPASSWORD") is None:
            print("stub toygres: expected `migrate` on a direct connection with PGPASSWORD", file=sys.stderr)
            return 2
        self.state["migrated"] = True
        print("durable: up to date\ntoygres: up to date")
        return 0

    def do_curl(self, extra: dict[str, Any]) -> int:
        url = self.argv[-1]
        if "ipify" in url:
            print(PUBLIC_IP, end="")
            return 0
        failures = int(self.state.get("health_failures", os.environ.get("STUB_HEALTH_FAILURES", "0")))
        if failures > 0:
            self.state["health_failures"] = failures - 1
            print("curl: (22) The requested URL returned error: 503", file=sys.stderr)
            return 22
        if f"Bearer {token('api://' + APP_ID + '/.default')}" not in extra.get("stdin_header", ""):
            print("curl: (22) The requested URL returned error: 401", file=sys.stderr)
            return 22
        target = self.option("-o")
        body = '{"status": "ok"}'
        if target:
            Path(target).write_text(body)
        else:
            print(body)
        return 0


if __name__ == "__main__":
    raise SystemExit(Stub(sys.argv[1], sys.argv[2:]).run())
