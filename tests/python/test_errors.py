# tests/python/test_errors.py - error mapping on every engine, and that nothing is lost after an error.
import asyncio
import datetime as dt
import time
import urllib.parse
import uuid

import pytest

import keel
from conftest import MONGO_URL, MYSQL_URL, PG_URL, UNIQUE_VIOLATION_SQLSTATE, close_db, wait_until

SECRET = "Sup3rS3cretPw"
DEAD_URL = f"postgresql://postgres:{SECRET}@127.0.0.1:1/x"
# Servers nothing listens for, per server engine.
DEAD_URLS = {
    "postgresql": DEAD_URL,
    "mysql": f"mysql://root:{SECRET}@127.0.0.1:1/x",
}

# The SQLSTATE of a syntax error, where the engine has one (SQLite has none).
SYNTAX_ERROR_SQLSTATE = {"postgresql": "42601", "mysql": "42000", "sqlite": None}

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
    ("QueryTimeout", "OperationalError"),
    ("QueryTimeout", TimeoutError),
    ("IntegrityError", "DatabaseError"),
    ("UniqueViolationError", "IntegrityError"),
    ("ForeignKeyViolationError", "IntegrityError"),
    ("NotNullViolationError", "IntegrityError"),
    ("CheckViolationError", "IntegrityError"),
    ("ExclusionViolationError", "IntegrityError"),
    ("ProgrammingError", "DatabaseError"),
    ("DataError", "DatabaseError"),
    ("InternalError", "DatabaseError"),
    ("NotSupportedError", "DatabaseError"),
]


@pytest.mark.parametrize("name,base", HIERARCHY,
                         ids=[f"{h[0]}-{getattr(h[1], '__name__', h[1])}" for h in HIERARCHY])
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
    if SYNTAX_ERROR_SQLSTATE[engine] is not None:
        assert ei.value.sqlstate == SYNTAX_ERROR_SQLSTATE[engine]
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
    assert_error_attributes(ei.value, engine=engine, database="default",
                            sqlstate=UNIQUE_VIOLATION_SQLSTATE[engine], code="KEEL_ERR_INTEGRITY")
    assert isinstance(ei.value, keel.DatabaseError)
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 1


async def test_not_null_violation(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} NOT NULL)")
    with pytest.raises(keel.IntegrityError):
        await db.execute(f"INSERT INTO {t} VALUES ($1)", None)


# The server's own number for each kind of violation (MySQL/MariaDB's errno, SQLite's extended
# result code); PostgreSQL has SQLSTATEs only. MySQL 8 says 3819 for a CHECK, MariaDB 4025.
SERVER_CODES = {
    "postgresql": {"unique": None, "foreign_key": None, "not_null": None, "check": None},
    "mysql": {"unique": {1062}, "foreign_key": {1452}, "not_null": {1048}, "check": {3819, 4025}},
    "sqlite": {"unique": {1555, 2067}, "foreign_key": {787}, "not_null": {1299}, "check": {275}},
}


