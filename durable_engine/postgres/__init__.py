"""PostgreSQL storage for the durable engine: ``await PostgresProvider.connect(dsn)``."""

from ._provider import PostgresProvider

__all__ = ["PostgresProvider"]
