# tests/python/test_database_lifecycle.py - keel.Database's states (made, started, closed) and the misuse each refuses.
"""What a keel.Database says about itself and refuses along its life.

started is True between start() and close(), closed once close() has completed, and a closed
Database refuses to start again or to run anything with an InterfaceError. A Database whose
__init__ never ran (or ran twice) says so instead of crashing, and the low-level constructor
names the argument of the wrong type. close(timeout=) waits for what is in use at most that
long, then closes it anyway: its holders get an InterfaceError naming the closed database.
"""
import asyncio
import time

import pytest

import keel
from conftest import MYSQL_URL, PG_URL, SLOW_SQL, wait_until
from keel import _native


async def test_started_and_closed_follow_the_life_of_a_database():
    db = keel.Database("sqlite::memory:")
    assert (db.started, db.closed) == (False, False)
    assert db.databases == ["default"] and db.default_database == "default"
    await db.start()
    assert (db.started, db.closed) == (True, False)
    assert await db.fetchval("SELECT 7") == 7
    await db.close()
    assert (db.started, db.closed) == (False, True)
    with pytest.raises(keel.InterfaceError, match="the database has been closed"):
        await db.start()
    with pytest.raises(keel.InterfaceError, match="the database has been closed"):
        await db.fetchval("SELECT 1")
    await db.close()  # a second close is a no-op
    assert db.closed


async def test_a_database_never_started_closes_at_once():
    db = keel.Database("sqlite::memory:")
    await db.close()
    assert (db.started, db.closed) == (False, True)
    with pytest.raises(keel.InterfaceError, match="the database has been closed"):
        await db.fetchval("SELECT 1")


async def test_initialising_twice_or_never_is_refused():
    db = keel.Database("sqlite::memory:")
    try:
        with pytest.raises(RuntimeError, match="Database is already initialised"):
            _native.Database.__init__(db, url="sqlite::memory:")
        await db.start()
        assert await db.fetchval("SELECT 1") == 1  # still the first configuration
    finally:
        await db.close()
    raw = keel.Database.__new__(keel.Database)
    assert raw.started is False
    with pytest.raises(RuntimeError, match=r"Database.__init__ was not called"):
        await raw.start()
    with pytest.raises(RuntimeError, match=r"Database.__init__ was not called"):
        raw.databases


def test_the_constructor_names_an_argument_of_the_wrong_type():
    with pytest.raises(keel.ConfigError, match="a configuration is a URL, a path to a YAML file "
                                               "or an SQLite database, or a dict, not int"):
        keel.Database(42)
    with pytest.raises(TypeError, match="url must be a str"):
        _native.Database(url=5)
    with pytest.raises(TypeError, match=r"settings must be \(str, str\) pairs"):
        _native.Database(settings=[1])
    with pytest.raises(TypeError, match=r"settings must be \(str, str\) pairs"):
        _native.Database(settings=[("databases.main.url", 1)])


def test_libkeel_version_is_the_package_version():
    assert _native.libkeel_version() == keel.__version__


async def test_in_transaction_is_known_while_a_statement_runs(pg_db):
    # While a statement runs, the server's transaction status is not known to the client: the
    # answer comes from the transactions this connection opened, so it is right either way.
    async with pg_db.connection() as conn:
        running = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(0.5)"))
        await asyncio.sleep(0.05)
        assert conn.in_transaction is False
        await running
        async with conn.transaction():
            running = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(0.5)"))
            await asyncio.sleep(0.05)
            assert conn.in_transaction is True
            await running
        assert conn.in_transaction is False


@pytest.mark.parametrize("engine_url, pid_sql, kill_sql", [
    (PG_URL, "SELECT pg_backend_pid()", "SELECT pg_terminate_backend(CAST($1 AS INTEGER))"),
    (MYSQL_URL, "SELECT CONNECTION_ID()", "KILL CONNECTION {}"),
], ids=["postgresql", "mysql"])
async def test_the_error_that_ended_a_transaction_is_reported_when_its_rollback_fails(
        engine_url, pid_sql, kill_sql):
    # The block fails, and the connection was lost meanwhile, so the ROLLBACK fails too: the
    # block's own error is the one raised, and the pool replaces the connection.
    db = keel.Database({"databases": {"main": {"url": engine_url,
                                               "pool": {"min_size": 1, "max_size": 1}}}})
    other = keel.Database(engine_url)
    await db.start()
    await other.start()
    try:
        with pytest.raises(ValueError, match="the block's own error"):
            async with db.transaction() as conn:
                pid = await conn.fetchval(pid_sql)
                if "{}" in kill_sql:
                    await other.execute(kill_sql.format(int(pid)))
                else:
                    await other.execute(kill_sql, pid)
                await asyncio.sleep(0.2)  # the kill reaches the session; no assertion on it
                raise ValueError("the block's own error")
        assert db.pool_stats()["leased"] == 0
        assert await db.fetchval("SELECT 41 + 1") == 42
    finally:
        await other.close()
        await db.close()


def test_a_database_is_used_from_a_coroutine_on_its_loop_only():
    db = keel.Database("sqlite::memory:")
    with pytest.raises(keel.InterfaceError, match="keel.Database must be started from a "
                                                  "coroutine running on an asyncio event loop"):
        db.pool_stats()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(db.start())
        # Outside any coroutine, even with its loop idle: refused, not run on no loop.
        with pytest.raises(keel.InterfaceError, match="keel.Database must be used from a "
                                                      "coroutine on its event loop"):
            db.pool_stats()

        async def stats():
            return db.pool_stats()

        assert loop.run_until_complete(stats())["size"] >= 0
        other = asyncio.new_event_loop()
        try:
            with pytest.raises(keel.InterfaceError, match="bound to another event loop"):
                other.run_until_complete(stats())
        finally:
            other.close()
    finally:
        loop.run_until_complete(db.close())
        loop.close()


