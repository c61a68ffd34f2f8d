# tests/python/test_misuse.py - wrong use of the API on every engine: closed and released handles, another event loop, wrong argument types, records used as tuples and mappings.
"""Each wrong use gets an error that names what was wrong, and what was in use stays usable."""
import asyncio
import collections
import datetime as dt
import decimal
import enum
import re
import threading
import uuid

import pytest

import keel
from conftest import SLOW_SQL

ROW_SQL = "SELECT 1 AS id, 'x' AS name, NULL AS missing"


# ---- closed databases and released connections ----

async def test_a_closed_database_refuses_new_work(make_db):
    d = make_db()
    await d.start()
    assert await d.fetchval("SELECT 1") == 1
    await d.close()
    with pytest.raises(keel.InterfaceError, match="the database has been closed"):
        await d.fetchval("SELECT 1")
    with pytest.raises(keel.InterfaceError, match="the database has been closed"):
        await d.acquire()
    await d.close()  # closing again does nothing


async def test_a_released_connection_refuses_queries(db):
    conn = await db.acquire()
    assert await conn.fetchval("SELECT 1") == 1
    assert not conn.released and not conn.in_transaction
    await db.release(conn)
    assert conn.released
    assert repr(conn).endswith(" released>")
    with pytest.raises(keel.InterfaceError, match="the connection has been released"):
        await conn.fetchval("SELECT 1")
    with pytest.raises(keel.InterfaceError, match="the connection has been released"):
        conn.in_transaction
    await db.release(conn)  # releasing again does nothing
    assert await db.fetchval("SELECT 2") == 2


async def test_release_takes_only_a_connection_of_its_own_database(db, make_db):
    with pytest.raises(TypeError, match="release\\(\\) expects a keel.Connection, not str"):
        await db.release("conn")
    other = make_db()
    await other.start()
    conn = await other.acquire()
    with pytest.raises(keel.InterfaceError, match="the connection belongs to another Database"):
        await db.release(conn)
    # Refused, so still leased from its own pool and usable.
    assert not conn.released
    assert await conn.fetchval("SELECT 3") == 3
    await other.release(conn)


async def test_a_transaction_is_entered_once(db):
    async with db.connection() as conn:
        txn = conn.transaction()
        async with txn:
            assert conn.in_transaction
            with pytest.raises(keel.InterfaceError, match="can only be entered once"):
                async with txn:
                    pass
            assert conn.in_transaction
        assert not conn.in_transaction
        assert await conn.fetchval("SELECT 4") == 4


# ---- event loops ----

async def test_a_database_stays_on_the_loop_it_was_started_on(db):
    assert await db.fetchval("SELECT 1") == 1
    caught = []

    def elsewhere():
        try:
            asyncio.run(db.fetchval("SELECT 1"))
        except BaseException as e:  # handed to the test's thread
            caught.append(e)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(60)
    assert len(caught) == 1
    assert isinstance(caught[0], keel.InterfaceError)
    assert "bound to another event loop" in str(caught[0])
    assert await db.fetchval("SELECT 5") == 5


def test_a_database_is_started_from_a_coroutine(db_url):
    d = keel.Database(db_url)
    coro = d.start()
    # Driven by hand, outside any event loop.
    with pytest.raises(keel.InterfaceError, match="started from a coroutine running on an asyncio"):
        coro.send(None)
    coro.close()


# ---- argument types ----

async def test_a_database_name_is_a_str(db, engine):
    with pytest.raises(TypeError, match="database must be a str, not int"):
        await db.fetchval("SELECT 1", database=5)
    with pytest.raises(keel.UnknownDatabaseError, match="unknown database 'nope'"):
        await db.fetchval("SELECT 1", database="nope")
    with pytest.raises(TypeError, match="database name must be a str, not bytes"):
        db.engine(b"default")
    with pytest.raises(TypeError, match="pool_stats\\(name=None\\) takes one optional argument"):
        db.pool_stats("default", "extra")
    with pytest.raises(keel.UnknownDatabaseError, match="unknown database 'nope'"):
        db.pool_stats(name="nope")
    assert db.engine(name="default") == engine
    assert await db.fetchval("SELECT 6") == 6


@pytest.mark.parametrize("config,message", [
    (42, "a configuration is a URL, a path to a YAML file or an SQLite database, or a dict, not int"),
    ({"databases": {1: {"url": "sqlite::memory:"}}}, "configuration keys must be str: databases.1"),
    ({("a", "b"): 1}, "configuration keys must be str: ('a', 'b')"),
])
def test_a_configuration_of_the_wrong_shape_is_named(config, message):
    with pytest.raises(keel.ConfigError) as ei:
        keel.Database(config)
    assert message in str(ei.value)


