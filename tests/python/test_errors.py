# tests/python/test_errors.py - error mapping on every engine, and that nothing is lost after an error.
import asyncio
import datetime as dt
import time

import pytest

import keel
from conftest import PG_URL, wait_until

SECRET = "Sup3rS3cretPw"
DEAD_URL = f"postgresql://postgres:{SECRET}@127.0.0.1:1/x"

HIERARCHY = [
    ("Error", Exception),
    ("InterfaceError", "Error"),
    ("ConfigError", "InterfaceError"),
    ("UnknownDatabaseError", "InterfaceError"),
    ("DatabaseError", "Error"),
    ("OperationalError", "DatabaseError"),
    ("PoolTimeout", "OperationalError"),
    ("ConnectionLost", "OperationalError"),
    ("ConnectError", "OperationalError"),
    ("QueryCanceledError", "OperationalError"),
    ("IntegrityError", "DatabaseError"),
    ("ProgrammingError", "DatabaseError"),
    ("DataError", "DatabaseError"),
    ("InternalError", "DatabaseError"),
    ("NotSupportedError", "DatabaseError"),
]


@pytest.mark.parametrize("name,base", HIERARCHY, ids=[h[0] for h in HIERARCHY])
def test_exception_hierarchy(name, base):
    cls = getattr(keel, name)
    parent = base if isinstance(base, type) else getattr(keel, base)
    assert isinstance(cls, type)
    assert issubclass(cls, parent)
    assert issubclass(cls, Exception)


def assert_error_attributes(e, *, engine=None, database=None, code=None, sqlstate=None):
    for attr in ("sqlstate", "database", "engine", "code"):
        assert hasattr(e, attr), attr
    if engine is not None:
        assert e.engine == engine
    if database is not None:
        assert e.database == database
    if code is not None:
        assert e.code == code
    if sqlstate is not None:
        assert e.sqlstate == sqlstate


async def test_syntax_error(db, engine):
    with pytest.raises(keel.ProgrammingError) as ei:
        await db.fetch("SELEC 1")
    assert_error_attributes(ei.value, engine=engine, database="default", code="KEEL_ERR_PROGRAMMING")
    if engine == "postgresql":
        assert ei.value.sqlstate == "42601"
    assert str(ei.value)
    assert await db.fetchval("SELECT 1") == 1


async def test_unknown_table(db, engine):
    with pytest.raises(keel.ProgrammingError) as ei:
        await db.fetch("SELECT * FROM keel_no_such_table_here")
    assert "keel_no_such_table_here" in str(ei.value)
    assert_error_attributes(ei.value, engine=engine, database="default")


async def test_unique_violation(db, new_table, types, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY)")
    await db.execute(f"INSERT INTO {t} VALUES (1)")
    with pytest.raises(keel.IntegrityError) as ei:
        await db.execute(f"INSERT INTO {t} VALUES ($1)", 1)
    assert_error_attributes(ei.value, engine=engine, database="default", sqlstate="23505",
                            code="KEEL_ERR_INTEGRITY")
    assert isinstance(ei.value, keel.DatabaseError)
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 1


async def test_not_null_violation(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} NOT NULL)")
    with pytest.raises(keel.IntegrityError):
        await db.execute(f"INSERT INTO {t} VALUES ($1)", None)


@pytest.mark.parametrize("sql,args", [
    ("SELECT $1, $2", (1,)),
    ("SELECT $1", (1, 2)),
    ("SELECT 1", (1,)),
    ("SELECT $1", ()),
], ids=["too-few", "too-many", "none-expected", "none-given"])
async def test_wrong_number_of_parameters(db, sql, args):
    with pytest.raises(keel.ProgrammingError) as ei:
        await db.fetch(sql, *args)
    assert_error_attributes(ei.value, code="KEEL_ERR_PARAMETERS")
    assert await db.fetchval("SELECT 1") == 1


async def test_unsupported_parameter_type_names_position(db):
    class Widget:
        pass

    with pytest.raises(keel.DataError) as ei:
        await db.fetch("SELECT $1, $2", 1, Widget())
    message = str(ei.value)
    assert "2" in message and "Widget" in message
    with pytest.raises(keel.DataError) as ei:
        await db.fetch("SELECT $1", object())
    assert "1" in str(ei.value) and "object" in str(ei.value)
    for bad in ({1, 2}, (1, 2), 1 + 2j):
        with pytest.raises(keel.DataError):
            await db.fetch("SELECT $1", bad)
    assert await db.fetchval("SELECT 1") == 1
    assert db.pool_stats()["leased"] == 0


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
async def test_int_beyond_int64(db, value):
    with pytest.raises(keel.DataError):
        await db.fetch("SELECT $1", value)
    assert await db.fetchval("SELECT 1") == 1


