# tests/python/test_crud.py - queries on every engine: CRUD, NULLs, text, big values and results, batches, lifecycle.
import asyncio
import os

import pytest

import keel
from conftest import ONE_SECOND_SQL, UNIQUE_VIOLATION_SQLSTATE, close_db, concat

# Rows n = 1…N with s = 'row n', in order. MariaDB stops a recursive CTE after
# max_recursive_iterations (1000 by default), so there the numbers come from a cross join of
# digits instead (10^5 rows at most).
COUNT_TO = {
    "postgresql": ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) "
                   "SELECT n, 'row ' || n AS s FROM c"),
    "sqlite": ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) "
               "SELECT n, 'row ' || n AS s FROM c"),
    "mysql": ("WITH d(x) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 "
              "UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 "
              "UNION ALL SELECT 8 UNION ALL SELECT 9) "
              "SELECT n, CONCAT('row ', n) AS s FROM (SELECT 1 + a.x + 10 * b.x + 100 * c.x "
              "+ 1000 * e.x + 10000 * f.x AS n FROM d a, d b, d c, d e, d f) g "
              "WHERE n <= {n} ORDER BY n"),
}

# Column aliases beyond ASCII. MySQL keeps identifiers in utf8mb3, so they stop at U+FFFF (an
# astral character comes back as '?'); a BMP symbol stands in for the emoji there.
NON_ASCII_NAMES = {
    "postgresql": ["名前", "ünï", "😀"],
    "sqlite": ["名前", "ünï", "😀"],
    "mysql": ["名前", "ünï", "☃"],
}

# A failing batch leaves no row behind where the engine makes batches atomic: the contract says
# so for SQLite, and the MySQL engine runs a batch in a transaction (or savepoint) of its own.
ATOMIC_BATCHES = {"sqlite", "mysql"}


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


async def test_placeholders_in_strings_and_comments_are_not_parameters(db, engine, dialect):
    text = dialect["text_cast"]
    expr = concat(engine, f"CAST($2 AS {text})", "' $1 ''$3'' '", f"CAST($1 AS {text})")
    sql = f"SELECT {expr} -- $4\n/* $5 */ AS v"
    assert await db.fetchval(sql, "one", "two") == "two $1 '$3' one"
    twice = concat(engine, f"CAST($1 AS {text})", f"CAST($1 AS {text})")
    assert await db.fetchval(f"SELECT {twice}", "ab") == "abab"


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
async def test_non_ascii_text(db, new_table, types, dialect, text):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, v {types['text']})")
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, text)
    assert await db.fetchval(f"SELECT v FROM {t}") == text
    # The server sees code points, not mangled bytes: it counts characters, not bytes.
    assert await db.fetchval(f"SELECT {dialect['char_length']}(v) FROM {t}") == len(text)
    assert await db.fetchval(f"SELECT id FROM {t} WHERE v = $1", text) == 1
    assert await db.fetchval(f"SELECT CAST($1 AS {dialect['text_cast']})", text) == text


async def test_non_ascii_column_names(db, engine):
    a, b, c = NON_ASCII_NAMES[engine]
    row = await db.fetchrow(f'SELECT 1 AS "{a}", 2 AS "{b}", 3 AS "{c}"')
    assert list(row.keys()) == [a, b, c]
    assert row[a] == 1 and row[b] == 2 and row[c] == 3


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
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, v {types['text']})")
    text = "ünï😀" * (10 * 1024 * 1024 // 10)
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, text)
    assert await db.fetchval(f"SELECT v FROM {t}") == text


async def test_hundred_thousand_rows(db, engine):
    rows = await db.fetch(COUNT_TO[engine].format(n=100000))
    assert len(rows) == 100000
    assert rows[0]["n"] == 1 and rows[0]["s"] == "row 1"
    assert rows[-1]["n"] == 100000 and rows[-1]["s"] == "row 100000"
    assert sum(r["n"] for r in rows) == 100000 * 100001 // 2
    assert all(r["s"] == f"row {r['n']}" for r in rows[::997])


