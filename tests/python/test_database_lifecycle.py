# tests/python/test_database_lifecycle.py - keel.Database's states (made, started, closed) and the misuse each refuses.
"""What a keel.Database says about itself and refuses along its life.

started is True between start() and close(), closed once close() has completed, and a closed
Database refuses to start again or to run anything with an InterfaceError. A Database whose
__init__ never ran (or ran twice) says so instead of crashing, and the low-level constructor
names the argument of the wrong type.
"""
import asyncio

import pytest

import keel
from conftest import MYSQL_URL, PG_URL
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
