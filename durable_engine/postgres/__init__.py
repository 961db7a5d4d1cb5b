"""PostgreSQL storage for the durable engine: ``await PostgresProvider.connect(dsn)``.

``engine_migrations()`` lists the schema's migration files, for applying them ahead of time.
``Pooler`` and ``ConnectKwargs`` type the ``pooler=`` and ``connect_kwargs=`` options of
``connect`` (running behind a transaction-mode pooler; fresh credentials per connection).
"""

from ._connections import ConnectKwargs, Pooler
from ._provider import PostgresProvider
from ._schema import engine_migrations

__all__ = ["ConnectKwargs", "Pooler", "PostgresProvider", "engine_migrations"]
