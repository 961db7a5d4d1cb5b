"""Search every row of every table for secrets: what must never be stored is looked for everywhere."""

from __future__ import annotations

import psycopg
from psycopg import sql


async def rows_containing(conn: psycopg.AsyncConnection[object], needles: list[str]) -> tuple[int, list[str]]:
    """(rows searched, ``schema.table`` of every row holding one of ``needles``), over all schemas."""
    cur = await conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    )
    searched, found = 0, []
    for schema, table in await cur.fetchall():
        rows = await conn.execute(
            sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(str(schema), str(table)))
        )
        for (text,) in await rows.fetchall():
            searched += 1
            if any(needle in str(text) for needle in needles):
                found.append(f"{schema}.{table}")
    return searched, found