async def test_hundred_thousand_rows_from_a_table(db, new_table, types, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (n {types['int']}, s TEXT)")
    await db.execute(f"INSERT INTO {t} (n, s) " + COUNT_TO[engine].format(n=100000))
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


async def test_executemany_of_a_hundred_thousand_rows_with_nulls_everywhere(db, new_table, types):
    t = new_table()
    await db.execute(
        f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, name TEXT, score {types['float']}, raw {types['bytes']})")
    # NULLs in every column but the key, in patterns that change the parameter types from row
    # to row (a NULL has no type).
    rows = [(i, None if i % 3 == 0 else f"n{i}", None if i % 5 == 0 else i / 8,
             None if i % 7 else bytes([i % 256]) * (i % 4)) for i in range(100_000)]
    assert await db.executemany(f"INSERT INTO {t} (id, name, score, raw) VALUES ($1, $2, $3, $4)", rows) is None
    got = await db.fetch(f"SELECT id, name, score, raw FROM {t} ORDER BY id")
    assert [tuple(r) for r in got] == rows


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
    assert ei.value.sqlstate == UNIQUE_VIOLATION_SQLSTATE[engine]
    # The C API names the failing row's index (zero-based) in the message.
    assert "row 2" in str(ei.value), str(ei.value)
    ids = [r["id"] for r in await db.fetch(f"SELECT id FROM {t} ORDER BY id")]
    assert 4 not in ids
    if engine in ATOMIC_BATCHES:
        assert ids == [3]
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


async def test_close_lets_running_statements_finish_and_refuses_new_work(db_url, engine):
    # docs/python.md: close() refuses new work at once, and waits for statements running.
    d = keel.Database(db_url)
    await d.start()
    running = asyncio.create_task(d.fetchval(ONE_SECOND_SQL[engine]))
    await asyncio.sleep(0.2)
    closing = asyncio.create_task(d.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    with pytest.raises(keel.InterfaceError, match="clos"):
        await d.fetchval("SELECT 1")
    await asyncio.wait_for(running, 30)  # it ends with its result, not an error
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


# An insert that updates the existing row on a key conflict, in each engine's words.
UPSERT = {
    "postgresql": "INSERT INTO {t} (id, qty) VALUES ($1, $2) "
                  "ON CONFLICT (id) DO UPDATE SET qty = {t}.qty + EXCLUDED.qty",
    "sqlite": "INSERT INTO {t} (id, qty) VALUES ($1, $2) "
              "ON CONFLICT (id) DO UPDATE SET qty = {t}.qty + excluded.qty",
    "mysql": "INSERT INTO {t} (id, qty) VALUES ($1, $2) ON DUPLICATE KEY UPDATE qty = qty + VALUES(qty)",
}


async def test_upsert(db, new_table, types, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, qty {types['int']})")
    sql = UPSERT[engine].format(t=t)
    await db.execute(sql, 1, 5)
    await db.execute(sql, 1, 7)
    await db.executemany(sql, [(2, 1), (1, 100), (2, 10)])
    rows = await db.fetch(f"SELECT id, qty FROM {t} ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, 112), (2, 11)]


async def test_mysql_placeholder_lexing(mysql_db):
    # MySQL's own lexical rules: backslash escapes in strings, `backquoted` identifiers, '#'
    # comments; a $n inside any of them is text. A literal '?' is MySQL's own placeholder, which
    # keel does not accept in SQL (it would count as a parameter).
    sql = ("SELECT CONCAT('it\\'s $2 \\\\', CAST($1 AS CHAR), \"q\\\" $3\") AS `$4 col` "
           "# $5 comment\n"
           "-- $6 comment\n"
           "/* $7 */")
    row = await mysql_db.fetchrow(sql, "one")
    assert list(row.keys()) == ["$4 col"]
    assert row[0] == "it's $2 \\oneq\" $3"
    # One parameter used twice and out of order: each becomes a '?' bound to the right value.
    assert await mysql_db.fetchval("SELECT CONCAT($2, $1, $2)", "a", "b") == "bab"
    with pytest.raises(keel.ProgrammingError):
        await mysql_db.fetchval("SELECT ?, $1", 1)
    assert await mysql_db.fetchval("SELECT 1") == 1


async def test_mysql_multi_statement_script_without_parameters(mysql_db):
    # Without parameters the text protocol runs scripts; the last statement with rows wins.
    t = "t_" + os.urandom(6).hex()
    try:
        rows = await mysql_db.fetch(
            f"CREATE TABLE {t} (a BIGINT); INSERT INTO {t} VALUES (1), (2); "
            f"SELECT a FROM {t} ORDER BY a; UPDATE {t} SET a = a + 10")
        assert [r["a"] for r in rows] == [1, 2]
        assert await mysql_db.fetchval(f"SELECT sum(a) FROM {t}") == 23
        assert await mysql_db.execute(f"UPDATE {t} SET a = a + 1; DELETE FROM {t} WHERE a = 12") == 1
    finally:
        await mysql_db.execute(f"DROP TABLE IF EXISTS {t}")


async def test_schema_change_between_executions_of_a_statement(db, new_table, types):
    # A statement run again after its table changed (a migration while the service runs) sees
    # the new columns; engines that cache prepared statements must notice the change.
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']})")
    await db.execute(f"INSERT INTO {t} (id) VALUES (1)")
    async with db.connection() as conn:
        sql = f"SELECT * FROM {t} WHERE id = $1"
        assert [tuple(r) for r in await conn.fetch(sql, 1)] == [(1,)]
        await conn.execute(f"ALTER TABLE {t} ADD COLUMN extra {types['int']} DEFAULT 7")
        rows = await conn.fetch(sql, 1)
        assert [dict(r) for r in rows] == [{"id": 1, "extra": 7}]
        assert await conn.fetchval("SELECT $1 + 1", 1) == 2
    assert await db.fetchval(f"SELECT extra FROM {t} WHERE id = $1", 1) == 7
