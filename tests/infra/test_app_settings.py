"""The Function App's app settings in Bicep against what the Python code reads.

``functions.config.AZURE_APP_SETTINGS`` is the one list of settings the code needs in Azure; every
one must be in modules/functionapp.bicep with the value Azure needs. Every ``TOYGRES_*`` setting
Bicep sets must name a real field of ``toygres.settings.Settings`` or ``FunctionsSettings`` (a typo
would be ignored silently at run time: ``extra="ignore"``), and the literal values must validate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel

from functions.config import AZURE_APP_SETTINGS, STORAGE_CONNECTION, FunctionsSettings
from tests.infra.bicep import BICEP_DIR, BicepFile, decorator, literal
from toygres.settings import AuthMode, Settings

FUNCTION_APP = BICEP_DIR / "modules" / "functionapp.bicep"


def bicep_app_settings() -> dict[str, Any]:
    """The object the ``appsettings`` config resource of the Function App is given."""
    app = BicepFile.load(FUNCTION_APP)
    [config] = [
        name
        for name, spec in app.resources.items()
        if spec["type"] == "Microsoft.Web/sites/config" and app.resource_body(name)["name"] == "appsettings"
    ]
    properties = app.resource_body(config)["properties"]
    return app.variables[str(properties)]["value"]  # type: ignore[no-any-return]


def env_names(model: type[BaseModel], prefix: str, delimiter: str = "__") -> Iterator[str]:
    """The environment variable names pydantic-settings reads for ``model``'s fields."""
    for name, info in model.model_fields.items():
        if isinstance(info.validation_alias, str):
            yield info.validation_alias.upper()
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from env_names(annotation, f"{prefix}{name.upper()}{delimiter}", delimiter)
        yield f"{prefix}{name.upper()}"


def known_setting_names() -> set[str]:
    names = set(env_names(Settings, str(Settings.model_config.get("env_prefix", ""))))
    names |= set(env_names(FunctionsSettings, str(FunctionsSettings.model_config.get("env_prefix", ""))))
    return names


def test_env_names_follow_pydantic_settings() -> None:
    names = known_setting_names()
    assert {"TOYGRES_DATABASE_URL", "TOYGRES_KUBERNETES__NAMESPACE", "TOYGRES_AUTH__JWKS_URL"} <= names
    assert {"AZURE_CLIENT_ID", "TOYGRES_FUNCTIONS_POOL_SIZE"} <= names
    assert "TOYGRES_KUBERNETES" in names  # the group itself (JSON) is also a valid name


def test_every_required_setting_is_set_in_bicep() -> None:
    settings = bicep_app_settings()
    missing = sorted(set(AZURE_APP_SETTINGS) - set(settings))
    assert not missing, f"modules/functionapp.bicep misses app settings {missing}"
    wrong = {
        name: (literal(settings[name]), expected)
        for name, expected in AZURE_APP_SETTINGS.items()
        if expected is not None and literal(settings[name]) != expected
    }
    assert not wrong, f"app settings with the wrong value (bicep, needed): {wrong}"


def test_every_toygres_setting_in_bicep_is_a_real_field() -> None:
    known = known_setting_names()
    typos = sorted(n for n in bicep_app_settings() if n.startswith("TOYGRES_") and n not in known)
    assert not typos, f"not settings fields (typo?): {typos}"


def test_required_settings_are_real_settings_or_platform_ones() -> None:
    known = known_setting_names()
    for name in AZURE_APP_SETTINGS:
        if name.startswith(("TOYGRES_", "AZURE_CLIENT_ID")):
            assert name in known, f"AZURE_APP_SETTINGS names {name}, which no settings model reads"
        else:
            assert name.startswith((f"{STORAGE_CONNECTION}__", "APPLICATIONINSIGHTS_")), name


def test_literal_values_validate_against_the_settings_models(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = bicep_app_settings()
    for key in list(os.environ):
        if key.startswith("TOYGRES_") or key == "AZURE_CLIENT_ID":
            monkeypatch.delenv(key)
    for name, value in settings.items():
        value = literal(value)
        if name.startswith("TOYGRES_") and isinstance(value, str) and not name.startswith("TOYGRES_AUTH__"):
            monkeypatch.setenv(name, value)
    parsed = Settings(_env_file=None)  # type: ignore[call-arg]
    assert parsed.database_auth.value == "entra"
    assert parsed.database_pooler.value == "transaction"
    assert parsed.migrate_on_start is False
    assert parsed.local_runtime_enabled is False
    assert parsed.kubernetes.service_type.value == "LoadBalancer"
    assert parsed.kubernetes.internal_load_balancer is True
    FunctionsSettings()


def test_expression_values_have_the_right_shape() -> None:
    settings = bicep_app_settings()
    app = BicepFile.load(FUNCTION_APP)

    url = app.variables[str(settings["TOYGRES_DATABASE_URL"])]["value"]
    rendered = re.sub(r"\$\{[^}]*\}", "x", url)
    parts = conninfo_to_dict(rendered)
    assert parts["port"] == "6432", "the app goes through the built-in PgBouncer"
    assert parts["sslmode"] == "require"
    assert "password" not in parts, "no password in TOYGRES_DATABASE_URL"
    assert url.startswith("postgresql://${identityName}@"), "the user is the identity's role"

    mode_param = app.params[str(settings["TOYGRES_AUTH__MODE"])]
    allowed = decorator(mode_param, "allowed")
    assert allowed and all(AuthMode(v) for v in allowed)
    assert AuthMode.NONE.value not in allowed, "Azure never runs without authentication"

    pool = app.params[
        str(settings["TOYGRES_FUNCTIONS_POOL_SIZE"]["function"]["parameters"]["value_to_convert"])
    ]
    field = FunctionsSettings.model_fields["pool_size"]
    low = next(m.ge for m in field.metadata if hasattr(m, "ge"))
    high = next(m.le for m in field.metadata if hasattr(m, "le"))
    assert low <= decorator(pool, "min_value") and decorator(pool, "max_value") <= high

    issuer = app.variables[str(settings["TOYGRES_AUTH__ISSUER"])]["value"]
    assert issuer == "${loginEndpoint}${tenantId}/v2.0"
    assert settings["TOYGRES_AUTH__JWKS_URL"] == "${loginEndpoint}${tenantId}/discovery/v2.0/keys"
    assert str(settings["AZURE_CLIENT_ID"]) == str(settings[f"{STORAGE_CONNECTION}__clientId"])


async def test_hints_connect_the_way_bicep_configures_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """functions/hints.py builds its queue clients from the settings Bicep sets (no connection string)."""
    from functions.hints import StorageQueueHints

    settings = bicep_app_settings()
    assert STORAGE_CONNECTION not in settings, "a connection string would carry a key"
    monkeypatch.delenv(STORAGE_CONNECTION, raising=False)
    monkeypatch.setenv(f"{STORAGE_CONNECTION}__queueServiceUri", "https://stexample.queue.core.windows.net/")
    hints = StorageQueueHints.from_environment()
    assert hints is not None
    client = hints._clients["orchestrations"]
    assert client.account_name == "stexample"
    assert type(client.credential).__name__ == "DefaultAzureCredential"
    await hints.close()
