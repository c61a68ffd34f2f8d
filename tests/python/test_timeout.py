# tests/python/test_timeout.py - timeout= on every query method, command_timeout, QueryTimeout, silent servers.
"""Deadlines on every operation (issue 8, section 2), from Python.

A slow statement given timeout= (or run under the database's command_timeout) raises
keel.QueryTimeout, an OperationalError and a built-in TimeoutError, is cancelled on the server
and leaves its connection usable. A server that falls silent (tests/python/proxy.py stalls it)
makes the call return within its timeout plus keel's grace for the cancel, never hang; the pool
replaces the connection keel had to close. Timing assertions are upper bounds with generous
slack: they prove liveness, not speed.
"""
import asyncio
import math
import time

import pytest

import keel
from conftest import MONGO_URL, MYSQL_URL, PG_URL, SLOW_SQL, unique_name
from proxy import TcpProxy

# The bound every timed-out call must return within: its timeout, keel's grace for a cancel
# (at most one second more), and slack for a loaded machine (sanitizers, two cores).
SLACK = 5.0

# Runs about 0.6 s: longer than a 0.3 s timeout, far shorter than SLACK.
SHORT_SQL = {
    "postgresql": "SELECT pg_sleep(0.6)",
    "mysql": "SELECT SLEEP(0.6)",
    "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000) "
              "SELECT count(*) FROM c",
}

# SLOW_SQL taking its length as parameter $1, for executemany.
SLOW_PARAM_SQL = {
    "postgresql": "SELECT pg_sleep($1)",
    "mysql": "SELECT SLEEP($1)",
    "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < $1 * 1e7) "
              "SELECT count(*) FROM c",
}

# A table whose inserts are slow (a trigger sleeps, or counts a large cross join on SQLite), to
# time out copy_records_to_table.
SLOW_TABLE_DDL = {
    "postgresql": [
        "CREATE TABLE {t} (x BIGINT)",
        "CREATE FUNCTION {t}_slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(10); RETURN NEW; END $$",
        "CREATE TRIGGER {t}_trg BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_slow()",
    ],
    "mysql": [
        "CREATE TABLE {t} (x BIGINT)",
        "CREATE TRIGGER {t}_trg BEFORE INSERT ON {t} FOR EACH ROW SET NEW.x = NEW.x + SLEEP(10)",
    ],
    "sqlite": [
        "CREATE TABLE {t}_n (v INTEGER)",
        "INSERT INTO {t}_n WITH RECURSIVE c(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM c "
        "WHERE v < 2000) SELECT v FROM c",
        "CREATE TABLE {t} (x INTEGER)",
        "CREATE TRIGGER {t}_trg BEFORE INSERT ON {t} BEGIN "
        "SELECT count(*) FROM {t}_n a, {t}_n b, {t}_n c; END",
    ],
}

BAD_TIMEOUTS = [0, -1, "x", math.nan, -math.inf, True]


def assert_timeout(exc, *, engine=None, database=None):
    assert isinstance(exc, keel.QueryTimeout)
    assert isinstance(exc, keel.OperationalError) and isinstance(exc, TimeoutError)
    assert exc.code == "KEEL_ERR_TIMEOUT"
    if engine is not None:
        assert exc.engine == engine
    if database is not None:
        assert exc.database == database


async def raises_timeout_within(awaitable, bound):
    """Awaits awaitable, which must raise QueryTimeout within bound seconds; returns it."""
    t0 = time.monotonic()
    with pytest.raises(keel.QueryTimeout) as ei:
        # The outer guard only turns a hang into a failure; keel's own deadline must end it.
        await asyncio.wait_for(awaitable, bound + 30)
    elapsed = time.monotonic() - t0
    assert elapsed < bound, f"returned after {elapsed:.2f} s, more than {bound} s"
    return ei.value


# ---- the exception ----