@pytest.mark.parametrize("kind,cls,sql", [
    ("unique", "UniqueViolationError", "INSERT INTO {p} (id, email, n) VALUES ($1, 'b', 1)"),
    ("unique", "UniqueViolationError", "INSERT INTO {p} (id, email, n) VALUES (2, $1, 1)"),
    ("not_null", "NotNullViolationError", "INSERT INTO {p} (id, email, n) VALUES (3, 'c', $1)"),
    ("check", "CheckViolationError", "INSERT INTO {p} (id, email, n) VALUES (4, 'd', $1)"),
    ("foreign_key", "ForeignKeyViolationError", "INSERT INTO {c} (id, pid) VALUES (1, $1)"),
])
async def test_each_kind_of_violation_has_its_class(db, new_table, types, engine, kind, cls, sql):
    """asyncpg's classes tell the kinds apart on every engine, where MySQL's SQLSTATE is 23000
    for all of them; the statement changed nothing."""
    c, p = new_table("child"), new_table("parent")  # the child is dropped first
    arg = {"unique": 1, "not_null": None, "check": -1, "foreign_key": 99}[kind]
    if "email, n) VALUES (2" in sql:
        arg = "a"
    int_t = types["int"]
    async with db.connection() as conn:
        if engine == "sqlite":
            await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute(f"CREATE TABLE {p} (id {int_t} PRIMARY KEY, email VARCHAR(20) UNIQUE, "
                           f"n {int_t} NOT NULL, CONSTRAINT {p}_n_positive CHECK (n > 0))")
        await conn.execute(f"CREATE TABLE {c} (id {int_t} PRIMARY KEY, pid {int_t}, "
                           f"CONSTRAINT {c}_parent FOREIGN KEY (pid) REFERENCES {p} (id))")
        await conn.execute(f"INSERT INTO {p} (id, email, n) VALUES (1, 'a', 1)")
        with pytest.raises(getattr(keel, cls)) as ei:
            await conn.execute(sql.format(p=p, c=c), arg)
        e = ei.value
        assert type(e) is getattr(keel, cls)
        assert_error_attributes(e, engine=engine, code="KEEL_ERR_INTEGRITY")
        codes = SERVER_CODES[engine][kind]
        assert e.server_code is None if codes is None else e.server_code in codes, e.server_code
        assert await conn.fetchval(f"SELECT count(*) FROM {p}") == 1
        assert await conn.fetchval(f"SELECT count(*) FROM {c}") == 0


async def test_exclusion_violation_on_postgresql(pg_db):
    t = "keel_excl_" + uuid.uuid4().hex[:8]
    await pg_db.execute(f"CREATE TABLE {t} (during tsrange, EXCLUDE USING gist (during WITH &&))")
    try:
        await pg_db.execute(f"INSERT INTO {t} VALUES ('[2026-01-01, 2026-01-03)')")
        with pytest.raises(keel.ExclusionViolationError) as ei:
            await pg_db.execute(f"INSERT INTO {t} VALUES ('[2026-01-02, 2026-01-04)')")
        assert ei.value.sqlstate == "23P01" and ei.value.constraint_name == f"{t}_during_excl"
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


def test_a_server_code_is_none_where_there_is_none():
    assert keel.Error("x").server_code is None


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


async def test_unsupported_parameter_type_names_position(db, engine):
    class Widget:
        pass

    with pytest.raises(keel.DataError) as ei:
        await db.fetch("SELECT $1, $2", 1, Widget())
    message = str(ei.value)
    assert "2" in message and "Widget" in message
    with pytest.raises(keel.DataError) as ei:
        await db.fetch("SELECT $1", object())
    assert "1" in str(ei.value) and "object" in str(ei.value)
    # A tuple is an array on PostgreSQL (test_pg_types.py), and refused elsewhere.
    for bad in ({1, 2}, 1 + 2j) + (() if engine == "postgresql" else ((1, 2),)):
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


@pytest.mark.parametrize("dead_engine", list(DEAD_URLS))
async def test_unreachable_server_fails_fast_without_secrets(dead_engine):
    d = keel.Database({"databases": {"x": {"url": DEAD_URLS[dead_engine], "connect_timeout": 2}}})
    try:
        await d.start()  # start() does not raise for an unreachable database
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(keel.ConnectError) as ei:
                await d.fetchval("SELECT 1")
            assert time.monotonic() - t0 < 5
            assert isinstance(ei.value, keel.OperationalError)
            assert_error_attributes(ei.value, engine=dead_engine, database="x", code="KEEL_ERR_CONNECT")
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
        "dead": {"url": DEAD_URLS["postgresql"], "connect_timeout": 2},
        "dead_mysql": {"url": DEAD_URLS["mysql"], "connect_timeout": 2}}})
    async with d:
        for dead in ("dead", "dead_mysql"):
            with pytest.raises(keel.ConnectError):
                await d.fetch("SELECT 1", database=dead)
        assert await d.fetchval("SELECT 1") == 1
        assert await d.fetchval("SELECT 1", database="good") == 1


