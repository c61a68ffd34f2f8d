# tests/python/test_connection_lost.py - a server that drops the connection in the middle of an operation, from Python: ConnectionLost, nothing committed, the pool serving again.
"""The connection to the server closes while an operation runs (the test proxy's cut(), as a
crashed server or a reset network). What a user relies on: the awaiting call raises
keel.ConnectionLost (an OperationalError) naming the database, the transaction the connection
held is not committed, and the next call gets a new connection from the pool.
"""
import asyncio
from urllib.parse import urlsplit

import pytest

import keel
from conftest import MONGO_URL, MYSQL_URL, PG_URL, unique_name
from proxy import TcpProxy

SLEEP = {"postgresql": "SELECT pg_sleep(5)", "mysql": "SELECT SLEEP(5)"}


def upstream(url):
    u = urlsplit(url)
    return u.hostname, u.port


async def cut_soon(proxy, delay=0.3):
    await asyncio.sleep(delay)
    proxy.cut()


@pytest.mark.parametrize("engine, url", [("postgresql", PG_URL), ("mysql", MYSQL_URL)])
async def test_a_statement_whose_connection_is_cut_raises_connection_lost(engine, url):
    table = unique_name("lost")
    direct = keel.Database(url)
    await direct.start()
    await direct.execute(f"CREATE TABLE {table} (id BIGINT)")
    try:
        with TcpProxy(*upstream(url)) as proxy:
            db = keel.Database({"databases": {"main": {"url": proxy.url(url),
                                                       "pool": {"min_size": 0, "max_size": 1}}}})
            await db.start()
            try:
                with pytest.raises(keel.ConnectionLost) as e:
                    async with db.transaction() as conn:
                        await conn.execute(f"INSERT INTO {table} VALUES ($1)", 1)
                        cutter = asyncio.ensure_future(cut_soon(proxy))
                        try:
                            await asyncio.wait_for(conn.fetchval(SLEEP[engine]), 30)
                        finally:
                            await cutter
                assert isinstance(e.value, keel.OperationalError)
                assert e.value.database == "main"
                assert db.pool_stats()["leased"] == 0
                # A new connection serves, and nothing of the transaction was committed.
                assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") == 0
            finally:
                await db.close()
        assert await direct.fetchval(f"SELECT COUNT(*) FROM {table}") == 0
    finally:
        await direct.execute(f"DROP TABLE {table}")
        await direct.close()


@pytest.mark.skipif(not MONGO_URL, reason="KEEL_TEST_MONGO_URL is empty")
async def test_a_mongodb_command_whose_connection_is_cut_raises_connection_lost():
    sep = "&" if "?" in MONGO_URL else "?"
    # One server through the proxy only, and no retries: a retried read would reconnect.
    options = sep + "directConnection=true&retryReads=false&retryWrites=false"
    with TcpProxy(*upstream(MONGO_URL)) as proxy:
        db = keel.Database({"databases": {"docs": {"url": proxy.url(MONGO_URL) + options}}})
        await db.start()
        coll = db.collection(unique_name("lost"))
        try:
            await coll.insert_one({"_id": 1})
            proxy.stall()
            cutter = asyncio.ensure_future(cut_soon(proxy))
            with pytest.raises(keel.ConnectionLost) as e:
                await asyncio.wait_for(coll.find_one({"_id": 1}), 30)
            await cutter
            assert e.value.database == "docs"
            assert "the connection to MongoDB was lost" in str(e.value)
            proxy.resume()
            assert await asyncio.wait_for(coll.find_one({"_id": 1}), 30) == {"_id": 1}
        finally:
            proxy.resume()
            await coll.drop()
            await db.close()
