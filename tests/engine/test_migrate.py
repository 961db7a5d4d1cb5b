"""The SQL migrator against a real PostgreSQL database (one fresh database per test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from durable_engine.migrate import Migration, MigrationError, apply_migrations, load_migrations

pytestmark = pytest.mark.postgres

FILES = {
    "0001_create_items.sql": "CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);\n"
    "CREATE TABLE apply_log (file text NOT NULL);\nINSERT INTO apply_log VALUES ('0001');\n",
    "0002_item_function.sql": """
CREATE FUNCTION add_item(p_label text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    new_id integer;
BEGIN
    INSERT INTO items (label) VALUES (p_label || ' 100%') RETURNING id INTO new_id;
    RETURN new_id;
END;
$$;
INSERT INTO apply_log VALUES ('0002');
""",
    "0010_seed.sql": (
        "SELECT pg_sleep(0.2);\nSELECT add_item('seed');\nINSERT INTO apply_log VALUES ('0010');\n"
    ),
}


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


async def fetch(dsn: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(query)
        return await cur.fetchall()


def test_load_sorts_by_version_and_ignores_other_files(tmp_path: Path) -> None:
    files = {"0010_b.sql": "SELECT 2;", "0002_a.sql": "SELECT 1;", "README.md": "x", "__init__.py": ""}
    write(tmp_path, files)
    migrations = load_migrations(tmp_path)
    assert [(m.version, m.name) for m in migrations] == [(2, "a"), (10, "b")]
    assert migrations[1].filename == "0010_b.sql"
    assert migrations[0].checksum != migrations[1].checksum
    assert len(migrations[0].checksum) == 64


def test_checksum_ignores_line_ending_style(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "0001_x.sql").write_bytes(b"SELECT 1;\nSELECT 2;\n")
    (tmp_path / "b" / "0001_x.sql").write_bytes(b"SELECT 1;\r\nSELECT 2;\r\n")
    assert load_migrations(tmp_path / "a")[0].checksum == load_migrations(tmp_path / "b")[0].checksum


@pytest.mark.parametrize(
    "bad_name", ["1_short.sql", "0001-dash.sql", "0001_.sql", "abcd_x.sql", "0001_a b.sql"]
)
def test_bad_file_names_are_rejected(tmp_path: Path, bad_name: str) -> None:
    write(tmp_path, {"0002_ok.sql": "SELECT 1;", bad_name: "SELECT 1;"})
    with pytest.raises(MigrationError, match="bad migration file name") as info:
        load_migrations(tmp_path)
    assert bad_name in str(info.value)


def test_duplicate_versions_are_rejected(tmp_path: Path) -> None:
    write(tmp_path, {"0003_one.sql": "SELECT 1;", "0003_two.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match="duplicate migration version 3") as info:
        load_migrations(tmp_path)
    assert "0003_one.sql" in str(info.value) and "0003_two.sql" in str(info.value)


def test_missing_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="not a directory"):
        load_migrations(tmp_path / "nope")


async def test_applies_in_order_and_records(tmp_path: Path, pg_dsn: str) -> None:
    migrations = load_migrations(write(tmp_path, FILES))
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        applied = await apply_migrations(conn, migrations, schema="app")
        assert [m.version for m in applied] == [1, 2, 10]
        assert conn.autocommit is False  # restored

    rows = await fetch(pg_dsn, "SELECT version, name, checksum FROM app.schema_migrations ORDER BY version")
    assert rows == [(m.version, m.name, m.checksum) for m in migrations]
    assert await fetch(pg_dsn, "SELECT file FROM app.apply_log") == [("0001",), ("0002",), ("0010",)]
    # schema-unqualified SQL landed in the schema; '%' in the file body survived
    assert await fetch(pg_dsn, "SELECT label FROM app.items") == [("seed 100%",)]
    assert await fetch(pg_dsn, "SELECT to_regclass('public.items') IS NULL") == [(True,)]
    stamped = await fetch(pg_dsn, "SELECT count(*) FROM app.schema_migrations WHERE applied_at <= now()")
    assert stamped == [(3,)]


async def test_second_run_is_a_no_op_and_new_files_apply(tmp_path: Path, pg_dsn: str) -> None:
    directory = write(tmp_path, FILES)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        assert len(await apply_migrations(conn, load_migrations(directory), schema="app")) == 3
        assert await apply_migrations(conn, load_migrations(directory), schema="app") == []
        write(directory, {"0011_more.sql": "ALTER TABLE items ADD COLUMN extra int;"})
        again = await apply_migrations(conn, load_migrations(directory), schema="app")
        assert [m.filename for m in again] == ["0011_more.sql"]
        assert conn.autocommit is True
    assert await fetch(pg_dsn, "SELECT count(*) FROM app.apply_log") == [(3,)]


async def test_schemas_are_independent(tmp_path: Path, pg_dsn: str) -> None:
    migrations = load_migrations(write(tmp_path, FILES))
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert len(await apply_migrations(conn, migrations, schema="one")) == 3
        assert len(await apply_migrations(conn, migrations, schema="Two Words")) == 3
    assert await fetch(pg_dsn, 'SELECT count(*) FROM "Two Words".items') == [(1,)]


async def test_concurrent_migrators_apply_each_file_once(tmp_path: Path, pg_dsn: str) -> None:
    migrations = load_migrations(write(tmp_path, FILES))

    async def run() -> list[Migration]:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            return await apply_migrations(conn, migrations, schema="app")

    results = await asyncio.wait_for(asyncio.gather(*(run() for _ in range(4))), timeout=60)
    # the lock is taken file by file, so the files may be shared out among the migrators
    assert sorted(m.version for r in results for m in r) == [1, 2, 10]
    assert await fetch(pg_dsn, "SELECT file FROM app.apply_log ORDER BY file") == [
        ("0001",),
        ("0002",),
        ("0010",),
    ]
    assert await fetch(pg_dsn, "SELECT count(*) FROM app.items") == [(1,)]


async def test_edited_applied_migration_is_refused(tmp_path: Path, pg_dsn: str) -> None:
    directory = write(tmp_path, FILES)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await apply_migrations(conn, load_migrations(directory), schema="app")
        write(
            directory,
            {
                "0002_item_function.sql": FILES["0002_item_function.sql"] + "-- tweak\n",
                "0020_later.sql": "CREATE TABLE later (x int);",
            },
        )
        with pytest.raises(MigrationError, match=r"0002_item_function\.sql was changed"):
            await apply_migrations(conn, load_migrations(directory), schema="app")
    # nothing after the refusal ran
    assert await fetch(pg_dsn, "SELECT to_regclass('app.later') IS NULL") == [(True,)]


async def test_failed_migration_rolls_back_and_keeps_earlier(tmp_path: Path, pg_dsn: str) -> None:
    files = {
        "0001_ok.sql": "CREATE TABLE good (x int);",
        "0002_broken.sql": (
            "CREATE TABLE half (x int);\nINSERT INTO half VALUES (1);\nSELECT no_such_function();"
        ),
        "0003_never.sql": "CREATE TABLE never (x int);",
    }
    migrations = load_migrations(write(tmp_path, files))
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        with pytest.raises(MigrationError, match=r"0002_broken\.sql failed") as info:
            await apply_migrations(conn, migrations, schema="app")
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedFunction)
        # the connection is still usable and its lock released: another session can migrate
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    assert await fetch(pg_dsn, "SELECT version FROM app.schema_migrations") == [(1,)]
    assert await fetch(
        pg_dsn,
        "SELECT to_regclass('app.good') IS NOT NULL, to_regclass('app.half') IS NULL,"
        " to_regclass('app.never') IS NULL",
    ) == [(True, True, True)]
    async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
        fixed = [m for m in migrations if m.version != 2]
        assert [
            m.version
            for m in await asyncio.wait_for(apply_migrations(other, fixed, schema="app"), timeout=30)
        ] == [3]


async def test_refuses_connection_inside_transaction(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await conn.execute("SELECT 1")  # opens an implicit transaction (autocommit off)
        with pytest.raises(MigrationError, match="not inside a transaction"):
            await apply_migrations(conn, [], schema="app")


async def test_loads_from_package_resources(pg_dsn: str) -> None:
    """Traversable sources work (how the engine ships its SQL inside the wheel)."""
    from importlib.resources import files

    pkg = files("tests.engine")
    migrations = load_migrations(pkg)  # this package has no .sql files: an empty, valid set
    assert migrations == []
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert await apply_migrations(conn, migrations, schema="empty") == []
    assert await fetch(pg_dsn, "SELECT count(*) FROM empty.schema_migrations") == [(0,)]
