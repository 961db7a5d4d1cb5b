"""API authentication and roles, against an Entra stand-in with keys made in the test.

The API runs over a real control plane (engine + metadata on PostgreSQL, local runtime); tokens
are real RS256 JWTs whose keys the API fetches from the stand-in's JWKS endpoint over a socket.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from control_plane.service import ControlPlane
from tests.standins.entra import EntraStandin, app_service_principal
from toygres.settings import AuthMode, AuthSettings

from .plane import local_settings

pytestmark = pytest.mark.postgres

AUDIENCE = "api://toygres-test"
REPO_ROOT = Path(__file__).resolve().parents[2]
READER, OPERATOR, ADMIN = "Toygres.Reader", "Toygres.Operator", "Toygres.Admin"


@pytest.fixture
def entra() -> Iterator[EntraStandin]:
    server = EntraStandin().start()
    try:
        yield server
    finally:
        server.stop()


def client_for(plane: ControlPlane, auth: AuthSettings) -> httpx.AsyncClient:
    app = create_app(lambda: plane, auth=auth)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://toygres")


@pytest.fixture
async def jwt_api(api_plane: ControlPlane, entra: EntraStandin) -> AsyncIterator[httpx.AsyncClient]:
    auth = AuthSettings(mode=AuthMode.JWT, issuer=entra.issuer, audience=AUDIENCE, jwks_url=entra.jwks_url)
    async with client_for(api_plane, auth) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, phrase: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == {401: "unauthorized", 403: "forbidden"}[status]
    assert phrase in error["message"], error["message"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return error


def tampered(token: str) -> str:
    """The token with one claim changed after signing: the signature no longer matches."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = [ADMIN]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_a_valid_token_with_the_role_is_served(jwt_api: httpx.AsyncClient, entra: EntraStandin) -> None:
    reader = bearer(entra.token(audience=AUDIENCE, roles=[READER]))
    listed = await jwt_api.get("/api/instances", headers=reader)
    assert listed.status_code == 200, listed.text
    operator = bearer(entra.token(audience=AUDIENCE, roles=[OPERATOR]))
    created = await jwt_api.post("/api/instances", json={"name": "authdb"}, headers=operator)
    assert created.status_code == 202, created.text
    # an operator may read too, and a reader sees what the operator created
    assert (await jwt_api.get("/api/instances", headers=operator)).status_code == 200
    got = await jwt_api.get(f"/api/instances/{created.json()['instance_id']}", headers=reader)
    assert got.status_code == 200 and got.json()["name"] == "authdb"
    operation = await jwt_api.get(f"/api/operations/{created.json()['operation_id']}", headers=reader)
    assert operation.status_code == 200


