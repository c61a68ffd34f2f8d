# tests/python/test_cursor.py - Connection.cursor: rows streamed on demand, memory bounded by prefetch, on every SQL engine.
"""conn.cursor(sql, *args, prefetch=N), as asyncpg's.

``async for`` reads every row; ``await conn.cursor(…)`` gives a RowCursor with fetch(n),
fetchrow(), forward(n) and close(). The statement is paused whenever prefetch Records wait to
be taken, so what the cursor holds never grows with the result (asserted on the Records it
buffers while 200,000 rows go through, not on timings). Bad input raises errors naming what was
wrong, and the connection serves on.
"""
import asyncio
import gc
import json
import os
from decimal import Decimal

import pytest

import keel
from conftest import SERVER_URLS, close_db, unique_name, wait_until

# 1…n as column n, on each engine.
SERIES = {
    "postgresql": "SELECT n::int8 AS n FROM generate_series(1, {n}) AS n",
    "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) SELECT n FROM c",
    "mysql": "SELECT CAST(seq AS SIGNED) AS n FROM seq_1_to_{n}",
}
# A statement whose first row takes seconds.
SLOW = {
    "postgresql": "SELECT pg_sleep(5) AS s",
    "mysql": "SELECT SLEEP(5) AS s",
    "sqlite": ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100000000) "
               "SELECT count(*) AS s FROM c"),
}
# The most rows an engine hands over at once: the cursor may hold prefetch + one such batch.
ENGINE_BATCH = 256


async def test_async_for_reads_every_row_holding_at_most_prefetch_plus_a_batch(db, engine):
    n = 200_000
    async with db.connection() as conn:
        cur = conn.cursor(SERIES[engine].format(n=n), prefetch=100)
        assert isinstance(cur, keel.CursorFactory)
        it = cur.__aiter__()
        assert isinstance(it, keel.RowCursor)
        count = total = most = 0
        async for row in it:
            count += 1
            total += row["n"]
            if count % 1000 == 1:
                most = max(most, it._op._buffered)
                # The statement still runs (paused) while rows remain to be read.
                if count < n - 10_000:
                    assert not it._op._future.done()
        assert count == n and total == n * (n + 1) // 2
        assert most <= 100 + ENGINE_BATCH, most
        assert it.closed
        # The connection is free again.
        assert await conn.fetchval("SELECT 41 + 1") == 42


async def test_fetch_fetchrow_and_forward(db, engine):
    async with db.connection() as conn:
        cur = await conn.cursor(SERIES[engine].format(n=1000), prefetch=10)
        assert isinstance(cur, keel.RowCursor)
        assert [r["n"] for r in await cur.fetch(5)] == [1, 2, 3, 4, 5]
        assert (await cur.fetchrow())["n"] == 6
        assert await cur.forward(500) == 500
        assert (await cur.fetchrow())["n"] == 507
        rows = await cur.fetch(1000)
        assert [r["n"] for r in rows] == list(range(508, 1001))
        # After the last row: nothing more, without error; closed once closed.
        assert await cur.fetch(10) == []
        assert await cur.fetchrow() is None
        assert await cur.forward(3) == 0
        assert cur.closed
        await cur.close()
        with pytest.raises(keel.InterfaceError, match="the cursor is closed"):
            await cur.fetchrow()
        assert await conn.fetchval("SELECT 1") == 1


async def test_forward_past_the_end_and_an_empty_result(db, engine):
    async with db.connection() as conn:
        cur = await conn.cursor(SERIES[engine].format(n=30))
        assert await cur.forward(100) == 30
        empty = await conn.cursor(SERIES[engine].format(n=5) + " LIMIT 0")
        assert await empty.fetch(3) == []
        assert await conn.fetchval("SELECT 1") == 1