def test_query_timeout_is_exported_and_is_a_timeout_error():
    assert "QueryTimeout" in keel.__all__
    assert keel.QueryTimeout is keel._native.QueryTimeout
    assert issubclass(keel.QueryTimeout, keel.OperationalError)
    assert issubclass(keel.QueryTimeout, TimeoutError)
    assert not issubclass(keel.QueryTimeout, keel.QueryCanceledError)
    e = keel.QueryTimeout("late")
    assert str(e) == "late" and e.sqlstate is None and e.code is None


# ---- timeout= and command_timeout on the SQL engines ----

@pytest.fixture
async def slow_db(make_db):
    d = make_db(pool={"max_size": 2})
    await d.start()
    return d


async def test_timeout_cancels_a_slow_statement(slow_db, engine):
    e = await raises_timeout_within(slow_db.fetchval(SLOW_SQL[engine], timeout=0.3), SLACK)
    assert_timeout(e, engine=engine, database="main")
    assert "main" in str(e)
    # Cancelled on the server: both pooled connections answer right away.
    a, b = await asyncio.wait_for(
        asyncio.gather(slow_db.fetchval("SELECT 1"), slow_db.fetchval("SELECT 2")), 5)
    assert (a, b) == (1, 2)
    assert slow_db.pool_stats()["leased"] == 0


async def test_timeout_on_a_connection_applies_to_that_call_only(slow_db, engine):
    async with slow_db.connection() as conn:
        e = await raises_timeout_within(conn.fetchval(SLOW_SQL[engine], timeout=0.3), SLACK)
        assert_timeout(e, engine=engine, database="main")
        assert e.sqlstate == "57014"
        assert "0.3 s" in str(e), e  # started at once: the whole timeout, as given
        assert await conn.fetchval("SELECT 40 + 2") == 42
        # The next call without timeout= runs under the configuration (no deadline) again.
        await asyncio.wait_for(conn.fetchval(SHORT_SQL[engine]), 30)
        # Transaction control after a timed-out statement runs under the configuration too.
        async with conn.transaction():
            assert await conn.fetchval("SELECT 7", timeout=5) == 7
    assert slow_db.pool_stats()["leased"] == 0


QUERY_METHODS = ["fetch", "fetchrow", "fetchval", "execute", "executemany"]


async def call_method(target, method, sql_by_engine, engine, **kw):
    if method == "executemany":
        return await target.executemany(SLOW_PARAM_SQL[engine], [(10,)], **kw)
    return await getattr(target, method)(sql_by_engine[engine], **kw)


@pytest.mark.parametrize("level", ["database", "connection"])
@pytest.mark.parametrize("method", QUERY_METHODS)
async def test_every_query_method_takes_timeout(slow_db, engine, method, level):
    if level == "database":
        e = await raises_timeout_within(
            call_method(slow_db, method, SLOW_SQL, engine, timeout=0.3), SLACK)
        assert_timeout(e, engine=engine, database="main")
        assert await slow_db.fetchval("SELECT 1") == 1
    else:
        async with slow_db.connection() as conn:
            e = await raises_timeout_within(
                call_method(conn, method, SLOW_SQL, engine, timeout=0.3), SLACK)
            assert_timeout(e, engine=engine, database="main")
            assert await conn.fetchval("SELECT 1") == 1
    assert slow_db.pool_stats()["leased"] == 0


@pytest.mark.parametrize("level", ["database", "connection"])
async def test_copy_records_to_table_takes_timeout(slow_db, engine, level):
    t = unique_name("slow")
    for ddl in SLOW_TABLE_DDL[engine]:
        await slow_db.execute(ddl.format(t=t))
    try:
        if level == "database":
            e = await raises_timeout_within(
                slow_db.copy_records_to_table(t, records=[(1,), (2,)], timeout=0.3), SLACK)
        else:
            async with slow_db.connection() as conn:
                e = await raises_timeout_within(
                    conn.copy_records_to_table(t, records=[(1,), (2,)], timeout=0.3), SLACK)
                assert await conn.fetchval("SELECT 1") == 1
        assert_timeout(e, engine=engine, database="main")
        # The load is atomic: nothing of it stays.
        assert await slow_db.fetchval(f"SELECT count(*) FROM {t}") == 0
    finally:
        await slow_db.execute(f"DROP TABLE IF EXISTS {t}")
        if engine == "sqlite":
            await slow_db.execute(f"DROP TABLE IF EXISTS {t}_n")
        if engine == "postgresql":
            await slow_db.execute(f"DROP FUNCTION IF EXISTS {t}_slow()")


