# tests/python/test_decode_errors.py - values keel cannot turn into Python, and documents it cannot encode: a DataError naming what and why.
"""Values a server hands over that have no Python equivalent, and BSON keel refuses to write.

A user relies on each ending in keel.DataError whose message names the type and the reason,
with the original exception (UnicodeDecodeError, json.JSONDecodeError) kept as its cause, and on
the connection staying usable for the next statement. SQLite stores whatever bytes it is given,
so it is where invalid UTF-8 and text that is not JSON come from; PostgreSQL has a time of day
(24:00:00) that Python's time cannot hold.
"""
import datetime
import json
import os
import re
import uuid

import pytest

import keel
from conftest import unique_name
from keel import _native


@pytest.fixture
async def lite(sqlite_url):
    d = keel.Database(sqlite_url)
    await d.start()
    yield d
    await d.close()


async def test_invalid_utf8_text_is_a_data_error_with_its_cause(lite):
    with pytest.raises(keel.DataError, match=r"cannot decode text value: 'utf-8' codec") as e:
        await lite.fetchval("SELECT CAST(x'61ff62' AS TEXT)")
    assert isinstance(e.value.__cause__, UnicodeDecodeError)
    # One bad value fails the whole result, not just its row; the connection goes on.
    await lite.execute("CREATE TABLE t (id INTEGER, s TEXT)")
    await lite.execute("INSERT INTO t VALUES (1, 'fine'), (2, CAST(x'ff' AS TEXT)), (3, 'also')")
    with pytest.raises(keel.DataError, match="cannot decode text value"):
        await lite.fetch("SELECT id, s FROM t ORDER BY id")
    assert await lite.fetch("SELECT id FROM t WHERE id <> 2 ORDER BY id") == [(1,), (3,)]
    assert await lite.fetchval("SELECT s FROM t WHERE id = 3") == "also"


@pytest.mark.parametrize("stored, cause, reason", [
    ("'not json'", json.JSONDecodeError, "Expecting value"),
    ("'   '", json.JSONDecodeError, "Expecting value"),
    ("'[1, 2'", json.JSONDecodeError, "Expecting"),
    ("CAST(x'ff' AS TEXT)", UnicodeDecodeError, "'utf-8' codec"),
])
async def test_a_json_column_holding_something_else_is_a_data_error(lite, stored, cause, reason):
    await lite.execute("CREATE TABLE j (id INTEGER, v JSON)")
    await lite.execute(f"INSERT INTO j VALUES (1, {stored})")
    with pytest.raises(keel.DataError, match=f"cannot decode json value: {reason}") as e:
        await lite.fetchval("SELECT v FROM j")
    assert isinstance(e.value.__cause__, cause)
    # Valid JSON with spaces around it decodes as json.loads does.
    await lite.execute("""UPDATE j SET v = '  {"a": [1, 2.5e3, "\u00e9"]}  '""")
    assert await lite.fetchval("SELECT v FROM j") == {"a": [1, 2500.0, "\u00e9"]}


async def test_postgresql_time_2400_is_out_of_pythons_range(pg_db):
    with pytest.raises(keel.DataError, match="time value is out of the range of Python's time"):
        await pg_db.fetchval("SELECT CAST('24:00:00' AS TIME)")
    last = await pg_db.fetchval("SELECT CAST('23:59:59.999999' AS TIME)")
    assert last.isoformat() == "23:59:59.999999"


def test_bson_encode_refuses_what_mongodb_cannot_store():
    with pytest.raises(keel.DataError, match="bytes regular expressions cannot be encoded: use a "
                                             "str pattern at 'r'"):
        _native.bson_encode({"r": re.compile(b"ab")})
    with pytest.raises(keel.DataError, match="a regular expression contains a NUL character at 'r'"):
        _native.bson_encode({"r": re.compile("a\0b")})
    # Lists nest as documents do, and a list holding itself is caught the same way.
    deep = []
    inner = deep
    for _ in range(600):
        inner.append([])
        inner = inner[0]
    with pytest.raises(keel.DataError, match=r"nested more than 512 levels deep at 'l\.0\.0"):
        _native.bson_encode({"l": deep})
    cyclic = []
    cyclic.append(cyclic)
    with pytest.raises(keel.DataError, match="nested more than 512 levels deep"):
        _native.bson_encode({"c": cyclic})


def test_timestamp_and_objectid_compare_only_with_their_own_kind():
    with pytest.raises(TypeError, match="Timestamp time must be an int, not str"):
        keel.Timestamp("x", 1)
    with pytest.raises(TypeError, match="Timestamp inc must be an int, not float"):
        keel.Timestamp(1, 1.5)
    assert (keel.Timestamp(1, 2) == 5) is False
    assert (keel.Timestamp(1, 2) != "x") is True
    with pytest.raises(TypeError, match="not supported"):
        keel.Timestamp(1, 2) < 5
    oid = keel.ObjectId()
    assert (oid == str(oid)) is False and (oid != 5) is True
    with pytest.raises(TypeError, match="not supported"):
        oid < "x"


