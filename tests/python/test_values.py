# tests/python/test_values.py - every value type through a table, both ways, on every engine.
import datetime as dt
import json
import math
import uuid
from decimal import Decimal

import pytest

import keel
from conftest import DIALECT, KEEPS_NEGATIVE_ZERO, STORES_NEGATIVE_ZERO

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


def utc_wall_time(value):
    return value.astimezone(UTC).replace(tzinfo=None)


# What an engine gives back instead of the value sent, for the kinds it has no type for. MySQL
# has no time zone aware type: an aware datetime is stored as its UTC DATETIME and comes back
# naive, in UTC; it has no UUID type either: a UUID is stored and read back as its text.
READ_BACK_AS = {
    "mysql": {"timestamptz": utc_wall_time, "uuid": str},
}

# Values an engine cannot store, and refuses with keel.DataError before sending anything:
# MySQL has no infinite floats.
REFUSED_VALUES = {
    "mysql": {"float": [INF, -INF]},
}


def expected_back(engine, kind, value):
    convert = READ_BACK_AS.get(engine, {}).get(kind)
    return convert(value) if convert else value


def storable(engine, kind):
    refused = REFUSED_VALUES.get(engine, {}).get(kind, [])
    return [v for v in VALUES[kind] if v not in refused]


def check_type(kind, value, engine):
    if kind == "json":
        assert isinstance(value, (dict, list)), (kind, value)
        return
    if kind in READ_BACK_AS.get(engine, {}):
        # The exact type of the converted value: str, or a naive datetime.
        probe = VALUES[kind][0]
        expected_type = type(expected_back(engine, kind, probe))
        assert type(value) is expected_type, (kind, type(value), value)
        if isinstance(value, dt.datetime):
            assert value.tzinfo is None, value
        return
    assert type(value) is RESULT_TYPES[kind], (kind, type(value), value)
    if kind == "timestamp":
        assert value.tzinfo is None, value
    if kind == "timestamptz":
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0), value


@pytest.mark.parametrize("kind", list(VALUES))
async def test_value_round_trip_through_table(db, new_table, types, engine, kind):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, v {types[kind]})")
    values = storable(engine, kind)
    for i, v in enumerate(values):
        assert await db.execute(f"INSERT INTO {t} (id, v) VALUES ($1, $2)", i, v) == 1
    # Read without and with a parameter: engines may decode the two differently (MySQL's text
    # and binary protocols).
    for rows in (await db.fetch(f"SELECT id, v FROM {t} ORDER BY id"),
                 await db.fetch(f"SELECT id, v FROM {t} WHERE id >= $1 ORDER BY id", 0)):
        assert [r["id"] for r in rows] == list(range(len(values)))
        for r, sent in zip(rows, values):
            got = r["v"]
            expected = expected_back(engine, kind, sent)
            check_type(kind, got, engine)
            assert got == expected, (kind, got, expected)
    if kind not in NO_SERVER_EQUALITY:
        for i, v in enumerate(values):
            found = await db.fetch(f"SELECT id FROM {t} WHERE v = $1", v)
            assert [r["id"] for r in found] == [i], (kind, v)


async def test_timestamptz_comes_back_in_utc(db, new_table, types, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (v {types['timestamptz']})")
    aware = dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=IST)
    await db.execute(f"INSERT INTO {t} (v) VALUES ($1)", aware)
    got = await db.fetchval(f"SELECT v FROM {t}")
    assert got == expected_back(engine, "timestamptz", aware)
    if got.tzinfo is not None:
        assert got.utcoffset() == dt.timedelta(0)
    assert got.replace(tzinfo=None) == dt.datetime(2024, 1, 1, 21, 34, 5, 6)


async def test_negative_zero_and_infinities(db, new_table, types, engine):
    # Not stored: the sign of zero survives binding and decoding where the engine keeps it.
    floats = storable(engine, "float")
    for v in (-0.0, 0.0, INF, -INF):
        if v not in floats:
            continue  # refused: see test_non_finite_numbers_are_refused_on_mysql
        got = await db.fetchval(f"SELECT CAST($1 AS {DIALECT[engine]['float_cast']})", v)
        assert type(got) is float
        assert got == v
        negative = math.copysign(1.0, v) < 0 and (v != 0.0 or KEEPS_NEGATIVE_ZERO[engine])
        assert (math.copysign(1.0, got) < 0) == negative, (v, got)
    # Stored in a table: equal to zero everywhere, with its sign where the engine keeps it.
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (v {types['float']})")
    await db.execute(f"INSERT INTO {t} (v) VALUES ($1)", -0.0)
    got = await db.fetchval(f"SELECT v FROM {t}")
    assert type(got) is float and got == 0.0
    assert (math.copysign(1.0, got) < 0) == STORES_NEGATIVE_ZERO[engine]