async def test_parameters_and_a_transaction(db, new_table, types):
    t = new_table("cur")
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, name VARCHAR(20))")
    await db.executemany(f"INSERT INTO {t} (id, name) VALUES ($1, $2)", [(i, f"n{i}") for i in range(300)])
    async with db.transaction() as conn:
        await conn.execute(f"DELETE FROM {t} WHERE id >= $1", 200)
        # The cursor sees the transaction's own writes.
        got = [(r["id"], r["name"]) async for r in conn.cursor(
            f"SELECT id, name FROM {t} WHERE id >= $1 ORDER BY id", 150, prefetch=7)]
        assert got == [(i, f"n{i}") for i in range(150, 200)]
        assert conn.in_transaction


async def test_closing_early_stops_the_statement_and_frees_the_connection(db, engine):
    async with db.connection() as conn:
        async with await conn.cursor(SERIES[engine].format(n=200_000), prefetch=50) as cur:
            assert len(await cur.fetch(120)) == 120
        assert cur.closed
        with pytest.raises(keel.InterfaceError, match="closed"):
            await cur.fetch(1)
        assert await conn.fetchval("SELECT 41 + 1") == 42
        # Breaking out of async for and closing does the same.
        cur = conn.cursor(SERIES[engine].format(n=200_000))
        it = cur.__aiter__()
        async for row in it:
            if row["n"] == 3:
                break
        await it.close()
        assert await conn.fetchval("SELECT 2") == 2
    assert db.pool_stats()["leased"] == 0


async def test_breaking_out_of_async_for_lets_the_connection_serve_on(db, engine):
    async with db.connection() as conn:
        async for row in conn.cursor(SERIES[engine].format(n=200_000), prefetch=20):
            if row["n"] == 3:
                break
        # The cursor, dropped, cancelled its statement: the next one runs after it ended.
        assert await conn.fetchval("SELECT 41 + 1") == 42
        assert [r["n"] async for r in conn.cursor(SERIES[engine].format(n=3))] == [1, 2, 3]


async def test_a_failed_or_dropped_cursor_leaves_the_connection_usable(db, engine):
    async with db.connection() as conn:
        # A statement that fails: once its error is in, the connection serves on, and the
        # cursor raises the error when it is read.
        bad = await conn.cursor("SELEC 1")
        await wait_until(lambda: bad._op._future.done(), timeout=10)
        assert await conn.fetchval("SELECT 1") == 1
        with pytest.raises(keel.ProgrammingError):
            await bad.fetch(1)
        # A cursor dropped after a bad argument to fetch: its statement is cancelled.
        with pytest.raises(ValueError):
            await (await conn.cursor(SERIES[engine].format(n=100_000))).fetch(0)
        assert await conn.fetchval("SELECT 2") == 2


async def test_another_statement_while_a_cursor_is_open_is_refused_clearly(db, engine):
    async with db.connection() as conn:
        cur = await conn.cursor(SERIES[engine].format(n=10_000))
        assert (await cur.fetchrow())["n"] == 1
        with pytest.raises(keel.InterfaceError, match="a cursor is open on this connection"):
            await conn.fetchval("SELECT 1")
        # The cursor is unharmed by the refusal.
        assert (await cur.fetchrow())["n"] == 2
        await cur.close()
        assert await conn.fetchval("SELECT 1") == 1


async def test_releasing_the_connection_ends_an_open_cursor(db, engine):
    conn = await db.acquire()
    cur = await conn.cursor(SERIES[engine].format(n=100_000))
    assert (await cur.fetchrow())["n"] == 1
    await db.release(conn)
    # The statement is cancelled on the server, and the connection goes back once it ended.
    await wait_until(lambda: db.pool_stats()["leased"] == 0, timeout=10)
    assert await db.fetchval("SELECT 3") == 3
    with pytest.raises(keel.Error):
        await cur.fetch(10_000_000)