async def test_unknown_database(db):
    for call in (lambda: db.fetch("SELECT 1", database="nope_db"),
                 lambda: db.fetchrow("SELECT 1", database="nope_db"),
                 lambda: db.fetchval("SELECT 1", database="nope_db"),
                 lambda: db.execute("SELECT 1", database="nope_db"),
                 lambda: db.executemany("SELECT $1", [(1,)], database="nope_db"),
                 lambda: db.acquire("nope_db"),
                 lambda: db.ping("nope_db")):
        with pytest.raises(keel.UnknownDatabaseError) as ei:
            await call()
        assert "nope_db" in str(ei.value)
        assert isinstance(ei.value, keel.InterfaceError)
    with pytest.raises(keel.UnknownDatabaseError, match="nope_db"):
        async with db.connection("nope_db"):
            pass
    with pytest.raises(keel.UnknownDatabaseError, match="nope_db"):
        async with db.transaction(database="nope_db"):
            pass
    with pytest.raises(keel.UnknownDatabaseError, match="nope_db"):
        db.pool_stats("nope_db")
    with pytest.raises(keel.UnknownDatabaseError, match="nope_db"):
        db.engine("nope_db")
    assert await db.fetchval("SELECT 1") == 1
    assert db.pool_stats()["leased"] == 0


def assert_no_secret(e):
    for text in (str(e), repr(e), " ".join(map(str, e.args))):
        assert SECRET not in text


async def test_unreachable_server_fails_fast_without_secrets():
    d = keel.Database({"databases": {"x": {"url": DEAD_URL, "connect_timeout": 2}}})
    try:
        await d.start()  # start() does not raise for an unreachable database
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(keel.ConnectError) as ei:
                await d.fetchval("SELECT 1")
            assert time.monotonic() - t0 < 5
            assert isinstance(ei.value, keel.OperationalError)
            assert_error_attributes(ei.value, engine="postgresql", database="x", code="KEEL_ERR_CONNECT")
            assert_no_secret(ei.value)
        with pytest.raises(keel.ConnectError) as ei:
            await d.ping()
        assert_no_secret(ei.value)
        assert d.pool_stats("x")["leased"] == 0
    finally:
        await d.close()


async def test_unreachable_database_does_not_affect_others(db_url):
    d = keel.Database({"default": "good", "databases": {
        "good": {"url": db_url},
        "dead": {"url": DEAD_URL, "connect_timeout": 2}}})
    async with d:
        with pytest.raises(keel.ConnectError):
            await d.fetch("SELECT 1", database="dead")
        assert await d.fetchval("SELECT 1") == 1
        assert await d.fetchval("SELECT 1", database="good") == 1


@pytest.mark.parametrize("url,expected", [
    ("postgresql://postgres@127.0.0.1:notaport/db", ("port",)),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:99999999/db", ("port",)),
    ("nosuchengine://host/db", ("nosuchengine", "scheme")),
], ids=["port-not-a-number", "port-out-of-range", "unknown-scheme"])
def test_malformed_url(url, expected):
    with pytest.raises(keel.ConfigError) as ei:
        keel.Database(url)
    message = str(ei.value).lower()
    assert any(word in message for word in expected), message
    assert isinstance(ei.value, keel.InterfaceError)
    assert_no_secret(ei.value)


@pytest.mark.parametrize("config,path", [
    ({"databases": {"main": {"url": "sqlite:///x.db", "pool": {"max_size": "banana"}}}},
     "databases.main.pool.max_size"),
    ({"databases": {"main": {"url": "sqlite:///x.db", "pool": {"min_size": 5, "max_size": 2}}}},
     "databases.main.pool"),
    ({"databases": {"main": {"url": "sqlite:///x.db", "colour": "red"}}}, "databases.main.colour"),
    ({"default": "elsewhere", "databases": {"main": {"url": "sqlite:///x.db"}}}, "default"),
    ({"databases": {"main": {"url": "sqlite:///x.db", "connect_timeout": "soon"}}},
     "databases.main.connect_timeout"),
    ({"databases": {"main": {"url": "postgresql://u@h:nope/db"}}}, "databases.main.url"),
], ids=["not-a-number", "min-over-max", "unknown-key", "missing-default", "bad-timeout", "bad-url"])
def test_invalid_config_names_the_key_path(config, path):
    with pytest.raises(keel.ConfigError) as ei:
        keel.Database(config)
    assert path in str(ei.value)