async def test_configuration_dicts_take_bools_and_lists(sqlite_url):
    # Booleans become true/false and list items are numbered, as in YAML; the key path of a
    # wrong item names its index.
    config = {"databases": {"main": {"url": sqlite_url, "options": {"foreign_keys": True}}}}
    async with keel.Database(config) as d:
        assert await d.fetchval("PRAGMA foreign_keys") == 1
    config["databases"]["main"]["options"]["foreign_keys"] = False
    async with keel.Database(config) as d:
        assert await d.fetchval("PRAGMA foreign_keys") == 0
    with pytest.raises(keel.ConfigError, match="databases.main.pool.0"):
        keel.Database({"databases": {"main": {"url": sqlite_url, "pool": [1, 2]}}})


# ---- records, as tuples and as mappings ----

async def test_record_slices_and_membership(db):
    r = await db.fetchrow(ROW_SQL)
    assert r[0:2] == (1, "x")
    assert r[::-1] == (None, "x", 1)
    assert r[5:] == ()
    assert "name" in r and "nope" not in r
    assert 1 not in r  # membership is by column name, as for a mapping
    with pytest.raises(TypeError, match="record keys are str, int or slice, not float"):
        r[1.0]
    with pytest.raises(TypeError, match="get expected 1 or 2 arguments, got 3"):
        r.get("id", 1, 2)
    assert r.get(0) is None and r.get(0, "d") == "d"  # get looks up names only


async def test_records_compare_and_hash_like_tuples(db):
    r = await db.fetchrow(ROW_SQL)
    assert r == (1, "x", None) and (1, "x", None) == r
    assert r != [1, "x", None]  # not a tuple: never equal
    two = await db.fetchrow("SELECT 1 AS a, 2 AS b")
    assert two < (1, 3) and two > (1, 1) and two <= (1, 2)
    with pytest.raises(TypeError):
        two < [1, 3]
    assert hash(two) == hash((1, 2))
    assert {two: "row"}[(1, 2)] == "row"


# ---- parameters Python cannot hand over: DataError naming the parameter, the cause kept ----

class _BadOffset(dt.tzinfo):
    def utcoffset(self, when):
        raise ValueError("no offset today")


class _OddUUID(uuid.UUID):
    """A UUID whose int attribute reads as `odd_int` (an exception is raised)."""

    def __init__(self, odd_int):
        super().__init__(int=5)
        object.__setattr__(self, "odd_int", odd_int)

    def __getattribute__(self, name):
        if name != "int":
            return super().__getattribute__(name)
        odd = super().__getattribute__("odd_int")
        if isinstance(odd, BaseException):
            raise odd
        return odd


class _BadDecimal(decimal.Decimal):
    def __str__(self):
        raise ArithmeticError("no text for this one")


BAD_PARAMETERS = [
    ("\ud800", "cannot encode as UTF-8", UnicodeEncodeError),
    (dt.datetime(2024, 1, 2, tzinfo=_BadOffset()), "utcoffset() failed: no offset today", ValueError),
    (dt.time(1, 2, tzinfo=dt.timezone.utc), "time with a tzinfo is not supported", None),
    (_OddUUID(RuntimeError("no int here")), "UUID has no int: no int here", RuntimeError),
    (_OddUUID("0"), "UUID.int is not an int", None),
    (_OddUUID(1 << 130), "UUID out of range", OverflowError),
    (_BadDecimal("1.5"), "str() failed: no text for this one", ArithmeticError),
    ({"a": object()}, "cannot serialise as JSON", TypeError),
    (memoryview(b"abcdef")[::2], "unusable buffer", BufferError),
    (2 ** 63, "integer out of the int64 range", None),
    (object(), "unsupported parameter type", None),
]


@pytest.mark.parametrize("value,message,cause", BAD_PARAMETERS,
                         ids=[m.split(":")[0] for _, m, _ in BAD_PARAMETERS])
async def test_a_parameter_that_cannot_be_converted_is_named(db, value, message, cause):
    with pytest.raises(keel.DataError) as ei:
        await db.fetchval("SELECT $1", value)
    text = str(ei.value)
    assert text.startswith("parameter $1: " + message), text
    # The type as Python names it (datetime.datetime for the types of C modules).
    assert re.search(r"\(type ([\w.]+\.)?" + type(value).__name__ + r"\)$", text), text
    if cause is None:
        assert ei.value.__cause__ is None
    else:
        assert isinstance(ei.value.__cause__, cause)
    # In executemany the row is named too; nothing was sent, so the database is as it was.
    with pytest.raises(keel.DataError, match=r"^row 1, parameter \$2: " + re.escape(message)):
        await db.executemany("SELECT $1, $2", [(1, 2), (3, value)])
    assert await db.fetchval("SELECT 7") == 7