async def test_non_finite_numbers_are_refused_on_mysql(mysql_db):
    # MySQL has no NaN or infinity, neither in DOUBLE nor in DECIMAL: such a parameter is a
    # DataError naming it, never a silently different stored value.
    t = "t_" + uuid.uuid4().hex[:12]
    await mysql_db.execute(f"CREATE TABLE {t} (id BIGINT, f DOUBLE, d DECIMAL(20,6))")
    try:
        for column, values in (("f", (INF, -INF, float("nan"))),
                               ("d", (Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")))):
            for v in values:
                with pytest.raises(keel.DataError) as ei:
                    await mysql_db.execute(f"INSERT INTO {t} (id, {column}) VALUES ($1, $2)", 1, v)
                assert "$2" in str(ei.value), str(ei.value)
                assert ei.value.engine == "mysql"
                # In a batch, the whole batch is refused.
                with pytest.raises(keel.DataError):
                    await mysql_db.executemany(f"INSERT INTO {t} (id, {column}) VALUES ($1, $2)",
                                               [(1, 1), (2, v)])
                assert await mysql_db.fetch(f"SELECT id, {column} FROM {t}") == [], (column, v)
        assert await mysql_db.fetchval("SELECT $1 + 1", 1) == 2
        assert mysql_db.pool_stats()["leased"] == 0
    finally:
        await mysql_db.execute(f"DROP TABLE IF EXISTS {t}")


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


async def test_all_types_in_one_row_and_all_nulls(db, new_table, types, engine):
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
    for k, sent in zip(kinds, row_values):
        check_type(k, rows[0][f"c_{k}"], engine)
        assert rows[0][f"c_{k}"] == expected_back(engine, k, sent), k
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
    "mysql": {
        "bool": ("TRUE", True),
        "int": ("9223372036854775807", 2**63 - 1),
        "float": ("-2.5e10", -2.5e10),
        "numeric": ("1.25", Decimal("1.25")),
        "text": ("'ünïcödé ✓'", "ünïcödé ✓"),
        "bytes": ("X'00FF10'", b"\x00\xff\x10"),
        "date": ("DATE '2024-02-29'", dt.date(2024, 2, 29)),
        "time": ("TIME '13:14:15.5'", dt.time(13, 14, 15, 500000)),
        "timestamp": ("TIMESTAMP '2024-01-02 03:04:05.25'", dt.datetime(2024, 1, 2, 3, 4, 5, 250000)),
        "timestamptz": ("CONVERT_TZ('2024-01-02 03:04:05', '+02:00', '+00:00')",
                        dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        "uuid": ("'c9bf9e57-1685-4c89-bafb-ff5af830be8a'",
                 uuid.UUID("c9bf9e57-1685-4c89-bafb-ff5af830be8a")),
        "json": ("JSON_OBJECT('a', JSON_ARRAY(1, NULL, 'x'))", {"a": [1, None, "x"]}),
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
    for row in (await db.fetchrow(f"SELECT {names} FROM {t}"),
                await db.fetchrow(f"SELECT {names} FROM {t} WHERE 1 = $1", 1)):
        for k, (_, expected) in literals.items():
            got = row[f"c_{k}"]
            check_type(k, got, engine)
            assert got == expected_back(engine, k, expected), (k, got, expected)


# MySQL's own column types, read through the text protocol (no parameters) and the binary
# protocol (prepared statements), which must agree. Values keel has no type for come back as
# the server's text, as src/engines/mysql.c documents: zero dates. TIME values that are no time
# of day (negative, or 24 hours and more) come back as timedelta.
MYSQL_NATIVE = [
    ("TINYINT", "-5", -5),
    ("SMALLINT UNSIGNED", "65535", 65535),
    ("MEDIUMINT", "-8388608", -8388608),
    ("INT UNSIGNED", "4294967295", 4294967295),
    ("BIGINT UNSIGNED", "18446744073709551615", Decimal("18446744073709551615")),
    ("BIGINT UNSIGNED", "9223372036854775807", 2**63 - 1),
    ("YEAR", "2024", 2024),
    ("FLOAT", "1.5", 1.5),
    ("DECIMAL(30,0)", "123456789012345678901234567890", Decimal("123456789012345678901234567890")),
    ("DECIMAL(10,4)", "-0.0001", Decimal("-0.0001")),
    ("VARCHAR(20)", "'ab ✓'", "ab ✓"),
    ("CHAR(3)", "'ab'", "ab"),
    ("TINYTEXT", "'x'", "x"),
    ("VARBINARY(8)", "X'0001'", b"\x00\x01"),
    ("BINARY(3)", "X'01'", b"\x01\x00\x00"),
    ("BIT(8)", "b'101'", b"\x05"),
    ("MEDIUMBLOB", "X'FF00'", b"\xff\x00"),
    ("ENUM('a','b')", "'b'", "b"),
    ("SET('x','y')", "'x,y'", "x,y"),
    ("TIME", "'-01:02:03'", -dt.timedelta(hours=1, minutes=2, seconds=3)),
    ("TIME(6)", "'25:00:00.5'", dt.timedelta(hours=25, microseconds=500000)),
    ("TIME(6)", "'-838:59:59.999999'", -dt.timedelta(hours=838, minutes=59, seconds=59.999999)),
    ("TIME(6)", "'23:59:59.999999'", dt.time(23, 59, 59, 999999)),
    ("TIMESTAMP(6)", "'2024-01-02 03:04:05.5'", dt.datetime(2024, 1, 2, 3, 4, 5, 500000)),
    ("DATETIME", "'2024-01-02 03:04:05'", dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("DATE", "'0000-00-00'", "0000-00-00"),
    ("DATETIME", "'0000-00-00 00:00:00'", "0000-00-00 00:00:00"),
    ("TINYINT(1)", "7", True),
    ("JSON", "'[1, {\"a\": null}]'", [1, {"a": None}]),
]


async def test_mysql_native_types_decode_alike_on_both_protocols(mysql_db):
    t = "t_" + uuid.uuid4().hex[:12]
    cols = ", ".join(f"c{i} {sqltype}" for i, (sqltype, _, _) in enumerate(MYSQL_NATIVE))
    values = ", ".join(literal for _, literal, _ in MYSQL_NATIVE)
    await mysql_db.execute(f"CREATE TABLE {t} ({cols})")
    try:
        async with mysql_db.connection() as conn:
            # Zero dates need a non-strict sql_mode; this Database is closed after the test.
            await conn.execute("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
            await conn.execute(f"INSERT INTO {t} VALUES ({values})")
            text_row = await conn.fetchrow(f"SELECT * FROM {t}")
            binary_row = await conn.fetchrow(f"SELECT * FROM {t} WHERE 1 = $1", 1)
        for row in (text_row, binary_row):
            for i, (sqltype, literal, expected) in enumerate(MYSQL_NATIVE):
                got = row[f"c{i}"]
                assert type(got) is type(expected) and got == expected, (sqltype, literal, got)
    finally:
        await mysql_db.execute(f"DROP TABLE IF EXISTS {t}")


async def test_mysql_unsigned_and_time_parameters(mysql_db):
    # Values computed from parameters go through the binary protocol.
    assert await mysql_db.fetchval("SELECT ~CAST($1 AS UNSIGNED)", 0) == Decimal("18446744073709551615")
    assert await mysql_db.fetchval("SELECT ADDTIME($1, '24:00:00')", dt.time(1, 2, 3)) == \
        dt.timedelta(hours=25, minutes=2, seconds=3)
    # MySQL's TIME range is ±838:59:59: Python's times of day all fit, and come back as sent.
    for v in (dt.time(0, 0), dt.time(23, 59, 59, 999999)):
        assert await mysql_db.fetchval("SELECT CAST($1 AS TIME(6))", v) == v
    # Dates keel holds from year 1 on; MySQL's DATE goes from year 1000 officially but keeps
    # earlier ones, so they round trip.
    assert await mysql_db.fetchval("SELECT CAST($1 AS DATE)", dt.date(1, 1, 1)) == dt.date(1, 1, 1)


# JSON documents as a server may hold them, for the decoder of the binding (python/keel/_native/
# json.c), which must give exactly what json.loads gives for the text read back: escapes,
# non-ASCII keys and values, every number shape, whitespace, and what it leaves to json.loads
# (surrogate pairs, 19-digit and wider integers, long float texts, deep nesting).
JSON_TEXTS = [
    '{"a": 1, "b": [true, false, null], "c": {}}',
    '  [ 1 , -2 ,\n\t 3.5 , "x" ]  ',
    '{"q": "a\\"b\\\\c\\/d\\b\\f\\n\\r\\t", "u": "\\u00e9\\u4e2d\\u0041", "\\u00fcber": 1}',
    '{"emoji": "\\ud83d\\ude00", "raw": "ü😀", "ключ": "значение"}',
    '[0, -0, -0.0, 0.5, 1e2, 1E+2, 2.5e-3, -1.25E-300, 1e400]',
    '[123456789012345678, -123456789012345678, 1234567890123456789, 1180591620717411303424]',
    '[3.14159265358979323846264338327950288419716939937510582097494459230781640628620899]',
    '{"dup": 1, "dup": 2}',
    '"just a string"',
    '12',
    '[[], {}, [[]], {"a": {"b": {"c": [1, {"d": null}]}}}]',
    '[' * 30 + ']' * 30,
]
# How a JSON text is written into a column of the engine's JSON type.
JSON_PARAM = {"postgresql": "CAST($2 AS JSONB)", "sqlite": "$2", "mysql": "$2"}
# Nesting deeper than the decoder goes; MariaDB refuses documents nested more than 32 deep.
JSON_DEEP = {"postgresql": ['[' * 200 + ']' * 200], "sqlite": ['[' * 200 + ']' * 200], "mysql": []}


async def test_json_decodes_as_json_loads_does(db, new_table, types, dialect, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, j {types['json']})")
    texts = JSON_TEXTS + JSON_DEEP[engine]
    for i, text in enumerate(texts):
        await db.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", i, text)
    raw = f"CAST(j AS {dialect['text_cast']})"
    for rows in (await db.fetch(f"SELECT j, {raw} AS raw FROM {t} ORDER BY id"),
                 await db.fetch(f"SELECT j, {raw} AS raw FROM {t} WHERE id >= $1 ORDER BY id", 0)):
        assert len(rows) == len(texts)
        for r in rows:
            # repr tells 1 from 1.0 and 0.0 from -0.0, which == does not.
            assert repr(r["j"]) == repr(json.loads(r["raw"])), r["raw"]


# JSON parameters: what json.dumps refuses, keel writes as pydantic's JSON mode does.
class _Point:
    """A pydantic model, made only when pydantic is importable (a test dependency)."""


try:
    import pydantic

    class _Point(pydantic.BaseModel):  # noqa: F811
        x: Decimal
        at: dt.datetime
        tag: uuid.UUID
except ImportError:  # pragma: no cover
    pydantic = None


async def test_json_parameters_encode_decimal_dates_uuids_and_models(db, new_table, types, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, j {types['json']})")
    when = dt.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    u = uuid.UUID(int=7)
    point = _Point(x=Decimal("1.10"), at=when, tag=u)
    doc = {"d": Decimal("-0.50"), "ts": when, "naive": dt.datetime(2020, 1, 2), "date": dt.date(2020, 1, 2),
           "time": dt.time(12, 30), "u": u, "p": point, "nested": {"l": [Decimal("1"), u]}}
    await db.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 1, doc)
    # A model as the parameter itself is its model_dump(mode="json").
    await db.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 2, point)
    dumped = {"x": "1.10", "at": "2020-01-02T03:04:05.000006Z", "tag": str(u)}
    assert await db.fetchval(f"SELECT j FROM {t} WHERE id = 1") == {
        "d": "-0.50", "ts": "2020-01-02T03:04:05.000006+00:00", "naive": "2020-01-02T00:00:00",
        "date": "2020-01-02", "time": "12:30:00", "u": str(u), "p": dumped,
        "nested": {"l": ["1", str(u)]}}
    assert await db.fetchval(f"SELECT j FROM {t} WHERE id = 2") == dumped


async def test_json_parameters_that_cannot_be_encoded_name_the_parameter(db):
    with pytest.raises(keel.DataError, match=r"parameter \$2: cannot serialise as JSON: Object "
                                             r"of type object is not JSON serializable"):
        await db.fetchval("SELECT $1, $2", 1, {"o": object()})
    with pytest.raises(keel.DataError, match=r"parameter \$1: cannot serialise as JSON: Object "
                                             r"of type bytes is not JSON serializable"):
        await db.fetchval("SELECT $1", {"b": b"x"})
    assert await db.fetchval("SELECT 1") == 1


async def test_nan_and_infinity_in_json_parameters_are_refused_naming_the_parameter(
        db, new_table, types, engine):
    # json.dumps writes NaN / Infinity, which no JSON reader but Python's takes (trial T3).
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, j {types['json']})")
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(keel.DataError, match=r"parameter \$2: cannot serialise as JSON: Out "
                                                 r"of range float values are not JSON compliant"):
            await db.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 1,
                             {"f": [1.5, bad]})
    await db.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 1, {"f": 1.5})
    assert await db.fetchval(f"SELECT j FROM {t}") == {"f": 1.5}


async def test_json_serializer_and_deserializer_replace_keels(db_url, engine, types):
    seen = []

    def dumps(obj):
        seen.append(obj)
        return json.dumps(obj, sort_keys=True).encode()  # bytes, as orjson returns

    def loads(text):
        assert isinstance(text, str)
        return ("loaded", json.loads(text))

    d = keel.Database(db_url, json_serializer=dumps, json_deserializer=loads)
    t = "t_" + uuid.uuid4().hex[:12]
    try:
        await d.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, j {types['json']})")
        await d.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 1, {"b": 2, "a": 1})
        assert seen == [{"b": 2, "a": 1}]
        assert await d.fetchval(f"SELECT j FROM {t}") == ("loaded", {"a": 1, "b": 2})
        rows = await d.fetch(f"SELECT id, j FROM {t} WHERE id = $1", 1)
        assert rows[0]["j"] == ("loaded", {"a": 1, "b": 2})
        async with d.connection() as conn:
            await conn.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 2, {"c": 3})
            assert await conn.fetchval(f"SELECT j FROM {t} WHERE id = 2") == ("loaded", {"c": 3})
        assert len(seen) == 2
        # Another Database keeps keel's own.
        other = keel.Database(db_url)
        try:
            assert await other.fetchval(f"SELECT j FROM {t} WHERE id = 2") == {"c": 3}
        finally:
            await other.close()
    finally:
        await d.execute(f"DROP TABLE IF EXISTS {t}")
        await d.close()