async def test_a_mongodb_command_over_the_size_limit_is_refused_before_it_is_sent():
    url = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")
    if not url:
        pytest.skip("KEEL_TEST_MONGO_URL is empty: MongoDB is left out")
    db = keel.Database(url)
    await db.start()
    coll = db.collection(unique_name("big"))
    try:
        with pytest.raises(keel.DataError, match=r"the command is larger than MongoDB's limit of "
                                                 r"16793600 bytes \(while encoding the value at "
                                                 r"'documents\.0\.b'\)"):
            await coll.insert_one({"_id": 1, "b": b"x" * (17 * 1024 * 1024)})
        # Nothing was written, and the collection takes the next document.
        assert await coll.count_documents({}) == 0
        await coll.insert_one({"_id": 2, "b": b"x" * 1024})
        assert (await coll.find_one({"_id": 2}))["b"] == b"x" * 1024
    finally:
        await coll.drop()
        await db.close()


# Text a SQLite JSON column may hold that keel's own decoder leaves to json.loads: malformed
# numbers, strings and escapes, lone and paired surrogates, the non-standard NaN and Infinity
# json.loads accepts, trailing data.
# (Inside arrays: a JSON column has NUMERIC affinity, so SQLite stores '1.' as the number 1.)
NOT_PLAIN_JSON = ["nan", "NaN", "-Infinity", "Infinity", "-", "[1.]", "[1e]", "[1e+]", "[01]", "-x",
                  '"\\x"', '"\\u12"', '"\\u12zz"', '"\\ud800"', '"\\uD83D\\uDE00"', '"abc',
                  "[1,]", '{"a" 1}', "{1: 2}", "tru", "nul", "1 2", "[1 2]", '{"a": 1,}',
                  '["a", "b\\"c"]', '"tab\tinside"']


async def test_json_that_needs_json_loads_decodes_or_fails_as_json_loads_does(lite):
    await lite.execute("CREATE TABLE j (id INTEGER PRIMARY KEY, v JSON)")
    for i, text in enumerate(NOT_PLAIN_JSON):
        await lite.execute("INSERT INTO j (id, v) VALUES ($1, $2)", i, text)
    for i, text in enumerate(NOT_PLAIN_JSON):
        try:
            want = repr(json.loads(text))
        except json.JSONDecodeError:
            with pytest.raises(keel.DataError, match="cannot decode json value") as e:
                await lite.fetchval("SELECT v FROM j WHERE id = $1", i)
            assert isinstance(e.value.__cause__, json.JSONDecodeError), text
        else:
            assert repr(await lite.fetchval("SELECT v FROM j WHERE id = $1", i)) == want, text


class _OffsetInWords(datetime.datetime):
    def utcoffset(self):
        return "one hour"


class _UUIDTooWide(uuid.UUID):
    __slots__ = ()

    def __getattribute__(self, name):
        return 2**130 if name == "int" else super().__getattribute__(name)


async def test_parameters_of_subclasses_that_lie_are_a_data_error_naming_them(lite):
    aware = _OffsetInWords(2024, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    with pytest.raises(keel.DataError, match=r"parameter \$1: utcoffset\(\) did not return a "
                                             r"timedelta \(type _OffsetInWords\)"):
        await lite.fetchval("SELECT $1", aware)
    with pytest.raises(keel.DataError, match=r"parameter \$2: UUID out of range") as e:
        await lite.fetchval("SELECT $1, $2", 1, _UUIDTooWide(int=5))
    assert isinstance(e.value.__cause__, OverflowError)
    assert await lite.fetchval("SELECT $1", 5) == 5


@pytest.mark.parametrize("value", ["2020-01-01", 1577836800, 1.5, b"x", None,
                                   datetime.date(2020, 1, 1)])
def test_objectid_from_datetime_takes_a_datetime_only(value):
    # Before: anything but a datetime was read as if it were one (ASan: heap-buffer-overflow in
    # keel__py_datetime_to_millis), and a str or an int gave AttributeError 'utcoffset'.
    with pytest.raises(TypeError, match=r"from_datetime\(\) takes a datetime, not "
                                        + type(value).__name__):
        keel.ObjectId.from_datetime(value)


def test_objectid_from_datetime_holds_1970_to_2106():
    utc = datetime.timezone.utc
    for when in (datetime.datetime(1969, 12, 31, 23, 59, 59, tzinfo=utc),
                 datetime.datetime(2106, 2, 8, tzinfo=utc)):
        with pytest.raises(ValueError, match="an ObjectId holds times from 1970 to 2106"):
            keel.ObjectId.from_datetime(when)
    first = keel.ObjectId.from_datetime(datetime.datetime(1970, 1, 1, tzinfo=utc))
    assert bytes(first) == bytes(12)
    # A naive datetime is UTC; an aware one is taken at its offset.
    naive = keel.ObjectId.from_datetime(datetime.datetime(2020, 1, 1))
    plus_one = datetime.timezone(datetime.timedelta(hours=1))
    aware = keel.ObjectId.from_datetime(datetime.datetime(2020, 1, 1, 1, tzinfo=plus_one))
    assert naive == aware
