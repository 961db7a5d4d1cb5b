"""Connection strings handed to users: libpq URIs that never carry the password."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote, urlencode


def connection_uri(
    host: str,
    port: int,
    database: str,
    username: str,
    *,
    sslmode: str | None = None,
    hostaddr: str | None = None,
) -> str:
    """``postgresql://user@host:port/db`` — deliberately without a password.

    ``hostaddr`` (libpq) is the address to connect to when ``host`` is the name to verify the
    server certificate against; ``sslmode`` is the client's TLS requirement.
    """
    host_part = f"[{host}]" if ":" in host else host
    uri = f"postgresql://{quote(username, safe='')}@{host_part}:{port}/{quote(database, safe='')}"
    params = {key: value for key, value in (("hostaddr", hostaddr), ("sslmode", sslmode)) if value}
    if params:
        uri += "?" + urlencode(params, safe=":")
    return uri


def tls_route(server_name: str, endpoint_host: str) -> tuple[str, str | None]:
    """``(host, hostaddr)`` for reaching ``endpoint_host`` while verifying ``server_name``.

    An IP endpoint (a load balancer, or a test stand-in) becomes ``hostaddr`` and the certificate is
    checked against ``server_name``; a DNS endpoint is used as the host itself (it must then be one
    of the certificate's names, as the cluster DNS name is).
    """
    try:
        ipaddress.ip_address(endpoint_host)
    except ValueError:
        return endpoint_host, None
    return server_name, endpoint_host