# A password made of the characters redactors trip on, percent-encoded in the URL as it must be.
TRICKY_SECRET = "Sl/ash?At@Co:lon%Pct=9;x"
TRICKY_ENCODED = urllib.parse.quote(TRICKY_SECRET, safe="")


def with_password(url, port=None):
    """url with user info carrying TRICKY_SECRET (and, when given, another port)."""
    parts = urllib.parse.urlsplit(url)
    user = parts.username or "keel_wrong_user"
    netloc = f"{user}:{TRICKY_ENCODED}@{parts.hostname}:{port or parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.parametrize("case", ["postgresql-refused", "mysql-refused", "mysql-wrong-password",
                                  "mongodb-refused", "mongodb-wrong-password"])
async def test_failed_connect_never_shows_the_password(case):
    # End to end, on every server engine: a connection refused and a login refused by a real
    # server. Neither the password nor its percent-encoded form may appear in the error (message,
    # repr, arguments) nor in the database's repr, however the client library words the failure.
    engine, what = case.split("-", 1)
    base = {"postgresql": PG_URL, "mysql": MYSQL_URL, "mongodb": MONGO_URL}[engine]
    url = with_password(base, port=1 if what == "refused" else None)
    d = keel.Database({"databases": {"x": {"url": url, "connect_timeout": 3}}})
    try:
        await d.start()
        with pytest.raises(keel.OperationalError) as ei:
            await d.ping()
        texts = [str(ei.value), repr(ei.value), " ".join(map(str, ei.value.args)), repr(d)]
        for text in texts:
            assert TRICKY_SECRET not in text
            assert TRICKY_ENCODED not in text
            assert "At@Co" not in text and "Pct%3D9" not in text
        assert ei.value.database == "x"
    finally:
        await d.close()


@pytest.mark.parametrize("url,expected", [
    ("postgresql://postgres@127.0.0.1:notaport/db", ("port",)),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:99999999/db", ("port",)),
    ("nosuchengine://host/db", ("nosuchengine", "scheme")),
    ("mysql://root@127.0.0.1:notaport/db", ("port",)),
    (f"mariadb://root:{SECRET}@127.0.0.1:70000/db", ("port",)),
    (f"mysql://root:{SECRET}@127.0.0.1/db?charset", ("charset", "value")),
], ids=["port-not-a-number", "port-out-of-range", "unknown-scheme", "mysql-port-not-a-number",
        "mariadb-port-out-of-range", "mysql-query-without-value"])
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
    ({"databases": {"main": {"url": "mysql://root@h/db?colour=red"}}}, "databases.main.options.colour"),
    ({"databases": {"main": {"url": "mysql://root@h/db", "options": {"charset": "utf-8"}}}},
     "databases.main.options.charset"),
    ({"databases": {"main": {"url": "mysql://root@h/db?ssl_mode=sometimes"}}},
     "databases.main.options.ssl_mode"),
    ({"databases": {"main": {"url": "mysql://root@h/db?ssl_mode=VERIFY_CA"}}},
     "databases.main.options.ssl_ca"),
    ({"databases": {"main": {"url": "mysql://root@h/db", "options": {"dbname": "other"}}}},
     "databases.main.options.dbname"),
    ({"databases": {"main": {"url": "mariadb://root@h/db?max_size=lots"}}}, "max_size"),
], ids=["not-a-number", "min-over-max", "unknown-key", "missing-default", "bad-timeout", "bad-url",
        "mysql-unknown-option", "mysql-bad-charset", "mysql-bad-ssl-mode", "mysql-verify-without-ca",
        "mysql-reserved-option", "mysql-bad-pool-size"])
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
    # Leaving the aborted block normally raises too: its COMMIT rolled it back (T20).
    with pytest.raises(keel.InternalError, match="the transaction was rolled back") as commit:
        async with pg_db.transaction() as conn:
            with pytest.raises(keel.ProgrammingError):
                await conn.execute("SELEC 1")
            with pytest.raises(keel.InternalError) as ei:
                await conn.execute("SELECT 1")
            assert ei.value.sqlstate == "25P02"
    assert commit.value.sqlstate == "25P02"
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


