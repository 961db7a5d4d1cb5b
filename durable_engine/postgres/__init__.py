"""PostgreSQL storage for the durable engine: ``await PostgresProvider.connect(dsn)``.

``Pooler`` and ``ConnectKwargs`` type the ``pooler=`` and ``connect_kwargs=`` options of
``connect`` (running behind a transaction-mode pooler; fresh credentials per connection).
"""

from ._connections import ConnectKwargs, Pooler
from ._provider import PostgresProvider

__all__ = ["ConnectKwargs", "Pooler", "PostgresProvider"]
