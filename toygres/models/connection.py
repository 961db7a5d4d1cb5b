"""Connection strings handed to users: libpq URIs that never carry the password."""

from __future__ import annotations

from urllib.parse import quote


def connection_uri(host: str, port: int, database: str, username: str, *, sslmode: str | None = None) -> str:
    """``postgresql://user@host:port/db`` — deliberately without a password."""
    host_part = f"[{host}]" if ":" in host else host
    uri = f"postgresql://{quote(username, safe='')}@{host_part}:{port}/{quote(database, safe='')}"
    if sslmode:
        uri += f"?sslmode={quote(sslmode, safe='')}"
    return uri
