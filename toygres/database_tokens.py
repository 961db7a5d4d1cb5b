"""Passwordless access to the control plane's own database: Microsoft Entra tokens as passwords.

Azure Database for PostgreSQL with Entra authentication takes an access token for the scope
``https://ossrdbms-aad.database.windows.net/.default`` as the password of the identity's role.
Tokens live about an hour, so every *new* connection asks :class:`EntraPasswordSource` for
connection kwargs, and it hands out the cached token until a few minutes before it expires.
Connections already open stay open when the token rotates: the server checks the password only
at connect time, which is what makes rotation free of outages.

If fetching a new token fails while the cached one is still valid, the cached one is used (and
the failure logged), so a brief identity-endpoint hiccup does not stop new connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential

log = logging.getLogger("toygres.database_tokens")

#: the resource Azure Database for PostgreSQL accepts Entra tokens for
POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


class EntraPasswordSource:
    """Connection kwargs (``{"password": <token>}``) with a token that is fresh enough.

    ``credential`` is any azure-core ``TokenCredential`` (``DefaultAzureCredential``,
    ``ManagedIdentityCredential(client_id=...)``); it is called in a worker thread because the
    synchronous credentials need no extra HTTP stack.
    """

    def __init__(
        self,
        credential: TokenCredential,
        *,
        scope: str = POSTGRES_SCOPE,
        refresh_before: timedelta = timedelta(minutes=5),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credential = credential
        self.scope = scope
        self.refresh_before = refresh_before.total_seconds()
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def connect_kwargs(self) -> dict[str, Any]:
        """What a new connection needs on top of the DSN: the current token as its password."""
        return {"password": await self.password()}

    async def password(self) -> str:
        token = self._token
        if token is not None and not self._due(token):
            return token.token
        async with self._lock:  # one fetch for all the connections opened at once
            token = self._token
            if token is not None and not self._due(token):
                return token.token
            try:
                fresh = await asyncio.to_thread(self.credential.get_token, self.scope)
            except Exception:
                if token is not None and token.expires_on > self._clock():
                    log.warning("could not refresh the database token; using the current one", exc_info=True)
                    return token.token
                raise
            self._token = fresh
            log.info("database token refreshed; valid for %.0f s", fresh.expires_on - self._clock())
            return fresh.token

    def _due(self, token: AccessToken) -> bool:
        return token.expires_on - self.refresh_before <= self._clock()


def entra_password_source(client_id: str | None) -> EntraPasswordSource:
    """The source a deployment uses: its managed identity (``client_id``), else the default chain."""
    from azure.identity import DefaultAzureCredential  # local: only Entra-authenticated deployments

    credential = (
        DefaultAzureCredential(managed_identity_client_id=client_id)
        if client_id
        else DefaultAzureCredential()
    )
    return EntraPasswordSource(credential)