@pytest.mark.parametrize(
    ("make_token", "phrase"),
    [
        (lambda e: e.token(audience=AUDIENCE, roles=[ADMIN], lifetime=-600), "expired"),
        (lambda e: e.token(audience=AUDIENCE, roles=[ADMIN], not_before=9_999_999_999), "not valid yet"),
        (lambda e: e.token(audience="api://someone-else", roles=[ADMIN]), "another audience"),
        (
            lambda e: e.token(audience=AUDIENCE, roles=[ADMIN], issuer="https://evil.example/"),
            "another issuer",
        ),
        (lambda e: e.token(audience=AUDIENCE, roles=[ADMIN], algorithm="none"), "'none'"),
        (lambda e: e.token(audience=AUDIENCE, roles=[ADMIN], key=e.stranger_key()), "not valid"),
        (lambda e: tampered(e.token(audience=AUDIENCE, roles=[READER])), "not valid"),
        (lambda e: "not.a.jwt", "not a well-formed JWT"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-audience",
        "wrong-issuer",
        "alg-none",
        "bad-signature",
        "tampered",
        "malformed",
    ],
)
async def test_bad_tokens_are_401(
    jwt_api: httpx.AsyncClient, entra: EntraStandin, make_token: Any, phrase: str
) -> None:
    response = await jwt_api.get("/api/instances", headers=bearer(make_token(entra)))
    assert_error(response, 401, phrase)


async def test_no_token_is_401_before_the_body_is_looked_at(jwt_api: httpx.AsyncClient) -> None:
    assert_error(await jwt_api.get("/api/instances"), 401, "bearer token is required")
    # an invalid body from an unauthenticated caller learns nothing about validation
    assert_error(await jwt_api.post("/api/instances", json={"name": "BAD"}), 401, "bearer token")


async def test_a_reader_cannot_create_or_delete(jwt_api: httpx.AsyncClient, entra: EntraStandin) -> None:
    reader = bearer(entra.token(audience=AUDIENCE, roles=[READER]))
    error = assert_error(
        await jwt_api.post("/api/instances", json={"name": "nope"}, headers=reader), 403, "Toygres.Operator"
    )
    assert READER in error["message"]  # says what the caller has
    missing = "00000000-0000-0000-0000-000000000000"
    assert_error(await jwt_api.delete(f"/api/instances/{missing}", headers=reader), 403, "Toygres.Operator")
    nobody = bearer(entra.token(audience=AUDIENCE, roles=[]))
    assert_error(await jwt_api.get("/api/instances", headers=nobody), 403, "Toygres.Reader")
    assert (
        await jwt_api.get("/api/instances", headers=bearer(entra.token(audience=AUDIENCE, roles=[ADMIN])))
    ).json()["items"] == []  # nothing was created by the refused calls


async def test_health_needs_no_credentials(jwt_api: httpx.AsyncClient) -> None:
    assert (await jwt_api.get("/api/health")).status_code == 200


async def test_the_openapi_document_declares_bearer_authentication(jwt_api: httpx.AsyncClient) -> None:
    spec = (await jwt_api.get("/api/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["HTTPBearer"]["description"],
    }
    create = spec["paths"]["/api/instances"]["post"]
    assert create["security"] == [{"HTTPBearer": []}]
    assert {"401", "403"} <= set(create["responses"])


async def test_app_service_principal_header(api_plane: ControlPlane) -> None:
    async with client_for(api_plane, AuthSettings(mode=AuthMode.APP_SERVICE)) as api:
        assert_error(await api.get("/api/instances"), 401, "not authenticated by App Service")
        header = "X-MS-CLIENT-PRINCIPAL"
        reader = {header: app_service_principal([READER])}
        assert (await api.get("/api/instances", headers=reader)).status_code == 200
        assert_error(await api.post("/api/instances", json={"name": "x"}, headers=reader), 403, "Operator")
        assert_error(await api.get("/api/instances", headers={header: "%%%not base64"}), 401, "malformed")
        admin = {header: app_service_principal([ADMIN])}
        assert (await api.post("/api/instances", json={"name": "easyauth"}, headers=admin)).status_code == 202


async def test_the_principal_header_is_ignored_unless_app_service_mode(
    jwt_api: httpx.AsyncClient,
) -> None:
    forged = {"X-MS-CLIENT-PRINCIPAL": app_service_principal([ADMIN])}
    assert_error(await jwt_api.get("/api/instances", headers=forged), 401, "bearer token is required")


def test_serve_refuses_a_public_address_without_authentication(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOYGRES_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "pg")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stdout + result.stderr
    assert not (tmp_path / "pg").exists()  # refused before anything was started


@pytest.mark.parametrize(
    ("roles", "kubernetes", "status", "code"),
    [
        ([OPERATOR], {}, 403, "forbidden"),  # public exposure is an admin's decision
        ([ADMIN], {}, 422, "exposure_not_allowed"),  # and only to configured source ranges
        ([ADMIN], {"load_balancer_source_ranges": ["203.0.113.0/24"]}, 202, None),
        ([OPERATOR], {"internal_load_balancer": True}, 202, None),  # a private address: any operator
    ],
    ids=["operator-public", "admin-no-ranges", "admin-with-ranges", "operator-internal"],
)
async def test_a_public_load_balancer_needs_an_admin_and_source_ranges(
    jwt_api: httpx.AsyncClient,
    entra: EntraStandin,
    api_plane: ControlPlane,
    pg_tmp_dir: Path,
    roles: list[str],
    kubernetes: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    api_plane.settings = local_settings(pg_tmp_dir / "instances", kubernetes=kubernetes)
    response = await jwt_api.post(
        "/api/instances",
        json={"name": "exposed", "service_type": "LoadBalancer"},
        headers=bearer(entra.token(audience=AUDIENCE, roles=roles)),
    )
    assert response.status_code == status, response.text
    if code is not None:
        error = response.json()["error"]
        assert error["code"] == code and error["fields"][0]["field"] == "service_type"
        listed = await jwt_api.get(
            "/api/instances", headers=bearer(entra.token(audience=AUDIENCE, roles=[ADMIN]))
        )
        assert listed.json()["items"] == []  # nothing was recorded