class _Colour(enum.IntEnum):
    RED = 3


async def test_parameters_of_subclasses_and_buffers_are_accepted(db):
    assert await db.fetchval("SELECT $1", _Colour.RED) == 3

    class Name(str):
        pass

    assert await db.fetchval("SELECT $1", Name("abc")) == "abc"
    assert await db.fetchval("SELECT $1 = $2", bytearray(b"ab"), memoryview(b"ab")) in (True, 1)


async def test_executemany_rows_must_be_sequences_of_one_length(db):
    with pytest.raises(keel.ProgrammingError,
                       match="executemany: row 1 is a str, not a sequence of parameters"):
        await db.executemany("SELECT $1", [(1,), "2"])
    with pytest.raises(keel.ProgrammingError,
                       match="executemany: row 1 has 1 parameters, row 0 has 2"):
        await db.executemany("SELECT $1, $2", [(1, 2), [3]])
    # Any other sequence is a row.
    await db.executemany("SELECT $1, $2", [range(2), collections.deque([5, 6])])
    assert await db.fetchval("SELECT 8") == 8


# ---- statements and results ----

async def test_a_statement_is_a_str_without_nul(db):
    with pytest.raises(TypeError, match="the statement must be a str, not bytes"):
        await db.fetchval(b"SELECT 1")
    with pytest.raises(keel.ProgrammingError, match="the statement contains a NUL character"):
        await db.fetchval("SELECT 1\0 -- hidden")
    with pytest.raises(TypeError, match="copy_records_to_table: the table name must be a str, not int"):
        await db.copy_records_to_table(5, records=[(1,)])
    assert await db.fetchval("SELECT 9") == 9


async def test_fetchval_column_is_checked_against_the_result(db):
    assert await db.fetchval("SELECT 1, 2", column=-1) == 2
    with pytest.raises(IndexError, match="column 2 is out of range: the result has 2"):
        await db.fetchval("SELECT 1, 2", column=2)
    with pytest.raises(IndexError, match="column -3 is out of range: the result has 2"):
        await db.fetchval("SELECT 1, 2", column=-3)
    assert await db.fetchval("SELECT 10") == 10


# ---- an operation queued behind a cancelled one ----
# The steps below run in one pass of the event loop, one task after another, so that the
# cancelled query cannot end in between: the loop polls for I/O only between passes.

async def _cancelled_slow_query(conn, engine):
    """Starts the slow query on conn, lets it reach the server and cancels it; keel reports its
    end later, so an operation started in this pass waits in the connection's queue."""
    slow = asyncio.ensure_future(conn.fetchval(SLOW_SQL[engine]))
    await asyncio.sleep(0.2)
    slow.cancel()
    return slow


async def test_an_operation_queued_behind_a_cancelled_one_can_be_cancelled(db, engine):
    conn = await db.acquire()
    refused = []

    async def third_then_cancel(queued):
        # Only one operation waits; a third is refused.
        try:
            await conn.fetchval("SELECT 12")
        except keel.InterfaceError as e:
            refused.append(str(e))
        queued.cancel()

    try:
        slow = await _cancelled_slow_query(conn, engine)
        queued = asyncio.ensure_future(conn.fetchval("SELECT 11"))
        await asyncio.ensure_future(third_then_cancel(queued))
        assert refused == ["another operation is in progress on this connection"]
        with pytest.raises(asyncio.CancelledError):
            await queued
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await conn.fetchval("SELECT 13") == 13
        # An executemany of no rows runs nothing (the statement is only described: one that
        # returns rows gives []).
        assert await conn.executemany("SELECT $1", []) == []
    finally:
        await db.release(conn)


async def test_an_operation_queued_when_its_connection_is_released_fails(db, engine):
    conn = await db.acquire()
    slow = await _cancelled_slow_query(conn, engine)
    queued = asyncio.ensure_future(conn.fetchval("SELECT 14"))
    await asyncio.ensure_future(db.release(conn))
    with pytest.raises(keel.InterfaceError,
                       match="the connection was released before the operation could run"):
        await queued
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await db.fetchval("SELECT 15") == 15

