# tests/python/test_prepare.py - Connection.prepare: statements described and run again, on every SQL engine.
"""conn.prepare(sql) -> PreparedStatement, as asyncpg's.

It describes the statement (parameters and columns: the engine's type name and keel's type),
runs any number of times with fetch / fetchrow / fetchval / executemany on its connection,
refuses bad arguments with errors that say what was wrong, and is unusable once its connection
is released.
"""
import pytest

import keel

# The engine's names of the columns of `items` below, and of the two parameters of SELECT_ONE.
COLUMN_TYPE_NAMES = {
    "postgresql": ["int8", "varchar", "numeric", "timestamptz"],
    "sqlite": ["INTEGER", "VARCHAR(40)", "NUMERIC(10,2)", "TIMESTAMPTZ"],
    "mysql": ["bigint", "varchar", "decimal", "datetime"],
}
PARAMETER_TYPES = {
    "postgresql": [keel.Type("int8", "int"), keel.Type("text", "text")],
    "sqlite": [keel.Type(None, None)] * 2,
    "mysql": [keel.Type(None, None)] * 2,
}
UNKNOWN_TABLE_SQLSTATE = {"postgresql": "42P01", "mysql": "42S02", "sqlite": None}


@pytest.fixture
async def items(db, new_table, types):
    t = new_table("prep")
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, name VARCHAR(40), "
                     f"price {types['numeric'].replace('(20,6)', '(10,2)')}, at {types['timestamptz']})")
    await db.executemany(f"INSERT INTO {t} (id, name) VALUES ($1, $2)",
                         [(i, f"item {i}") for i in range(1, 11)])
    return t


async def test_prepare_describes_parameters_and_columns(db, items, engine):
    async with db.connection() as conn:
        stmt = await conn.prepare(f"SELECT id, name, price, at FROM {items} WHERE id = $1 AND name <> $2")
        assert isinstance(stmt, keel.PreparedStatement)
        assert [c.name for c in stmt.columns] == ["id", "name", "price", "at"]
        assert [c.type.name for c in stmt.columns] == COLUMN_TYPE_NAMES[engine]
        assert [c.type.keel_type for c in stmt.columns] == ["int", "text", "numeric",
                                                            "timestamp" if engine == "mysql" else "timestamptz"]
        assert list(stmt.parameters) == PARAMETER_TYPES[engine]
        # asyncpg's names for the same.
        assert stmt.get_parameters() == stmt.parameters
        assert stmt.get_attributes() == stmt.columns
        assert "WHERE id = $1" in stmt.get_query()
        # A statement that returns no rows has no columns.
        ins = await conn.prepare(f"INSERT INTO {items} (id, name) VALUES ($1, $2)")
        assert ins.columns == () and len(ins.parameters) == 2


async def test_a_prepared_statement_runs_again_and_again(db, items):
    async with db.connection() as conn:
        stmt = await conn.prepare(f"SELECT id, name FROM {items} WHERE id <= $1 ORDER BY id")
        assert [r["id"] for r in await stmt.fetch(3)] == [1, 2, 3]
        assert [r["id"] for r in await stmt.fetch(5)] == [1, 2, 3, 4, 5]
        assert (await stmt.fetchrow(10))["name"] == "item 1"
        assert await stmt.fetchval(2, column=1) == "item 1"
        assert await stmt.fetch(0) == []
        assert await stmt.fetchrow(0) is None
        # Other statements in between change nothing of it.
        assert await conn.fetchval("SELECT 2") == 2
        for n in range(1, 11):
            assert len(await stmt.fetch(n)) == n


async def test_executemany_through_a_prepared_statement(db, items, engine):
    async with db.transaction() as conn:
        stmt = await conn.prepare(f"INSERT INTO {items} (id, name) VALUES ($1, $2)")
        assert await stmt.executemany([(100 + i, f"new {i}") for i in range(50)]) is None
        ret = await conn.prepare(f"DELETE FROM {items} WHERE id = $1 RETURNING id")
        assert [r["id"] for r in await ret.executemany([(100,), (5,), (-1,)])] == [100, 5]
    assert await db.fetchval(f"SELECT count(*) FROM {items}") == 10 + 50 - 2


async def test_wrong_arguments_are_refused_clearly(db, items):
    async with db.connection() as conn:
        stmt = await conn.prepare(f"SELECT name FROM {items} WHERE id = $1")
        with pytest.raises(keel.ProgrammingError, match=r"takes 1 parameter \(\$1\) but 2 were given"):
            await stmt.fetch(1, 2)
        with pytest.raises(keel.ProgrammingError, match="takes 1 parameter .* but 0 were given"):
            await stmt.fetchval()
        none = await conn.prepare("SELECT 1")
        with pytest.raises(keel.ProgrammingError, match="takes no parameters but 1 was given"):
            await none.fetch(1)
        with pytest.raises(keel.DataError):
            await stmt.fetch(object())
        # The connection and the statement serve on.
        assert await stmt.fetchval(3) == "item 3"


async def test_what_the_server_cannot_prepare_raises_its_error(db, engine):
    async with db.connection() as conn:
        with pytest.raises(keel.ProgrammingError, match="no_such_table") as ei:
            await conn.prepare("SELECT * FROM no_such_table WHERE id = $1")
        if UNKNOWN_TABLE_SQLSTATE[engine]:
            assert ei.value.sqlstate == UNKNOWN_TABLE_SQLSTATE[engine]
        with pytest.raises(keel.ProgrammingError):
            await conn.prepare("SELEC 1")
        with pytest.raises(TypeError, match="must be a str"):
            await conn.prepare(b"SELECT 1")
        assert await conn.fetchval("SELECT 41 + 1") == 42
        assert not conn.in_transaction


async def test_a_statement_is_unusable_once_its_connection_is_released(db, items):
    conn = await db.acquire()
    stmt = await conn.prepare(f"SELECT name FROM {items} WHERE id = $1")
    assert await stmt.fetchval(1) == "item 1"
    await db.release(conn)
    with pytest.raises(keel.InterfaceError, match="connection has been released"):
        await stmt.fetchval(1)
    with pytest.raises(keel.InterfaceError, match="connection has been released"):
        await stmt.executemany([(1,)])
    with pytest.raises(keel.InterfaceError):
        await conn.prepare("SELECT 1")
    assert db.pool_stats()["leased"] == 0


async def test_prepare_on_mongodb_is_not_supported():
    import os
    url = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")
    if not url:
        pytest.skip("KEEL_TEST_MONGO_URL is empty: no MongoDB server for this run")
    d = keel.Database(url)
    try:
        async with d.connection() as conn:
            with pytest.raises(keel.NotSupportedError, match="mongodb"):
                await conn.prepare("SELECT 1")
    finally:
        await d.close()
