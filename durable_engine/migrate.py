"""A small SQL migrator: numbered ``NNNN_name.sql`` files applied once, in order, per schema.

Why hand-written: the engine must create or upgrade its own schema on
``PostgresProvider.connect`` (several processes may start at once), and the
Toygres metadata schema wants the same behaviour, with nothing heavier than
psycopg. The rules are deliberately few:

* applied migrations are recorded in ``<schema>.schema_migrations``;
* each pending file runs in its own transaction, which first takes a
  transaction-level advisory lock and re-reads what is applied: concurrent
  migrators wait for each other file by file, and a second starter finds each
  file applied and skips it;
* that transaction sets ``SET LOCAL search_path TO <schema>, public``, so files
  are written schema-unqualified and a failing file leaves no trace (earlier
  ones stay);
* no session state is used at all (no session advisory lock, no session
  ``SET``, no server-side prepared statements), so the migrator works through a
  transaction-mode connection pooler such as PgBouncer;
* a recorded migration whose file has changed since is refused, because the
  database no longer matches what the code believes it ran.

Files are executed as one multi-statement batch (simple query protocol), so
plpgsql ``$$`` bodies are fine; statements that cannot run inside a transaction
(``CREATE INDEX CONCURRENTLY``, ``VACUUM``) are not supported. Migrations
recorded in the database but missing from ``migrations`` (a newer release ran
them) are left alone.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import Any

import psycopg
from psycopg import pq, sql

__all__ = ["Migration", "MigrationError", "apply_migrations", "load_migrations"]

_FILE_RE = re.compile(r"^(?P<version>\d{4,})_(?P<name>[A-Za-z0-9][A-Za-z0-9_\-]*)\.sql$")
_LOCK_CLASS = 0x7467  # first key of the two-int advisory lock: keeps us apart from bigint-keyed locks


class MigrationError(Exception):
    """A migration set is malformed, was edited after being applied, or failed to apply."""


@dataclass(frozen=True)
class Migration:
    """One SQL file. ``checksum`` is the SHA-256 of its text with normalised line endings."""

    version: int
    name: str
    sql: str = field(repr=False)
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def _checksum(text: str) -> str:
    normalised = text.replace("\r\n", "\n")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def load_migrations(source: pathlib.Path | Traversable) -> list[Migration]:
    """Read every ``*.sql`` file in ``source`` (a directory or package resource folder).

    Other files (``__init__.py``, READMEs) are ignored; a ``.sql`` file whose name is
    not ``NNNN_name.sql`` or whose version repeats another file's is an error, so a
    typo never silently skips a migration.
    """
    if not source.is_dir():
        raise MigrationError(f"migration source {source} is not a directory")
    found: dict[int, Migration] = {}
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql") or not entry.is_file():
            continue
        match = _FILE_RE.match(entry.name)
        if match is None:
            raise MigrationError(
                f"bad migration file name {entry.name!r} in {source}: expected NNNN_name.sql "
                "(at least four digits, then letters, digits, '_' or '-')"
            )
        version = int(match["version"])
        if version in found:
            raise MigrationError(
                f"duplicate migration version {version} in {source}: "
                f"{found[version].filename!r} and {entry.name!r}"
            )
        text = entry.read_text(encoding="utf-8")
        found[version] = Migration(version=version, name=match["name"], sql=text, checksum=_checksum(text))
    return [found[v] for v in sorted(found)]


async def apply_migrations(
    conn: psycopg.AsyncConnection[Any],
    migrations: Sequence[Migration],
    *,
    schema: str,
    lock_key: str | None = None,
) -> list[Migration]:
    """Apply the pending ``migrations`` to ``schema`` and return the ones applied now.

    ``conn`` must not be inside a transaction; it is switched to autocommit for the
    duration (and restored) so that every file gets its own real transaction. The
    advisory lock key is ``lock_key`` or the schema name. ``conn`` may go through a
    transaction-mode pooler: every step is one transaction and nothing outlives it.
    """
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise MigrationError("apply_migrations needs a connection that is not inside a transaction")
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {[m.filename for m in migrations]}")

    key = lock_key if lock_key is not None else schema
    was_autocommit = conn.autocommit
    await conn.set_autocommit(True)
    try:
        return await _apply(conn, migrations, schema, key)
    finally:
        if not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE:
            await conn.set_autocommit(was_autocommit)


async def pending_migrations(
    conn: psycopg.AsyncConnection[Any], migrations: Sequence[Migration], *, schema: str
) -> list[Migration]:
    """The ``migrations`` not yet applied to ``schema``, read without changing anything.

    For processes that must not (or may not) run DDL: they check that someone applied the schema
    and refuse to start otherwise. An applied file that was edited since is refused, as when
    applying.
    """
    table = sql.Identifier(schema, "schema_migrations")
    cur = await conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_migrations",), prepare=False)
    row = await cur.fetchone()
    applied = await _applied(conn, table) if row is not None and row[0] is not None else {}
    return _pending(migrations, applied, schema)


async def require_migrations(
    conn: psycopg.AsyncConnection[Any], migrations: Sequence[Migration], *, schema: str
) -> None:
    """Raise :class:`MigrationError` naming what is missing unless every migration is applied."""
    missing = await pending_migrations(conn, migrations, schema=schema)
    if missing:
        names = ", ".join(m.filename for m in missing)
        raise MigrationError(f"schema {schema!r} is missing migrations {names}: apply them first")


async def _lock(conn: psycopg.AsyncConnection[Any], key: str) -> None:
    """Serialise migrators of ``key`` until the current transaction ends (commit or rollback)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, key), prepare=False)


