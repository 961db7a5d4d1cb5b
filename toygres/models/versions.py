"""The PostgreSQL major versions Toygres hosts."""

from __future__ import annotations

POSTGRES_VERSIONS: tuple[str, ...] = ("14", "15", "16", "17", "18")
DEFAULT_POSTGRES_VERSION = "17"