# MySQL-only behaviour: its server-side errors, its sessions killed by another one.

@pytest.fixture
async def mysql_table(mysql_db):
    t = "t_" + uuid.uuid4().hex[:12]
    await mysql_db.execute(f"CREATE TABLE {t} (i INT, s SMALLINT, v VARCHAR(3), d DATE)")
    yield t
    await mysql_db.execute(f"DROP TABLE IF EXISTS {t}")


# The server's strict mode (STRICT_TRANS_TABLES, ERROR_FOR_DIVISION_BY_ZERO, the default) makes
# these errors instead of warnings; MySQL reports most of them as class 22 or HY000 (by number).
@pytest.mark.parametrize("column,sql,args,sqlstate", [
    ("i", "$1", ("abc",), "22007"),
    ("s", "$1", (100000,), "22003"),
    ("i", "1 / $1", (0,), "22012"),
    ("v", "$1", ("abcd",), "22001"),
    ("d", "$1", ("2024-02-30",), "22007"),
], ids=["invalid-text", "out-of-range", "division-by-zero", "too-long", "invalid-date"])
async def test_server_data_errors_on_mysql(mysql_db, mysql_table, column, sql, args, sqlstate):
    with pytest.raises(keel.DataError) as ei:
        await mysql_db.execute(f"INSERT INTO {mysql_table} ({column}) VALUES ({sql})", *args)
    assert_error_attributes(ei.value, engine="mysql", database="default", sqlstate=sqlstate,
                            code="KEEL_ERR_DATA")
    assert await mysql_db.fetchval(f"SELECT count(*) FROM {mysql_table}") == 0
    assert await mysql_db.fetchval("SELECT 1") == 1


async def test_statement_timeout_on_mysql(mysql_db):
    # MariaDB's max_statement_time interrupts the statement with its own error: a timeout.
    with pytest.raises(keel.QueryTimeout) as ei:
        await mysql_db.fetchval("SET STATEMENT max_statement_time = 0.1 FOR SELECT SLEEP(5)")
    assert_error_attributes(ei.value, engine="mysql", code="KEEL_ERR_TIMEOUT", sqlstate="70100")
    assert await mysql_db.fetchval("SELECT 1") == 1
    assert mysql_db.pool_stats()["leased"] == 0


async def test_errors_do_not_abort_a_transaction_on_mysql(mysql_db, mysql_table):
    # Unlike PostgreSQL, MySQL keeps a transaction going after a failed statement.
    async with mysql_db.transaction() as conn:
        await conn.execute(f"INSERT INTO {mysql_table} (i) VALUES (1)")
        with pytest.raises(keel.ProgrammingError):
            await conn.execute("SELEC 1")
        assert conn.in_transaction is True
        await conn.execute(f"INSERT INTO {mysql_table} (i) VALUES (2)")
    assert await mysql_db.fetchval(f"SELECT count(*) FROM {mysql_table}") == 2


async def test_lost_connection_on_mysql(mysql_db):
    async with mysql_db.connection() as conn:
        thread = await conn.fetchval("SELECT CONNECTION_ID()")
        async with mysql_db.connection() as other:
            assert await other.fetchval("SELECT CONNECTION_ID()") != thread
            await other.execute(f"KILL CONNECTION {int(thread)}")
        with pytest.raises(keel.ConnectionLost) as ei:
            async with asyncio.timeout(5):
                await wait_for_failure(conn)
        assert isinstance(ei.value, keel.OperationalError)
        assert_error_attributes(ei.value, engine="mysql", database="default",
                                code="KEEL_ERR_CONNECTION_LOST")
        # Once lost, it stays lost: the connection does not pretend to work again.
        with pytest.raises(keel.ConnectionLost):
            await conn.fetchval("SELECT 1")
    # The broken connection is not lent again.
    assert await mysql_db.fetchval("SELECT 1") == 1
    async with mysql_db.connection() as conn:
        assert await conn.fetchval("SELECT CONNECTION_ID()") != thread
    assert mysql_db.pool_stats()["leased"] == 0


