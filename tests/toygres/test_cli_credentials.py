"""The CLI sends the credentials it is given, and gets a token with azure-identity when asked.

The API here is a stand-in that records request headers and answers like the real list
endpoint (or with the real 401 body), so the test sees exactly what the CLI put on the wire. The
token for ``--scope`` comes from the Entra stand-in's managed-identity endpoint, reached by the
real ``DefaultAzureCredential``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from tests.standins.entra import IDENTITY_HEADER, EntraStandin
from tests.standins.httpbase import Request, Response, StandinHttpServer

TOKEN = "eyJ.test-token.sig"
FUNCTION_KEY = "a-function-key-from-the-portal"


class RecordingApi(StandinHttpServer):
    """Answers ``GET /api/instances``; 401 in the API's error shape when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []
        self.answer_401 = False
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.headers.append(dict(request.headers))
        if self.answer_401:
            body = {"error": {"code": "unauthorized", "message": "a bearer token is required", "fields": []}}
            return Response(401, body, {"WWW-Authenticate": 'Bearer realm="toygres"'})
        return Response(200, {"items": [], "next_cursor": None})

    def fault_response(self, request: Request, status: int, message: str | None = None) -> Response:
        return Response(status, {"error": {"code": "error", "message": message or "", "fields": []}})


@pytest.fixture
def api() -> Iterator[RecordingApi]:
    server = RecordingApi()
    server.start_http()
    try:
        yield server
    finally:
        server.stop_http()


@pytest.fixture
def entra() -> Iterator[EntraStandin]:
    server = EntraStandin(managed_identity_roles=("Toygres.Reader",)).start()
    try:
        yield server
    finally:
        server.stop()


def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(app, args, env={"COLUMNS": "160", **env})


def test_token_and_function_key_from_the_environment(api: RecordingApi) -> None:
    env = {"TOYGRES_API_URL": f"{api.url}/api", "TOYGRES_TOKEN": TOKEN, "TOYGRES_FUNCTION_KEY": FUNCTION_KEY}
    result = run(["instances", "list"], env)
    assert result.exit_code == 0, result.output
    sent = api.headers[-1]
    assert sent["authorization"] == f"Bearer {TOKEN}"
    assert sent["x-functions-key"] == FUNCTION_KEY
    assert TOKEN not in result.output and FUNCTION_KEY not in result.output


def test_token_option_on_the_root_command(api: RecordingApi) -> None:
    result = run(["--token", TOKEN, "instances", "list", "--url", f"{api.url}/api"], {})
    assert result.exit_code == 0, result.output
    assert api.headers[-1]["authorization"] == f"Bearer {TOKEN}"
    assert "x-functions-key" not in api.headers[-1]


def test_no_credentials_sends_none_and_a_401_says_what_to_set(api: RecordingApi) -> None:
    api.answer_401 = True
    result = run(["instances", "list"], {"TOYGRES_API_URL": f"{api.url}/api"})
    assert result.exit_code == 1
    assert "authorization" not in api.headers[-1]
    assert "HTTP 401" in result.stderr and "TOYGRES_TOKEN" in result.stderr


def test_scope_gets_a_token_with_azure_identity(api: RecordingApi, entra: EntraStandin) -> None:
    env = {
        "TOYGRES_API_URL": f"{api.url}/api",
        "TOYGRES_API_SCOPE": "api://toygres-test/.default",
        # App Service managed identity: what DefaultAzureCredential finds on a Functions host
        "IDENTITY_ENDPOINT": entra.identity_endpoint,
        "IDENTITY_HEADER": IDENTITY_HEADER,
    }
    result = run(["instances", "list"], env)
    assert result.exit_code == 0, result.output
    assert entra.token_requests == ["api://toygres-test"]
    sent = api.headers[-1]["authorization"].removeprefix("Bearer ")
    import jwt

    claims = jwt.decode(sent, options={"verify_signature": False})
    assert claims["aud"] == "api://toygres-test" and claims["roles"] == ["Toygres.Reader"]


def test_a_scope_without_any_azure_login_fails_with_a_hint(api: RecordingApi, tmp_path: object) -> None:
    env = {
        "TOYGRES_API_URL": f"{api.url}/api",
        "TOYGRES_API_SCOPE": "api://toygres-test/.default",
        "IDENTITY_ENDPOINT": "",
        "IDENTITY_HEADER": "",
        "AZURE_CONFIG_DIR": str(tmp_path),  # an empty Azure CLI profile: not logged in
        "MSI_ENDPOINT": "",
        "IMDS_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: no instance metadata service
    }
    result = run(["instances", "list"], env)
    assert result.exit_code == 1, result.output
    assert "could not get a token for api://toygres-test/.default" in result.stderr
    assert "az login" in result.stderr
    assert api.headers == []  # nothing was sent without a credential