async def test_bad_arguments_are_refused(db, engine):
    async with db.connection() as conn:
        with pytest.raises(ValueError, match="prefetch must be at least 1"):
            conn.cursor("SELECT 1", prefetch=0)
        with pytest.raises(TypeError, match="prefetch must be an int"):
            conn.cursor("SELECT 1", prefetch="10")
        with pytest.raises(keel.ProgrammingError, match=r"\$1"):
            await conn.cursor("SELECT $1, $2", 1)
        cur = await conn.cursor(SERIES[engine].format(n=10))
        with pytest.raises(ValueError, match="n must be at least 1"):
            await cur.fetch(0)
        with pytest.raises(TypeError, match="n must be an int"):
            await cur.forward(1.5)
        await cur.close()
        # An error of the statement itself is raised by the first fetch.
        cur = await conn.cursor("SELECT * FROM no_such_table_for_cursor")
        with pytest.raises(keel.ProgrammingError, match="no_such_table_for_cursor"):
            await cur.fetch(1)
        assert cur.closed
        assert await conn.fetchval("SELECT 41 + 1") == 42


async def test_an_error_midway_keeps_the_rows_before_it(pg_db):
    async with pg_db.connection() as conn:
        cur = await conn.cursor("SELECT 10 / (5000 - n) AS q FROM generate_series(1, 10000) AS n",
                                prefetch=100)
        got = await cur.fetch(1000)
        assert len(got) == 1000
        with pytest.raises(keel.DataError, match="division by zero"):
            async for _ in cur:
                pass
        assert cur.closed
        assert await conn.fetchval("SELECT 1") == 1


async def test_a_cursor_on_mongodb_is_not_supported():
    url = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")
    if not url:
        pytest.skip("KEEL_TEST_MONGO_URL is empty: no MongoDB server for this run")
    d = keel.Database(url)
    try:
        async with d.connection() as conn:
            with pytest.raises(keel.NotSupportedError, match="collection"):
                await conn.cursor("SELECT 1")
    finally:
        await d.close()


class Numbered(keel.Record):
    pass


async def test_record_class_and_into(db, engine):
    async with db.connection() as conn:
        rows = [r async for r in conn.cursor(SERIES[engine].format(n=300), record_class=Numbered)]
        assert len(rows) == 300 and all(type(r) is Numbered for r in rows)
        assert rows[299]["n"] == 300
        cur = await conn.cursor(SERIES[engine].format(n=5), into=lambda n: n * 10)
        assert await cur.fetch(5) == [10, 20, 30, 40, 50]
        with pytest.raises(TypeError, match="record_class must be a subclass of keel.Record"):
            conn.cursor("SELECT 1", record_class=dict)


async def test_timeout_bounds_the_whole_statement_and_a_fetch(db, engine):
    async with db.connection() as conn:
        # timeout= of cursor(): the statement's deadline, time between fetches included. The
        # result is far larger than socket buffers, so the statement is still running when the
        # deadline passes; what the server sent meanwhile is read and dropped, unconverted, for
        # the cancel to take effect. (When that takes longer than the deadline's grace, a slow
        # build's case, keel closes the connection, as keel_conn_set_timeout says: either way
        # the cursor raises QueryTimeout and the pool serves on.)
        cur = await conn.cursor(SERIES[engine].format(n=2_000_000), prefetch=10, timeout=1)
        assert (await cur.fetchrow())["n"] == 1
        await asyncio.sleep(1.5)
        with pytest.raises(keel.QueryTimeout):
            async for _ in cur:
                pass
    assert await db.fetchval("SELECT 41 + 1") == 42
    async with db.connection() as conn:
        # timeout= of fetch(): that wait only; the cursor is closed when it passes.
        cur = await conn.cursor(SLOW[engine])
        with pytest.raises(keel.QueryTimeout, match="fetch"):
            await cur.fetch(1, timeout=0.2)
        assert cur.closed
        assert await conn.fetchval("SELECT 7") == 7