async def test_json_serializer_errors_are_clear(db_url, engine, types):
    d = keel.Database(db_url, json_serializer=lambda obj: 42,
                      json_deserializer=lambda s: 1 / 0)
    t = "t_" + uuid.uuid4().hex[:12]
    try:
        with pytest.raises(keel.DataError, match=r"parameter \$1: json_serializer returned int, "
                                                 r"not str or bytes"):
            await d.fetchval("SELECT $1", {"a": 1})
        await d.execute(f"CREATE TABLE {t} (id {types['int']}, j {types['json']})")
        await d.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 1, '{}')
        with pytest.raises(keel.DataError, match='column "j": cannot decode json value: '
                                                 "division by zero"):
            await d.fetchval(f"SELECT j FROM {t}")
        assert await d.fetchval("SELECT 1") == 1
    finally:
        await d.execute(f"DROP TABLE IF EXISTS {t}")
        await d.close()
    with pytest.raises(TypeError, match="json_serializer must be callable or None, not str"):
        keel.Database(db_url, json_serializer="orjson")
    with pytest.raises(TypeError, match="json_deserializer must be callable or None, not int"):
        keel.Database(db_url, json_deserializer=1)


def test_keel_sync_takes_the_json_serializer_and_deserializer(db_url, engine, types):
    import keel.sync

    seen = []

    def dumps(obj):
        seen.append(obj)
        return json.dumps(obj)

    t = "t_" + uuid.uuid4().hex[:12]
    with keel.sync.Database(db_url, json_serializer=dumps,
                            json_deserializer=lambda s: ("sync", json.loads(s))) as d:
        d.execute(f"CREATE TABLE {t} (id {types['int']}, j {types['json']})")
        try:
            d.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 1, {"a": 1})
            assert seen == [{"a": 1}]
            assert d.fetchval(f"SELECT j FROM {t}") == ("sync", {"a": 1})
            with d.connection() as conn:
                assert conn.fetchrow(f"SELECT j FROM {t}")["j"] == ("sync", {"a": 1})
        finally:
            d.execute(f"DROP TABLE {t}")
    with keel.sync.Database(db_url) as d:  # keel's own, Decimal included
        assert d.fetchval("SELECT $1", {"d": Decimal("1.5")}) in ('{"d": "1.5"}', {"d": "1.5"})