async def test_connection_killed_mid_query_on_mysql(mysql_db):
    async with mysql_db.connection() as conn:
        thread = await conn.fetchval("SELECT CONNECTION_ID()")
        slow = asyncio.create_task(conn.fetchval("SELECT SLEEP(10)"))
        await asyncio.sleep(0.2)
        async with mysql_db.connection() as other:
            await other.execute(f"KILL CONNECTION {int(thread)}")
        with pytest.raises(keel.ConnectionLost):
            await asyncio.wait_for(slow, 5)
    assert await mysql_db.fetchval("SELECT CONNECTION_ID()") != thread
    assert mysql_db.pool_stats()["leased"] == 0


async def test_idle_connection_killed_by_the_server_is_replaced_on_mysql(mysql_db):
    async with mysql_db.connection() as conn:
        thread = await conn.fetchval("SELECT CONNECTION_ID()")
    assert mysql_db.pool_stats()["idle"] >= 1
    killer = keel.Database(MYSQL_URL)
    async with killer:
        await killer.execute(f"KILL CONNECTION {int(thread)}")
    # The pool notices the closed socket of an idle connection and drops it.
    await wait_until(lambda: mysql_db.pool_stats()["idle"] == 0, timeout=5)
    assert await mysql_db.fetchval("SELECT 1") == 1
    assert await mysql_db.fetchval("SELECT CONNECTION_ID()") != thread


# A deadlock between two transactions: one of them is chosen as the victim and fails with the
# engine's SQLSTATE; both connections stay usable. SQLite has no row locks to deadlock on.
DEADLOCK_SQLSTATE = {"postgresql": "40P01", "mysql": "40001"}


@pytest.mark.parametrize("server", list(DEADLOCK_SQLSTATE))
async def test_deadlock_is_reported_and_leaves_connections_usable(server):
    url = {"postgresql": PG_URL, "mysql": MYSQL_URL}[server]
    d = keel.Database({"databases": {"main": {"url": url, "pool": {"min_size": 2, "max_size": 2}}}})
    t = "t_" + uuid.uuid4().hex[:12]
    async with d:
        await d.execute(f"CREATE TABLE {t} (id BIGINT PRIMARY KEY, v BIGINT)")
        try:
            await d.execute(f"INSERT INTO {t} VALUES (1, 0), (2, 0)")
            a, b = await d.acquire(), await d.acquire()
            try:
                await a.execute("BEGIN")
                await b.execute("BEGIN")
                await a.execute(f"UPDATE {t} SET v = 1 WHERE id = 1")
                await b.execute(f"UPDATE {t} SET v = 2 WHERE id = 2")
                results = await asyncio.wait_for(asyncio.gather(
                    a.execute(f"UPDATE {t} SET v = 1 WHERE id = 2"),
                    b.execute(f"UPDATE {t} SET v = 2 WHERE id = 1"),
                    return_exceptions=True), 20)
                errors = [r for r in results if isinstance(r, BaseException)]
                assert len(errors) == 1, results
                e = errors[0]
                assert isinstance(e, keel.DatabaseError), repr(e)
                assert_error_attributes(e, engine=server, database="main",
                                        sqlstate=DEADLOCK_SQLSTATE[server], code="KEEL_ERR_TRANSACTION")
                for conn in (a, b):
                    await conn.execute("ROLLBACK")
                    assert conn.in_transaction is False
                    assert await conn.fetchval("SELECT 1") == 1
            finally:
                await d.release(a)
                await d.release(b)
            assert d.pool_stats("main")["leased"] == 0
        finally:
            await d.execute(f"DROP TABLE IF EXISTS {t}")


