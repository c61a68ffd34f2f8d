# tests/python/test_values.py - every value type through a table, both ways, on every engine.
import datetime as dt
import math
import uuid
from decimal import Decimal

import pytest

from conftest import STORES_NEGATIVE_ZERO

INF = float("inf")
UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
PST = dt.timezone(dt.timedelta(hours=-8))

# Values per column kind. Decimals keep to 15 significant digits because SQLite stores NUMERIC
# values as REAL when that loses nothing visible; exact wide decimals are checked on PostgreSQL.
VALUES = {
    "bool": [True, False],
    "int": [0, 1, -1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)],
    "float": [0.0, 1.5, -2.25, 0.1, 1e300, -1e-300, 123456.789, INF, -INF],
    "numeric": [Decimal("0"), Decimal("42"), Decimal("12345.678901"), Decimal("-0.000001"),
                Decimal("99999999.999999")],
    "text": ["", "hello", "a'b\"c\\d;--", "line1\nline2\ttab", "😀👍🏽👨‍👩‍👧", "漢字かなカナ한국어",
             "e\u0301 n\u0303", "x" * 10000],
    "bytes": [b"", b"\x00\x01\xff", bytes(range(256)), b"\x00" * 1000],
    "date": [dt.date(2024, 2, 29), dt.date(1970, 1, 1), dt.date(1899, 12, 31), dt.date(1, 1, 1),
             dt.date(9999, 12, 31)],
    "time": [dt.time(0, 0), dt.time(13, 14, 15, 123456), dt.time(23, 59, 59, 999999),
             dt.time(0, 0, 0, 1)],
    "timestamp": [dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(1970, 1, 1),
                  dt.datetime(1960, 5, 6, 7, 8, 9, 10), dt.datetime(2038, 1, 19, 3, 14, 8),
                  dt.datetime(1969, 12, 31, 23, 59, 59, 999999)],
    "timestamptz": [dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=IST),
                    dt.datetime(2024, 6, 30, 22, 0, 0, tzinfo=PST),
                    dt.datetime(1970, 1, 1, tzinfo=UTC),
                    dt.datetime(1950, 3, 4, 5, 6, 7, 8, tzinfo=IST)],
    "uuid": [uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID(int=0),
             uuid.UUID(int=2**128 - 1), uuid.UUID("c9bf9e57-1685-4c89-bafb-ff5af830be8a")],
    "json": [{"a": 1, "b": [1, 2.5, "x"], "c": None, "d": True, "ü": "ö😀"},
             [1, "two", {"three": 3}], [], {}, {"nested": {"deep": [[], {}, [1, [2, [3]]]]}}],
}

# The Python type each kind must come back as (exact type: bool is not int, datetime is not date).
RESULT_TYPES = {
    "bool": bool, "int": int, "float": float, "numeric": Decimal, "text": str, "bytes": bytes,
    "date": dt.date, "time": dt.time, "timestamp": dt.datetime, "timestamptz": dt.datetime,
    "uuid": uuid.UUID,
}

# PostgreSQL has no json = json operator, and a json parameter may be typed json or jsonb:
# server-side equality is checked for every other kind.
NO_SERVER_EQUALITY = {"json"}


def check_type(kind, value):
    if kind == "json":
        assert isinstance(value, (dict, list)), (kind, value)
        return
    assert type(value) is RESULT_TYPES[kind], (kind, type(value), value)
    if kind == "timestamp":
        assert value.tzinfo is None, value
    if kind == "timestamptz":
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0), value


@pytest.mark.parametrize("kind", list(VALUES))
async def test_value_round_trip_through_table(db, new_table, types, kind):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, v {types[kind]})")
    values = VALUES[kind]
    for i, v in enumerate(values):
        assert await db.execute(f"INSERT INTO {t} (id, v) VALUES ($1, $2)", i, v) == 1
    rows = await db.fetch(f"SELECT id, v FROM {t} ORDER BY id")
    assert [r["id"] for r in rows] == list(range(len(values)))
    for r, expected in zip(rows, values):
        got = r["v"]
        check_type(kind, got)
        assert got == expected, (kind, got, expected)
    if kind not in NO_SERVER_EQUALITY:
        for i, v in enumerate(values):
            found = await db.fetch(f"SELECT id FROM {t} WHERE v = $1", v)
            assert [r["id"] for r in found] == [i], (kind, v)


async def test_timestamptz_comes_back_in_utc(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (v {types['timestamptz']})")
    aware = dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=IST)
    await db.execute(f"INSERT INTO {t} (v) VALUES ($1)", aware)
    got = await db.fetchval(f"SELECT v FROM {t}")
    assert got == aware
    assert got.utcoffset() == dt.timedelta(0)
    assert got.replace(tzinfo=None) == dt.datetime(2024, 1, 1, 21, 34, 5, 6)


async def test_negative_zero_and_infinities(db, new_table, types, engine):
    # Not stored: the sign of zero survives binding and decoding on every engine.
    for v in (-0.0, 0.0, INF, -INF):
        got = await db.fetchval("SELECT CAST($1 AS DOUBLE PRECISION)", v)
        assert type(got) is float
        assert got == v
        assert math.copysign(1.0, got) == math.copysign(1.0, v)
    # Stored in a table: equal to zero everywhere, with its sign where the engine keeps it.
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (v {types['float']})")
    await db.execute(f"INSERT INTO {t} (v) VALUES ($1)", -0.0)
    got = await db.fetchval(f"SELECT v FROM {t}")
    assert type(got) is float and got == 0.0
    assert (math.copysign(1.0, got) < 0) == STORES_NEGATIVE_ZERO[engine]