def test_each_database_decodes_with_its_own_deserializer_across_threads(db_url, engine, types):
    """keel.sync converts on its callers' threads, and a deserializer that lets another thread
    run (time.sleep) must not see that thread's Database's deserializer take its place."""
    import threading
    import time

    import keel.sync

    def tagged(tag):
        def loads(text):
            time.sleep(0.001)  # another thread runs meanwhile
            return (tag, json.loads(text))
        return loads

    t = "t_" + uuid.uuid4().hex[:12]
    with keel.sync.Database(db_url) as setup:
        setup.execute(f"CREATE TABLE {t} (id {types['int']}, j {types['json']})")
        setup.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 1, '[1]')
        setup.execute(f"INSERT INTO {t} (id, j) VALUES ($1, {JSON_PARAM[engine]})", 2, '[2]')
    wrong = []
    try:
        def run(tag):
            with keel.sync.Database(db_url, json_deserializer=tagged(tag)) as d:
                for _ in range(15):
                    for r in d.fetch(f"SELECT j FROM {t}"):
                        if r["j"][0] != tag:
                            wrong.append((tag, r["j"]))
        threads = [threading.Thread(target=run, args=(tag,)) for tag in "AB"]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert wrong == []
    finally:
        with keel.sync.Database(db_url) as d:
            d.execute(f"DROP TABLE {t}")