# ---- close(timeout=) ----

CLOSED_UNDER = "database 'main' was closed while this connection was leased"


async def test_close_with_a_timeout_returns_as_soon_as_the_leases_end(make_db):
    db = make_db()
    await db.start()
    conn = await db.acquire()
    closing = asyncio.ensure_future(db.close(timeout=30))
    await asyncio.sleep(0.1)
    assert not closing.done() and not db.closed  # the lease is waited for
    with pytest.raises(keel.InterfaceError, match="the database has been closed"):
        await db.fetchval("SELECT 1")  # new work is refused meanwhile
    assert await conn.fetchval("SELECT 2") == 2  # the holder finishes its work
    started = time.monotonic()
    await db.release(conn)
    await asyncio.wait_for(closing, 5)
    assert db.closed and time.monotonic() - started < 5


async def test_close_with_a_timeout_closes_a_connection_still_leased(make_db):
    db = make_db()
    await db.start()
    conn = await db.acquire()
    started = time.monotonic()
    await asyncio.wait_for(db.close(timeout=0.3), 10)
    assert db.closed and 0.3 <= time.monotonic() - started < 5
    assert conn.released is False  # the handle stays with its holder, closed
    with pytest.raises(keel.InterfaceError, match=CLOSED_UNDER) as raised:
        await conn.fetchval("SELECT 1")
    assert raised.value.database == "main"
    with pytest.raises(keel.InterfaceError, match=CLOSED_UNDER):
        async with conn.transaction():
            pass
    await db.release(conn)
    assert conn.released


async def test_close_with_a_timeout_cancels_running_statements(make_db, engine):
    # A statement of the database and one on a connection leased with async with: both are
    # stopped by the close (on the server, or SQLite's interrupted), and raise.
    db = make_db(pool={"min_size": 0, "max_size": 3})
    await db.start()
    leased = asyncio.Event()

    async def in_a_block():
        async with db.connection() as conn:
            leased.set()
            return await conn.fetchval(SLOW_SQL[engine])

    statement = asyncio.ensure_future(db.fetchval(SLOW_SQL[engine]))
    block = asyncio.ensure_future(in_a_block())
    await asyncio.wait_for(leased.wait(), 10)
    await asyncio.sleep(0.2)  # both statements run
    started = time.monotonic()
    await asyncio.wait_for(db.close(timeout=0.2), 10)
    assert db.closed and time.monotonic() - started < 5
    for task in (statement, block):
        with pytest.raises(keel.InterfaceError, match="database 'main' was closed"):
            await asyncio.wait_for(task, 5)


async def test_close_with_timeout_0_closes_at_once_and_a_waiting_acquire_fails(make_db):
    db = make_db(pool={"min_size": 0, "max_size": 1})
    await db.start()
    conn = await db.acquire()
    waiting = asyncio.ensure_future(db.acquire())  # the pool is exhausted: it waits
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.wait_for(db.close(timeout=0), 10)
    assert db.closed and time.monotonic() - started < 5
    with pytest.raises(keel.InterfaceError, match="database 'main' was closed"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(keel.InterfaceError, match=CLOSED_UNDER):
        await conn.execute("SELECT 1")
    await db.release(conn)


async def test_a_later_close_with_a_timeout_ends_a_close_that_waits():
    # close() without a timeout waits for ever; a close(timeout=) from elsewhere (a shutdown
    # handler) ends both.
    db = keel.Database("sqlite::memory:")
    await db.start()
    conn = await db.acquire()
    patient = asyncio.ensure_future(db.close())
    await asyncio.sleep(0.1)
    assert not patient.done()
    await asyncio.wait_for(db.close(timeout=0.05), 10)
    await asyncio.wait_for(patient, 5)
    assert db.closed
    await db.release(conn)


async def test_a_cancelled_close_with_a_timeout_goes_on_without_one():
    db = keel.Database("sqlite::memory:")
    await db.start()
    conn = await db.acquire()
    closing = asyncio.ensure_future(db.close(timeout=0.2))
    await asyncio.sleep(0.05)
    closing.cancel()
    await asyncio.sleep(0.4)
    assert not db.closed and await conn.fetchval("SELECT 3") == 3
    await db.release(conn)
    await wait_until(lambda: db.closed)


@pytest.mark.parametrize("timeout, error, message", [
    (-1, ValueError, r"close\(timeout=\) must be 0 or more seconds, not -1"),
    (float("nan"), ValueError, "must be 0 or more seconds, not nan"),
    ("1", TypeError, r"close\(timeout=\) takes a number of seconds or None, not str"),
    (True, TypeError, "takes a number of seconds or None, not bool"),
])
async def test_close_refuses_a_timeout_that_is_not_seconds(timeout, error, message):
    db = keel.Database("sqlite::memory:")
    await db.start()
    with pytest.raises(error, match=message):
        await db.close(timeout=timeout)
    assert await db.fetchval("SELECT 1") == 1  # still open
    await db.close(timeout=float("inf"))  # inf: as None
    assert db.closed
