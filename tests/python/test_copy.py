# tests/python/test_copy.py - copy_records_to_table: bulk loads on every SQL engine (binary COPY on PostgreSQL).
import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest

import keel
import keel.sync
from conftest import MONGO_URL, PG_URL, close_db, mysql_parts, unique_name

UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

# The character that quotes identifiers in each engine's DDL.
QUOTE = {"postgresql": '"', "sqlite": '"', "mysql": "`"}

# Whether quoted column names are case-sensitive: SQLite and MySQL match columns ignoring case.
CASE_SENSITIVE_COLUMNS = {"postgresql": True, "sqlite": False, "mysql": False}

# A table whose qty column refuses text. SQLite stores any value in any column unless the
# table is STRICT.
STRICT_SUFFIX = {"postgresql": "", "sqlite": " STRICT", "mysql": ""}
STRICT_INT = {"postgresql": "INTEGER", "sqlite": "INTEGER", "mysql": "INTEGER"}


def q(engine, name):
    c = QUOTE[engine]
    return c + name.replace(c, c + c) + c


def all_kinds_rows(n):
    """n rows with one value of every kind keel has, every tenth value NULL."""
    rows = []
    for i in range(n):
        row = (i, i % 2 == 0, -(2 ** 40) + i, i / 8, Decimal(f"{i}.125"), f"text {i} ü😀",
               bytes([i % 256]) * (i % 4), dt.date(2024, 2, 29) + dt.timedelta(days=i),
               dt.time(13, 14, 15, i), dt.datetime(2024, 1, 2, 3, 4, 5, i),
               dt.datetime(2024, 6, 30, 22, 0, i % 60, tzinfo=IST),
               uuid.UUID(int=i * 7919), {"k": i, "l": [1, "x"]})
        rows.append(tuple(v if (i + k) % 10 or k == 0 else None for k, v in enumerate(row)))
    return rows


KINDS = ["int", "bool", "int", "float", "numeric", "text", "bytes", "date", "time", "timestamp",
         "timestamptz", "uuid", "json"]
COLS = ["id", "b", "i", "f", "n", "t", "raw", "d", "tm", "ts", "tz", "u", "j"]


async def test_every_type_loads_as_executemany_inserts_it(db, new_table, types):
    t1, t2 = new_table(), new_table()
    ddl = ", ".join(f"{c} {types[k]}" for c, k in zip(COLS, KINDS))
    await db.execute(f"CREATE TABLE {t1} ({ddl})")
    await db.execute(f"CREATE TABLE {t2} ({ddl})")
    rows = all_kinds_rows(50)
    assert await db.copy_records_to_table(t1, records=rows, columns=COLS) == 50
    marks = ", ".join(f"${i + 1}" for i in range(len(COLS)))
    await db.executemany(f"INSERT INTO {t2} ({', '.join(COLS)}) VALUES ({marks})", rows)
    got = await db.fetch(f"SELECT * FROM {t1} ORDER BY id")
    want = await db.fetch(f"SELECT * FROM {t2} ORDER BY id")
    assert [tuple(r) for r in got] == [tuple(r) for r in want]
    assert got[3]["t"] == "text 3 ü😀" and got[3]["n"] == Decimal("3.125")


async def test_named_columns_take_their_defaults_and_records_may_be_any_iterable(
        db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['serial_pk']}, name TEXT, qty "
                     f"{types['int']} DEFAULT 7)")
    records = ([f"n{i}"] for i in range(3))  # a generator of lists
    async with db.connection() as conn:
        assert await conn.copy_records_to_table(t, records=records, columns=("name",)) == 3
    got = await db.fetch(f"SELECT name, qty FROM {t} ORDER BY id")
    assert [tuple(r) for r in got] == [("n0", 7), ("n1", 7), ("n2", 7)]
    # Without a column list every column of the table is loaded, in order.
    assert await db.copy_records_to_table(t, records=[(10, "all", 1)]) == 1
    assert await db.fetchval(f"SELECT qty FROM {t} WHERE id = 10") == 1