async def test_query_killed_by_another_session_on_mysql(mysql_db):
    # KILL QUERY from elsewhere (an operator, a watchdog) stops the statement, not the session.
    async with mysql_db.connection() as conn:
        thread = await conn.fetchval("SELECT CONNECTION_ID()")
        # 10^12 joined rows: hours of work. (SLEEP and BENCHMARK end quietly when killed.)
        busy = asyncio.create_task(conn.fetchval(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) "
            "SELECT count(*) FROM c a, c b, c d, c e"))
        await asyncio.sleep(0.2)
        assert not busy.done()
        async with mysql_db.connection() as other:
            await other.execute(f"KILL QUERY {int(thread)}")
        with pytest.raises(keel.QueryCanceledError) as ei:
            await asyncio.wait_for(busy, 5)
        assert_error_attributes(ei.value, engine="mysql", database="default", sqlstate="70100",
                                code="KEEL_ERR_CANCELLED")
        assert await conn.fetchval("SELECT CONNECTION_ID()") == thread
        assert await conn.fetchval("SELECT $1 + 1", 1) == 2


@pytest.mark.parametrize("dead_engine", list(DEAD_URLS))
async def test_server_that_never_answers_times_out(dead_engine):
    # A server that accepts the connection and then says nothing (a hung host, a wrong port
    # behind a proxy): the connect deadline ends the wait. That is a failed connect, a
    # ConnectError naming the address, whose code tells the deadline (KEEL_ERR_TIMEOUT); not a
    # QueryTimeout, which is the deadline of an operation (timeout=, command_timeout).
    async def silent(reader, writer):
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scheme = DEAD_URLS[dead_engine].split("://", 1)[0]
    url = f"{scheme}://u:{SECRET}@127.0.0.1:{port}/x"
    d = keel.Database({"databases": {"x": {"url": url, "connect_timeout": 1}}})
    try:
        async with d:
            t0 = time.monotonic()
            with pytest.raises(keel.ConnectError) as ei:
                await d.fetchval("SELECT 1")
            assert not isinstance(ei.value, keel.QueryTimeout)
            assert 0.5 <= time.monotonic() - t0 < 5
            assert_error_attributes(ei.value, engine=dead_engine, database="x", code="KEEL_ERR_TIMEOUT")
            assert str(port) in str(ei.value)
            assert_no_secret(ei.value)
            assert d.pool_stats("x")["leased"] == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_fetch_failing_after_rows_were_sent_on_postgresql(pg_db):
    # fetch() builds Records while the rows stream in: an error after 40,000 of them still
    # raises (no partial list), and the connection goes on.
    async with pg_db.connection() as conn:
        with pytest.raises(keel.DataError) as ei:
            await conn.fetch("SELECT g, 1 / (g - 40000) FROM generate_series(1, 50000) g")
        assert ei.value.sqlstate == "22012"
        rows = await conn.fetch("SELECT g FROM generate_series(1, 3) g")
        assert [r["g"] for r in rows] == [1, 2, 3]


async def test_cancelling_a_fetch_while_rows_stream_on_postgresql(pg_db):
    # Rows keep arriving (one every 0.2 ms) when the task is cancelled: it stops on the server
    # and the connection answers again.
    async with pg_db.connection() as conn:
        task = asyncio.create_task(
            conn.fetch("SELECT g, pg_sleep(0.0002) FROM generate_series(1, 100000) g"))
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await conn.fetchval("SELECT 7") == 7


# ---- What the server said: detail, hint and the names of the objects involved ----------------

SERVER_FIELDS = ("detail", "hint", "schema_name", "table_name", "column_name", "constraint_name",
                 "datatype_name")

# What each engine reports about a violated named unique key, a duplicate primary key and a
# NULL in a NOT NULL column of table t (columns id, email). PostgreSQL sends its error fields;
# MariaDB names the key (1062) or the column (1048) in its message; SQLite names table.column.
# None: the engine does not say.
def expected_names(engine, t):
    return {
        "postgresql": {
            "unique": {"constraint_name": f"{t}_email_key", "table_name": t,
                       "schema_name": "public", "column_name": None},
            "primary": {"constraint_name": f"{t}_pkey", "table_name": t, "column_name": None},
            "not_null": {"constraint_name": None, "table_name": t, "column_name": "email"},
        },
        "mysql": {
            "unique": {"constraint_name": f"{t}_email_key", "table_name": None,
                       "column_name": None},
            "primary": {"constraint_name": "PRIMARY", "table_name": None, "column_name": None},
            "not_null": {"constraint_name": None, "table_name": None, "column_name": "email"},
        },
        "sqlite": {
            "unique": {"constraint_name": None, "table_name": t, "column_name": "email"},
            "primary": {"constraint_name": None, "table_name": t, "column_name": "id"},
            "not_null": {"constraint_name": None, "table_name": t, "column_name": "email"},
        },
    }[engine]


