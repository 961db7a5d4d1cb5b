"""The HTTP functions: the Toygres FastAPI app hosted as one ASGI function.

``func.AsgiFunctionApp`` registers a single catch-all HTTP function (route ``{*route}`` under the
host's ``api`` prefix) that hands every request to the FastAPI app, whose routes already live under
``/api``. The app gets its control plane from the worker's shared host (opened on the first request
that needs it), whose ``on_started`` hook sends an orchestration hint after every accepted create or
delete, so a dispatcher picks the new operation up at once instead of at the next sweep.
"""

import azure.functions as func

from api.app import create_app
from control_plane.service import ControlPlane
from functions.host_state import get_host

#: the registered name of the HTTP function
HTTP_FUNCTION = "http_api"


async def shared_plane() -> ControlPlane:
    """The plane provider of the API: the worker's one control plane."""
    return (await get_host()).plane


def create_function_app(auth_level: func.AuthLevel = func.AuthLevel.FUNCTION) -> func.AsgiFunctionApp:
    """The Functions app with the API registered; queue and timer blueprints are added by the caller.

    ``FUNCTION`` auth: in Azure every request needs a function key (``x-functions-key`` header or
    ``code`` query parameter); ``func start`` does not check keys locally.
    """
    return func.AsgiFunctionApp(
        app=create_app(shared_plane), http_auth_level=auth_level, function_name=HTTP_FUNCTION
    )
