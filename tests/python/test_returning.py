# tests/python/test_returning.py - executemany(… RETURNING …) returns every row's Records, on every SQL engine.
"""executemany of a statement that returns rows (INSERT/DELETE … RETURNING) returns them.

PostgreSQL, SQLite (3.35+) and MariaDB (10.5+) return the rows of every parameter row in turn, as
a list of Records; a statement without RETURNING still returns None. The batch stays atomic: a
failing row raises, returns nothing and leaves nothing behind.
"""
import pytest

import keel
from conftest import UNIQUE_VIOLATION_SQLSTATE


async def make_items(db, new_table, types):
    t = new_table("ret")
    await db.execute(f"CREATE TABLE {t} (id {types['serial_pk']}, name VARCHAR(40), qty {types['int']})")
    return t


async def test_insert_returning_gives_every_rows_records_in_order(db, new_table, types):
    t = await make_items(db, new_table, types)
    rows = [(f"item {i}", i * 10) for i in range(500)]
    got = await db.executemany(f"INSERT INTO {t} (name, qty) VALUES ($1, $2) RETURNING id, name, qty", rows)
    assert isinstance(got, list) and len(got) == 500
    assert all(isinstance(r, keel.Record) for r in got)
    assert [(r["name"], r["qty"]) for r in got] == rows
    ids = [r["id"] for r in got]
    assert ids == sorted(ids) and len(set(ids)) == 500
    assert got[0].keys() == ["id", "name", "qty"]
    # The ids returned are the ones stored.
    stored = await db.fetch(f"SELECT id, name FROM {t} ORDER BY id")
    assert [(r["id"], r["name"]) for r in stored] == [(r["id"], r["name"]) for r in got]


async def test_rows_that_return_nothing_add_nothing(db, new_table, types):
    t = await make_items(db, new_table, types)
    got = await db.executemany(f"INSERT INTO {t} (name, qty) VALUES ($1, $2) RETURNING id",
                               [("a", 1), ("b", 2), ("c", 3)])
    a, b, c = (r["id"] for r in got)
    deleted = await db.executemany(f"DELETE FROM {t} WHERE id = $1 RETURNING id, name",
                                   [(c,), (-1,), (a,)])
    assert [(r["id"], r["name"]) for r in deleted] == [(c, "c"), (a, "a")]
    # A RETURNING statement no row of which returned anything: an empty list, not None.
    assert await db.executemany(f"DELETE FROM {t} WHERE id = $1 RETURNING id", [(-1,), (-2,)]) == []
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 1


async def test_without_returning_executemany_still_returns_none(db, new_table, types):
    t = await make_items(db, new_table, types)
    assert await db.executemany(f"INSERT INTO {t} (name, qty) VALUES ($1, $2)", [("a", 1)]) is None
    async with db.connection() as conn:
        assert await conn.executemany(f"UPDATE {t} SET qty = $1", [(5,)]) is None


async def test_on_a_connection_inside_a_transaction(db, new_table, types):
    t = await make_items(db, new_table, types)
    async with db.transaction() as conn:
        got = await conn.executemany(f"INSERT INTO {t} (name, qty) VALUES ($1, $2) RETURNING qty",
                                     [("x", 7), ("y", 8)])
        assert [r["qty"] for r in got] == [7, 8]
        assert conn.in_transaction
    assert await db.fetchval(f"SELECT sum(qty) FROM {t}") == 15


async def test_a_failing_row_returns_nothing_and_undoes_the_batch(db, new_table, types, engine):
    t = new_table("ret")
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, name VARCHAR(40))")
    await db.execute(f"INSERT INTO {t} (id, name) VALUES (3, 'three')")
    with pytest.raises(keel.IntegrityError) as ei:
        await db.executemany(f"INSERT INTO {t} (id, name) VALUES ($1, $2) RETURNING id",
                             [(1, "one"), (2, "two"), (3, "dup"), (4, "four")])
    assert ei.value.sqlstate == UNIQUE_VIOLATION_SQLSTATE[engine]
    assert "row 2" in str(ei.value)
    assert [r["id"] for r in await db.fetch(f"SELECT id FROM {t} ORDER BY id")] == [3]
    # The connection serves again, and a good batch returns its rows.
    got = await db.executemany(f"INSERT INTO {t} (id, name) VALUES ($1, $2) RETURNING name", [(1, "one")])
    assert [r["name"] for r in got] == ["one"]
    assert db.pool_stats()["leased"] == 0


async def test_returning_an_unknown_column_names_it(db, new_table, types):
    t = await make_items(db, new_table, types)
    with pytest.raises(keel.ProgrammingError, match="nope"):
        await db.executemany(f"INSERT INTO {t} (name, qty) VALUES ($1, $2) RETURNING nope", [("a", 1)])
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 0
    assert await db.fetchval("SELECT 1") == 1


async def test_an_empty_batch_returns_an_empty_list_for_a_statement_with_rows(db, new_table, types, engine):
    t = await make_items(db, new_table, types)
    got = await db.executemany(f"INSERT INTO {t} (name, qty) VALUES ($1, $2) RETURNING id", [])
    # MariaDB describes no columns for an INSERT … RETURNING it has not run: None there.
    assert got == ([] if engine != "mysql" else None)
    assert await db.executemany(f"DELETE FROM {t} WHERE id = $1 RETURNING id", iter([])) == \
        ([] if engine != "mysql" else None)
    assert await db.executemany(f"INSERT INTO {t} (name, qty) VALUES ($1, $2)", []) is None
    async with db.connection() as conn:
        assert await conn.executemany(f"SELECT id FROM {t} WHERE id = $1", []) == []
    # An empty batch of a statement that cannot run fails as it would with rows.
    with pytest.raises(keel.ProgrammingError):
        await db.executemany("INSERT INTO no_such_table_for_batch (a) VALUES ($1)", [])
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 0
