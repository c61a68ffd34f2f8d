# tests/python/test_pg_batch.py - PostgreSQL executemany written on the wire by keel: what goes out, errors, transactions, cancellation, asynchronous messages.
"""On a plain socket keel writes a PostgreSQL batch's messages itself (src/engines/pg/batch.c):
one Parse and Describe of the statement, a Bind and an Execute per row, one Sync, and no
Describe of the portal per row as libpq would send. These tests pin what a user relies on
around that: the rows, RETURNING, the failing row's index, atomicity outside a transaction and
the transaction's state inside one, the statement cache on and off, timeouts and cancellation
mid-batch, notifications, notices and parameter reports arriving mid-batch, a connection cut
mid-batch, and libpq's view of the session afterwards. A batch in a failed transaction block
takes libpq's pipeline instead, as TLS connections do: the last test runs over TLS when
KEEL_TEST_PG_TLS_URL names a server with ssl=on (the test server has none).
"""
import asyncio
import datetime
import decimal
import os
import random
import uuid
from urllib.parse import urlsplit

import pytest

import keel
from conftest import PG_URL, unique_name, wait_until
from proxy import TcpProxy

DESCRIBE_PORTAL = b"D\x00\x00\x00\x06P\x00"
DESCRIBE_STATEMENT = b"D\x00\x00\x00\x06S\x00"


def with_query(url, query):
    return url + ("&" if "?" in url else "?") + query


@pytest.fixture
async def table(pg_db):
    name = unique_name("wb")
    await pg_db.execute(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, name TEXT, score FLOAT8, "
                        "flag BOOLEAN, at TIMESTAMPTZ, tags TEXT[], amount NUMERIC, u UUID, raw BYTEA)")
    yield name
    await pg_db.execute(f"DROP TABLE IF EXISTS {name}")


async def test_the_batch_goes_without_a_describe_per_row(table):
    u = urlsplit(PG_URL)
    with TcpProxy(u.hostname, u.port) as proxy:
        db = keel.Database({"databases": {"main": {"url": proxy.url(PG_URL),
                                                   "pool": {"min_size": 0, "max_size": 1}}}})
        async with db:
            await db.executemany(f"INSERT INTO {table} (id, name) VALUES ($1, $2)",
                                 [(i, f"n{i}") for i in range(50)])
            assert await db.fetchval(f"SELECT count(*) FROM {table}") == 50
        sent = proxy.recorded(0)
    # From the batch's Describe of the statement (the last one: keel may describe the
    # statement's parameter types in a round trip before) to its Sync: 50 Binds and Executes,
    # and no Describe of the portal.
    start = sent.rindex(DESCRIBE_STATEMENT)
    batch = sent[start:sent.index(b"S\x00\x00\x00\x04", start)]
    assert DESCRIBE_PORTAL not in batch
    assert batch.count(b"B\x00\x00\x00") == 50
    assert batch.count(b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00") == 50  # the unnamed portal, all rows


def mixed_rows(n, seed):
    """Rows of every column type, each value NULL one time in five, so parameter types change
    from row to row (a NULL has no type): the statement is parsed again for those rows."""
    rnd = random.Random(seed)
    base = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)

    def maybe(v):
        return None if rnd.random() < 0.2 else v

    return [(i, maybe(f"name {i} ü\N{SNOWMAN}" * rnd.randint(0, 3)), maybe(rnd.uniform(-1e6, 1e6)),
             maybe(rnd.random() < 0.5), maybe(base + datetime.timedelta(microseconds=rnd.randint(0, 10**13))),
             maybe([f"t{j}" if j % 3 else None for j in range(rnd.randint(0, 4))]),
             maybe(decimal.Decimal(rnd.randint(-10**9, 10**9)) / 1000), maybe(uuid.UUID(int=rnd.getrandbits(128))),
             maybe(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 20)))))
            for i in range(n)]


async def test_many_rows_of_mixed_types_and_nulls_round_trip(pg_db, table):
    rows = mixed_rows(3000, 7)
    cols = "id, name, score, flag, at, tags, amount, u, raw"
    marks = ", ".join(f"${i}" for i in range(1, 10))
    got = await pg_db.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING {cols}", rows)
    assert [tuple(r) for r in got] == rows
    assert [tuple(r) for r in await pg_db.fetch(f"SELECT {cols} FROM {table} ORDER BY id")] == rows


async def test_hundred_thousand_rows_with_returning(pg_db, table):
    n = 100_000
    got = await pg_db.executemany(f"INSERT INTO {table} (id, name) VALUES ($1, $2) RETURNING id",
                                  [(i, None if i % 7 == 0 else str(i)) for i in range(n)])
    assert [r["id"] for r in got] == list(range(n))
    assert await pg_db.fetchval(f"SELECT count(name) FROM {table}") == n - len(range(0, n, 7))