async def test_close_with_a_timeout_ends_an_open_cursor(make_db, engine):
    # A cursor left open keeps its connection; close(timeout=) closes it anyway: the fetch that
    # needs the statement raises (the rows it had already received come first), nothing hangs.
    db = make_db()
    await db.start()
    async with db.connection() as conn:
        cur = await conn.cursor(SERIES[engine].format(n=1_000_000), prefetch=10)
        assert [r["n"] for r in await cur.fetch(3)] == [1, 2, 3]
        await asyncio.wait_for(db.close(timeout=0.1), 10)
        assert db.closed
        with pytest.raises(keel.InterfaceError, match="database 'main' was closed"):
            await asyncio.wait_for(cur.fetch(1_000_000), 5)
        with pytest.raises(keel.InterfaceError, match="was closed while this connection was "
                                                      "leased"):
            await conn.fetchval("SELECT 1")
    assert conn.released


# ---- inside a transaction on PostgreSQL and MySQL: a server-side cursor ----

@pytest.fixture(params=["postgresql", "mysql"])
async def server_db(request):
    """A started keel.Database on each engine with server-side cursors, and its engine."""
    d = keel.Database(SERVER_URLS[request.param])
    await d.start()
    try:
        yield d, request.param
    finally:
        await close_db(d)


async def open_cursors(conn):
    """The cursors open on conn's session, where the server tells (PostgreSQL's pg_cursors;
    MySQL's are statements): None on MySQL."""
    if conn.engine != "postgresql":
        return None
    return await conn.fetchval("SELECT count(*) FROM pg_cursors WHERE name LIKE 'keel_cursor_%'")


async def test_a_cursor_in_a_transaction_lets_other_statements_run_between_fetches(server_db):
    d, engine = server_db
    t = unique_name("cur")
    await d.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, seen int NOT NULL DEFAULT 0)")
    try:
        await d.executemany(f"INSERT INTO {t} (id) VALUES ($1)", [(i,) for i in range(1, 1001)])
        async with d.transaction() as conn:
            # What asyncpg's users do: iterate a cursor and update each row on the same
            # connection, inside the transaction.
            cur = conn.cursor(f"SELECT id FROM {t} WHERE id > $1 ORDER BY id", 10, prefetch=64)
            it = cur.__aiter__()
            assert isinstance(it, keel.ServerCursor) and isinstance(it, keel.RowCursor)
            n = 0
            async for row in it:
                await conn.execute(f"UPDATE {t} SET seen = seen + 1 WHERE id = $1", row["id"])
                n += 1
                if n == 500:
                    assert await open_cursors(conn) in (1, None)
            assert n == 990 and it.closed
            # Read to its end, the cursor was closed on the server.
            assert await open_cursors(conn) in (0, None)
            assert await conn.fetchval(f"SELECT sum(seen) FROM {t}") == 990
            # Two cursors at once, read in turns.
            a = await conn.cursor(f"SELECT id FROM {t} ORDER BY id")
            b = await conn.cursor(f"SELECT id FROM {t} ORDER BY id DESC")
            assert [r["id"] for r in await a.fetch(2)] == [1, 2]
            assert [r["id"] for r in await b.fetch(2)] == [1000, 999]
            assert (await a.fetchrow())["id"] == 3
            assert await open_cursors(conn) in (2, None)
            await a.close()
            await b.close()
            assert await open_cursors(conn) in (0, None)
    finally:
        await d.execute(f"DROP TABLE {t}")


async def test_a_cursor_in_a_transaction_holds_at_most_prefetch_rows(server_db):
    d, engine = server_db
    n = 200_000
    async with d.transaction() as conn:
        it = conn.cursor(SERIES[engine].format(n=n), prefetch=100).__aiter__()
        count = total = most = 0
        async for row in it:
            count += 1
            total += row["n"]
            most = max(most, len(it._batch) - it._at)
        assert count == n and total == n * (n + 1) // 2
        assert most < 100, most
        assert await conn.fetchval("SELECT 41 + 1") == 42