async def test_command_timeout_from_the_configuration(make_db, db_url, engine):
    d = make_db({"databases": {"main": {"url": db_url, "command_timeout": 0.3}}})
    e = await raises_timeout_within(d.fetchval(SLOW_SQL[engine]), SLACK)
    assert_timeout(e, engine=engine, database="main")
    assert "0.3" in str(e)
    assert await d.fetchval("SELECT 1") == 1
    # timeout= overrides it for one call, longer or with no deadline at all (math.inf).
    await asyncio.wait_for(d.fetchval(SHORT_SQL[engine], timeout=20), 30)
    async with d.connection() as conn:
        await asyncio.wait_for(conn.fetchval(SHORT_SQL[engine], timeout=math.inf), 30)
        # ... and the configured one applies again to the next call on that connection.
        await raises_timeout_within(conn.fetchval(SLOW_SQL[engine]), SLACK)
        assert await conn.fetchval("SELECT 3") == 3


async def test_command_timeout_from_the_environment(monkeypatch, engine, db_url):
    monkeypatch.setenv("KEEL_DATABASES__MAIN__COMMAND_TIMEOUT", "0.3")
    d = keel.Database({"databases": {"main": {"url": db_url}}})
    try:
        await raises_timeout_within(d.fetchval(SLOW_SQL[engine]), SLACK)
        assert await d.fetchval("SELECT 1") == 1
    finally:
        await asyncio.wait_for(d.close(), 30)


async def test_timeout_covers_the_wait_for_a_connection(make_db):
    d = make_db(pool={"max_size": 1})
    async with d.connection():
        e = await raises_timeout_within(d.fetchval("SELECT 1", timeout=0.3), SLACK)
        assert_timeout(e, database="main")
        assert "waiting for a connection" in str(e)
        e = await raises_timeout_within(d.acquire(timeout=0.3), SLACK)
        assert "waiting for a connection" in str(e)
        e = await raises_timeout_within(d.executemany("SELECT $1", [(1,)], timeout=0.2), SLACK)
        assert d.pool_stats()["waiting"] == 0
    # The connection the timed-out calls waited for serves the next one.
    assert await d.fetchval("SELECT 1", timeout=5) == 1
    assert d.pool_stats()["leased"] == 0


async def test_timeout_left_after_the_wait_bounds_the_statement(make_db, engine):
    # 0.3 s of a 0.8 s timeout go waiting for the only connection: the statement has 0.5 s.
    d = make_db(pool={"max_size": 1})
    conn = await d.acquire()
    asyncio.get_running_loop().call_later(0.3, d._release, conn)
    e = await raises_timeout_within(d.fetchval(SLOW_SQL[engine], timeout=0.8), SLACK)
    assert_timeout(e, engine=engine, database="main")
    assert await d.fetchval("SELECT 1") == 1


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
async def test_bad_timeouts_are_refused(make_db, value):
    d = make_db()
    calls = [
        lambda: d.fetch("SELECT 1", timeout=value),
        lambda: d.fetchrow("SELECT 1", timeout=value),
        lambda: d.fetchval("SELECT 1", timeout=value),
        lambda: d.execute("SELECT 1", timeout=value),
        lambda: d.executemany("SELECT $1", [], timeout=value),
        lambda: d.copy_records_to_table("t", records=[], timeout=value),
        lambda: d.acquire(timeout=value),
    ]
    for call in calls:
        with pytest.raises((TypeError, ValueError), match="timeout") as ei:
            await call()
        assert isinstance(ei.value, TypeError if value in ("x", True) else ValueError)
    async with d.connection() as conn:
        for method in ("fetch", "fetchrow", "fetchval", "execute"):
            with pytest.raises((TypeError, ValueError), match="timeout"):
                await getattr(conn, method)("SELECT 1", timeout=value)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            await conn.executemany("SELECT $1", [(1,)], timeout=value)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            await conn.copy_records_to_table("t", records=[(1,)], timeout=value)
        # Nothing started: the connection is free for the next call.
        assert await conn.fetchval("SELECT 1") == 1


