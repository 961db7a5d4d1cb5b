"""A Microsoft Entra ID subset: a tenant's signing keys (JWKS), tokens it signs, and the App
Service managed-identity endpoint that hands those tokens to ``azure-identity``.

- ``GET /{tenant}/discovery/v2.0/keys`` — the JWKS that ``api.auth.JwtAuthenticator`` fetches
  (with PyJWT's ``PyJWKClient``), as Entra publishes it.
- ``GET /msi/token?resource=...&api-version=2019-08-01`` with ``X-IDENTITY-HEADER`` — the App
  Service / Functions managed identity protocol. ``azure-identity``'s ``ManagedIdentityCredential``
  (and so ``DefaultAzureCredential``) uses it when ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``
  are set, which is how a test gets real SDK code to acquire a token from here.

Tokens are RS256 JWTs signed with a key made in the test; :meth:`EntraStandin.token` makes good
ones and, through its arguments, every kind of bad one (expired, not yet valid, another audience,
another issuer, signed by a stranger, ``alg: none``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.standins.httpbase import Request, Response, StandinHttpServer

TENANT = "72f988bf-0000-0000-0000-00000000e17a"
IDENTITY_HEADER = "standin-identity-header-secret"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class EntraStandin(StandinHttpServer):
    def __init__(self, *, managed_identity_roles: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._key = _new_key()
        self.kid = uuid.uuid4().hex
        #: roles put into tokens handed out by the managed-identity endpoint
        self.managed_identity_roles = managed_identity_roles
        self._lock = threading.Lock()
        #: resources (audiences) the managed-identity endpoint was asked for, in order
        self.token_requests: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> EntraStandin:
        self.start_http()
        return self

    def stop(self) -> None:
        self.stop_http()

    # -- what a test configures the API with ----------------------------------------------------
    @property
    def issuer(self) -> str:
        return f"{self.url}/{TENANT}/v2.0"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/{TENANT}/discovery/v2.0/keys"

    @property
    def identity_endpoint(self) -> str:
        return f"{self.url}/msi/token"

    # -- tokens ---------------------------------------------------------------------------------
    def token(
        self,
        *,
        audience: str,
        roles: tuple[str, ...] | list[str] = (),
        issuer: str | None = None,
        lifetime: float = 3600,
        not_before: float | None = None,
        subject: str = "test-user",
        key: rsa.RSAPrivateKey | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """A signed access token; every argument can make it wrong in one way."""
        now = time.time()
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "sub": subject,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, subject)),
            "iat": int(now),
            "nbf": int(not_before if not_before is not None else now - 5),
            "exp": int(now + lifetime),
            "tid": TENANT,
        }
        if roles:
            claims["roles"] = list(roles)
        if algorithm == "none":
            return _unsigned(claims, self.kid)
        return jwt.encode(claims, key or self._key, algorithm=algorithm, headers={"kid": self.kid})

    @staticmethod
    def stranger_key() -> rsa.RSAPrivateKey:
        """A key the tenant never published: tokens signed with it must be refused."""
        return _new_key()

    # -- HTTP -----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path == f"/{TENANT}/discovery/v2.0/keys":
            jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
            jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
            return Response(200, {"keys": [jwk]})
        if request.method == "GET" and request.path == "/msi/token":
            return self._managed_identity_token(request)
        return Response(404, {"error": "not_found", "error_description": f"no route {request.path}"})

    def _managed_identity_token(self, request: Request) -> Response:
        if request.headers.get("x-identity-header") != IDENTITY_HEADER:
            return Response(401, {"error": "unauthorized", "error_description": "bad X-IDENTITY-HEADER"})
        resource = request.param("resource")
        if not resource:
            return Response(400, {"error": "invalid_request", "error_description": "resource is required"})
        audience = resource.removesuffix("/.default")
        with self._lock:
            self.token_requests.append(audience)
        lifetime = 3600
        token = self.token(audience=audience, roles=self.managed_identity_roles, subject="managed-identity")
        return Response(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": str(uuid.uuid4()),
            },
        )

    def fault_response(self, request: Request, status: int, message: str | None = None) -> Response:
        return Response(status, {"error": "standin_fault", "error_description": message or "injected"})


def _unsigned(claims: dict[str, Any], kid: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


def app_service_principal(roles: tuple[str, ...] | list[str], *, object_id: str | None = None) -> str:
    """The ``X-MS-CLIENT-PRINCIPAL`` header App Service Authentication adds to a request."""
    claims = [{"typ": "roles", "val": role} for role in roles]
    claims.append(
        {
            "typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
            "val": object_id or str(uuid.uuid4()),
        }
    )
    principal = {
        "auth_typ": "aad",
        "claims": claims,
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    }
    return base64.b64encode(json.dumps(principal).encode()).decode()
