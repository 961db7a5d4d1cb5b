"""``function_app.py`` registers the expected functions, and the deployment inputs agree with the code."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from functions.config import (
    ACTIVITY_QUEUE,
    ORCHESTRATION_QUEUE,
    STORAGE_CONNECTION,
    SWEEP_SCHEDULE,
    FunctionsSettings,
)
from functions.http import create_function_app

from .conftest import REPO, Handlers


def _bindings(handlers: Handlers, name: str) -> list[dict[str, object]]:
    return [
        {k: getattr(v, "value", v) for k, v in binding.items()}
        for binding in handlers.functions[name].get_bindings_dict()["bindings"]
    ]


def test_registers_http_queue_and_timer_functions(registered: Handlers) -> None:
    assert set(registered.functions) == {"http_api", "orchestration_hints", "activity_hints", "sweep"}

    http = _bindings(registered, "http_api")[0]
    assert http["type"] == "httpTrigger"
    assert http["route"] == "/{*route}"
    assert {"GET", "POST", "DELETE"} <= {getattr(m, "value", m) for m in http["methods"]}  # type: ignore[attr-defined]

    for name, queue in (("orchestration_hints", ORCHESTRATION_QUEUE), ("activity_hints", ACTIVITY_QUEUE)):
        (trigger,) = _bindings(registered, name)
        assert trigger == {
            "direction": 0,
            "type": "queueTrigger",
            "name": "msg",
            "queueName": queue,
            "connection": STORAGE_CONNECTION,
        }

    (timer,) = _bindings(registered, "sweep")
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == SWEEP_SCHEDULE == "0 */1 * * * *"


def test_handlers_are_coroutines_with_the_bound_argument_names(registered: Handlers) -> None:
    import inspect

    for name, arg in (("orchestration_hints", "msg"), ("activity_hints", "msg"), ("sweep", "timer")):
        fn = registered[name]
        assert inspect.iscoroutinefunction(fn)
        params = inspect.signature(fn).parameters
        assert list(params) == [arg]
        # the worker binds by annotation: it must be a class, not a string
        assert isinstance(params[arg].annotation, type)


def _seconds(value: str) -> int:
    h, m, s = (int(part) for part in value.split(":"))
    return h * 3600 + m * 60 + s


def test_host_json_fits_the_budgets() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == "api"
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"  # what StorageQueueHints sends
    timeout = _seconds(host["functionTimeout"])
    defaults = FunctionsSettings()
    # a drain stops fetching at its budget, then finishes what runs: leave room for that
    assert max(defaults.orchestration_budget_seconds, defaults.activity_budget_seconds) <= timeout / 2
    assert defaults.sweep_budget_seconds < 60  # the sweep runs every minute


def test_local_settings_example_has_no_secrets_and_uses_azurite() -> None:
    example = json.loads((REPO / "local.settings.example.json").read_text())
    values = example["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values[STORAGE_CONNECTION] == "UseDevelopmentStorage=true"
    assert not re.search(r"(?i)(password|accountkey|:[^/@]+@)", json.dumps(values))


def test_requirements_cover_the_runtime_dependencies() -> None:
    def names(lines: list[str]) -> set[str]:
        out = set()
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line:
                out.add(re.split(r"[\[<>=~!; ]", line, maxsplit=1)[0].lower())
        return out

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = names(project["dependencies"])
    listed = names((REPO / "requirements.txt").read_text().splitlines())
    assert required <= listed, required - listed
    assert {"azure-functions", "azure-storage-queue", "aiohttp"} <= listed


def test_funcignore_keeps_what_the_app_needs() -> None:
    ignored = {line.strip().rstrip("/") for line in (REPO / ".funcignore").read_text().splitlines()}
    for needed in (
        "function_app.py",
        "host.json",
        "requirements.txt",
        "functions",
        "toygres",
        "durable_engine",
        "activities",
        "orchestrations",
        "migrations",
    ):
        assert needed not in ignored
    assert {"tests", "local.settings.json", ".venv"} <= ignored
    assert Path(REPO / "function_app.py").read_text().count("register_functions") == 2


def test_the_function_key_gates_the_api_only_when_the_app_does_not_authenticate_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOYGRES_AUTH__MODE", raising=False)
    assert _http_auth_level() == "function"
    for mode in ("jwt", "app-service"):
        monkeypatch.setenv("TOYGRES_AUTH__MODE", mode)
        assert _http_auth_level() == "anonymous"
    monkeypatch.setenv("TOYGRES_AUTH__MODE", "none")
    assert _http_auth_level() == "function"


def _http_auth_level() -> str:
    app = create_function_app()
    (function,) = app.get_functions()
    (binding,) = function.get_bindings_dict()["bindings"][:1]
    level = binding["authLevel"]
    return str(getattr(level, "value", level)).lower()