def test_timeouts_that_mean_no_deadline():
    assert keel._native.check_timeout(None) is None
    assert keel._native.check_timeout(0.25) == 0.25
    assert keel._native.check_timeout(2) == 2.0
    assert keel._native.check_timeout(math.inf) == math.inf
    # Longer than keel's longest deadline (1e9 s), an int too large for a float: none either.
    assert keel._native.check_timeout(1e12) == math.inf
    assert keel._native.check_timeout(10**400) == math.inf
    with pytest.raises(ValueError, match="timeout"):
        keel._native.check_timeout(-10**400)


# ---- MongoDB ----

APP_NAME = "keel-test-timeout"


def mongo_url_with_app_name():
    return MONGO_URL + ("&" if "?" in MONGO_URL else "?") + f"appName={APP_NAME}"


@pytest.fixture
async def mdb():
    d = keel.Database({"default": "docs", "databases": {"docs": {"url": mongo_url_with_app_name()}}})
    await d.start()
    try:
        await asyncio.wait_for(d.ping(), 30)
    except keel.Error as exc:
        pytest.fail(f"no MongoDB server at {MONGO_URL}: {exc}")
    yield d
    # A fail point a failing test left armed must not block the next one.
    await d.command("admin", {"configureFailPoint": "failCommand", "mode": "off"})
    await asyncio.wait_for(d.close(), 30)


async def block_next(db, command, ms=1500):
    """The server holds the next `command` of this test's client (its appName) for ms."""
    await db.command("admin", {
        "configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": [command], "blockConnection": True, "blockTimeMS": ms,
                 "appName": APP_NAME}}, timeout=10)


COLLECTION_CALLS = {
    # method: (the command it sends, the call)
    "insert_one": ("insert", lambda c, **kw: c.insert_one({"a": 1}, **kw)),
    "insert_many": ("insert", lambda c, **kw: c.insert_many([{"a": 1}, {"a": 2}], **kw)),
    "find_one": ("find", lambda c, **kw: c.find_one({}, **kw)),
    "find": ("find", lambda c, **kw: c.find({}, **kw).to_list()),
    "aggregate": ("aggregate", lambda c, **kw: c.aggregate([{"$match": {}}], **kw).to_list()),
    "count_documents": ("aggregate", lambda c, **kw: c.count_documents({}, **kw)),
    "estimated_document_count": ("count", lambda c, **kw: c.estimated_document_count(**kw)),
    "update_one": ("update", lambda c, **kw: c.update_one({}, {"$set": {"b": 1}}, **kw)),
    "update_many": ("update", lambda c, **kw: c.update_many({}, {"$set": {"b": 1}}, **kw)),
    "replace_one": ("update", lambda c, **kw: c.replace_one({"a": 1}, {"a": 3}, **kw)),
    "delete_one": ("delete", lambda c, **kw: c.delete_one({"a": 9}, **kw)),
    "delete_many": ("delete", lambda c, **kw: c.delete_many({"a": 9}, **kw)),
    "create_index": ("createIndexes", lambda c, **kw: c.create_index("a", **kw)),
    "drop": ("drop", lambda c, **kw: c.drop(**kw)),
}