async def test_returning_rows_of_a_statement_parsed_again_mid_batch(pg_db):
    # $1 is NULL in the second row: its type changes, the statement is parsed and described
    # again, and the rows keep coming in order.
    got = await pg_db.executemany("SELECT $1::int AS a, $2::text AS b", [(1, "x"), (None, "y"), (3, None)])
    assert [tuple(r) for r in got] == [(1, "x"), (None, "y"), (3, None)]
    # Statements returning several rows each, or none.
    got = await pg_db.executemany("SELECT g FROM generate_series(1, $1) g", [(2,), (0,), (1,)])
    assert [r["g"] for r in got] == [1, 2, 1]


@pytest.mark.parametrize("cache", ["", "statement_cache_size=0"])
async def test_failing_row_is_named_and_nothing_is_kept_outside_a_transaction(table, cache):
    url = with_query(PG_URL, cache) if cache else PG_URL
    async with keel.Database(url) as db:
        await db.execute(f"INSERT INTO {table} (id) VALUES (3)")
        with pytest.raises(keel.UniqueViolationError) as ei:
            await db.executemany(f"INSERT INTO {table} (id) VALUES ($1)", [(i,) for i in range(1000)])
        assert "row 3:" in str(ei.value), str(ei.value)
        assert ei.value.sqlstate == "23505"
        # The batch is one implicit transaction: the rows before the failing one are gone too.
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 1
        # The statement cache and the connection go on as before.
        for _ in range(3):
            assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", 3) == 1
        assert await db.executemany(f"INSERT INTO {table} (id) VALUES ($1)", [(10,), (11,)]) is None
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 3
        assert db.pool_stats()["leased"] == 0


async def test_inside_a_transaction_a_failed_batch_fails_the_block(pg_db, table):
    async with pg_db.connection() as conn:
        with pytest.raises(keel.UniqueViolationError):
            async with conn.transaction():
                await conn.executemany(f"INSERT INTO {table} (id) VALUES ($1)", [(1,), (2,)])
                with pytest.raises(keel.UniqueViolationError) as ei:
                    await conn.executemany(f"INSERT INTO {table} (id) VALUES ($1)", [(5,), (2,), (6,)])
                assert "row 1:" in str(ei.value)
                # The session is in a failed block, and keel (through libpq) knows it: the next
                # statement is refused by the server, and leaving the block rolls back.
                with pytest.raises(keel.InternalError) as later:
                    await conn.fetchval("SELECT 1")
                assert later.value.sqlstate == "25P02"
                # A batch in the failed block goes through libpq's pipeline and fails alike.
                with pytest.raises(keel.Error) as batch:
                    await conn.executemany(f"INSERT INTO {table} (id) VALUES ($1)", [(7,)])
                assert batch.value.sqlstate == "25P02"
                raise ei.value
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
        # A batch that succeeds in a block is committed with it.
        async with conn.transaction():
            await conn.executemany(f"INSERT INTO {table} (id) VALUES ($1)", [(1,), (2,)])
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 2
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 2


async def test_a_batch_that_opens_and_ends_a_transaction_block(pg_db, table):
    # The batch leaves the session in another transaction state than libpq last saw: keel
    # brings libpq's view up to date, so the block can be ended by the next statement.
    async with pg_db.connection() as conn:
        await conn.executemany("BEGIN", [()])
        await conn.execute(f"INSERT INTO {table} (id) VALUES (1)")
        await conn.executemany("ROLLBACK", [()])
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
        assert await conn.fetchval("SELECT 1") == 1


@pytest.mark.parametrize("cache", ["", "statement_cache_size=0"])
async def test_a_timeout_mid_batch_cancels_it_and_the_connection_goes_on(table, cache):
    url = with_query(PG_URL, cache) if cache else PG_URL
    async with keel.Database({"databases": {"main": {"url": url, "pool": {"min_size": 1, "max_size": 1}}}}) as db:
        rows = [(i, 0.0) for i in range(200)] + [(200, 30.0)] + [(i, 0.0) for i in range(201, 400)]
        with pytest.raises(keel.QueryTimeout) as ei:
            await db.executemany(f"INSERT INTO {table} (id, score) SELECT $1, $2 FROM pg_sleep($2)",
                                 rows, timeout=0.5)
        assert "cancelled on the server" in str(ei.value), str(ei.value)
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
        assert await db.fetchval("SELECT 1") == 1
        assert await db.executemany(f"INSERT INTO {table} (id) VALUES ($1)", [(1,)]) is None


