"""The Toygres HTTP API (FastAPI), served by ``toygres serve`` and by the Azure Functions app.

An entry point: it turns HTTP requests into calls on :class:`control_plane.ControlPlane` and
domain errors into one JSON error shape. Nothing below it imports it.
"""

from .app import API_PREFIX, PlaneProvider, create_app

__all__ = ["API_PREFIX", "PlaneProvider", "create_app"]
