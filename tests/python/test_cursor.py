# tests/python/test_cursor.py - Connection.cursor: rows streamed on demand, memory bounded by prefetch, on every SQL engine.
"""conn.cursor(sql, *args, prefetch=N), as asyncpg's.

``async for`` reads every row; ``await conn.cursor(…)`` gives a RowCursor with fetch(n),
fetchrow(), forward(n) and close(). The statement is paused whenever prefetch Records wait to
be taken, so what the cursor holds never grows with the result (asserted on the Records it
buffers while 200,000 rows go through, not on timings). Bad input raises errors naming what was
wrong, and the connection serves on.
"""
import asyncio
import os

import pytest

import keel
from conftest import wait_until

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