async def test_quoted_and_schema_qualified_names(db, engine, types):
    table, col = f"Copy Me {unique_name()}", 'Mixed "Col"'
    schema = {"postgresql": unique_name("Schema "), "sqlite": "main",
              "mysql": mysql_parts()["database"]}[engine]
    if engine == "postgresql":
        await db.execute(f"CREATE SCHEMA {q(engine, schema)}")
    target = f"{q(engine, schema)}.{q(engine, table)}"
    try:
        await db.execute(f"CREATE TABLE {target} ({q(engine, col)} TEXT, {q(engine, 'Qty')} "
                         f"{types['int']})")
        assert await db.copy_records_to_table(table, schema_name=schema, columns=[col, "Qty"],
                                              records=[("a", 1), ("b", 2)]) == 2
        got = await db.fetch(f"SELECT {q(engine, col)}, {q(engine, 'Qty')} FROM {target} "
                             f"ORDER BY 2")
        assert [tuple(r) for r in got] == [("a", 1), ("b", 2)]
        # Names are used as stored: on PostgreSQL another case is another (missing) column.
        if CASE_SENSITIVE_COLUMNS[engine]:
            with pytest.raises(keel.ProgrammingError):
                await db.copy_records_to_table(table, schema_name=schema, columns=["qty"],
                                               records=[(3,)])
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {target}")
        if engine == "postgresql":
            await db.execute(f"DROP SCHEMA {q(engine, schema)} CASCADE")


async def test_hundred_thousand_rows(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, name TEXT, at {types['timestamp']})")
    base = dt.datetime(2024, 1, 1)
    rows = [(i, f"name {i}", base + dt.timedelta(seconds=i)) for i in range(100000)]
    assert await db.copy_records_to_table(t, records=rows) == 100000
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 100000
    got = await db.fetchrow(f"SELECT id, name, at FROM {t} WHERE id = 54321")
    assert tuple(got) == rows[54321]


async def test_empty_records_load_nothing_but_check_the_table(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']})")
    assert await db.copy_records_to_table(t, records=[]) == 0
    assert await db.copy_records_to_table(t, records=[], columns=["id"]) == 0
    with pytest.raises(keel.ProgrammingError):
        await db.copy_records_to_table(unique_name("missing"), records=[])
    with pytest.raises(keel.ProgrammingError):
        await db.copy_records_to_table(t, records=[], columns=["nope"])


async def test_a_bad_value_names_its_row_and_loads_nothing(db, new_table, engine):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {STRICT_INT[engine]}, qty {STRICT_INT[engine]})"
                     f"{STRICT_SUFFIX[engine]}")
    async with db.connection() as conn:
        with pytest.raises(keel.DatabaseError) as ei:
            await conn.copy_records_to_table(t, records=[(1, 5), (2, 6), (3, "seven"), (4, 8)])
        assert "row 2" in str(ei.value), str(ei.value)
        if engine == "postgresql":
            assert isinstance(ei.value, keel.DataError)
            assert 'column "qty" (integer): a text value' in str(ei.value)
        assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 0
        assert await conn.copy_records_to_table(t, records=[(1, 5)]) == 1