@pytest.mark.parametrize("level", ["database", "connection"])
@pytest.mark.parametrize("method", list(COLLECTION_CALLS))
async def test_every_collection_method_takes_timeout(mdb, method, level):
    command, call = COLLECTION_CALLS[method]
    name = unique_name("tmo")
    await mdb.collection(name).insert_one({"a": 1})
    try:
        await block_next(mdb, command)
        # The server may still carry the held command out once its hold ends (keel gave up on
        # it, and may have closed its connection): what follows checks liveness, not contents.
        if level == "database":
            e = await raises_timeout_within(call(mdb.collection(name), timeout=0.3), SLACK)
            assert await mdb.collection(name).estimated_document_count(timeout=5) >= 0
        else:
            async with mdb.connection() as conn:
                e = await raises_timeout_within(call(conn.collection(name), timeout=0.3), SLACK)
                # The connection answers again (or the pool replaced the one keel closed).
                try:
                    await conn.command(None, {"ping": 1}, timeout=5)
                except keel.ConnectionLost:
                    pass
            assert await mdb.collection(name).estimated_document_count(timeout=5) >= 0
        assert_timeout(e, engine="mongodb", database="docs")
        assert mdb.pool_stats()["leased"] == 0
    finally:
        await mdb.command("admin", {"configureFailPoint": "failCommand", "mode": "off"})
        await mdb.collection(name).drop()


async def test_command_and_getmore_take_timeout(mdb):
    await block_next(mdb, "ping")
    e = await raises_timeout_within(mdb.command("admin", {"ping": 1}, timeout=0.3), SLACK)
    assert_timeout(e, engine="mongodb", database="docs")
    # A cursor's timeout bounds each batch: the getMore here.
    coll = mdb.collection(unique_name("tmo"))
    try:
        await coll.insert_many([{"i": i} for i in range(10)])
        cursor = coll.find({}, batch_size=2, timeout=0.5)
        assert len(await cursor.to_list(2)) == 2
        await block_next(mdb, "getMore")
        await raises_timeout_within(cursor.to_list(), SLACK)
        assert not cursor.alive
        assert mdb.pool_stats()["leased"] == 0
    finally:
        await mdb.command("admin", {"configureFailPoint": "failCommand", "mode": "off"})
        await coll.drop()


async def test_command_timeout_from_the_configuration_on_mongodb():
    d = keel.Database({"default": "docs", "databases": {
        "docs": {"url": mongo_url_with_app_name(), "command_timeout": 0.3}}})
    try:
        # libmongoc connects within the first command: give those time under a loaded machine.
        await d.ping(timeout=10)
        await block_next(d, "count")
        e = await raises_timeout_within(d.collection("anything").estimated_document_count(),
                                        SLACK)
        assert_timeout(e, engine="mongodb", database="docs")
        assert await d.ping(timeout=10) >= 0
    finally:
        await d.command("admin", {"configureFailPoint": "failCommand", "mode": "off"},
                        timeout=10)
        await asyncio.wait_for(d.close(), 30)


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
async def test_bad_timeouts_are_refused_by_collections(mdb, value):
    coll = mdb.collection(unique_name("tmo"))
    for method, (_, call) in COLLECTION_CALLS.items():
        with pytest.raises((TypeError, ValueError), match="timeout"):
            await call(coll, timeout=value)
    with pytest.raises((TypeError, ValueError), match="timeout"):
        await mdb.command(None, {"ping": 1}, timeout=value)
    # Nothing was written.
    assert await coll.count_documents({}) == 0


# ---- silent servers ----

SERVERS = {"postgresql": PG_URL, "mysql": MYSQL_URL, "mongodb": MONGO_URL}
PING = {"postgresql": "SELECT 1", "mysql": "SELECT 1"}


async def ping(d, engine, **kw):
    if engine == "mongodb":
        return await d.command(None, {"ping": 1}, **kw)
    return await d.fetchval(PING[engine], **kw)


async def ping_conn(conn, engine, **kw):
    if engine == "mongodb":
        return await conn.command(None, {"ping": 1}, **kw)
    return await conn.fetchval(PING[engine], **kw)


def upstream(url):
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    default = {"postgresql": 5432, "mysql": 3306, "mongodb": 27017}[u.scheme]
    return u.hostname or "127.0.0.1", u.port or default