async def test_nan_float_parameter_is_not_an_error_on_postgresql(pg_db):
    got = await pg_db.fetchval("SELECT CAST($1 AS DOUBLE PRECISION)", float("nan"))
    assert type(got) is float and math.isnan(got)


async def test_wide_decimals_are_exact_on_postgresql(pg_db):
    t = "t_" + uuid.uuid4().hex[:12]
    await pg_db.execute(f"CREATE TABLE {t} (id BIGINT, v NUMERIC)")
    try:
        values = [Decimal("12345678901234567890.123456789012345678"), Decimal("-0.1"),
                  Decimal("1E+30"), Decimal("NaN")]
        for i, v in enumerate(values):
            await pg_db.execute(f"INSERT INTO {t} VALUES ($1, $2)", i, v)
        got = [r["v"] for r in await pg_db.fetch(f"SELECT v FROM {t} ORDER BY id")]
        assert all(type(g) is Decimal for g in got)
        assert got[:3] == values[:3]
        assert str(got[0]) == "12345678901234567890.123456789012345678"
        assert got[3].is_nan()
    finally:
        await pg_db.execute(f"DROP TABLE IF EXISTS {t}")


async def test_bytes_like_parameters(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, v {types['bytes']})")
    payload = bytes(range(256)) * 3
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, bytearray(payload))
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 2, memoryview(payload))
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 3, memoryview(payload)[10:20])
    rows = await db.fetch(f"SELECT v FROM {t} ORDER BY id")
    assert [type(r["v"]) for r in rows] == [bytes, bytes, bytes]
    assert [r["v"] for r in rows] == [payload, payload, payload[10:20]]


async def test_all_types_in_one_row_and_all_nulls(db, new_table, types):
    kinds = list(VALUES)
    t = new_table()
    cols = ", ".join(f"c_{k} {types[k]}" for k in kinds)
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, {cols})")
    names = ", ".join(f"c_{k}" for k in kinds)
    marks = ", ".join(f"${i + 2}" for i in range(len(kinds)))
    row_values = [VALUES[k][0] if k != "float" else 1.5 for k in kinds]
    await db.execute(f"INSERT INTO {t} (id, {names}) VALUES ($1, {marks})", 1, *row_values)
    await db.execute(f"INSERT INTO {t} (id, {names}) VALUES ($1, {marks})", 2, *([None] * len(kinds)))
    await db.execute(f"INSERT INTO {t} (id) VALUES ($1)", 3)
    rows = await db.fetch(f"SELECT {names} FROM {t} ORDER BY id")
    assert len(rows) == 3
    for k, expected in zip(kinds, row_values):
        check_type(k, rows[0][f"c_{k}"])
        assert rows[0][f"c_{k}"] == expected, k
    assert list(rows[1].values()) == [None] * len(kinds)
    assert list(rows[2].values()) == [None] * len(kinds)
    assert await db.fetchval(f"SELECT count(*) FROM {t} WHERE c_text IS NULL") == 2


# Values written by the engine itself (SQL literals and functions), read back by keel.
SQL_LITERALS = {
    "postgresql": {
        "bool": ("TRUE", True),
        "int": ("9223372036854775807", 2**63 - 1),
        "float": ("'-Infinity'", -INF),
        "numeric": ("1.25", Decimal("1.25")),
        "text": ("'ünïcödé ✓'", "ünïcödé ✓"),
        "bytes": ("'\\x00ff10'::bytea", b"\x00\xff\x10"),
        "date": ("DATE '2024-02-29'", dt.date(2024, 2, 29)),
        "time": ("TIME '13:14:15.5'", dt.time(13, 14, 15, 500000)),
        "timestamp": ("TIMESTAMP '2024-01-02 03:04:05.25'", dt.datetime(2024, 1, 2, 3, 4, 5, 250000)),
        "timestamptz": ("TIMESTAMPTZ '2024-01-02 03:04:05+02'",
                        dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        "uuid": ("'c9bf9e57-1685-4c89-bafb-ff5af830be8a'",
                 uuid.UUID("c9bf9e57-1685-4c89-bafb-ff5af830be8a")),
        "json": ("'{\"a\": [1, null, \"x\"]}'", {"a": [1, None, "x"]}),
    },
    "sqlite": {
        "bool": ("1", True),
        "int": ("9223372036854775807", 2**63 - 1),
        "float": ("-2.5e10", -2.5e10),
        "numeric": ("1.25", Decimal("1.25")),
        "text": ("'ünïcödé ✓'", "ünïcödé ✓"),
        "bytes": ("X'00FF10'", b"\x00\xff\x10"),
        "date": ("date('2024-02-29')", dt.date(2024, 2, 29)),
        "time": ("time('13:14:15')", dt.time(13, 14, 15)),
        "timestamp": ("datetime('2024-01-02 03:04:05')", dt.datetime(2024, 1, 2, 3, 4, 5)),
        "json": ("json('{\"a\": [1, null, \"x\"]}')", {"a": [1, None, "x"]}),
    },
}


async def test_values_written_by_sql_decode(db, new_table, types, engine):
    literals = SQL_LITERALS[engine]
    t = new_table()
    cols = ", ".join(f"c_{k} {types[k]}" for k in literals)
    await db.execute(f"CREATE TABLE {t} ({cols})")
    names = ", ".join(f"c_{k}" for k in literals)
    exprs = ", ".join(sql for sql, _ in literals.values())
    await db.execute(f"INSERT INTO {t} ({names}) VALUES ({exprs})")
    row = await db.fetchrow(f"SELECT {names} FROM {t}")
    for k, (_, expected) in literals.items():
        got = row[f"c_{k}"]
        check_type(k, got)
        assert got == expected, (k, got, expected)