async def make_keyed_table(db, t, types):
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, email VARCHAR(100) "
                     f"NOT NULL, CONSTRAINT {t}_email_key UNIQUE (email))")
    await db.execute(f"INSERT INTO {t} VALUES (1, 'a@example.com')")


@pytest.mark.parametrize("case", ["unique", "primary", "not_null"])
async def test_error_names_the_constraint_table_and_column(db, new_table, types, engine, case):
    t = new_table()
    await make_keyed_table(db, t, types)
    args = {"unique": (2, "a@example.com"), "primary": (1, "b@example.com"),
            "not_null": (3, None)}[case]
    with pytest.raises(keel.IntegrityError) as ei:
        await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", *args)
    e = ei.value
    for attr, want in expected_names(engine, t)[case].items():
        assert getattr(e, attr) == want, (attr, str(e))
    if engine == "postgresql" and case != "not_null":
        assert e.detail is not None and "already exists" in e.detail
    # The connection (a pool of one) is still usable.
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 1


async def test_error_tells_which_unique_key_was_hit(db, new_table, types, engine):
    # Two unique keys: the application tells them apart without parsing the message.
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, email VARCHAR(100), "
                     f"nick VARCHAR(100), CONSTRAINT {t}_email_key UNIQUE (email), "
                     f"CONSTRAINT {t}_nick_key UNIQUE (nick))")
    await db.execute(f"INSERT INTO {t} VALUES (1, 'a', 'x')")
    hit = []
    for row in [(2, "a", "y"), (3, "b", "x")]:
        with pytest.raises(keel.IntegrityError) as ei:
            await db.execute(f"INSERT INTO {t} VALUES ($1, $2, $3)", *row)
        hit.append(ei.value.constraint_name if engine != "sqlite" else ei.value.column_name)
    if engine == "sqlite":
        assert hit == ["email", "nick"]
    else:
        assert hit == [f"{t}_email_key", f"{t}_nick_key"]


async def test_error_names_a_foreign_key(db, new_table, types, engine):
    if engine == "sqlite":
        pytest.skip("SQLite's foreign key failure names nothing")
    parent, child = new_table("p"), new_table("c")
    await db.execute(f"CREATE TABLE {parent} (id {types['int']} PRIMARY KEY)")
    await db.execute(f"CREATE TABLE {child} (id {types['int']} PRIMARY KEY, pid {types['int']}, "
                     f"CONSTRAINT {child}_fk FOREIGN KEY (pid) REFERENCES {parent} (id))")
    try:
        with pytest.raises(keel.IntegrityError) as ei:
            await db.execute(f"INSERT INTO {child} VALUES (1, $1)", 42)
        assert ei.value.constraint_name == f"{child}_fk"
        assert ei.value.table_name == child
        await db.execute(f"INSERT INTO {parent} VALUES (42)")
        await db.execute(f"INSERT INTO {child} VALUES (1, 42)")
        with pytest.raises(keel.IntegrityError) as ei:
            await db.execute(f"DELETE FROM {parent}")
        assert ei.value.constraint_name == f"{child}_fk"
        assert ei.value.table_name == child
        if engine == "mysql":
            assert ei.value.schema_name == urllib.parse.urlsplit(MYSQL_URL).path.lstrip("/")
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {child}")


async def test_error_names_a_check_constraint(db, new_table, types, engine):
    if engine == "sqlite":
        pytest.skip("SQLite names a CHECK by its name or its expression: not reliable")
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (n {types['int']}, CONSTRAINT {t}_positive CHECK (n > 0))")
    with pytest.raises(keel.IntegrityError) as ei:
        await db.execute(f"INSERT INTO {t} VALUES ($1)", -1)
    assert ei.value.constraint_name == f"{t}_positive"
    assert ei.value.table_name == t