async def test_a_cancelled_task_mid_batch_leaves_the_connection_usable(pg_db, table):
    async with pg_db.connection() as conn:
        task = asyncio.ensure_future(conn.executemany(
            f"INSERT INTO {table} (id, score) SELECT $1, $2 FROM pg_sleep($2)",
            [(1, 0.0), (2, 30.0), (3, 0.0)]))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_notifications_and_notices_arriving_mid_batch(pg_db):
    channel = unique_name("ch")
    fn = unique_name("noisy")
    await pg_db.execute(f"CREATE FUNCTION {fn}(n int) RETURNS int LANGUAGE plpgsql AS "
                        f"$$ BEGIN RAISE NOTICE 'row %', n; RETURN n; END $$")
    try:
        got = []
        async with pg_db.connection() as conn:
            await conn.add_listener(channel, lambda c, pid, ch, payload: got.append(payload))
            rows = await conn.executemany(f"SELECT {fn}($1::int) AS n, pg_notify($2, $1::text)",
                                          [(i, channel) for i in range(300)])
            assert [r["n"] for r in rows] == list(range(300))
            await wait_until(lambda: len(got) == 300)
            assert got == [str(i) for i in range(300)]
            # Notifications from another session while the batch runs reach the listener too.
            other = asyncio.ensure_future(pg_db.execute(f"SELECT pg_notify('{channel}', 'other')"))
            await conn.executemany("SELECT pg_sleep($1)", [(0.01,)] * 20)
            await other
            await wait_until(lambda: "other" in got)
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pg_db.execute(f"DROP FUNCTION IF EXISTS {fn}(int)")


async def test_a_parameter_report_mid_batch(pg_db):
    async with pg_db.connection() as conn:
        # A server parameter keel does not read: the connection goes on.
        got = await conn.executemany("SELECT set_config('application_name', $1, false) AS v",
                                     [("a",), ("b",)])
        assert [r["v"] for r in got] == ["a", "b"]
        assert await conn.fetchval("SHOW application_name") == "b"
    async with pg_db.connection() as conn:
        # One keel reads to encode values (TimeZone): the batch's rows come back, and the
        # connection, whose libpq no longer knows the session's setting, is not used again.
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        got = await conn.executemany("SELECT set_config('TimeZone', $1, false) AS v", [("UTC",), ("Asia/Tokyo",)])
        assert [r["v"] for r in got] == ["UTC", "Asia/Tokyo"]
    async with pg_db.connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") != pid
        assert await conn.fetchval("SHOW TimeZone") != "Asia/Tokyo"


async def test_a_connection_cut_mid_batch_raises_connection_lost(table):
    u = urlsplit(PG_URL)
    with TcpProxy(u.hostname, u.port) as proxy:
        db = keel.Database({"databases": {"main": {"url": proxy.url(PG_URL),
                                                   "pool": {"min_size": 0, "max_size": 1}}}})
        async with db:
            task = asyncio.ensure_future(db.executemany(
                f"INSERT INTO {table} (id, score) SELECT $1, $2 FROM pg_sleep($2)",
                [(1, 0.0), (2, 5.0), (3, 0.0)]))
            await asyncio.sleep(0.3)
            proxy.cut()
            with pytest.raises(keel.ConnectionLost):
                await asyncio.wait_for(task, 10)
    async with keel.Database(PG_URL) as direct:
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") == 0


TLS_URL = os.environ.get("KEEL_TEST_PG_TLS_URL")


@pytest.mark.skipif(not TLS_URL, reason="KEEL_TEST_PG_TLS_URL (a PostgreSQL server with ssl=on) is not set")
async def test_over_tls_the_batch_goes_through_libpq():
    # Bytes keel wrote to the socket itself would bypass TLS: the batch keeps libpq's pipeline,
    # with the same results, errors and atomicity.
    table = unique_name("wtls")
    async with keel.Database(TLS_URL) as db:
        assert await db.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        await db.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT)")
        try:
            got = await db.executemany(f"INSERT INTO {table} VALUES ($1, $2) RETURNING id",
                                       [(i, None if i % 3 else str(i)) for i in range(5000)])
            assert [r["id"] for r in got] == list(range(5000))
            with pytest.raises(keel.UniqueViolationError) as ei:
                await db.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(6000, "a"), (7, "b")])
            assert "row 1:" in str(ei.value)
            assert await db.fetchval(f"SELECT count(*) FROM {table}") == 5000
        finally:
            await db.execute(f"DROP TABLE IF EXISTS {table}")
