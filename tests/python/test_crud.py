# tests/python/test_crud.py - queries on every engine: CRUD, NULLs, text, big values and results, batches, lifecycle.
import asyncio
import os

import pytest

import keel
from conftest import close_db

COUNT_TO = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) "
            "SELECT n, 'row ' || n AS s FROM c")


async def test_crud(db, new_table, types):
    t = new_table("items")
    assert await db.execute(
        f"CREATE TABLE {t} (id {types['serial_pk']}, name TEXT NOT NULL, qty {types['int']})") == 0
    first = await db.fetchval(f"INSERT INTO {t} (name, qty) VALUES ($1, $2) RETURNING id", "apple", 3)
    second = await db.fetchval(f"INSERT INTO {t} (name, qty) VALUES ($1, $2) RETURNING id", "pear", 5)
    assert type(first) is int and second == first + 1
    assert await db.execute(f"INSERT INTO {t} (name, qty) VALUES ($1, $2)", "plum", None) == 1

    rows = await db.fetch(f"SELECT id, name, qty FROM {t} ORDER BY id")
    assert [tuple(r) for r in rows] == [(first, "apple", 3), (second, "pear", 5), (second + 1, "plum", None)]
    row = await db.fetchrow(f"SELECT name, qty FROM {t} WHERE id = $1", second)
    assert row["name"] == "pear" and row["qty"] == 5

    assert await db.execute(f"UPDATE {t} SET qty = qty + $1 WHERE qty IS NOT NULL", 10) == 2
    assert await db.fetchval(f"SELECT qty FROM {t} WHERE name = $1", "apple") == 13
    assert await db.execute(f"UPDATE {t} SET qty = 0 WHERE name = $1", "nothing") == 0

    assert await db.execute(f"DELETE FROM {t} WHERE name = $1", "apple") == 1
    assert await db.fetchrow(f"SELECT * FROM {t} WHERE name = $1", "apple") is None
    assert await db.execute(f"DELETE FROM {t}") == 2
    assert await db.fetch(f"SELECT * FROM {t}") == []


async def test_statements_without_a_row_count_report_zero(db, new_table, types):
    t = new_table()
    t2 = new_table()
    async with db.connection() as conn:
        await conn.execute(f"CREATE TABLE {t} (a {types['int']})")
        assert await conn.execute(f"INSERT INTO {t} (a) VALUES (1), (2), (3)") == 3
        assert await conn.execute(f"UPDATE {t} SET a = a + 1") == 3
        # The previous statement changed rows; DDL right after it must not report them again.
        assert await conn.execute(f"CREATE TABLE {t2} (b {types['int']})") == 0
        assert await conn.execute(f"DROP TABLE {t2}") == 0


async def test_fetch_helpers(db):
    assert await db.fetch("SELECT 1 AS a WHERE 1 = 0") == []
    assert await db.fetchrow("SELECT 1 AS a WHERE 1 = 0") is None
    assert await db.fetchval("SELECT 1 AS a WHERE 1 = 0") is None
    assert await db.fetchval("SELECT 1 AS a, 'two' AS b, NULL AS c") == 1
    assert await db.fetchval("SELECT 1 AS a, 'two' AS b, NULL AS c", column=1) == "two"
    assert await db.fetchval("SELECT 1 AS a, 'two' AS b, NULL AS c", column=2) is None
    assert await db.fetchval("SELECT NULL") is None
    rows = await db.fetch("SELECT 1 AS a UNION ALL SELECT 2 UNION ALL SELECT 3")
    assert sorted(r[0] for r in rows) == [1, 2, 3]


async def test_placeholders_in_strings_and_comments_are_not_parameters(db):
    sql = ("SELECT CAST($2 AS TEXT) || ' $1 ''$3'' ' || CAST($1 AS TEXT) -- $4\n"
           "/* $5 */ AS v")
    assert await db.fetchval(sql, "one", "two") == "two $1 '$3' one"
    assert await db.fetchval("SELECT CAST($1 AS TEXT) || CAST($1 AS TEXT)", "ab") == "abab"