async def test_every_postgresql_error_field_reaches_the_exception(pg_db):
    # RAISE … USING sets every field the protocol carries; the secret in DETAIL is masked.
    with pytest.raises(keel.DatabaseError) as ei:
        await pg_db.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail password=hunter2', "
            "HINT = 'try again', SCHEMA = 'sch', TABLE = 'tab', COLUMN = 'col', "
            "CONSTRAINT = 'con', DATATYPE = 'dt', ERRCODE = 'P0001'; END $$")
    e = ei.value
    assert e.sqlstate == "P0001"
    assert str(e).startswith("boom")
    assert "hunter2" not in e.detail and e.detail.startswith("the detail password=")
    assert (e.hint, e.schema_name, e.table_name, e.column_name, e.constraint_name,
            e.datatype_name) == ("try again", "sch", "tab", "col", "con", "dt")
    assert await pg_db.fetchval("SELECT 1") == 1


async def test_postgresql_hint_and_datatype(pg_db):
    with pytest.raises(keel.ProgrammingError) as ei:
        await pg_db.fetch("SELECT keel_no_such_function(1)")
    assert ei.value.hint and "function" in ei.value.hint.lower()
    name = "keel_dom_" + uuid.uuid4().hex[:8]
    await pg_db.execute(f"CREATE DOMAIN {name} AS int CHECK (VALUE > 0)")
    try:
        with pytest.raises(keel.IntegrityError) as ei:
            await pg_db.fetchval(f"SELECT (-1)::{name}")
        assert ei.value.datatype_name == name
        assert ei.value.schema_name == "public"
        assert ei.value.constraint_name == f"{name}_check"
    finally:
        await pg_db.execute(f"DROP DOMAIN {name}")


async def test_errors_without_server_fields_have_none(db, engine):
    with pytest.raises(keel.ProgrammingError) as ei:
        await db.fetch("SELEC 1")
    for attr in SERVER_FIELDS[2:]:
        assert getattr(ei.value, attr) is None, attr
    e = keel.IntegrityError("raised by the application")
    assert all(getattr(e, attr) is None for attr in SERVER_FIELDS)


async def test_batch_error_names_the_key_too(db, new_table, types, engine):
    t = new_table()
    await make_keyed_table(db, t, types)
    with pytest.raises(keel.IntegrityError) as ei:
        await db.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                             [(5, "c@example.com"), (6, "a@example.com")])
    want = expected_names(engine, t)["unique"]
    assert ei.value.constraint_name == want["constraint_name"]
    assert ei.value.column_name == want["column_name"]
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 1


@pytest.mark.skipif(not MONGO_URL, reason="KEEL_TEST_MONGO_URL is empty")
async def test_mongodb_duplicate_key_names_the_index_and_collection():
    d = keel.Database({"databases": {"docs": {"url": MONGO_URL}}})
    await d.start()
    coll = d.collection("dup_" + uuid.uuid4().hex[:8])
    try:
        await coll.create_index([("email", 1)], unique=True, name="users_email_key")
        await coll.insert_one({"email": "a@x"})
        dbname = urllib.parse.urlsplit(MONGO_URL).path.lstrip("/")
        for attempt in (lambda: coll.insert_one({"email": "a@x"}),
                        lambda: coll.insert_many([{"email": "b@x"}, {"email": "a@x"}]),
                        lambda: coll.update_one({"email": "b@x"}, {"$set": {"email": "a@x"}})):
            with pytest.raises(keel.IntegrityError) as ei:
                await attempt()
            e = ei.value
            assert (e.constraint_name, e.table_name, e.schema_name) == \
                ("users_email_key", coll.name, dbname), str(e)
        # Other errors name nothing.
        with pytest.raises(keel.ProgrammingError) as ei:
            await coll.find_one({"email": {"$bogus": 1}})
        assert ei.value.constraint_name is None and ei.value.table_name is None
        assert await coll.count_documents({}) == 2
    finally:
        await coll.drop()
        await close_db(d)