async def test_fetch_forward_and_close_on_a_server_side_cursor(server_db):
    d, engine = server_db
    async with d.connection() as conn:
        async with conn.transaction():
            cur = await conn.cursor(SERIES[engine].format(n=1000), prefetch=10)
            assert isinstance(cur, keel.ServerCursor)
            assert [r["n"] for r in await cur.fetch(5)] == [1, 2, 3, 4, 5]
            assert (await cur.fetchrow())["n"] == 6
            # PostgreSQL's MOVE FORWARD never sends the rows skipped; MySQL's reads them.
            assert await cur.forward(500) == 500
            assert (await cur.fetchrow())["n"] == 507
            assert [r["n"] for r in await cur.fetch(1000)] == list(range(508, 1001))
            assert await cur.fetch(10) == [] and await cur.fetchrow() is None
            assert await cur.forward(3) == 0
            assert cur.closed
            # forward past the end, and closing midway: nothing is left on the server, and
            # the connection serves on inside the transaction.
            cur = await conn.cursor(SERIES[engine].format(n=30))
            assert await cur.forward(100) == 30 and cur.closed
            cur = await conn.cursor(SERIES[engine].format(n=200_000), prefetch=50)
            assert len(await cur.fetch(120)) == 120
            await cur.close()
            await cur.close()
            with pytest.raises(keel.InterfaceError, match="the cursor is closed"):
                await cur.fetch(1)
            assert await open_cursors(conn) in (0, None)
            # async for buffers prefetch rows; fetch takes those first.
            it = conn.cursor(SERIES[engine].format(n=100), prefetch=10).__aiter__()
            assert (await it.__anext__())["n"] == 1
            assert [r["n"] for r in await it.fetch(12)] == list(range(2, 14))
            assert await it.forward(5) == 5
            assert (await it.__anext__())["n"] == 19
            async with it:
                pass
            assert it.closed and await open_cursors(conn) in (0, None)
            assert conn.in_transaction
        assert await conn.fetchval("SELECT 1") == 1


# A query with parameters of several types, on each engine.
PARAM_QUERY = {
    "postgresql": ("SELECT n, $1::text AS label, $2::int4[] AS a, now() AS at "
                   "FROM generate_series(1, 3) AS n WHERE n >= $3", ("x", [1, None, 3], 2)),
    "mysql": ("SELECT CAST(seq AS SIGNED) AS n, $1 AS label, $2 AS d, "
              "TIMESTAMP('2024-01-02 03:04:05.123456') AS at "
              "FROM seq_1_to_3 WHERE seq >= $3", ("x", Decimal("1.50"), 2)),
}


async def test_a_server_side_cursor_binds_parameters_and_makes_rows_as_fetch_does(server_db):
    d, engine = server_db
    async with d.transaction() as conn:
        sql, args = PARAM_QUERY[engine]
        want = await conn.fetch(sql, *args)
        got = [r async for r in conn.cursor(sql, *args)]
        assert len(want) == 2 and [dict(r) for r in got] == [dict(r) for r in want]
        assert [type(v) for v in got[0].values()] == [type(v) for v in want[0].values()]
        rows = [r async for r in conn.cursor(sql, *args, record_class=Numbered)]
        assert [type(r) for r in rows] == [Numbered, Numbered]
        cur = await conn.cursor(SERIES[engine].format(n=5), into=lambda n: n * 10)
        assert await cur.fetch(5) == [10, 20, 30, 40, 50]
        # The wrong number of arguments is refused before anything is sent: the transaction
        # goes on.
        with pytest.raises(keel.ProgrammingError, match=r"\$1"):
            await conn.cursor("SELECT $1, $2", 1)
        assert await conn.fetchval("SELECT 1") == 1


