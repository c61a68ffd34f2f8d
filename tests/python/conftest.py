# tests/python/conftest.py - shared fixtures: one parametrisation over engines, databases, tables and per-engine DDL.
"""Fixtures shared by the whole Python suite.

Every engine behaviour is written once and runs against each engine through the `engine`
parameter (ids "postgresql", "sqlite" and "mysql"). Tests use real servers only: PostgreSQL from
KEEL_TEST_PG_URL, MySQL/MariaDB from KEEL_TEST_MYSQL_URL and SQLite files in the test's tmp_path.
DDL and SQL that differ between engines are looked up in COLUMN_TYPES and the other per-engine
tables below, so assertions stay shared; where an engine really behaves differently, the
difference is one entry of a small per-engine table, never a weaker shared assertion.
"""
import asyncio
import os
import time
import urllib.parse
import uuid

import pytest

import keel

PG_URL = os.environ.get("KEEL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/keel_test")
MYSQL_URL = os.environ.get("KEEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/keel_test")
# The MongoDB server of test_mongo.py; set KEEL_TEST_MONGO_URL to "" to leave MongoDB out of the
# tests that cover every configured engine at once.
MONGO_URL = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")
ENGINES = ["postgresql", "sqlite", "mysql"]
SERVER_URLS = {"postgresql": PG_URL, "mysql": MYSQL_URL}

# Column types per engine. SQLite maps declared types to keel types, so the names it is given
# are the ones an application would write for it. MySQL has no time zone aware type and no UUID
# type: the engine sends an aware datetime as its UTC DATETIME and a UUID as its 36-character
# text (src/engines/mysql.c), so those columns are DATETIME(6) and CHAR(36). TEXT is LONGTEXT
# there, since MySQL's TEXT holds only 64 KiB.
COLUMN_TYPES = {
    "postgresql": {
        "bool": "BOOLEAN",
        "int": "BIGINT",
        "float": "DOUBLE PRECISION",
        "numeric": "NUMERIC(20,6)",
        "text": "TEXT",
        "bytes": "BYTEA",
        "date": "DATE",
        "time": "TIME",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "uuid": "UUID",
        "json": "JSONB",
        "serial_pk": "BIGSERIAL PRIMARY KEY",
    },
    "sqlite": {
        "bool": "BOOLEAN",
        "int": "INTEGER",
        "float": "REAL",
        "numeric": "NUMERIC(20,6)",
        "text": "TEXT",
        "bytes": "BLOB",
        "date": "DATE",
        "time": "TIME",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "uuid": "UUID",
        "json": "JSON",
        "serial_pk": "INTEGER PRIMARY KEY",
    },
    "mysql": {
        "bool": "BOOLEAN",
        "int": "BIGINT",
        "float": "DOUBLE",
        "numeric": "DECIMAL(20,6)",
        "text": "LONGTEXT",
        "bytes": "LONGBLOB",
        "date": "DATE",
        "time": "TIME(6)",
        "timestamp": "DATETIME(6)",
        "timestamptz": "DATETIME(6)",
        "uuid": "CHAR(36)",
        "json": "JSON",
        "serial_pk": "BIGINT AUTO_INCREMENT PRIMARY KEY",
    },
}

# SQL spelled differently per engine. MySQL casts to CHAR (not TEXT) and DOUBLE, its length()
# counts bytes (char_length counts characters), and || is OR there unless sql_mode says
# otherwise, so concatenation is CONCAT(); SQLite before 3.44 has no concat().
DIALECT = {
    "postgresql": {"text_cast": "TEXT", "float_cast": "DOUBLE PRECISION", "char_length": "length"},
    "sqlite": {"text_cast": "TEXT", "float_cast": "DOUBLE PRECISION", "char_length": "length"},
    "mysql": {"text_cast": "CHAR", "float_cast": "DOUBLE", "char_length": "char_length"},
}


def concat(engine, *parts):
    """An SQL expression concatenating the SQL expressions parts on engine."""
    if engine == "mysql":
        return "CONCAT(" + ", ".join(parts) + ")"
    return "(" + " || ".join(parts) + ")"


# A query that runs far longer than any test waits (PostgreSQL and MySQL sleep 10 s; SQLite
# counts to 1e8, some ten seconds of CPU), used to prove cancellation: if it were not cancelled
# on the server, the single pooled connection would stay busy well past the tests' guards.
SLOW_SQL = {
    "postgresql": "SELECT pg_sleep(10)",
    "mysql": "SELECT SLEEP(10)",
    "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100000000) "
              "SELECT count(*) FROM c",
}