async def test_nulls(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, a TEXT, b {types['int']}, c {types['bytes']})")
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2, $3, $4)", 1, None, None, None)
    await db.execute(f"INSERT INTO {t} VALUES (2, NULL, NULL, NULL)")
    rows = await db.fetch(f"SELECT a, b, c FROM {t} ORDER BY id")
    assert [tuple(r) for r in rows] == [(None, None, None), (None, None, None)]
    assert await db.fetchval(f"SELECT count(*) FROM {t} WHERE a IS NULL AND b IS NULL AND c IS NULL") == 2
    assert await db.fetchval(f"SELECT count(*) FROM {t} WHERE a = $1", None) == 0


@pytest.mark.parametrize("text", [
    "😀👍🏽👨‍👩‍👧‍👦",                 # emoji with a skin-tone modifier and zero-width joiners
    "漢字 かな カナ 한국어 中文",       # CJK
    "e\u0301 a\u0308 n\u0303",        # combining marks (NFD), kept as given
    "Ελληνικά עברית العربية",          # other scripts, including right-to-left
    "\U0010FFFF\u00e9\u20ac",          # the last code point, Latin-1 and BMP characters
], ids=["emoji", "cjk", "combining", "scripts", "astral"])
async def test_non_ascii_text(db, new_table, types, text):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, v TEXT)")
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, text)
    assert await db.fetchval(f"SELECT v FROM {t}") == text
    # The server sees code points, not mangled bytes: length() counts characters on both engines.
    assert await db.fetchval(f"SELECT length(v) FROM {t}") == len(text)
    assert await db.fetchval(f"SELECT id FROM {t} WHERE v = $1", text) == 1
    assert await db.fetchval("SELECT CAST($1 AS TEXT)", text) == text


async def test_non_ascii_column_names(db):
    row = await db.fetchrow('SELECT 1 AS "名前", 2 AS "ünï", 3 AS "😀"')
    assert list(row.keys()) == ["名前", "ünï", "😀"]
    assert row["名前"] == 1 and row["ünï"] == 2 and row["😀"] == 3


async def test_ten_megabytes_of_bytes(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, v {types['bytes']})")
    payload = os.urandom(10 * 1024 * 1024)
    assert await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, payload) == 1
    assert await db.fetchval(f"SELECT length(v) FROM {t}") == len(payload)
    got = await db.fetchval(f"SELECT v FROM {t} WHERE id = $1", 1)
    assert type(got) is bytes and len(got) == len(payload)
    assert got == payload


async def test_ten_megabytes_of_text(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, v TEXT)")
    text = "ünï😀" * (10 * 1024 * 1024 // 10)
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, text)
    assert await db.fetchval(f"SELECT v FROM {t}") == text


async def test_hundred_thousand_rows(db):
    rows = await db.fetch(COUNT_TO.format(n=100000))
    assert len(rows) == 100000
    assert rows[0]["n"] == 1 and rows[0]["s"] == "row 1"
    assert rows[-1]["n"] == 100000 and rows[-1]["s"] == "row 100000"
    assert sum(r["n"] for r in rows) == 100000 * 100001 // 2
    assert all(r["s"] == f"row {r['n']}" for r in rows[::997])