async def test_errors_leave_the_connection_usable(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY)")
    await db.execute(f"INSERT INTO {t} VALUES (1)")
    failures = [
        (keel.ProgrammingError, "SELEC 1", ()),
        (keel.ProgrammingError, "SELECT * FROM keel_no_such_table_here", ()),
        (keel.IntegrityError, f"INSERT INTO {t} VALUES ($1)", (1,)),
        (keel.ProgrammingError, "SELECT $1, $2", (1,)),
        (keel.DataError, "SELECT $1", (object(),)),
        (keel.DataError, "SELECT $1", (2**64,)),
    ]
    async with db.connection() as conn:
        for exc, sql, args in failures:
            with pytest.raises(exc):
                await conn.fetch(sql, *args)
            assert await conn.fetchval("SELECT $1 + 1", 1) == 2
            assert conn.in_transaction is False
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {t} VALUES (2)")
    for exc, sql, args in failures:
        with pytest.raises(exc):
            await db.fetch(sql, *args)
        assert await db.fetchval("SELECT 1") == 1
        stats = db.pool_stats()
        assert stats["leased"] == 0 and stats["size"] <= stats["max_size"]
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 2


# PostgreSQL-only behaviour: server-side errors SQLite has no counterpart for.

@pytest.mark.parametrize("sql,args,sqlstate", [
    ("SELECT CAST($1 AS INTEGER)", ("abc",), "22P02"),
    ("SELECT 1 / 0", (), "22012"),
    ("SELECT CAST($1 AS SMALLINT)", (100000,), "22003"),
], ids=["invalid-text", "division-by-zero", "out-of-range"])
async def test_server_data_errors_on_postgresql(pg_db, sql, args, sqlstate):
    with pytest.raises(keel.DataError) as ei:
        await pg_db.fetchval(sql, *args)
    assert_error_attributes(ei.value, engine="postgresql", database="default", sqlstate=sqlstate,
                            code="KEEL_ERR_DATA")
    assert await pg_db.fetchval("SELECT 1") == 1


async def test_statement_timeout_is_query_canceled_on_postgresql(pg_db):
    async with pg_db.connection() as conn:
        await conn.execute("SET statement_timeout = 100")
        try:
            with pytest.raises(keel.QueryCanceledError) as ei:
                await conn.fetchval("SELECT pg_sleep(5)")
            assert ei.value.sqlstate == "57014"
            assert isinstance(ei.value, keel.OperationalError)
        finally:
            await conn.execute("RESET statement_timeout")
        assert await conn.fetchval("SELECT 1") == 1


async def test_aborted_transaction_on_postgresql(pg_db):
    async with pg_db.transaction() as conn:
        with pytest.raises(keel.ProgrammingError):
            await conn.execute("SELEC 1")
        with pytest.raises(keel.InternalError) as ei:
            await conn.execute("SELECT 1")
        assert ei.value.sqlstate == "25P02"
    async with pg_db.connection() as conn:
        assert conn.in_transaction is False
        assert await conn.fetchval("SELECT 1") == 1


async def test_lost_connection_on_postgresql(pg_db):
    async with pg_db.connection() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with pg_db.connection() as other:
            assert await other.fetchval("SELECT pg_terminate_backend(CAST($1 AS INTEGER))", pid) is True
        with pytest.raises(keel.ConnectionLost) as ei:
            async with asyncio.timeout(5):
                await wait_for_failure(conn)
        assert isinstance(ei.value, keel.OperationalError)
        assert ei.value.database == "default"
    # The broken connection is not lent again.
    assert await pg_db.fetchval("SELECT 1") == 1
    async with pg_db.connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    assert pg_db.pool_stats()["leased"] == 0


async def wait_for_failure(conn):
    # The first statement after the kill may still be sent before the socket reports it closed.
    while True:
        await conn.fetchval("SELECT 1")
        await asyncio.sleep(0.01)


async def test_idle_connection_killed_by_the_server_is_replaced(pg_db):
    async with pg_db.connection() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    assert pg_db.pool_stats()["idle"] >= 1
    killer = keel.Database(PG_URL)
    async with killer:
        assert await killer.fetchval("SELECT pg_terminate_backend(CAST($1 AS INTEGER))", pid) is True
    # The pool notices the closed socket of an idle connection and drops it.
    await wait_until(lambda: pg_db.pool_stats()["idle"] == 0, timeout=5)
    assert await pg_db.fetchval("SELECT 1") == 1
    assert await pg_db.fetchval("SELECT pg_backend_pid()") != pid


async def test_timestamps_beyond_python_range_on_postgresql(pg_db):
    # PostgreSQL's infinite dates and timestamps have no Python equivalent: they come back as
    # the server's text (documented in docs/engines.md), so nothing is lost. A BC date is a
    # real date Python cannot hold: that is a DataError, and the connection stays usable.
    for sql, text in (("SELECT 'infinity'::timestamp", "infinity"),
                      ("SELECT '-infinity'::timestamptz", "-infinity"),
                      ("SELECT 'infinity'::date", "infinity")):
        assert await pg_db.fetchval(sql) == text, sql
    with pytest.raises(keel.DataError):
        await pg_db.fetchval("SELECT '0001-01-01 BC'::date")
    assert await pg_db.fetchval("SELECT 1") == 1