@pytest.mark.parametrize("silent", ["postgresql", "mysql", "mongodb"])
@pytest.mark.parametrize("how", ["timeout", "command_timeout"])
async def test_a_server_falling_silent_mid_query(silent, how):
    url = SERVERS[silent]
    with TcpProxy(*upstream(url)) as proxy:
        entry = {"url": proxy.url(url), "connect_timeout": 5, "pool": {"max_size": 1}}
        if how == "command_timeout":
            entry["command_timeout"] = 0.5
        d = keel.Database({"databases": {"x": entry}})
        kw = {"timeout": 0.5} if how == "timeout" else {}
        try:
            await asyncio.wait_for(ping(d, silent, timeout=10), 30)
            proxy.stall()
            # Neither the statement nor keel's cancel (a new connection, black-holed too) gets
            # an answer: keel closes the connection once the grace is over.
            e = await raises_timeout_within(ping(d, silent, **kw), 0.5 + SLACK)
            assert_timeout(e, engine=silent, database="x")
            assert d.pool_stats("x")["leased"] == 0
            proxy.resume()
            # The pool recovers: a new connection (or the old one, answering again) serves.
            assert await asyncio.wait_for(ping(d, silent, timeout=10), 30) is not None
        finally:
            proxy.resume()
            await asyncio.wait_for(d.close(), 30)


@pytest.mark.parametrize("silent", ["postgresql", "mysql", "mongodb"])
async def test_a_connection_whose_server_fell_silent(silent):
    url = SERVERS[silent]
    with TcpProxy(*upstream(url)) as proxy:
        d = keel.Database({"databases": {"x": {"url": proxy.url(url), "connect_timeout": 5}}})
        try:
            async with d.connection() as conn:
                await asyncio.wait_for(ping_conn(conn, silent), 30)
                proxy.stall()
                e = await raises_timeout_within(ping_conn(conn, silent, timeout=0.5),
                                                0.5 + SLACK)
                assert_timeout(e, engine=silent, database="x")
                # keel had to close it: the connection is unusable, never hanging.
                with pytest.raises(keel.OperationalError):
                    await asyncio.wait_for(ping_conn(conn, silent, timeout=0.5), SLACK)
            proxy.resume()
            assert await asyncio.wait_for(ping(d, silent, timeout=10), 30) is not None
            assert d.pool_stats("x")["leased"] == 0
        finally:
            proxy.resume()
            await asyncio.wait_for(d.close(), 30)


@pytest.mark.parametrize("silent", ["postgresql", "mysql", "mongodb"])
async def test_a_server_silent_from_the_start(silent):
    # Accepted and never answered: timeout= ends the wait for the connection; without it the
    # connect deadline does, as a ConnectError (a failed connect) carrying KEEL_ERR_TIMEOUT.
    scheme = SERVERS[silent].split("://", 1)[0]
    with TcpProxy() as proxy:
        d = keel.Database({"databases": {"x": {"url": f"{scheme}://u@127.0.0.1:{proxy.port}/x",
                                               "connect_timeout": 2}}})
        try:
            e = await raises_timeout_within(ping(d, silent, timeout=0.5), 0.5 + SLACK)
            assert_timeout(e, engine=silent, database="x")
            t0 = time.monotonic()
            with pytest.raises(keel.ConnectError) as ei:
                await asyncio.wait_for(ping(d, silent), 30)
            assert time.monotonic() - t0 < 2 + SLACK
            assert not isinstance(ei.value, keel.QueryTimeout)
            if silent != "mongodb":
                # libmongoc connects when the first command needs a server; the SQL engines
                # connect to lease a connection.
                assert "waiting for a connection" in str(e)
                assert ei.value.code == "KEEL_ERR_TIMEOUT"
            with pytest.raises(keel.ConnectError):
                await asyncio.wait_for(d.acquire("x"), 30)
            assert d.pool_stats("x")["leased"] == 0
        finally:
            await asyncio.wait_for(d.close(), 30)

