"""PostgreSQL storage for the durable engine: ``await PostgresProvider.connect(dsn)``."""

from .provider import PostgresProvider

__all__ = ["PostgresProvider"]