async def test_a_server_side_cursor_after_its_transaction_ended_raises_clearly(pg_db):
    async with pg_db.connection() as conn:
        for end in ("commit", "rollback"):
            tr = conn.transaction()
            await tr.start()
            cur = await conn.cursor(SERIES["postgresql"].format(n=100), prefetch=10)
            assert len(await cur.fetch(3)) == 3
            await getattr(tr, end)()
            with pytest.raises(keel.InterfaceError, match="the cursor's transaction has ended"):
                await cur.fetch(1)
            assert cur.closed
            await cur.close()
        # Used in a later transaction, it raises the same without a round trip, and that
        # transaction goes on unharmed.
        async with conn.transaction():
            cur = await conn.cursor(SERIES["postgresql"].format(n=100))
        async with conn.transaction():
            with pytest.raises(keel.InterfaceError, match="the cursor's transaction has ended"):
                await cur.fetchrow()
            assert await conn.fetchval("SELECT 1") == 1
            # The cursor's name is free again for the next cursor.
            again = await conn.cursor(SERIES["postgresql"].format(n=100))
            assert (await again.fetchrow())["n"] == 1
        # When a transaction ended unseen (COMMIT and BEGIN in one string), the server's "no
        # such cursor" says so.
        await conn.execute("BEGIN")
        cur = await conn.cursor(SERIES["postgresql"].format(n=100))
        await conn.execute("COMMIT; BEGIN")
        with pytest.raises(keel.InterfaceError, match="the cursor's transaction has ended"):
            await cur.fetchrow()
        await conn.execute("ROLLBACK")
        assert await conn.fetchval("SELECT 1") == 1


async def test_a_server_side_cursor_ends_with_an_error_midway_or_a_timeout(pg_db):
    async with pg_db.connection() as conn:
        tr = conn.transaction()
        await tr.start()
        cur = await conn.cursor(
            "SELECT 10 / (5000 - n) AS q FROM generate_series(1, 10000) AS n", prefetch=100)
        assert len(await cur.fetch(1000)) == 1000
        with pytest.raises(keel.DataError, match="division by zero"):
            async for _ in cur:
                pass
        assert cur.closed
        # The failed block refuses statements until its rollback; close() is quiet.
        await cur.close()
        await tr.rollback()
        # The error of the statement itself, at await.
        tr = conn.transaction()
        await tr.start()
        with pytest.raises(keel.ProgrammingError, match="no_such_table_for_cursor"):
            await conn.cursor("SELECT * FROM no_such_table_for_cursor")
        await tr.rollback()
        # timeout= of fetch bounds its FETCH: the FETCH is cancelled on the server (which
        # fails the transaction, as any statement cancelled in it does) and the cursor closed.
        tr = conn.transaction()
        await tr.start()
        cur = await conn.cursor("SELECT pg_sleep(CASE WHEN n = 3 THEN 5 ELSE 0 END) AS s "
                                "FROM generate_series(1, 5) AS n")
        assert len(await cur.fetch(2)) == 2
        with pytest.raises(keel.QueryTimeout):
            await cur.fetch(2, timeout=0.3)
        assert cur.closed
        await tr.rollback()
        assert await conn.fetchval("SELECT 7") == 7
        # Cancelling the task that waits for a FETCH does the same.
        tr = conn.transaction()
        await tr.start()
        cur = await conn.cursor("SELECT pg_sleep(5) AS s")
        task = asyncio.ensure_future(cur.fetchrow())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cur.closed
        await tr.rollback()
        assert await conn.fetchval("SELECT 8") == 8


async def test_statements_declare_cannot_take_stream_inside_a_transaction(pg_db):
    t = unique_name("cur")
    async with pg_db.transaction() as conn:
        await conn.execute(f"CREATE TABLE {t} (id int)")
        # INSERT … RETURNING and strings of several statements are no cursor's query: they
        # stream, the connection busy with them until read.
        cur = await conn.cursor(f"INSERT INTO {t} SELECT n FROM generate_series(1, 5) AS n "
                                "RETURNING id")
        assert not isinstance(cur, keel.ServerCursor)
        assert [r["id"] for r in await cur.fetch(10)] == [1, 2, 3, 4, 5]
        rows = [r["n"] async for r in conn.cursor("SELECT 1 AS n; SELECT 2 AS n")]
        assert rows == [2]
        assert await open_cursors(conn) == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 5
        # A query with a trailing ';' is still one.
        cur = await conn.cursor("SELECT 1 AS n;")
        assert isinstance(cur, keel.ServerCursor)
        assert (await cur.fetchrow())["n"] == 1
        await conn.execute(f"DROP TABLE {t}")


