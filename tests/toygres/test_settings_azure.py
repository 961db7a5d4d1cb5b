"""The settings the Azure profile sets (docs/deploy.md): defaults, parsing and validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toygres.settings import AuthMode, DatabaseAuth, DatabasePooler, Settings

TENANT = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TOYGRES_") or key == "AZURE_CLIENT_ID":
            monkeypatch.delenv(key)


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_defaults_keep_the_local_behaviour() -> None:
    s = settings()
    assert s.database_auth is DatabaseAuth.PASSWORD
    assert s.database_pooler is DatabasePooler.NONE
    assert s.migrate_on_start is True
    assert s.local_runtime_enabled is True
    assert s.azure_client_id is None
    assert s.auth.mode is AuthMode.NONE
    assert s.kubernetes.internal_load_balancer is False


def test_the_azure_profile_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "TOYGRES_DATABASE_AUTH": "entra",
        "TOYGRES_DATABASE_POOLER": "transaction",
        "TOYGRES_MIGRATE_ON_START": "false",
        "TOYGRES_LOCAL_RUNTIME_ENABLED": "false",
        "AZURE_CLIENT_ID": "12345678-1234-1234-1234-123456789abc",
        "TOYGRES_AUTH__MODE": "jwt",
        "TOYGRES_AUTH__ISSUER": f"{TENANT}/v2.0",
        "TOYGRES_AUTH__AUDIENCE": "12345678-aaaa-bbbb-cccc-123456789abc",
        "TOYGRES_AUTH__JWKS_URL": f"{TENANT}/discovery/v2.0/keys",
        "TOYGRES_KUBERNETES__INTERNAL_LOAD_BALANCER": "true",
    }.items():
        monkeypatch.setenv(name, value)
    s = settings()
    assert (s.database_auth, s.database_pooler) == (DatabaseAuth.ENTRA, DatabasePooler.TRANSACTION)
    assert not s.migrate_on_start and not s.local_runtime_enabled
    assert s.azure_client_id == "12345678-1234-1234-1234-123456789abc"
    assert s.auth.mode is AuthMode.JWT and s.auth.jwks_url == f"{TENANT}/discovery/v2.0/keys"
    assert s.kubernetes.internal_load_balancer is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOYGRES_AUTH__MODE": "jwt"}, "needs auth.issuer, auth.audience, auth.jwks_url"),
        (
            {"TOYGRES_AUTH__MODE": "jwt", "TOYGRES_AUTH__AUDIENCE": "x"},
            "needs auth.issuer, auth.jwks_url (TOYGRES_AUTH__ISSUER, __AUDIENCE, __JWKS_URL)",
        ),
        (
            {
                "TOYGRES_AUTH__MODE": "jwt",
                "TOYGRES_AUTH__ISSUER": "https://login.example/v2.0",
                "TOYGRES_AUTH__AUDIENCE": "x",
                "TOYGRES_AUTH__JWKS_URL": "http://login.example/keys",
            },
            "auth.jwks_url must be an https:// URL",
        ),
        ({"TOYGRES_AUTH__MODE": "basic"}, "auth.mode"),
        ({"AZURE_CLIENT_ID": "not-a-guid"}, "must be a client id"),
        ({"TOYGRES_DATABASE_AUTH": "kerberos"}, "database_auth"),
        ({"TOYGRES_DATABASE_POOLER": "session"}, "database_pooler"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as error:
        settings()
    assert message in str(error.value)
    assert "not-a-guid" not in str(error.value), "validation errors never echo the input"


def test_app_service_mode_needs_no_token_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOYGRES_AUTH__MODE", "app-service")
    assert settings().auth.mode is AuthMode.APP_SERVICE
