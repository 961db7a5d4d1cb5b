"""How the provider opens connections: the pool, the LISTEN connection, the migration connection.

Why one place: behind a transaction-mode pooler (PgBouncer, Azure's built-in one) consecutive
transactions of one client connection may run on different server connections, so nothing
set for a session may be relied on: no ``SET search_path`` (every name is schema-qualified),
no named server-side prepared statements (``prepare_threshold=None``), no LISTEN and no
session advisory locks. And where credentials rotate (Microsoft Entra tokens), every new
connection must ask for fresh ones (``connect_kwargs``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import TupleRow

#: ``"none"``: connections reach PostgreSQL directly (or a session-mode pooler);
#: ``"transaction"``: through a transaction-mode pooler (PgBouncer ``pool_mode = transaction``)
Pooler = Literal["none", "transaction"]

#: called for every new connection; returns extra ``psycopg.connect`` keyword arguments
#: (e.g. ``{"password": <a fresh token>}``), or an awaitable of them
ConnectKwargs = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]

POOLERS: tuple[Pooler, ...] = ("none", "transaction")


@dataclass(frozen=True)
class Connections:
    dsn: str
    pooler: Pooler = "none"
    #: a connection string that bypasses the pooler, for LISTEN and migrations (optional)
    direct_dsn: str | None = None
    connect_kwargs: ConnectKwargs | None = None

    def __post_init__(self) -> None:
        if self.pooler not in POOLERS:
            raise ValueError(f"pooler must be one of {POOLERS}, not {self.pooler!r}")

    @property
    def pooled(self) -> bool:
        return self.pooler == "transaction"

    @property
    def can_listen(self) -> bool:
        """LISTEN needs a session: a direct connection, or no transaction-mode pooler."""
        return not self.pooled or self.direct_dsn is not None

    async def _extra(self) -> dict[str, Any]:
        if self.connect_kwargs is None:
            return {}
        extra = self.connect_kwargs()
        if inspect.isawaitable(extra):
            extra = await extra
        return dict(extra)

    async def pool_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every new pooled connection (the pool calls this each time)."""
        kwargs = await self._extra()
        kwargs["autocommit"] = True
        if self.pooled:
            kwargs["prepare_threshold"] = None  # named prepared statements would land elsewhere
        return kwargs

    async def connect_session(self) -> psycopg.AsyncConnection[TupleRow]:
        """A connection for session work: LISTEN, migrations (direct if a direct DSN is given)."""
        kwargs = await self._extra()
        kwargs["autocommit"] = True
        if self.direct_dsn is None and self.pooled:
            kwargs["prepare_threshold"] = None
        return await psycopg.AsyncConnection.connect(self.direct_dsn or self.dsn, **kwargs)