# A query that takes roughly one second, used to show the event loop keeps running meanwhile.
ONE_SECOND_SQL = {
    "postgresql": "SELECT pg_sleep(1)",
    "mysql": "SELECT SLEEP(1)",
    "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 8000000) "
              "SELECT count(*) FROM c",
}

# SQLite writes REAL values with no fractional part as integers, so a stored -0.0 reads back as
# 0.0; PostgreSQL keeps the sign. Values that are not stored keep it on both. MariaDB drops the
# sign of zero in any expression (its own SELECT -0.0e0 gives 0), stored or not.
STORES_NEGATIVE_ZERO = {"postgresql": True, "sqlite": False, "mysql": False}
KEEPS_NEGATIVE_ZERO = {"postgresql": True, "sqlite": True, "mysql": False}

# The SQLSTATE of a unique violation: PostgreSQL's 23505, which keel also gives SQLite's
# SQLITE_CONSTRAINT_UNIQUE; MySQL reports its own, the class-wide 23000 (ER_DUP_ENTRY).
UNIQUE_VIOLATION_SQLSTATE = {"postgresql": "23505", "sqlite": "23505", "mysql": "23000"}


def pg_parts():
    """Host, port, user and database name of the PostgreSQL test server."""
    u = urllib.parse.urlsplit(PG_URL)
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 5432,
        "user": urllib.parse.unquote(u.username or "postgres"),
        "database": urllib.parse.unquote(u.path.lstrip("/")),
    }


def mysql_parts():
    """Host, port, user and database name of the MySQL test server."""
    u = urllib.parse.urlsplit(MYSQL_URL)
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 3306,
        "user": urllib.parse.unquote(u.username or "root"),
        "database": urllib.parse.unquote(u.path.lstrip("/")),
    }


def unique_name(prefix="t"):
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def wait_until(predicate, timeout=5.0, interval=0.005):
    """Polls predicate until it is true; fails the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(interval)


async def close_db(d):
    # close() waits for leased connections; a test that leaked one must fail, not hang.
    await asyncio.wait_for(d.close(), 30)


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def types(engine):
    return COLUMN_TYPES[engine]


@pytest.fixture
def sqlite_url(tmp_path):
    return "sqlite:///" + str(tmp_path / "test.db")


@pytest.fixture
def dialect(engine):
    return DIALECT[engine]


@pytest.fixture
def db_url(engine, sqlite_url):
    return SERVER_URLS.get(engine, sqlite_url)


@pytest.fixture
async def make_db(db_url):
    """Factory of unstarted databases for the current engine, closed after the test.

    make_db() configures one database "main" at the engine's test URL; pool= sets its pool,
    extra= adds more databases; make_db(config) uses config (dict, URL or path) as is.
    """
    made = []

    def make(config=None, *, name="main", pool=None, extra=None, default=None):
        if config is None:
            entry = {"url": db_url}
            if pool is not None:
                entry["pool"] = pool
            databases = {name: entry}
            databases.update(extra or {})
            config = {"default": default or name, "databases": databases}
        d = keel.Database(config)
        made.append(d)
        return d

    yield make
    for d in made:
        await close_db(d)


@pytest.fixture
async def db(db_url):
    """A started keel.Database with one database, "default", at the engine's test URL."""
    d = keel.Database(db_url)
    await d.start()
    yield d
    await close_db(d)


@pytest.fixture
async def pg_db():
    """A started keel.Database on PostgreSQL only, for behaviour SQLite has no equivalent of."""
    d = keel.Database(PG_URL)
    await d.start()
    yield d
    await close_db(d)


@pytest.fixture
async def mysql_db():
    """A started keel.Database on MySQL only, for behaviour particular to MySQL."""
    d = keel.Database(MYSQL_URL)
    await d.start()
    yield d
    await close_db(d)


@pytest.fixture
async def new_table(db):
    """Factory of unique table names on `db`; every table is dropped after the test."""
    names = []

    def make(prefix="t"):
        name = unique_name(prefix)
        names.append(name)
        return name

    yield make
    for name in names:
        try:
            await db.execute(f"DROP TABLE IF EXISTS {name}")
        except keel.ConnectionLost:
            # The test broke the connection this ran on (which the pool then drops): the table
            # still goes, on another one.
            await db.execute(f"DROP TABLE IF EXISTS {name}")