async def stmt_closes(conn):
    """How many prepared statements conn's MySQL session closed."""
    return int((await conn.fetchrow("SHOW SESSION STATUS LIKE 'Com_stmt_close'"))[1])


async def test_a_mysql_server_side_cursor(mysql_db):
    async with mysql_db.connection() as conn:
        # Not tied to the transaction: read on after the commit, as MySQL keeps it.
        tr = conn.transaction()
        await tr.start()
        cur = await conn.cursor(SERIES["mysql"].format(n=100), prefetch=10)
        assert isinstance(cur, keel.ServerCursor)
        assert len(await cur.fetch(3)) == 3
        await tr.commit()
        assert (await cur.fetchrow())["n"] == 4
        # Closing costs no round trip: the statement is closed on the server with the next
        # prepared statement; so is that of a cursor dropped unclosed.
        before = await stmt_closes(conn)
        await cur.close()
        async with conn.transaction():
            dropped = await conn.cursor(SERIES["mysql"].format(n=100))
            assert (await dropped.fetchrow())["n"] == 1
            del dropped
            gc.collect()
            assert await conn.fetchval("SELECT $1", 5) == 5
        assert await stmt_closes(conn) >= before + 2
        # MariaDB materialises the result as the cursor opens: the statement's time, and its
        # errors, come at await conn.cursor(…), and its timeout= bounds that.
        async with conn.transaction():
            with pytest.raises(keel.ProgrammingError, match="no_such_table_for_cursor"):
                await conn.cursor("SELECT * FROM no_such_table_for_cursor")
            with pytest.raises(keel.QueryTimeout):
                await conn.cursor("SELECT SLEEP(5) AS s FROM seq_1_to_2", timeout=0.3)
            assert await conn.fetchval("SELECT 7") == 7
            # A statement the protocol's cursors cannot serve streams instead.
            rows = [r["n"] async for r in conn.cursor("SELECT 1 AS n; SELECT 2 AS n")]
            assert rows == [2]
            async with await conn.cursor("SHOW TABLES") as other:
                assert not isinstance(other, keel.ServerCursor)
        assert await conn.fetchval("SELECT 8") == 8


# ---- a cursor whose rows fail to convert (trial finding T7) ----

JSON_SERIES = {
    # Unending (PostgreSQL), or far longer than the test (MySQL): a cursor that kept its
    # statement running would keep the connection busy.
    "postgresql": ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
                   "SELECT to_json(n) AS j FROM c"),
    "mysql": "SELECT JSON_EXTRACT(CAST(seq AS CHAR), '$') AS j FROM seq_1_to_1000000000",
}


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
async def test_a_cursor_whose_rows_fail_to_convert_frees_its_connection_at_once(server):
    def loads(text):
        value = json.loads(text)
        if value == 300:
            raise ValueError("no 300 here")
        return value

    d = keel.Database(SERVER_URLS[server], json_deserializer=loads)
    try:
        async with d.connection() as conn:
            cur = await conn.cursor(JSON_SERIES[server], prefetch=1000)
            # Kept, unread: the statement is stopped once its rows failed to convert, and the
            # connection serves other statements.
            await wait_until(lambda: cur._op._future.done(), timeout=10)
            assert await conn.fetchval("SELECT 41 + 1") == 42
            # The rows before the failure are read first, then its error.
            rows = await cur.fetch(299)
            assert [r["j"] for r in rows] == list(range(1, 300))
            with pytest.raises(keel.DataError, match='column "j": cannot decode json value: '
                                                     'no 300 here'):
                await cur.fetch(1)
            assert cur.closed
    finally:
        await close_db(d)