async def test_hundred_thousand_rows_from_a_table(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (n {types['int']}, s TEXT)")
    await db.execute(f"INSERT INTO {t} (n, s) " + COUNT_TO.format(n=100000))
    rows = await db.fetch(f"SELECT n, s FROM {t} ORDER BY n")
    assert [r["n"] for r in rows] == list(range(1, 100001))
    assert rows[54320]["s"] == "row 54321"


async def test_executemany(db, new_table, types):
    t = new_table()
    await db.execute(
        f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, name TEXT, score {types['float']}, raw {types['bytes']})")
    rows = [(i, f"name {i} ü", i / 4 if i % 3 else None, bytes([i % 256]) * (i % 5)) for i in range(1000)]
    assert await db.executemany(f"INSERT INTO {t} (id, name, score, raw) VALUES ($1, $2, $3, $4)", rows) is None
    got = await db.fetch(f"SELECT id, name, score, raw FROM {t} ORDER BY id")
    assert [tuple(r) for r in got] == rows
    # Updates through executemany, and on a connection.
    async with db.connection() as conn:
        assert await conn.executemany(f"UPDATE {t} SET name = $2 WHERE id = $1",
                                      [(i, "even") for i in range(0, 1000, 2)]) is None
    assert await db.fetchval(f"SELECT count(*) FROM {t} WHERE name = $1", "even") == 500


async def test_executemany_with_no_rows_does_nothing(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']})")
    assert await db.executemany(f"INSERT INTO {t} (id) VALUES ($1)", []) is None
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 0


async def test_executemany_failing_row_stops_the_batch(db, new_table, types, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY)")
    await db.execute(f"INSERT INTO {t} (id) VALUES (3)")
    with pytest.raises(keel.IntegrityError) as ei:
        await db.executemany(f"INSERT INTO {t} (id) VALUES ($1)", [(1,), (2,), (3,), (4,)])
    assert ei.value.sqlstate == "23505"
    ids = [r["id"] for r in await db.fetch(f"SELECT id FROM {t} ORDER BY id")]
    assert 4 not in ids
    if engine == "sqlite":
        assert ids == [3]  # the contract makes a SQLite batch atomic
    assert await db.fetchval("SELECT 1") == 1
    assert db.pool_stats()["leased"] == 0


async def test_executemany_checks_every_row(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (a {types['int']}, b {types['int']})")
    with pytest.raises(keel.ProgrammingError):
        await db.executemany(f"INSERT INTO {t} (a, b) VALUES ($1, $2)", [(1, 2), (3,)])
    with pytest.raises(keel.DataError):
        await db.executemany(f"INSERT INTO {t} (a, b) VALUES ($1, $2)", [(1, 2), (3, object())])
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 0


async def test_lazy_start(make_db):
    d = make_db()
    assert await d.fetchval("SELECT 1") == 1
    assert d.pool_stats()["size"] >= 1


async def test_async_with_and_idempotent_close(db_url):
    async with keel.Database(db_url) as d:
        assert await d.fetchval("SELECT 2") == 2
    await close_db(d)
    d2 = keel.Database(db_url)
    await d2.start()
    await close_db(d2)
    await close_db(d2)


async def test_close_waits_for_leased_connections(db_url):
    d = keel.Database(db_url)
    await d.start()
    conn = await d.acquire()
    closing = asyncio.create_task(d.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    assert await conn.fetchval("SELECT 3") == 3
    await d.release(conn)
    await asyncio.wait_for(closing, 10)


async def test_database_properties_and_stats(db, engine):
    assert db.databases == ["default"]
    assert db.default_database == "default"
    assert db.engine() == engine
    assert db.engine("default") == engine
    stats = db.pool_stats()
    assert set(stats) == {"size", "idle", "leased", "waiting", "min_size", "max_size", "acquire_timeout"}
    assert stats["leased"] == 0 and stats["waiting"] == 0
    assert stats["min_size"] <= stats["max_size"]
    assert stats == db.pool_stats("default")
    latency = await db.ping()
    assert type(latency) is float and 0 <= latency < 10
    assert type(await db.ping("default")) is float


async def test_connection_lease(db, engine):
    async with db.connection() as conn:
        assert isinstance(conn, keel.Connection)
        assert conn.database == "default"
        assert conn.engine == engine
        assert conn.in_transaction is False
        assert await conn.fetchval("SELECT $1 + 1", 41) == 42
        assert db.pool_stats()["leased"] == 1
    assert db.pool_stats()["leased"] == 0
    conn = await db.acquire()
    try:
        assert db.pool_stats()["leased"] == 1
        assert (await conn.fetchrow("SELECT 5 AS five"))["five"] == 5
        assert [tuple(r) for r in await conn.fetch("SELECT 6 AS six")] == [(6,)]
    finally:
        await db.release(conn)
    assert db.pool_stats()["leased"] == 0
    async with db.connection("default") as conn:
        assert conn.database == "default"