# A timedelta column per engine: PostgreSQL's interval, MySQL's TIME (±838:59:59) and, on SQLite,
# a TIME column, which holds the text a timedelta parameter writes ("-01:02:03.5", "30:00:00").
DURATION_TYPES = {"postgresql": "INTERVAL", "mysql": "TIME(6)", "sqlite": "TIME"}
DURATIONS = [dt.timedelta(hours=1, minutes=2, seconds=3, microseconds=500000),
             dt.timedelta(0), dt.timedelta(hours=-1, minutes=-2, seconds=-3.5),
             dt.timedelta(hours=30), dt.timedelta(days=-34, hours=-22, minutes=-59, seconds=-59),
             dt.timedelta(hours=838, minutes=59, seconds=59)]


def duration_back(engine, value):
    """A duration as it comes back: a timedelta on PostgreSQL; MySQL's and SQLite's TIME give a
    time of day (0 to 24 h) as datetime.time and any other duration as a timedelta."""
    if engine != "postgresql" and dt.timedelta(0) <= value < dt.timedelta(days=1):
        return (dt.datetime.min + value).time()
    return value


async def test_timedelta_parameters_and_durations_come_back(db, new_table, engine):
    t = new_table("dur")
    await db.execute(f"CREATE TABLE {t} (id INTEGER, d {DURATION_TYPES[engine]})")
    await db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 0, DURATIONS[0])
    await db.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                         [(i, d) for i, d in enumerate(DURATIONS) if i])
    got = [r["d"] for r in await db.fetch(f"SELECT d FROM {t} ORDER BY id")]
    want = [duration_back(engine, d) for d in DURATIONS]
    assert got == want and [type(g) for g in got] == [type(w) for w in want]
    # Read through the binary protocol too (MySQL's prepared statements), and compared by the
    # server as the column's type.
    for i, d in enumerate(DURATIONS):
        assert await db.fetchval(f"SELECT d FROM {t} WHERE id = $1", i) == want[i]
        if engine != "sqlite":  # SQLite compares the text
            assert await db.fetchval(f"SELECT id FROM {t} WHERE d = $1", d) == i


async def test_mysql_time_range_and_sqlite_months_are_checked(db, engine):
    if engine == "postgresql":
        assert await db.fetchval("SELECT $1::interval", dt.timedelta(days=400)) == \
            dt.timedelta(days=400)
        return
    if engine == "mysql":
        with pytest.raises(keel.DataError, match=r"parameter \$1: interval \(timedelta\) outside "
                                                 r"MySQL's TIME range \(-838:59:59 to 838:59:59\)"):
            await db.fetchval("SELECT $1", dt.timedelta(hours=839))
        with pytest.raises(keel.DataError, match=r"row 1: parameter \$1: interval"):
            await db.executemany("SELECT $1", [(dt.timedelta(0),), (-dt.timedelta(hours=839),)])
    else:
        with pytest.raises(keel.DataError, match=r"parameter \$1: the interval is too long"):
            await db.fetchval("SELECT $1", dt.timedelta.max)
        # Without a declared type the text is what comes back.
        assert await db.fetchval("SELECT $1", -dt.timedelta(seconds=1.5)) == "-00:00:01.500000"
    assert await db.fetchval("SELECT 1") == 1