async def _applied(conn: psycopg.AsyncConnection[Any], table: sql.Composable) -> dict[int, tuple[str, str]]:
    cur = await conn.execute(sql.SQL("SELECT version, name, checksum FROM {}").format(table), prepare=False)
    return {int(row[0]): (str(row[1]), str(row[2])) for row in await cur.fetchall()}


def _pending(
    migrations: Sequence[Migration], applied: dict[int, tuple[str, str]], schema: str
) -> list[Migration]:
    """The ``migrations`` not in ``applied``; refuses if an applied one was edited since."""
    for m in migrations:
        if m.version in applied:
            _refuse_edited(m, applied[m.version], schema)
    return [m for m in migrations if m.version not in applied]


def _refuse_edited(m: Migration, recorded: tuple[str, str], schema: str) -> None:
    if recorded[1] != m.checksum:
        raise MigrationError(
            f"migration {m.filename} was changed after it was applied to schema {schema!r} "
            f"(recorded as {recorded[0]!r}, checksum {recorded[1][:12]}…, "
            f"file has {m.checksum[:12]}…); add a new migration instead of editing an applied one"
        )


async def _apply(
    conn: psycopg.AsyncConnection[Any], migrations: Sequence[Migration], schema: str, key: str
) -> list[Migration]:
    table = sql.Identifier(schema, "schema_migrations")
    async with conn.transaction():
        await _lock(conn, key)  # two starters must not race on CREATE SCHEMA IF NOT EXISTS
        await conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)), prepare=False
        )
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(table),
            prepare=False,
        )
        applied = await _applied(conn, table)

    _pending(migrations, applied, schema)  # refuse an edited file before applying anything

    newly: list[Migration] = []
    for m in sorted(migrations, key=lambda m: m.version):
        if m.version in applied:
            continue
        try:
            async with conn.transaction():
                await _lock(conn, key)
                # another migrator may have applied it while this one waited for the lock
                cur = await conn.execute(
                    sql.SQL("SELECT name, checksum FROM {} WHERE version = %s").format(table),
                    (m.version,),
                    prepare=False,
                )
                row = await cur.fetchone()
                if row is not None:
                    _refuse_edited(m, (str(row[0]), str(row[1])), schema)
                    continue
                await conn.execute(
                    sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)),
                    prepare=False,
                )
                # bytes, no parameters: psycopg uses the simple query protocol, which runs
                # the whole file as one batch (and leaves '%' alone).
                await conn.execute(m.sql.encode("utf-8"), prepare=False)
                await conn.execute(
                    sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(table),
                    (m.version, m.name, m.checksum),
                    prepare=False,
                )
        except psycopg.Error as exc:
            raise MigrationError(f"migration {m.filename} failed on schema {schema!r}: {exc}") from exc
        newly.append(m)
    return newly