async def test_unknown_tables_and_columns_and_bad_arguments(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (a {types['int']}, b {types['int']})")
    async with db.connection() as conn:
        with pytest.raises(keel.ProgrammingError) as ei:
            await conn.copy_records_to_table("no_such_table_x", records=[(1, 2)])
        assert "no_such_table_x" in str(ei.value)
        with pytest.raises(keel.ProgrammingError) as ei:
            await conn.copy_records_to_table(t, records=[(1, 2)], columns=["a", "zz"])
        assert "zz" in str(ei.value)
        with pytest.raises(keel.ProgrammingError, match="row 1 has 1 values, row 0 has 2"):
            await conn.copy_records_to_table(t, records=[(1, 2), (3,)])
        with pytest.raises(keel.ProgrammingError, match="each record has 2 values but 1"):
            await conn.copy_records_to_table(t, records=[(1, 2)], columns=["a"])
        with pytest.raises(keel.DataError, match='row 1, column "b": unsupported'):
            await conn.copy_records_to_table(t, records=[(1, 2), (3, object())],
                                             columns=["a", "b"])
        with pytest.raises(TypeError):
            await conn.copy_records_to_table(t, records=[(1, 2)], columns="ab")
        with pytest.raises(keel.ProgrammingError, match="non-empty"):
            await conn.copy_records_to_table("", records=[(1, 2)])
        with pytest.raises(keel.ProgrammingError, match="at least one column"):
            await conn.copy_records_to_table(t, records=[(1, 2)], columns=[])
        with pytest.raises(TypeError):
            await conn.copy_records_to_table(t, records=5)
        assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 0
        assert await conn.copy_records_to_table(t, records=[[1, 2]]) == 1


async def test_a_load_inside_a_transaction_rolls_back_with_it(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']})")

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with db.transaction() as conn:
            assert await conn.copy_records_to_table(t, records=[(i,) for i in range(100)]) == 100
            assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 100
            raise Abort
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 0
    async with db.transaction() as conn:
        await conn.copy_records_to_table(t, records=[(1,)])
    assert await db.fetchval(f"SELECT count(*) FROM {t}") == 1


async def test_cancelling_a_load_stops_it_on_the_server(pg_db):
    # PostgreSQL only: it is the engine whose load streams to a server that can be slowed down
    # per row (a trigger sleeps 1 ms per row, so 20,000 rows would take 20 s).
    t = unique_name("copy_cancel")
    await pg_db.execute(f"CREATE TABLE {t} (id int8, pad text)")
    try:
        async with pg_db.connection() as conn:
            await conn.execute(f"CREATE FUNCTION pg_temp.{t}_slow() RETURNS trigger LANGUAGE "
                               "plpgsql AS $$BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END$$")
            await conn.execute(f"CREATE TRIGGER slow BEFORE INSERT ON {t} FOR EACH ROW "
                               f"EXECUTE FUNCTION pg_temp.{t}_slow()")
            rows = [(i, "p" * 500) for i in range(20000)]
            task = asyncio.ensure_future(conn.copy_records_to_table(t, records=rows))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.wait_for(conn.fetchval(f"SELECT count(*) FROM {t}"), 10) == 0
            assert await conn.copy_records_to_table(t, records=rows[:2]) == 2
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_postgresql_encodes_for_the_column_type(pg_db):
    t = unique_name("copy_pg")
    await pg_db.execute(f"CREATE TABLE {t} (s int2, i int4, r real, n numeric(30,9), "
                        "v varchar(5), tz timestamptz, ts timestamp, j json, u uuid)")
    try:
        wide = Decimal("123456789012345678901.123456789")
        naive = dt.datetime(2024, 5, 6, 7, 8, 9)
        aware = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=IST)
        rec = (-7, 7, 0.5, wide, "abc", naive, aware, [1, {"a": None}],
               "12345678-1234-5678-1234-567812345678")
        assert await pg_db.copy_records_to_table(t, records=[rec]) == 1
        got = await pg_db.fetchrow(f"SELECT * FROM {t}")
        # The session time zone is UTC, so naive and aware timestamps mean the same instant.
        assert tuple(got) == (-7, 7, 0.5, wide, "abc", naive.replace(tzinfo=UTC),
                              aware.astimezone(UTC).replace(tzinfo=None), [1, {"a": None}],
                              uuid.UUID("12345678-1234-5678-1234-567812345678"))
        with pytest.raises(keel.DataError, match=r'row 0, column "s" \(smallint\): 40000 is out '
                                                 r'of range'):
            await pg_db.copy_records_to_table(t, records=[(40000,)], columns=["s"])
        with pytest.raises(keel.DataError, match="value too long"):
            await pg_db.copy_records_to_table(t, records=[("abcdef",)], columns=["v"])
        assert await pg_db.fetchval(f"SELECT count(*) FROM {t}") == 1
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


@pytest.mark.skipif(not MONGO_URL, reason="KEEL_TEST_MONGO_URL is empty")
async def test_mongodb_has_no_tables_to_load():
    d = keel.Database(MONGO_URL)
    try:
        with pytest.raises(keel.NotSupportedError, match="insert_many"):
            await d.copy_records_to_table("t", records=[(1,)])
    finally:
        await close_db(d)


async def test_copy_uses_its_own_connection_or_the_given_one():
    d = keel.Database(PG_URL)
    try:
        t = unique_name("copy_db")
        await d.execute(f"CREATE TABLE {t} (id int)")
        assert await d.copy_records_to_table(t, records=[(1,), (2,)]) == 2
        assert d.pool_stats()["leased"] == 0
        await d.execute(f"DROP TABLE {t}")
    finally:
        await close_db(d)


async def test_postgresql_loads_ranges_in_binary(pg_db):
    t = unique_name("copy_range")
    await pg_db.execute(f"CREATE TABLE {t} (i int4range, ts tstzrange, d daterange, n numrange, "
                        "b int8range)")
    day = dt.date(2024, 2, 29)
    noon = dt.datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
    records = [
        (keel.Range(1, 5), keel.Range(noon, noon + dt.timedelta(hours=1)),
         keel.Range(day, day + dt.timedelta(days=3)), keel.Range(Decimal("1.5"), Decimal("2.25")),
         keel.Range(-(2 ** 40), 2 ** 40)),
        # Empty ranges, and unbounded sides (lower_inf / upper_inf).
        (keel.Range(empty=True), keel.Range(None, noon), keel.Range(day, None),
         keel.Range(None, None), keel.Range(empty=True)),
        # Inclusive upper bounds: the server makes a discrete range canonical ([1,5] is [1,6)).
        (keel.Range(1, 5, upper_inc=True), keel.Range(noon, noon, upper_inc=True),
         keel.Range(day, day, upper_inc=True), keel.Range(Decimal(0), None, lower_inc=False),
         None),
    ]
    try:
        assert await pg_db.copy_records_to_table(t, records=records) == 3
        got = [tuple(r) for r in await pg_db.fetch(f"SELECT * FROM {t} ORDER BY lower(i) NULLS FIRST")]
        assert got == [
            (keel.Range(empty=True), keel.Range(None, noon), keel.Range(day, None),
             keel.Range(None, None), keel.Range(empty=True)),
            records[0],
            (keel.Range(1, 6), keel.Range(noon, noon, upper_inc=True),
             keel.Range(day, day + dt.timedelta(days=1)),
             keel.Range(Decimal(0), None, lower_inc=False), None),
        ]
        # What the server says of each, as text: the same ranges.
        assert await pg_db.fetchval(f"SELECT string_agg(i::text || ' ' || n::text, ';' "
                                    f"ORDER BY lower(i) NULLS FIRST) FROM {t}") == \
            "empty (,);[1,5) [1.5,2.25);[1,6) (0,)"
        # A bound of the wrong kind names its column and side; nothing is loaded.
        with pytest.raises(keel.DataError, match=r'row 1, column "i" \(int4range\): lower bound: '
                                                 r'a text value cannot be loaded'):
            await pg_db.copy_records_to_table(
                t, records=[(keel.Range(1, 2),), (keel.Range("a", 2),)], columns=["i"])
        with pytest.raises(keel.DataError, match=r'column "i" \(int4range\): upper bound: '
                                                 r'3000000000 is out of range'):
            await pg_db.copy_records_to_table(t, records=[(keel.Range(1, 3 * 10 ** 9),)],
                                              columns=["i"])
        with pytest.raises(keel.DataError, match=r'column "i" \(int4range\): an int value cannot '
                                                 r'be loaded into type int4range'):
            await pg_db.copy_records_to_table(t, records=[(5,)], columns=["i"])
        # The server checks the order of the bounds.
        with pytest.raises(keel.DataError, match="lower bound must be less than or equal"):
            await pg_db.copy_records_to_table(t, records=[(keel.Range(5, 1),)], columns=["i"])
        assert await pg_db.fetchval(f"SELECT count(*) FROM {t}") == 3
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_postgresql_loads_ranges_of_a_custom_range_type_and_a_domain(pg_db):
    t, rt, dom = unique_name("copy_range"), unique_name("floatrange"), unique_name("span")
    await pg_db.execute(f"CREATE TYPE {rt} AS RANGE (subtype = float8)")
    await pg_db.execute(f"CREATE DOMAIN {dom} AS int4range CHECK (NOT isempty(VALUE))")
    await pg_db.execute(f"CREATE TABLE {t} (f {rt}, s {dom})")
    try:
        assert await pg_db.copy_records_to_table(
            t, records=[(keel.Range(0.5, 2, upper_inc=True), keel.Range(3, 4))]) == 1
        assert await pg_db.fetchval(f"SELECT f::text || ' ' || s::text FROM {t}") == \
            "[0.5,2] [3,4)"
        with pytest.raises(keel.DatabaseError, match="violates check constraint"):
            await pg_db.copy_records_to_table(t, records=[(None, keel.Range(empty=True))])
    finally:
        await pg_db.execute(f"DROP TABLE {t}")
        await pg_db.execute(f"DROP DOMAIN {dom}")
        await pg_db.execute(f"DROP TYPE {rt}")


async def test_postgresql_loads_nan_and_infinite_floats_into_numeric(pg_db):
    t = unique_name("copy_num")
    await pg_db.execute(f"CREATE TABLE {t} (id int, n numeric, r numrange)")
    try:
        inf = float("inf")
        records = [(0, float("nan"), None), (1, inf, keel.Range(-inf, 2.5)), (2, -inf, None)]
        assert await pg_db.copy_records_to_table(t, records=records) == 3
        assert await pg_db.fetchval(f"SELECT string_agg(n::text || ' ' || coalesce(r::text, ''), "
                                    f"';' ORDER BY id) FROM {t}") == \
            "NaN ;Infinity [-Infinity,2.5);-Infinity "
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


def test_keel_sync_loads_ranges_too():
    t = unique_name("copy_range")
    with keel.sync.Database(PG_URL) as sdb:
        sdb.execute(f"CREATE TABLE {t} (r int4range, d daterange)")
        try:
            assert sdb.copy_records_to_table(
                t, records=[(keel.Range(2, None), keel.Range(empty=True))]) == 1
            assert tuple(sdb.fetchrow(f"SELECT * FROM {t}")) == (keel.Range(2, None),
                                                                keel.Range(empty=True))
        finally:
            sdb.execute(f"DROP TABLE {t}")
