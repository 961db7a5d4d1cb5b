"""The HTTP functions: the Toygres FastAPI app hosted as one ASGI function.

``func.AsgiFunctionApp`` registers a single catch-all HTTP function (route ``{*route}`` under the
host's ``api`` prefix) that hands every request to the FastAPI app, whose routes already live under
``/api``. The app gets its control plane from the worker's shared host (opened on the first request
that needs it), whose ``on_started`` hook sends an orchestration hint after every accepted create or
delete, so a dispatcher picks the new operation up at once instead of at the next sweep.
"""

import os

import azure.functions as func
from fastapi import Request

from api.app import create_app
from api.auth import Authenticator, Principal, authenticator_for
from control_plane.service import ControlPlane
from functions.host_state import get_host
from toygres.settings import get_settings

#: the registered name of the HTTP function
HTTP_FUNCTION = "http_api"


async def shared_plane() -> ControlPlane:
    """The plane provider of the API: the worker's one control plane."""
    return (await get_host()).plane


class SettingsAuthenticator:
    """The authenticator ``TOYGRES_AUTH__*`` selects, built on the first request.

    Not at import: ``function_app.py`` is indexed before any request, and settings that fail to
    validate must not stop the host from indexing its functions (the request then fails instead).
    """

    def __init__(self) -> None:
        self._authenticator: Authenticator | None = None

    async def authenticate(self, request: Request, bearer: str | None) -> Principal:
        if self._authenticator is None:
            self._authenticator = authenticator_for(get_settings().auth)
        return await self._authenticator.authenticate(request, bearer)


def default_auth_level() -> func.AuthLevel:
    """``FUNCTION`` unless the app authenticates callers by identity itself.

    With ``TOYGRES_AUTH__MODE`` ``app-service`` or ``jwt`` every request already carries a
    validated Entra identity and its roles, so a shared function key would only be a second secret
    to hand out. Read from the environment at indexing time, when the trigger is bound.
    """
    mode = os.environ.get("TOYGRES_AUTH__MODE", "none").strip().lower()
    return func.AuthLevel.ANONYMOUS if mode in ("app-service", "jwt") else func.AuthLevel.FUNCTION


def create_function_app(auth_level: func.AuthLevel | None = None) -> func.AsgiFunctionApp:
    """The Functions app with the API registered; queue and timer blueprints are added by the caller.

    ``FUNCTION`` auth: in Azure every request needs a function key (``x-functions-key`` header or
    ``code`` query parameter); ``func start`` does not check keys locally.
    """
    return func.AsgiFunctionApp(
        app=create_app(shared_plane, auth=SettingsAuthenticator()),
        http_auth_level=auth_level or default_auth_level(),
        function_name=HTTP_FUNCTION,
    )
