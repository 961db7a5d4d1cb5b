"""Who is calling, and may they: authentication of API callers and the three Toygres roles.

Callers hold app roles of the API's Microsoft Entra application. The roles nest — an admin may do
what an operator may, an operator what a reader may — so a person needs exactly one:

- ``Toygres.Reader``: list and get instances and operations;
- ``Toygres.Operator``: create and delete instances (and later day-2 operations);
- ``Toygres.Admin``: expose instances beyond the cluster.

Three ways to learn the caller (``TOYGRES_AUTH__MODE``):

- ``jwt``: the API validates the bearer token itself — signature against the issuer's JWKS,
  ``iss``, ``aud``, ``exp`` and ``nbf`` (with a small leeway), and only asymmetric algorithms, so
  ``alg: none`` and HMAC tokens signed with a public key are refused. Roles from the ``roles`` claim.
- ``app-service``: App Service Authentication validated the token before the request reached the
  app and passes the caller in ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON). The header is trusted only
  in this mode, because the platform strips any copy a caller sends.
- ``none``: no authentication; every caller is an anonymous admin. ``toygres serve`` refuses this
  on anything but a loopback address.

Failures answer 401 (no or bad credentials, with ``WWW-Authenticate``) or 403 (a valid caller
without the role), in the API's one error shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Protocol

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from toygres.settings import AuthMode, AuthSettings

log = logging.getLogger("toygres.api.auth")

#: the header App Service Authentication sets on every authenticated request
CLIENT_PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
#: signature algorithms accepted in ``jwt`` mode (Entra ID signs with RS256)
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class Role(StrEnum):
    READER = "Toygres.Reader"
    OPERATOR = "Toygres.Operator"
    ADMIN = "Toygres.Admin"


#: what each role may also do
_IMPLIES: dict[Role, frozenset[Role]] = {
    Role.READER: frozenset({Role.READER}),
    Role.OPERATOR: frozenset({Role.READER, Role.OPERATOR}),
    Role.ADMIN: frozenset({Role.READER, Role.OPERATOR, Role.ADMIN}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: who (for logs) and which roles, with the implied ones expanded."""

    subject: str
    roles: frozenset[Role]

    @classmethod
    def with_roles(cls, subject: str, names: Iterable[str]) -> Principal:
        granted: set[Role] = set()
        for name in names:
            if name in Role._value2member_map_:
                granted |= _IMPLIES[Role(name)]
        return cls(subject, frozenset(granted))

    def has(self, role: Role) -> bool:
        return role in self.roles


ANONYMOUS_ADMIN = Principal("anonymous", _IMPLIES[Role.ADMIN])


class Authenticator(Protocol):
    """Turns a request into a :class:`Principal`, or raises a 401 :class:`ApiError`."""

    async def authenticate(self, request: Request, bearer: str | None) -> Principal: ...


def unauthorized(message: str, *, error: str = "invalid_token") -> ApiError:
    # RFC 6750: tell the client it needs a bearer token, and why the one it sent failed
    challenge = 'Bearer realm="toygres"' if error == "" else f'Bearer realm="toygres", error="{error}"'
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


class NoAuthentication:
    """``none`` mode: every caller is an anonymous admin."""

    async def authenticate(self, request: Request, bearer: str | None) -> Principal:
        return ANONYMOUS_ADMIN


class JwtAuthenticator:
    """``jwt`` mode: validates bearer tokens against an issuer's JWKS.

    The JWKS is fetched on first use and cached by PyJWT's client, which fetches it again when a
    token names a key id it does not know (the issuer rotated its keys).
    """

    def __init__(self, *, issuer: str, audience: str, jwks_url: str, leeway_seconds: int = 60) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600, timeout=10)

    async def authenticate(self, request: Request, bearer: str | None) -> Principal:
        if not bearer:
            raise unauthorized("a bearer token is required (Authorization: Bearer <token>)", error="")
        try:
            header = jwt.get_unverified_header(bearer)
        except jwt.PyJWTError:
            raise unauthorized("the bearer token is not a well-formed JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise unauthorized(f"tokens signed with {header.get('alg')!r} are not accepted")
        try:
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, bearer)
        except jwt.PyJWKClientConnectionError:
            log.warning("cannot fetch the issuer's signing keys", exc_info=True)
            raise ApiError(503, "unavailable", "cannot fetch the token issuer's signing keys") from None
        except jwt.PyJWTError:
            raise unauthorized("the token's signing key is not one of the issuer's") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                bearer,
                key=key.key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("the token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"the token is not valid: {exc}") from None
        roles = claims.get("roles") or []
        subject = str(claims.get("oid") or claims.get("sub") or "unknown")
        return Principal.with_roles(subject, roles if isinstance(roles, list) else [])


class AppServiceAuthenticator:
    """``app-service`` mode: the caller as App Service Authentication describes it."""

    async def authenticate(self, request: Request, bearer: str | None) -> Principal:
        raw = request.headers.get(CLIENT_PRINCIPAL_HEADER)
        if not raw:
            raise unauthorized("the request was not authenticated by App Service Authentication", error="")
        try:
            principal = json.loads(base64.b64decode(raw, validate=True))
            claims = principal["claims"]
            role_types = {"roles", principal.get("role_typ") or "roles"}
            roles = [str(c["val"]) for c in claims if c.get("typ") in role_types]
            subject = next(
                (str(c["val"]) for c in claims if c.get("typ", "").endswith("objectidentifier")), "unknown"
            )
        except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
            raise unauthorized(f"the {CLIENT_PRINCIPAL_HEADER} header is malformed") from None
        return Principal.with_roles(subject, roles)


def authenticator_for(settings: AuthSettings) -> Authenticator:
    """The authenticator the settings select (they were validated: ``jwt`` has all three values)."""
    if settings.mode is AuthMode.JWT:
        assert settings.issuer and settings.audience and settings.jwks_url
        return JwtAuthenticator(
            issuer=settings.issuer,
            audience=settings.audience,
            jwks_url=settings.jwks_url,
            leeway_seconds=settings.leeway_seconds,
        )
    if settings.mode is AuthMode.APP_SERVICE:
        return AppServiceAuthenticator()
    return NoAuthentication()


# the OpenAPI document declares bearer authentication; auto_error=False so a missing header
# reaches the authenticator, which answers in the API's own error shape
_bearer = HTTPBearer(auto_error=False, description="A Microsoft Entra ID access token for the API")


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.authenticate(request, credentials.credentials if credentials else None)
    request.state.principal = principal
    return principal


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A route dependency: the caller, if they hold ``role`` (or a role that implies it)."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(role):
            held = ", ".join(sorted(principal.roles)) or "none"
            raise ApiError(403, "forbidden", f"this needs the role {role.value} (the caller has: {held})")
        return principal

    return dependency
