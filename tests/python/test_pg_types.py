# tests/python/test_pg_types.py - PostgreSQL values beyond the scalars: arrays both ways (lists).
import datetime as dt
import uuid
from decimal import Decimal

import pytest

import keel
from conftest import PG_URL, close_db, unique_name

UTC = dt.timezone.utc

# One array of each element type keel knows, as the Python list it round-trips as.
ARRAYS = {
    "int2[]": [1, None, -32768],
    "int4[]": [2147483647, 0],
    "int8[]": [-9000000000, None],
    "float4[]": [1.5, -0.25],
    "float8[]": [1e300, None, -2.5],
    "numeric[]": [Decimal("1.10"), Decimal("-3"), None],
    "text[]": ["a b", 'q"\\', None, "NULL", "", "{x},y"],
    "varchar[]": ["ü€", None],
    "bool[]": [True, False, None],
    "uuid[]": [uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), None],
    "date[]": [dt.date(2000, 1, 2), dt.date(1, 1, 1), None],
    "timestamp[]": [dt.datetime(2000, 1, 1, 0, 0, 1, 5), None],
    "timestamptz[]": [dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(2024, 2, 29, 12, tzinfo=UTC)],
    "bytea[]": [b"\x00\xff", b"", None],
    "jsonb[]": [{"k": [1, "}"]}, [1, 2], None],
}


@pytest.mark.parametrize("cast", list(ARRAYS))
async def test_a_list_round_trips_as_an_array_of_each_type(pg_db, cast):
    value = ARRAYS[cast]
    assert await pg_db.fetchval(f"SELECT $1::{cast}", value) == value
    # Twice: the second run takes the described parameter types from the cache.
    assert await pg_db.fetchval(f"SELECT $1::{cast}", value) == value
    assert await pg_db.fetchval(f"SELECT $1::{cast}", []) == []


async def test_server_arrays_decode_as_lists(pg_db):
    row = await pg_db.fetchrow(
        "SELECT ARRAY[1, NULL, 3] AS a, '{{1,2},{3,4}}'::int[] AS m, '{}'::text[] AS e, "
        "'[0:1]={7,8}'::int[] AS b, ARRAY['a,b', NULL, 'NULL'] AS t, "
        "'{{{1}},{{2}}}'::int8[] AS deep, ARRAY['(1,2)'::point] AS other")
    assert row["a"] == [1, None, 3]
    assert row["m"] == [[1, 2], [3, 4]]
    assert row["e"] == []
    assert row["b"] == [7, 8]
    assert row["t"] == ["a,b", None, "NULL"]
    assert row["deep"] == [[[1]], [[2]]]
    # Arrays of types keel has no element type for are lists of the elements' text.
    assert row["other"] == ["(1,2)"]


async def test_any_takes_a_list(pg_db):
    rows = await pg_db.fetch("SELECT g FROM generate_series(1, 5) g WHERE g = ANY($1) ORDER BY g",
                             [1, 3])
    assert [r["g"] for r in rows] == [1, 3]
    names = await pg_db.fetchval("SELECT count(*) FROM (VALUES ('a'), ('b'), ('c')) v(n) "
                                 "WHERE n = ANY($1)", ["a", "c", "z"])
    assert names == 2
    assert await pg_db.fetchval("SELECT cardinality($1::int[])", (4, 5, 6)) == 3  # tuples too


async def test_multi_dimensional_lists_and_null_elements(pg_db):
    grid = [[1, None], [None, 4]]
    assert await pg_db.fetchval("SELECT $1::int8[]", grid) == grid
    assert await pg_db.fetchval("SELECT array_dims($1::int8[])", grid) == "[1:2][1:2]"
    assert await pg_db.fetchval("SELECT $1::text[]", [[["x"]]]) == [[["x"]]]


async def test_a_list_for_a_json_column_still_goes_as_json(pg_db):
    t = unique_name("pgt")
    await pg_db.execute(f"CREATE TABLE {t} (id int, j jsonb, js json, a int[])")
    try:
        await pg_db.execute(f"INSERT INTO {t} VALUES ($1, $2, $3, $4)", 1,
                            [1, "x", {"k": None}, 1.0, Decimal("2.50"), [True]],
                            ["y"], [1, 2])
        row = await pg_db.fetchrow(f"SELECT j, js, a FROM {t}")
        # A Decimal is an exact string in JSON, as pydantic's JSON mode writes it.
        assert row["j"] == [1, "x", {"k": None}, 1.0, "2.50", [True]]
        assert row["js"] == ["y"]
        assert row["a"] == [1, 2]
        # Dates, times and UUIDs inside a list are JSON strings.
        when = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
        u = uuid.UUID(int=1)
        assert await pg_db.fetchval("SELECT $1::jsonb", [when, dt.date(2020, 1, 2), u]) == [
            "2020-01-02T03:04:05+00:00", "2020-01-02", str(u)]
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_a_list_for_a_json_parameter_refuses_nan_and_infinity(pg_db):
    # keel writes a list for json / jsonb itself (not through the serializer): same refusal (T3).
    for cast in ("jsonb", "json"):
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(keel.DataError, match=r"parameter \$1: cannot serialise as JSON: "
                                                     r"Out of range float values are not JSON "
                                                     r"compliant"):
                await pg_db.fetchval(f"SELECT $1::{cast}", [1.5, [bad]])
    assert await pg_db.fetchval("SELECT $1::jsonb", [1.5, [2.0]]) == [1.5, [2.0]]


async def test_executemany_and_copy_take_lists(pg_db):
    t = unique_name("pgt")
    await pg_db.execute(f"CREATE TABLE {t} (id int, tags text[], m int4[], j jsonb)")
    try:
        await pg_db.executemany(f"INSERT INTO {t} VALUES ($1, $2, $3, $4)", [
            (1, ["a"], [[1, 2], [3, 4]], [1]),
            (2, None, [None], {"z": 1}),
            (3, [], [], None),
        ])
        n = await pg_db.copy_records_to_table(t, records=[
            (4, ["c", None], [7], [2, {"x": [3]}]),
            (5, None, None, None),
        ])
        assert n == 2
        rows = await pg_db.fetch(f"SELECT * FROM {t} ORDER BY id")
        assert [tuple(r) for r in rows] == [
            (1, ["a"], [[1, 2], [3, 4]], [1]),
            (2, None, [None], {"z": 1}),
            (3, [], [], None),
            (4, ["c", None], [7], [2, {"x": [3]}]),
            (5, None, None, None),
        ]
        async with pg_db.connection() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {t} WHERE id = ANY($1)",
                                       [1, 4, 9]) == 2
            await conn.copy_records_to_table(t, records=[(6, ["d"], [1], None)],
                                             columns=["id", "tags", "m", "j"])
            assert await conn.fetchval(f"SELECT tags FROM {t} WHERE id = 6") == ["d"]
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_lists_work_without_named_statements():
    d = keel.Database(PG_URL + ("&" if "?" in PG_URL else "?") + "statement_cache_size=0")
    try:
        for _ in range(2):
            assert await d.fetchval("SELECT $1::int[]", [1, 2]) == [1, 2]
            assert await d.fetchval("SELECT $1::jsonb", [1, 2]) == [1, 2]
    finally:
        await close_db(d)


async def test_bad_lists_are_refused_and_the_connection_stays_usable(pg_db):
    async with pg_db.connection() as conn:
        with pytest.raises(keel.DataError, match=r"parameter \$1: .*sub-arrays of equal lengths"):
            await conn.fetchval("SELECT $1::int[]", [[1, 2], [3]])
        with pytest.raises(keel.DataError, match="70000 is out of range for type smallint"):
            await conn.fetchval("SELECT $1::int2[]", [70000])
        with pytest.raises(keel.DataError, match="a text value cannot be loaded into type integer"):
            await conn.fetchval("SELECT $1::int[]", ["x"])
        with pytest.raises(keel.DataError, match=r"parameter \$1: element \[0\]: unsupported "
                                                 r"parameter type \(type object\)"):
            await conn.fetchval("SELECT $1::int[]", [object()])
        # Which element is bad, by its index in each dimension (trial T5).
        with pytest.raises(keel.DataError, match=r"parameter \$1: element \[2\]: a text value "
                                                 r"cannot be loaded into type integer"):
            await conn.fetchval("SELECT $1::int[]", [1, None, "x"])
        with pytest.raises(keel.DataError, match=r"parameter \$2: element \[1\]\[0\]: "
                                                 r"70000 is out of range for type smallint"):
            await conn.fetchval("SELECT $1::int, $2::int2[]", 1, [[1], [70000]])
        with pytest.raises(keel.DataError, match=r"parameter \$1: element \[1\]\[1\]: "
                                                 r"unsupported parameter type \(type object\)"):
            await conn.fetchval("SELECT $1::int[]", [[1, 2], [3, object()]])
        with pytest.raises(keel.DataError, match=r"parameter \$1: element \[1\]: integer out "
                                                 r"of the int64 range"):
            await conn.fetchval("SELECT $1::int8[]", [1, 2**70])
        deep = [1]
        for _ in range(6):
            deep = [deep]
        with pytest.raises(keel.DataError, match="at most 6 dimensions"):
            await conn.fetchval("SELECT $1::int[]", deep)
        with pytest.raises(keel.DataError, match="no JSON form"):
            await conn.fetchval("SELECT $1::jsonb", [b"x"])
        with pytest.raises(keel.ProgrammingError):
            await conn.fetchval("SELECT $1::int[] FROM no_such_table_pgt", [1])
        assert await conn.fetchval("SELECT $1::int[]", [1]) == [1]
    t = unique_name("pgt")
    await pg_db.execute(f"CREATE TABLE {t} (id int, m int4[])")
    try:
        with pytest.raises(keel.DataError, match=r'column "m" \(integer\[\]\): element \[0\]: '
                                                 r'a text value'):
            await pg_db.copy_records_to_table(t, records=[(1, ["x"])])
        assert await pg_db.fetchval(f"SELECT count(*) FROM {t}") == 0
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_a_changed_column_type_is_described_again(pg_db):
    t = unique_name("pgt")
    await pg_db.execute(f"CREATE TABLE {t} (v int[])")
    try:
        async with pg_db.connection() as conn:
            await conn.execute(f"INSERT INTO {t} VALUES ($1)", [1])
            await conn.execute(f"ALTER TABLE {t} ALTER COLUMN v TYPE jsonb USING to_jsonb(v)")
            # The cached types (int4[]) fail once against the new column; then it is jsonb.
            try:
                await conn.execute(f"INSERT INTO {t} VALUES ($1)", [2])
            except keel.DatabaseError:
                await conn.execute(f"INSERT INTO {t} VALUES ($1)", [2])
            assert [r["v"] for r in await conn.fetch(f"SELECT v FROM {t}")] == [[1], [2]]
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_a_list_parameter_is_an_array_on_postgresql_and_json_elsewhere(db, engine, types,
                                                                            new_table):
    t = new_table("pgt")
    await db.execute(f"CREATE TABLE {t} (id INTEGER, j {types['json']})")
    await db.execute(f"INSERT INTO {t} (id, j) VALUES ($1, $2)", 1, [1, "x", None, {"k": [2]}])
    assert await db.fetchval(f"SELECT j FROM {t} WHERE id = 1") == [1, "x", None, {"k": [2]}]
    if engine == "postgresql":
        assert await db.fetchval("SELECT $1::int[]", [1, 2]) == [1, 2]
    else:
        # No array type: a list is JSON text, as it always was.
        assert await db.fetchval("SELECT $1", [1, 2]) in ("[1, 2]", [1, 2])


# ---- interval, inet / cidr, enums, money ----

import enum  # noqa: E402
import ipaddress  # noqa: E402


class Mood(enum.Enum):
    SAD = "sad"
    OK = "ok"


INTERVALS = [
    ("1 year 2 mons 3 days 04:05:06.789", dt.timedelta(days=423, hours=4, minutes=5, seconds=6,
                                                        milliseconds=789)),
    ("-1 days +23:59:59", dt.timedelta(seconds=-1)),
    ("-00:00:01.5", dt.timedelta(seconds=-1.5)),
    ("00:00:00", dt.timedelta(0)),
    ("100 hours", dt.timedelta(hours=100)),
    ("-2 mons", dt.timedelta(days=-60)),
]


@pytest.mark.parametrize("text,want", INTERVALS)
async def test_intervals_decode_as_timedelta(pg_db, text, want):
    # timedelta has no months: a month is 30 days, as asyncpg counts it.
    assert await pg_db.fetchval(f"SELECT '{text}'::interval") == want


@pytest.mark.parametrize("td", [dt.timedelta(days=-1, seconds=5), dt.timedelta(microseconds=1),
                                dt.timedelta(days=400, hours=3), dt.timedelta(0),
                                dt.timedelta(days=-999999999)])
async def test_timedelta_round_trips_as_an_interval(pg_db, td):
    assert await pg_db.fetchval("SELECT $1::interval", td) == td
    assert await pg_db.fetchval("SELECT $1", td) == td  # declared as interval
    assert await pg_db.fetchval("SELECT $1::interval[]", [td, None]) == [td, None]


async def test_timedelta_in_expressions_and_tables(pg_db):
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    assert await pg_db.fetchval("SELECT $1 + $2", start, dt.timedelta(hours=36)) == \
        dt.datetime(2020, 1, 2, 12, tzinfo=UTC)
    t = unique_name("pgt")
    await pg_db.execute(f"CREATE TABLE {t} (id int, i interval)")
    try:
        await pg_db.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                                [(1, dt.timedelta(seconds=1)), (2, None)])
        await pg_db.copy_records_to_table(t, records=[(3, dt.timedelta(days=2, microseconds=7))])
        assert [tuple(r) for r in await pg_db.fetch(f"SELECT * FROM {t} ORDER BY id")] == [
            (1, dt.timedelta(seconds=1)), (2, None), (3, dt.timedelta(days=2, microseconds=7))]
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


STYLE_VALUES = {
    "'1 year 2 mons -3 days 04:05:06.5'::interval":
        dt.timedelta(days=417, hours=4, minutes=5, seconds=6.5),
    "'-1 day -00:00:01'::interval": -dt.timedelta(days=1, seconds=1),
    "DATE '2024-02-03'": dt.date(2024, 2, 3),
    "TIMESTAMP '2024-02-03 04:05:06.7'": dt.datetime(2024, 2, 3, 4, 5, 6, 700000),
    "TIMESTAMPTZ '2024-02-03 04:05:06.7+02'": dt.datetime(2024, 2, 3, 2, 5, 6, 700000, tzinfo=UTC),
    "ARRAY['1 day'::interval]": [dt.timedelta(days=1)],
}


@pytest.mark.parametrize("setting", [
    "IntervalStyle = 'iso_8601'", "IntervalStyle = 'sql_standard'",
    "IntervalStyle = 'postgres_verbose'", "DateStyle = 'SQL, DMY'", "DateStyle = 'SQL, MDY'",
    "DateStyle = 'Postgres, DMY'", "DateStyle = 'German'"])
@pytest.mark.parametrize("cache", [None, 0], ids=["statement-cache", "no-statement-cache"])
async def test_another_date_or_interval_style_is_set_back(setting, cache):
    """A SET of DateStyle or IntervalStyle is set back as it ends, so the first (text) run and
    the later (binary) ones give the same values, in a transaction block too; the day-month
    order of DateStyle stays the user's, for input."""
    d = keel.Database(with_statement_cache(cache))
    await d.start()
    try:
        async with d.connection() as conn:
            for block in (False, True):
                tx = conn.transaction()
                if block:
                    await tx.start()
                await conn.execute(f"SET {setting}")
                style = await conn.fetchval("SELECT current_setting('DateStyle') || ' ' || "
                                            "current_setting('IntervalStyle')")
                assert style in ("ISO, DMY postgres", "ISO, MDY postgres")
                for expr, want in STYLE_VALUES.items():
                    runs = [await conn.fetchval(f"SELECT {expr}") for _ in range(3)]
                    assert runs == [want] * 3, expr
                if "DMY" in setting:
                    assert await conn.fetchval("SELECT '03/02/2024'::date") == dt.date(2024, 2, 3)
                if block:
                    await tx.commit()
                await conn.execute("RESET DateStyle; RESET IntervalStyle")
    finally:
        await close_db(d)


def test_keel_sync_sets_another_interval_style_back():
    import keel.sync
    with keel.sync.Database(PG_URL) as db, db.connection() as conn:
        conn.execute("SET IntervalStyle = 'iso_8601'")
        try:
            sql = "SELECT '1 day 2 hours'::interval"
            assert [conn.fetchval(sql) for _ in range(3)] == [dt.timedelta(days=1, hours=2)] * 3
        finally:
            conn.execute("RESET IntervalStyle")


async def test_inet_and_cidr_are_ipaddress_objects(pg_db):
    row = await pg_db.fetchrow(
        "SELECT '10.0.0.1'::inet a, '10.0.0.0/8'::inet b, '10.0.0.0/8'::cidr c, "
        "'fe80::1'::inet d, ARRAY['1.2.3.4'::inet, NULL] e")
    assert row["a"] == ipaddress.IPv4Address("10.0.0.1")
    assert row["b"] == ipaddress.IPv4Interface("10.0.0.0/8")
    assert row["c"] == ipaddress.IPv4Network("10.0.0.0/8")
    assert row["d"] == ipaddress.IPv6Address("fe80::1")
    assert row["e"] == [ipaddress.IPv4Address("1.2.3.4"), None]
    for value in (ipaddress.ip_address("192.168.0.1"), ipaddress.ip_interface("10.1.2.3/24"),
                  ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_address("::1"),
                  ipaddress.ip_network("2001:db8::/32")):
        assert await pg_db.fetchval("SELECT $1", value) == value
    assert await pg_db.fetchval("SELECT $1 >> $2", ipaddress.ip_network("10.0.0.0/8"),
                                ipaddress.ip_address("10.9.9.9")) is True
    t = unique_name("pgt")
    await pg_db.execute(f"CREATE TABLE {t} (a inet, n cidr, l inet[])")
    try:
        await pg_db.copy_records_to_table(t, records=[
            (ipaddress.ip_address("10.1.1.1"), ipaddress.ip_network("10.0.0.0/8"),
             [ipaddress.ip_interface("::1/64")])])
        await pg_db.execute(f"INSERT INTO {t} VALUES ($1, $2, $3)", "10.2.2.2", "10.0.0.0/8",
                            ["10.3.3.3"])
        rows = await pg_db.fetch(f"SELECT * FROM {t} ORDER BY a")
        assert [tuple(r) for r in rows] == [
            (ipaddress.ip_address("10.1.1.1"), ipaddress.ip_network("10.0.0.0/8"),
             [ipaddress.ip_interface("::1/64")]),
            (ipaddress.ip_address("10.2.2.2"), ipaddress.ip_network("10.0.0.0/8"),
             [ipaddress.ip_address("10.3.3.3")])]
        with pytest.raises(keel.DataError, match=r'column "a" \(inet\): "10.0.0.300" is not an '
                                                 r'IP address'):
            await pg_db.copy_records_to_table(t, records=[("10.0.0.300", None, None)])
        assert await pg_db.fetchval(f"SELECT count(*) FROM {t}") == 2
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_enums_are_str_and_enum_members_go_as_their_value(pg_db):
    name = unique_name("mood")
    await pg_db.execute(f"CREATE TYPE {name} AS ENUM ('sad', 'ok')")
    try:
        assert await pg_db.fetchval(f"SELECT 'ok'::{name}") == "ok"
        assert await pg_db.fetchval(f"SELECT $1::{name}", Mood.SAD) == "sad"
        # Arrays of enums have no element type keel knows: they go and come as their text.
        assert await pg_db.fetchval(f"SELECT $1::{name}[]", [Mood.OK, "sad"]) == ["ok", "sad"]
        with pytest.raises(keel.DataError, match="invalid input value for enum"):
            await pg_db.fetchval(f"SELECT $1::{name}", "happy")
        assert await pg_db.fetchval("SELECT 1") == 1
    finally:
        await pg_db.execute(f"DROP TYPE {name}")


@pytest.mark.parametrize("cache", [None, 0], ids=["statement-cache", "no-statement-cache"])
async def test_enums_read_in_binary_are_their_labels_every_run(cache):
    """A statement returning an enum, or an array of one, is read in binary once the connection
    has looked its types up (observed through extra_float_digits): every run gives the labels,
    through a decoder too. Without the statement cache every run is text."""
    d = keel.Database(with_statement_cache(cache))
    name = unique_name("mood")
    try:
        await d.execute(f"CREATE TYPE {name} AS ENUM ('sad', 'ok')")
        async with d.connection() as conn:
            await conn.execute("SET extra_float_digits = 0")
            sql = (f"SELECT 'ok'::{name}, NULL::{name}, '{{{{ok}},{{NULL}}}}'::{name}[], "
                   "0.1::float8 + 0.2::float8")
            runs = [tuple(await conn.fetchrow(sql)) for _ in range(4)]
            later = BINARY_SUM if cache is None else TEXT_SUM
            labels = [["ok"], [None]]
            assert runs == [("ok", None, labels, TEXT_SUM)] * 2 + [("ok", None, labels, later)] * 2
            await d.set_type_codec(name, encoder=None, decoder=Mood)
            assert [tuple(await conn.fetchrow(sql))[:3] for _ in range(2)] == [
                (Mood.OK, None, [[Mood.OK], [None]])] * 2
            await conn.execute("RESET extra_float_digits")
    finally:
        await d.execute(f"DROP TYPE IF EXISTS {name}")
        await close_db(d)


def test_keel_sync_reads_enums_in_binary_too():
    import keel.sync
    name = unique_name("mood")
    with keel.sync.Database(PG_URL) as db, db.connection() as conn:
        conn.execute(f"CREATE TYPE {name} AS ENUM ('sad', 'ok')")
        try:
            conn.execute("SET extra_float_digits = 0")
            sql = f"SELECT 'sad'::{name}, 0.1::float8 + 0.2::float8"
            assert [tuple(conn.fetchrow(sql)) for _ in range(3)] == [
                ("sad", TEXT_SUM), ("sad", TEXT_SUM), ("sad", BINARY_SUM)]
        finally:
            conn.execute("RESET extra_float_digits")
            conn.execute(f"DROP TYPE {name}")


async def test_void_results_are_none(pg_db):
    # asyncpg decodes void as None; keel gave '' (trial T24).
    assert await pg_db.fetchval("SELECT pg_sleep(0)") is None
    rows = await pg_db.fetch("SELECT pg_sleep(0) AS v, 1 AS n")
    assert [tuple(r) for r in rows] == [(None, 1)]
    async with pg_db.connection() as conn:
        st = await conn.prepare("SELECT pg_sleep(0)")
        assert st.columns[0].type.name == "void"


async def test_money_is_its_text(pg_db):
    # money's text depends on lc_monetary: keel leaves it as the server writes it.
    async with pg_db.connection() as conn:
        await conn.execute("SET lc_monetary = 'C'")
        assert await conn.fetchval("SELECT '12.34'::money") == "$12.34"
        assert await conn.fetchval("SELECT $1::money", "12.34") == "$12.34"
        assert await conn.fetchval("SELECT $1::money", Decimal("-1.5")) == "-$1.50"
        assert await conn.fetchval("SELECT ($1::money)::numeric", "7.10") == Decimal("7.10")


async def test_intervals_and_addresses_elsewhere(db, engine):
    if engine == "postgresql":
        assert await db.fetchval("SELECT $1", dt.timedelta(seconds=2)) == dt.timedelta(seconds=2)
        return
    # No interval type: a timedelta is a TIME on MySQL (a duration, or a time of day when it is
    # one) and its text on SQLite (test_values.py has the details); an address goes as its text.
    got = await db.fetchval("SELECT $1", dt.timedelta(seconds=2))
    assert got == (dt.time(0, 0, 2) if engine == "mysql" else "00:00:02")
    assert await db.fetchval("SELECT $1", ipaddress.ip_address("10.0.0.1")) == "10.0.0.1"
    assert await db.fetchval("SELECT $1", Mood.OK) == "ok"


# ---- ranges ----

RANGES = [
    ("int4range(1, 5)", keel.Range(1, 5)),
    ("'empty'::int4range", keel.Range(empty=True)),
    ("'(,3]'::int8range", keel.Range(None, 4)),  # the server makes a discrete range [)
    ("numrange(1.5, NULL, '[]')", keel.Range(Decimal("1.5"), None)),
    ("daterange('2020-01-01', '2020-02-01')", keel.Range(dt.date(2020, 1, 1), dt.date(2020, 2, 1))),
    ("tstzrange('2020-01-01 00:00+00', '2021-01-01 00:00+00', '[]')",
     keel.Range(dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2021, 1, 1, tzinfo=UTC),
                upper_inc=True)),
    ("'[\"2020-01-01 10:00\",)'::tsrange", keel.Range(dt.datetime(2020, 1, 1, 10), None)),
]


@pytest.mark.parametrize("sql,want", RANGES)
async def test_ranges_decode_as_keel_range(pg_db, sql, want):
    got = await pg_db.fetchval(f"SELECT {sql}")
    assert isinstance(got, keel.Range)
    assert got == want


@pytest.mark.parametrize("cast,value", [
    ("int4range", keel.Range(1, 5)),
    ("int4range", keel.Range(empty=True)),
    ("int8range", keel.Range(None, 10)),
    ("numrange", keel.Range(Decimal("-1.25"), Decimal("2"), upper_inc=True)),
    ("daterange", keel.Range(dt.date(2020, 1, 1), None)),
    ("tsrange", keel.Range(dt.datetime(2020, 1, 1, 10, 30), dt.datetime(2020, 1, 2))),
    ("tstzrange", keel.Range(dt.datetime(2020, 1, 1, tzinfo=UTC), None, lower_inc=False)),
])
async def test_a_range_parameter_round_trips(pg_db, cast, value):
    assert await pg_db.fetchval(f"SELECT $1::{cast}", value) == value


async def test_arrays_of_ranges_are_lists_of_ranges(pg_db):
    value = [keel.Range(1, 5), None, keel.Range(empty=True)]
    assert await pg_db.fetchval("SELECT $1::int4range[]", value) == value
    assert await pg_db.fetchval("SELECT ARRAY[daterange('2020-01-01', NULL)]") == [
        keel.Range(dt.date(2020, 1, 1), None)]


def test_range_attributes_follow_asyncpg():
    r = keel.Range(1, None)
    assert (r.lower, r.upper, r.lower_inc, r.upper_inc, r.lower_inf, r.upper_inf, r.isempty) == \
        (1, None, True, False, False, True, False)
    e = keel.Range(1, 2, empty=True)
    assert e.isempty and not e and e.lower is None and not e.lower_inf
    assert keel.Range(1, 2) == keel.Range(1, 2) and keel.Range(1, 2) != keel.Range(1, 3)
    assert hash(keel.Range(1, 2)) == hash(keel.Range(1, 2))
    assert repr(keel.Range(1, 2)) == "<Range [1, 2)>" and repr(e) == "<Range empty>"


async def test_ranges_in_tables_and_bad_ranges(pg_db):
    t = unique_name("pgt")
    await pg_db.execute(f"CREATE TABLE {t} (id int, r int4range)")
    try:
        await pg_db.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                                [(1, keel.Range(1, 10)), (2, keel.Range(empty=True)), (3, None)])
        assert await pg_db.fetchval(f"SELECT id FROM {t} WHERE r @> $1::int", 5) == 1
        assert [r["r"] for r in await pg_db.fetch(f"SELECT r FROM {t} ORDER BY id")] == [
            keel.Range(1, 10), keel.Range(empty=True), None]
        with pytest.raises(keel.DataError, match="range lower bound must be less than or equal"):
            await pg_db.execute(f"INSERT INTO {t} VALUES ($1, $2)", 4, keel.Range(5, 1))
        assert await pg_db.fetchval(f"SELECT count(*) FROM {t}") == 3
    finally:
        await pg_db.execute(f"DROP TABLE {t}")


async def test_a_range_is_refused_elsewhere(db, engine):
    if engine == "postgresql":
        return
    with pytest.raises(keel.DataError, match=r"parameter \$1: unsupported parameter type "
                                             r"\(type Range\)"):
        await db.fetchval("SELECT $1", keel.Range(1, 2))


# ---- set_type_codec ----

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def point_text(p):
    return f"({p.x},{p.y})"


def point_of(text):
    x, y = text.strip("()").split(",")
    return Point(int(x), int(y))


async def test_set_type_codec_decodes_and_encodes_a_composite_type():
    d = keel.Database(PG_URL)
    name = unique_name("pt")
    try:
        await d.execute(f"CREATE TYPE {name} AS (x int, y int)")
        t = unique_name("pgt")
        await d.execute(f"CREATE TABLE {t} (id int, p {name})")
        await d.set_type_codec(name, encoder=point_text, decoder=point_of)
        assert await d.fetchval(f"SELECT ROW(1, 2)::{name}") == Point(1, 2)
        assert await d.fetchval(f"SELECT $1::{name}", Point(3, 4)) == Point(3, 4)
        await d.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, Point(5, 6))
        await d.execute(f"INSERT INTO {t} VALUES ($1, $2)", 2, None)
        # (p = $1 alone would make $1 a record: the server compares composites as records.)
        rows = await d.fetch(f"SELECT id, p FROM {t} WHERE p = $1::{name} OR p IS NULL "
                             "ORDER BY id", Point(5, 6))
        assert [tuple(r) for r in rows] == [(1, Point(5, 6)), (2, None)]
        # Every connection of the Database has it, leased ones too (connections are pooled).
        async with d.connection() as conn:
            assert await conn.fetchval(f"SELECT p FROM {t} WHERE id = 1") == Point(5, 6)
            assert await conn.fetchval(f"SELECT ($1::{name}).y", Point(7, 8)) == 8
            row = await conn.fetchrow(f"SELECT $1::{name} AS p", Point(0, -1))
            assert row["p"] == Point(0, -1)
            assert await conn.execute(f"UPDATE {t} SET p = $1 WHERE id = 2", Point(1, 1)) == 1
        # executemany too, on the Database and on a connection.
        await d.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                            ((i, Point(i, -i)) for i in range(10, 13)))
        async with d.connection() as conn:
            await conn.executemany(f"INSERT INTO {t} VALUES ($1, $2)", [(13, Point(1, 3)), (14, None)])
        assert [r["p"] for r in await d.fetch(f"SELECT p FROM {t} WHERE id >= 10 ORDER BY id")] == [
            Point(10, -10), Point(11, -11), Point(12, -12), Point(1, 3), None]
        await d.execute(f"DELETE FROM {t} WHERE id >= 10")
        # A value keel converts itself is never given to an encoder.
        assert await d.fetchval(f"SELECT $1::{name}", "(9,9)") == Point(9, 9)
        await d.execute(f"DROP TABLE {t}")
    finally:
        await d.execute(f"DROP TYPE IF EXISTS {name} CASCADE")
        await close_db(d)


async def test_lists_of_values_with_an_encoder_are_encoded_element_by_element():
    # asyncpg encodes arrays of a type with a codec element by element (trial T1).
    d = keel.Database(PG_URL)
    name = unique_name("pt")
    try:
        await d.execute(f"CREATE TYPE {name} AS (x int, y int)")
        await d.set_type_codec(name, encoder=point_text, decoder=point_of)
        assert await d.fetchval(f"SELECT $1::{name}[]", [Point(1, 2), None, "(3,4)"]) == [
            Point(1, 2), None, Point(3, 4)]
        assert await d.fetchval(f"SELECT $1::{name}[]", [[Point(1, 2)], [Point(5, 6)]]) == [
            [Point(1, 2)], [Point(5, 6)]]
        t = unique_name("pgt")
        await d.execute(f"CREATE TABLE {t} (id int, ps {name}[])")
        async with d.connection() as conn:
            await conn.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                                   [(1, [Point(7, 8)]), (2, [])])
            assert await conn.fetchval(f"SELECT ps FROM {t} WHERE id = $1", 1) == [Point(7, 8)]
        with pytest.raises(keel.DataError, match=rf"parameter \$1: element \[1\]\[0\]: the "
                                                 rf"encoder of type {name} failed: 'object' "
                                                 "object has no attribute 'x'"):
            await d.fetchval(f"SELECT $1::{name}[]", [[Point(1, 2)], [object()]])
        assert await d.fetchval("SELECT $1::int[]", [1, 2]) == [1, 2]
        await d.execute(f"DROP TABLE {t}")
    finally:
        await d.execute(f"DROP TYPE IF EXISTS {name} CASCADE")
        await close_db(d)


async def test_set_type_codec_through_a_connection_and_for_text_like_built_ins():
    d = keel.Database(PG_URL)
    try:
        async with d.connection() as conn:
            await conn.set_type_codec("json", schema="pg_catalog", encoder=None,
                                      decoder=lambda s: ("json", s))
            assert await conn.fetchval("SELECT '[1, 2]'::json") == ("json", "[1, 2]")
        # The codec is the Database's: another connection, and db-level calls, decode so too.
        assert await d.fetchval("SELECT '{}'::json") == ("json", "{}")
        assert await d.fetchval("SELECT '{}'::jsonb") == {}  # jsonb is another type
        # Removing it (decoder None) gives keel's decoding back.
        await d.set_type_codec("json", schema="pg_catalog", encoder=None, decoder=None)
        assert await d.fetchval("SELECT '[1]'::json") == [1]
        # Another Database is untouched.
        other = keel.Database(PG_URL)
        try:
            await d.set_type_codec("numeric", schema="pg_catalog", encoder=None, decoder=float)
            assert await d.fetchval("SELECT 1.5::numeric") == 1.5
            assert await other.fetchval("SELECT 1.5::numeric") == Decimal("1.5")
        finally:
            await close_db(other)
    finally:
        await close_db(d)


async def test_set_type_codec_errors_are_clear(db, engine):
    if engine != "postgresql":
        with pytest.raises(keel.NotSupportedError, match="type codecs are PostgreSQL's"):
            await db.set_type_codec("x", encoder=str, decoder=str)
        return
    with pytest.raises(ValueError, match=r"unknown type: public\.no_such_type"):
        await db.set_type_codec("no_such_type", encoder=str, decoder=str)
    with pytest.raises(keel.NotSupportedError, match="format='binary' is available for the "
                                                     "pg_catalog types bool, bpchar"):
        await db.set_type_codec("point", schema="pg_catalog", encoder=str, decoder=str,
                                format="binary")
    with pytest.raises(keel.NotSupportedError, match="keel decodes pg_catalog.int4 itself"):
        await db.set_type_codec("int4", schema="pg_catalog", encoder=str, decoder=int)
    with pytest.raises(TypeError, match="decoder must be callable, not int"):
        await db.set_type_codec("json", schema="pg_catalog", encoder=None, decoder=1)
    name = unique_name("pt")
    await db.execute(f"CREATE TYPE {name} AS (x int, y int)")
    try:
        await db.set_type_codec(name, encoder=point_text, decoder=lambda s: 1 / 0)
        # Failures name the column and the type by their names (trial T4).
        with pytest.raises(keel.DataError, match=f'column "p": cannot decode text value: the '
                                                 f"decoder of type {name} failed: division by "
                                                 "zero"):
            await db.fetchval(f"SELECT 1 AS a, ROW(1, 2)::{name} AS p", column=1)
        with pytest.raises(keel.DataError, match=f'column "ps": cannot decode text value: the '
                                                 f"decoder of type {name} failed"):
            await db.fetch(f"SELECT ARRAY[ROW(1, 2)::{name}] AS ps")
        with pytest.raises(keel.DataError, match=rf"parameter \$1: the encoder of type {name} "
                                                 r"failed: 'object' object has no attribute 'x'"):
            await db.fetchval(f"SELECT $1::{name}", object())
        await db.set_type_codec(name, encoder=lambda p: 5, decoder=None)
        with pytest.raises(keel.DataError, match=r"returned int, not str"):
            await db.fetchval(f"SELECT $1::{name}", Point(1, 2))
        # A parameter of another type is not given to the encoder.
        with pytest.raises(keel.DataError, match=r"parameter \$1: unsupported parameter type "
                                                 r"\(type Point\)"):
            await db.fetchval("SELECT $1::text", Point(1, 2))
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.execute(f"DROP TYPE {name} CASCADE")


# ---- set_type_codec, format='tuple' and 'binary' ----

# One value of each type a tuple or binary codec is for, with its tuple form (asyncpg's):
# microseconds and days from 2000-01-01, ±infinity as the int32 / int64 extremes, a timetz's zone
# in seconds west of UTC, an interval's months kept apart; values Python's datetime cannot hold.
FORMS = [
    ("interval", "'1 year 2 mons 3 days 04:05:06.7'", (14, 3, 14706700000)),
    ("interval", "'-5 days -03:00'", (0, -5, -10800000000)),
    ("date", "'2000-01-02'", (1,)),
    ("date", "'20000-01-01'", (6574365,)),
    ("date", "'0001-01-01 BC'", (-730485,)),
    ("date", "'infinity'", (2**31 - 1,)),
    ("date", "'-infinity'", (-(2**31),)),
    ("time", "'24:00:00'", (86400000000,)),
    ("time", "'00:00:00.000001'", (1,)),
    ("timetz", "'12:00:00.25-03:30'", (43200250000, 12600)),
    ("timetz", "'01:02:03+05:45'", (3723000000, -20700)),
    ("timestamp", "'1999-12-31 23:59:59.5'", (-500000,)),
    ("timestamp", "'0044-03-15 12:00:00 BC'", (-64464465600000000,)),
    ("timestamp", "'infinity'", (2**63 - 1,)),
    ("timestamptz", "'2020-01-01 12:00:00+02'", (631188000000000,)),
    ("timestamptz", "'-infinity'", (-(2**63),)),
]
FORM_TYPES = sorted({t for t, _, _ in FORMS})


class Wrapped:
    """A value keel does not convert itself, so it goes through the encoder."""

    def __init__(self, form):
        self.form = form


@pytest.mark.parametrize("cache", [None, 0])
async def test_tuple_codecs_give_and_take_the_types_tuple_form(cache):
    d = keel.Database(with_statement_cache(cache))
    try:
        for t in FORM_TYPES:
            await d.set_type_codec(t, schema="pg_catalog", encoder=lambda w: w.form,
                                   decoder=lambda form: ("tuple", form), format="tuple")
        sql = "SELECT " + ", ".join(f"{lit}::{t}" for t, lit, _ in FORMS)
        want = [("tuple", form) for _, _, form in FORMS]
        # The first run (text results) and the later ones (binary, statement cache on) agree.
        async with d.connection() as conn:
            assert [list(await conn.fetchrow(sql)) for _ in range(3)] == [want] * 3
        # Arrays of the types: lists of decoded elements, NULL as None.
        assert await d.fetchval("SELECT ARRAY['1 day'::interval, NULL, '1 mon']") == [
            ("tuple", (0, 1, 0)), None, ("tuple", (1, 0, 0))]
        # The encoder's tuple is the value of the parameter (also in a list for an array).
        for t, lit, form in FORMS:
            assert await d.fetchval(f"SELECT $1::{t} = {lit}::{t}", Wrapped(form)), (t, lit)
            assert await d.fetchval(f"SELECT $1::{t}", Wrapped(list(form))) == ("tuple", form)
        assert await d.fetchval("SELECT $1::interval[]", [Wrapped((1, 2, 3)), None, "1 day"]) == [
            ("tuple", (1, 2, 3)), None, ("tuple", (0, 1, 0))]
        assert await d.fetchval("SELECT $1::timetz[]", [[Wrapped((1, 0))], [Wrapped((2, 60))]]
                                ) == [[("tuple", (1, 0))], [("tuple", (2, 60))]]
        with pytest.raises(keel.DataError, match=r"parameter \$1: element \[1\]: a timedelta in "
                                                 "a list for an array of interval, whose codec "
                                                 "has format='binary' or 'tuple'"):
            await d.fetchval("SELECT $1::interval[]", [Wrapped((1, 2, 3)), dt.timedelta(1)])
        # Values keel converts itself go as they are, and come back through the decoder.
        assert await d.fetchval("SELECT $1::interval", dt.timedelta(days=1)) == (
            "tuple", (0, 1, 0))
        # decoder=None gives keel's decoding back.
        await d.set_type_codec("date", schema="pg_catalog", encoder=None, decoder=None,
                               format="tuple")
        assert await d.fetchval("SELECT '2000-01-02'::date") == dt.date(2000, 1, 2)
    finally:
        await close_db(d)


@pytest.mark.parametrize("cache", [None, 0])
async def test_binary_codecs_give_and_take_the_types_binary_form(cache):
    d = keel.Database(with_statement_cache(cache))
    try:
        for t in FORM_TYPES:
            await d.set_type_codec(t, schema="pg_catalog", encoder=lambda w: w.form,
                                   decoder=lambda b: ("binary", b), format="binary")
        # The bytes are the server's own binary form of the value (its send function).
        for t, lit, _ in FORMS:
            sql = f"SELECT {lit}::{t}, {t}_send({lit}::{t})"
            async with d.connection() as conn:
                rows = [tuple(await conn.fetchrow(sql)) for _ in range(3)]
            sent = rows[0][1]
            assert rows == [(("binary", sent), sent)] * 3, (t, lit)
            # An encoder's bytes are the value of the parameter.
            assert await d.fetchval(f"SELECT $1::{t} = {lit}::{t}", Wrapped(sent)), (t, lit)
        assert await d.fetchval("SELECT ARRAY['1 day'::interval, NULL]") == [
            ("binary", bytes(8) + b"\0\0\0\1" + bytes(4)), None]
    finally:
        await close_db(d)


async def test_tuple_and_binary_codecs_in_prepared_statements_and_cursors():
    d = keel.Database(PG_URL)
    try:
        await d.set_type_codec("interval", schema="pg_catalog", encoder=None, decoder=tuple,
                               format="tuple")
        await d.set_type_codec("int4", schema="pg_catalog", encoder=None, decoder=bytes,
                               format="binary")
        sql = "SELECT '1 mon'::interval, 5::int4 FROM generate_series(1, 2)"
        want = ((1, 0, 0), b"\0\0\0\5")
        async with d.connection() as conn:
            stmt = await conn.prepare(sql)
            assert [tuple(await stmt.fetchrow()) for _ in range(3)] == [want] * 3
            async with conn.transaction():
                assert [tuple(r) async for r in conn.cursor(sql)] == [want] * 2
    finally:
        await close_db(d)


# A composite's fields (one of each type keel reads a field of), a value of each, and the
# composite of them in SQL; NULL and the empty string are told apart.
FIELDS = [
    ("a", "int4", "7"), ("b", "text", "'q \"x\" \\ ,()'"), ("c", "numeric", "1.50"),
    ("d", "timestamptz", "'2020-01-01 10:00+02'"), ("e", "bytea", "'\\x00ff'"),
    ("f", "jsonb", "'{\"k\": [1, \"}\"]}'"), ("g", "bool", "true"), ("h", "float8", "'-Infinity'"),
    ("i", "uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"), ("j", "date", "'2000-02-29'"),
    ("k", "timestamp", "'1999-12-31 23:59:59.5'"), ("l", "int8", "NULL"), ("m", "varchar", "''"),
]


@pytest.mark.parametrize("cache", [None, 0])
async def test_tuple_codecs_for_composites_give_and_take_tuples_of_field_values(cache):
    d = keel.Database(with_statement_cache(cache))
    plain = keel.Database(PG_URL)
    name = unique_name("ct")
    mood = unique_name("mood")
    try:
        await d.execute(f"CREATE TYPE {mood} AS ENUM ('ok', 'meh')")
        await d.execute(f"CREATE TYPE {name} AS (" + ", ".join(f"{f} {t}" for f, t, _ in FIELDS)
                        + f", n {mood}, o interval)")
        # A field whose type has a format='text' codec goes through it; interval as its text.
        await d.set_type_codec(mood, encoder=None, decoder=str.upper)
        await d.set_type_codec(name, encoder=lambda w: w.form, decoder=lambda t: ("tuple", t),
                               format="tuple")
        values = ", ".join(f"{v}::{t}" for _, t, v in FIELDS)
        # The field values are the values keel gives for the same columns.
        want = tuple(await plain.fetchrow(f"SELECT {values}")) + ("MEH", "1 day")
        sql = f"SELECT ROW({values}, 'meh', '1 day')::{name}"
        async with d.connection() as conn:
            rows = [await conn.fetchval(sql) for _ in range(3)]
        assert rows == [("tuple", want)] * 3
        assert rows[0][1][12] == "" and rows[0][1][11] is None
        # Arrays of it: lists of decoded elements, NULL as None.
        assert await d.fetchval(f"SELECT ARRAY[{sql[7:]}, NULL]") == [("tuple", want), None]
        # The encoder's tuple is the value of the parameter (also in a list for an array).
        sent = want[:12] + ("", "ok", "2 days")
        got = await d.fetchval(f"SELECT $1::{name}", Wrapped(sent))
        assert got == ("tuple", sent[:13] + ("OK", "2 days"))
        got = await d.fetchval(f"SELECT ($1::{name}).l IS NULL AND ($1::{name}).m = ''",
                               Wrapped(sent))
        assert got is True
        assert await d.fetchval(f"SELECT $1::{name}[]", [Wrapped(sent), None]) == [
            ("tuple", sent[:13] + ("OK", "2 days")), None]
        # Python values of the fields' types are written as the server reads them.
        sent = (1, "x", Decimal("-0.5"), dt.datetime(2020, 1, 1, tzinfo=UTC), b"\x01",
                [1, {"a": None}], False, float("nan"), uuid.UUID(int=1), dt.date(1, 1, 1),
                dt.datetime(2000, 1, 1, 0, 0, 1), 2**40, None, "ok",
                dt.timedelta(days=1, seconds=3, microseconds=5))
        got = (await d.fetchval(f"SELECT $1::{name}", Wrapped(sent)))[1]
        assert got[:7] == sent[:7] and got[7] != got[7] and got[8:12] == sent[8:12]
        assert got[12:] == (None, "OK", "1 day 00:00:03.000005")
        # A field of a composite type with a codec goes through it (the other's text else).
        outer = unique_name("co")
        await d.execute(f"CREATE TYPE {outer} AS (inner_ {name}, t text)")
        try:
            await d.set_type_codec(outer, encoder=None, decoder=tuple, format="tuple")
            assert await d.fetchval(f"SELECT ROW({sql[7:]}, 'x')::{outer}") == (
                ("tuple", want), "x")
            # decoder=None gives keel's decoding back (the composite's text).
            await d.set_type_codec(name, encoder=None, decoder=None, format="tuple")
            inner = await d.fetchval(sql)
            assert inner.startswith('(7,"q ""x"" \\\\ ,()",1.50,')
            assert await d.fetchval(f"SELECT ROW({sql[7:]}, NULL)::{outer}") == (inner, None)
        finally:
            await d.execute(f"DROP TYPE {outer}")
    finally:
        await d.execute(f"DROP TYPE IF EXISTS {name}")
        await d.execute(f"DROP TYPE IF EXISTS {mood}")
        await close_db(plain)
        await close_db(d)


async def test_tuple_codecs_for_composites_read_and_write_array_fields(pg_db):
    d = pg_db
    plain = keel.Database(PG_URL)
    name = unique_name("ca")
    arrays = ["ARRAY[1, NULL, 3]::int4[]", "ARRAY['a b', NULL, 'NULL', '', '\"q\"\\']::text[]",
              "ARRAY['{\"k\": [1]}'::jsonb]", "'[0:1][1:2]={{1,2},{3,4}}'::int8[]",
              "'{}'::numeric[]", "'{(1,2),(3,4)}'::box[]"]
    try:
        await d.execute(f"CREATE TYPE {name} AS (a int4[], b text[], c jsonb[], d int8[], "
                        "e numeric[], f box[])")
        await d.set_type_codec(name, encoder=lambda w: w.form, decoder=tuple, format="tuple")
        # Arrays of the types keel reads a field of are the lists keel gives for such columns
        # (box's arrays, delimited by ';', as their text).
        want = tuple(await plain.fetchrow("SELECT " + ", ".join(arrays[:5]))) + (
            "{(3,4),(1,2)}",)
        assert await d.fetchval(f"SELECT ROW({', '.join(arrays)})::{name}") == want
        # A list for an array field is written as the array's text.
        sent = ([1, None], ["a b", None, "NULL", "", '"q"\\', "{x}"], [{"k": [1]}, [1, 2]],
                [[1, 2], [3, None]], [Decimal("1.5")], None)
        assert await d.fetchval(f"SELECT $1::{name}", Wrapped(sent)) == sent
    finally:
        await d.execute(f"DROP TYPE IF EXISTS {name}")
        await close_db(plain)


async def test_tuple_codec_for_composite_errors_are_clear(pg_db):
    d = pg_db
    name = unique_name("pt")
    await d.execute(f"CREATE TYPE {name} AS (x int, y date)")
    try:
        await d.set_type_codec(name, encoder=lambda w: w.form, decoder=lambda t: 1 / 0,
                               format="tuple")
        with pytest.raises(keel.DataError, match=rf'column "p": cannot decode .*the decoder of '
                                                 rf"type {name} failed: division by zero"):
            await d.fetchval(f"SELECT ROW(1, NULL)::{name} AS p")
        await d.set_type_codec(name, encoder=lambda w: w.form, decoder=tuple, format="tuple")
        # A field keel cannot make a Python value of (as for a column of its type).
        with pytest.raises(keel.DataError, match=rf"cannot read composite {name}: field 2 "
                                                 "'infinity': "):
            await d.fetchval(f"SELECT ROW(1, 'infinity')::{name}")
        for form, why in (((1,), r"returned \(1,\), not a tuple of 2 fields \(format='tuple'\)"),
                          (5, r"returned 5, not a tuple of 2 fields"),
                          ((1, object()), r"field 2: a object: give a str \(the field's text\)")):
            with pytest.raises(keel.DataError, match=r"parameter \$1: the encoder of type "
                                                     rf"{name} failed: {why}"):
                await d.fetchval(f"SELECT $1::{name}", Wrapped(form))
        # The server reads each field by its type.
        with pytest.raises(keel.DataError, match="invalid input syntax for type integer"):
            await d.fetchval(f"SELECT $1::{name}", Wrapped(("x", None)))
        # The attributes are looked up when the codec is set: set it again after ALTER TYPE.
        await d.execute(f"ALTER TYPE {name} ADD ATTRIBUTE z text")
        with pytest.raises(keel.DataError, match=rf"cannot read composite {name}: composite "
                                                 r"text with 3 fields, not 2: '\(1,,z\)'"):
            await d.fetchval(f"SELECT ROW(1, NULL, 'z')::{name}")
        await d.set_type_codec(name, encoder=None, decoder=tuple, format="tuple")
        assert await d.fetchval(f"SELECT ROW(1, NULL, 'z')::{name}") == (1, None, "z")
    finally:
        await d.execute(f"DROP TYPE {name}")


# Built-in types with format='binary' only: a value of each, and the server's send function.
SCALARS = [
    ("bool", "true", "boolsend"), ("bool", "false", "boolsend"),
    ("int2", "'-32768'", "int2send"), ("int4", "2147483647", "int4send"),
    ("int8", "'-9223372036854775808'", "int8send"), ("oid", "4294967295", "oidsend"),
    ("float4", "'1.1'", "float4send"), ("float4", "'-Infinity'", "float4send"),
    ("float8", "'0.1'", "float8send"), ("float8", "'NaN'", "float8send"),
    ("bytea", "'\\x00ff'", "byteasend"),
    ("uuid", "'0b2e5c2e-7ffb-4c7d-a5c0-6f4a4e1b9c11'", "uuid_send"),
    ("text", "'h\u00e9 \"x\" \\'", "textsend"), ("varchar", "'v'", "varcharsend"),
    ("bpchar", "'ab'::char(4)", "bpcharsend"), ("name", "'n'", "namesend"),
    ("json", "'[1, {\"a\": null}]'", "json_send"), ("jsonb", "'{\"a\": [1]}'", "jsonb_send"),
    ("numeric", "'-12.3400'", "numeric_send"), ("numeric", "'0.00'", "numeric_send"),
    ("numeric", "'10000'", "numeric_send"), ("numeric", "'1e-20'", "numeric_send"),
    ("numeric", "'123456789.000000001'", "numeric_send"), ("numeric", "'NaN'", "numeric_send"),
    ("numeric", "'-Infinity'", "numeric_send"), ("numeric", "'-0.5'", "numeric_send"),
    ("inet", "'192.168.1.5'", "inet_send"), ("inet", "'10.1.2.3/8'", "inet_send"),
    ("inet", "'::ffff:1.2.3.4/100'", "inet_send"), ("inet", "'2001:db8::1'", "inet_send"),
    ("cidr", "'10.0.0.0/8'", "cidr_send"), ("cidr", "'2001:db8::/32'", "cidr_send"),
    ("cidr", "'0.0.0.0/0'", "cidr_send"),
]


@pytest.mark.parametrize("cache", [None, 0])
async def test_binary_codecs_for_built_in_scalars(cache):
    d = keel.Database(with_statement_cache(cache))
    plain = keel.Database(PG_URL)  # without codecs: bytea and text have some in d
    try:
        for t in sorted({t for t, _, _ in SCALARS}):
            await d.set_type_codec(t, schema="pg_catalog", encoder=lambda w: w.form,
                                   decoder=lambda b: ("binary", b), format="binary")
        for t, lit, send in SCALARS:
            # The bytes are the server's binary form of the value, on every run.
            sent = await plain.fetchval(f"SELECT {send}({lit}::{t})")
            async with d.connection() as conn:
                rows = [await conn.fetchval(f"SELECT {lit}::{t}") for _ in range(3)]
            assert rows == [("binary", sent)] * 3, (t, lit)
            # An encoder's bytes are the value of the parameter: the server gives them back.
            assert await d.fetchval(f"SELECT $1::{t}", Wrapped(sent)) == ("binary", sent), (
                t, lit)
            assert await d.fetchval(f"SELECT $1::{t}[]", [Wrapped(sent), None]) == [
                ("binary", sent), None], (t, lit)
        with pytest.raises(keel.DataError, match=r"parameter \$1: the encoder of type jsonb "
                                                 r"failed: returned bytes that do not start "
                                                 r"with version 1"):
            await d.fetchval("SELECT $1::jsonb", Wrapped(b"{}"))
        with pytest.raises(keel.DataError, match=r"returned 3 bytes; a binary int4 has 4"):
            await d.fetchval("SELECT $1::int4", Wrapped(b"abc"))
        with pytest.raises(keel.DataError, match=r"the encoder of type inet failed: returned "
                                                 r"bytes that are not a binary inet or cidr"):
            await d.fetchval("SELECT $1::inet", Wrapped(b"\x02\x21\x00\x04" + bytes(4)))
        # The server checks a cidr's bits right of its netmask, as cidr_recv does.
        with pytest.raises(keel.DataError, match="invalid cidr value"):
            await d.fetchval("SELECT $1::cidr", Wrapped(b"\x02\x08\x01\x04\x0a\x00\x00\x01"))
        # The lookup of a type reads none of the types these codecs are for.
        await d.set_type_codec("int8", schema="pg_catalog", encoder=None, decoder=None,
                               format="binary")
        assert await d.fetchval("SELECT 1::int8") == 1
    finally:
        await close_db(plain)
        await close_db(d)


# Extensions' types with format='binary': a value of each, and the server's send function.
EXTENSION_TYPES = [
    ("hstore", "hstore", "E'\"a\\\\\"b\"=>\"\\\\\\\\\", c=>d, e=>NULL, \"\"=>\"\"'", "hstore_send"),
    ("hstore", "hstore", "''", "hstore_send"),
    ("citext", "citext", "'Ab \u00e9'", "citextsend"),
    ("ltree", "ltree", "'a.b_c'", "ltree_send"), ("ltree", "lquery", "'a.b*'", "lquery_send"),
    ("ltree", "ltxtquery", "'a & b'", "ltxtq_send"),
]


async def _extensions(db):
    """Creates the extensions of EXTENSION_TYPES the server has; skips the test without one."""
    names = {e for e, _, _, _ in EXTENSION_TYPES}
    have = {r[0] for r in await db.fetch("SELECT name FROM pg_available_extensions "
                                         "WHERE name = ANY($1)", sorted(names))}
    if have != names:
        pytest.skip(f"PostgreSQL server without the extensions {sorted(names - have)}")
    for e in sorted(names):
        await db.execute(f"CREATE EXTENSION IF NOT EXISTS {e}")


@pytest.mark.parametrize("cache", [None, 0])
async def test_binary_codecs_for_extensions_types(cache):
    d = keel.Database(with_statement_cache(cache))
    plain = keel.Database(PG_URL)
    try:
        await _extensions(plain)
        for t in sorted({t for _, t, _, _ in EXTENSION_TYPES}):
            await d.set_type_codec(t, encoder=lambda w: w.form,
                                   decoder=lambda b: ("binary", b), format="binary")
        for _, t, lit, send in EXTENSION_TYPES:
            # The bytes are the server's binary form of the value, on every run.
            sent = await plain.fetchval(f"SELECT {send}({lit}::{t})")
            async with d.connection() as conn:
                rows = [await conn.fetchval(f"SELECT {lit}::{t}") for _ in range(3)]
            assert rows == [("binary", sent)] * 3, (t, lit)
            # An encoder's bytes are the value of the parameter.
            assert await d.fetchval(f"SELECT $1::{t}::text = {lit}::{t}::text", Wrapped(sent))
            assert await d.fetchval(f"SELECT $1::{t}[]", [Wrapped(sent), None]) == [
                ("binary", sent), None], (t, lit)
        with pytest.raises(keel.DataError, match=r"the encoder of type hstore failed: returned "
                                                 r"bytes that end inside a binary hstore"):
            await d.fetchval("SELECT $1::hstore", Wrapped(b"\0\0\0\1\0\0\0\1a"))
        with pytest.raises(keel.DataError, match=r"the encoder of type ltree failed: returned "
                                                 r"bytes that do not start with version 1 of "
                                                 "ltree's binary form"):
            await d.fetchval("SELECT $1::ltree", Wrapped(b"a.b"))
    finally:
        await close_db(plain)
        await close_db(d)


async def test_tuple_and_binary_codec_errors_are_clear(pg_db):
    d = pg_db
    name = unique_name("pt")
    await d.execute(f"CREATE TYPE {name} AS (x int, y int)")
    try:
        # Tuples are for composites and the dates, times and intervals.
        for t, schema in (("int4", "pg_catalog"), ("json", "pg_catalog")):
            with pytest.raises(keel.NotSupportedError,
                               match=rf"format='tuple' is available for composite types and "
                                     rf"the pg_catalog types "
                                     rf"date, interval, time, timestamp, timestamptz, timetz, "
                                     rf"not for {schema}\.{t}$"):
                await d.set_type_codec(t, schema=schema, encoder=None, decoder=tuple,
                                       format="tuple")
        for t, schema in ((name, "public"), ("point", "pg_catalog")):
            with pytest.raises(keel.NotSupportedError,
                               match=r"format='binary' is available for the pg_catalog types "
                                     r"bool, bpchar, bytea, cidr, date, float4, float8, inet, "
                                     r"int2, int4, int8, interval, json, jsonb, name, numeric, "
                                     r"oid, text, time, timestamp, timestamptz, timetz, uuid, "
                                     r"varchar, and the extensions' types hstore, citext, "
                                     r"ltree, lquery, ltxtquery, "
                                     rf"not for {schema}\.{t}$"):
                await d.set_type_codec(t, schema=schema, encoder=None, decoder=bytes,
                                       format="binary")
        # A domain's values come as its base type's: its decoder would never run.
        dom = unique_name("dom")
        await d.execute(f"CREATE DOMAIN {dom} AS text CHECK (VALUE <> '')")
        try:
            for format in ("text", "binary", "tuple"):
                with pytest.raises(keel.NotSupportedError,
                                   match=rf"public\.{dom} is a domain \(over the type of OID "
                                         r"25\): PostgreSQL sends a domain's values as its base "
                                         "type's, so its decoder would never run; set the "
                                         r"decoder on the base type \(decoder=None for an "
                                         r"encoder of the domain\)"):
                    await d.set_type_codec(dom, encoder=None, decoder=str, format=format)
            # Its parameters are described as the domain: an encoder of its own runs.
            await d.set_type_codec(dom, encoder=lambda w: f"<{w.form}>", decoder=None)
            assert await d.fetchval(f"SELECT $1::{dom}", Wrapped("x")) == "<x>"
            with pytest.raises(keel.CheckViolationError,
                               match=rf"value for domain {dom} violates"):
                await d.fetchval(f"SELECT $1::{dom}", "")
        finally:
            await d.execute(f"DROP DOMAIN {dom}")
        with pytest.raises(ValueError, match="format must be 'text', 'binary' or 'tuple', not "
                                             "'bin'"):
            await d.set_type_codec("date", schema="pg_catalog", encoder=None, decoder=str,
                                   format="bin")
        await d.set_type_codec("interval", schema="pg_catalog", encoder=lambda w: w.form,
                               decoder=lambda t: 1 / 0, format="tuple")
        with pytest.raises(keel.DataError, match='column "i": cannot decode interval value: the '
                                                 "decoder of type interval failed: division by "
                                                 "zero"):
            await d.fetchval("SELECT '1 day'::interval AS i")
        for form, why in (((1, 2), r"returned \(1, 2\), not a tuple of 3 int "
                                   r"\(format='tuple'\)"),
                          ([1, 2, 1.5], r"returned \[1, 2, 1\.5\], not a tuple of 3 int"),
                          ((2**31, 0, 0), r"returned \(2147483648, 0, 0\), out of range: ")):
            with pytest.raises(keel.DataError, match=r"parameter \$1: the encoder of type "
                                                     rf"interval failed: {why}"):
                await d.fetchval("SELECT $1::interval", Wrapped(form))
        await d.set_type_codec("interval", schema="pg_catalog", encoder=lambda w: w.form,
                               decoder=None, format="binary")
        with pytest.raises(keel.DataError, match=r"returned str, not bytes \(format='binary'\)"):
            await d.fetchval("SELECT $1::interval", Wrapped("1 day"))
        with pytest.raises(keel.DataError, match=r"returned 3 bytes; a binary interval has 16"):
            await d.fetchval("SELECT $1::interval", Wrapped(b"abc"))
        # format='text' stays refused for them: keel keeps no text of their values.
        with pytest.raises(keel.NotSupportedError, match="keel decodes pg_catalog.interval "
                                                         "itself.*format='binary' or 'tuple'"):
            await d.set_type_codec("interval", schema="pg_catalog", encoder=None, decoder=None)
    finally:
        await d.execute(f"DROP TYPE {name}")


async def test_a_codec_for_an_enum_decodes_its_arrays_too():
    d = keel.Database(PG_URL)
    name = unique_name("mood")
    quoted = 'a "b"'
    try:
        await d.execute(f"CREATE TYPE {name} AS ENUM ('sad', 'ok', '{quoted}')")
        # Without a codec an enum array is a list of the labels.
        assert await d.fetchval(f"SELECT ARRAY['ok', 'sad']::{name}[]") == ["ok", "sad"]
        await d.set_type_codec(name, encoder=None, decoder=str)
        assert await d.fetchval(f"SELECT ARRAY['ok', NULL, '{quoted}']::{name}[]") == [
            "ok", None, quoted]
        assert await d.fetchval(f"SELECT '{{{{ok}},{{sad}}}}'::{name}[]") == [["ok"], ["sad"]]
        assert await d.fetchval(f"SELECT $1::{name}[]", [Mood.OK, "sad"]) == ["ok", "sad"]
        await d.set_type_codec(name, encoder=None, decoder=Mood)
        assert await d.fetchval(f"SELECT ARRAY['ok']::{name}[]") == [Mood.OK]
        assert await d.fetchval(f"SELECT '[0:0]={{sad}}'::{name}[]") == [Mood.SAD]
        assert await d.fetchval(f"SELECT 'sad'::{name}") == Mood.SAD
    finally:
        await d.execute(f"DROP TYPE IF EXISTS {name} CASCADE")
        await close_db(d)


async def test_arrays_of_types_keel_does_not_know_are_lists_of_their_elements_text(pg_db):
    # asyncpg returns lists of str for enum arrays; keel gave the array literal (trial T2).
    color, pt, pos = unique_name("color"), unique_name("pt"), unique_name("pos")
    await pg_db.execute(f"CREATE TYPE {color} AS ENUM ('red', 'green', 'a \"b\", c', '{{x}}')")
    await pg_db.execute(f"CREATE TYPE {pt} AS (x int, s text)")
    await pg_db.execute(f"CREATE DOMAIN {pos} AS int CHECK (VALUE > 0)")
    try:
        t = unique_name("t")
        await pg_db.execute(f"CREATE TABLE {t} (id int, roles {color}[], pts {pt}[], m money[])")
        await pg_db.execute(f"INSERT INTO {t} VALUES (1, "
                            f"ARRAY['red', NULL, 'a \"b\", c']::{color}[], "
                            f"ARRAY[ROW(1, 'a b')::{pt}, NULL], ARRAY['1.5'::money, NULL])")
        row = await pg_db.fetchrow(f"SELECT roles, pts, m, roles[1] AS r FROM {t}")
        assert row["roles"] == ["red", None, 'a "b", c']
        assert row["pts"] == ['(1,"a b")', None]
        assert row["m"] == ["$1.50", None]
        assert row["r"] == "red"  # an enum value itself is still its label
        # Dimensions, bounds, empty arrays, and an element whose text looks like an array.
        assert await pg_db.fetchval(f"SELECT '{{{{red,green}},{{NULL,red}}}}'::{color}[]") == [
            ["red", "green"], [None, "red"]]
        assert await pg_db.fetchval(f"SELECT '[2:3]={{green,red}}'::{color}[]") == ["green", "red"]
        assert await pg_db.fetchval(f"SELECT '{{}}'::{color}[]") == []
        assert await pg_db.fetchval(f"SELECT ARRAY['{{x}}']::{color}[]") == ["{x}"]
        # A domain's array, timetz[], and arrays of records.
        assert await pg_db.fetchval(f"SELECT ARRAY[1, 2]::{pos}[]") == ["1", "2"]
        assert await pg_db.fetchval("SELECT ARRAY['12:00+01'::timetz]") == ["12:00:00+01"]
        assert await pg_db.fetchval("SELECT ARRAY[ROW(1, NULL)]") == ['(1,)']
        # A list parameter for such a column still goes as its array literal.
        await pg_db.execute(f"UPDATE {t} SET roles = $1::{color}[]", ["green", None])
        assert await pg_db.fetchval(f"SELECT roles FROM {t}") == ["green", None]
        await pg_db.execute(f"DROP TABLE {t}")
    finally:
        await pg_db.execute(f"DROP TYPE IF EXISTS {color}, {pt} CASCADE")
        await pg_db.execute(f"DROP DOMAIN IF EXISTS {pos} CASCADE")


async def test_a_statement_with_a_list_is_cancelled_like_any_other(pg_db):
    async with pg_db.connection() as conn:
        # Its first run is described, then runs: the timeout cancels it on the server.
        with pytest.raises(keel.QueryTimeout):
            await conn.fetchval("SELECT pg_sleep(5), cardinality($1::int[])", [1, 2], timeout=0.3)
        assert await conn.fetchval("SELECT cardinality($1::int[])", [1, 2, 3]) == 3
        with pytest.raises(keel.QueryTimeout):
            await conn.fetchval("SELECT pg_sleep(5), cardinality($1::int[])", [1], timeout=0.3)
        assert await conn.fetchval("SELECT $1::text[]", ["ok"]) == ["ok"]


def test_keel_sync_takes_lists_as_arrays_too():
    import keel.sync

    with keel.sync.Database(PG_URL) as d:
        assert d.fetchval("SELECT $1::int[]", [1, None, 3]) == [1, None, 3]
        assert d.fetchval("SELECT $1::jsonb", [1, {"a": 2}]) == [1, {"a": 2}]
        with d.connection() as conn:
            assert conn.fetchval("SELECT cardinality($1::text[])", ["a", "b"]) == 2


# ---- ints take the type the server gives the parameter ----

def with_statement_cache(cache):
    """The test database's URL, with the statement cache off when cache is 0."""
    return PG_URL if cache is None else \
        PG_URL + ("&" if "?" in PG_URL else "?") + f"statement_cache_size={cache}"


@pytest.fixture
async def int_funcs(pg_db):
    """Functions taking integer, smallint, and an overloaded one (integer and bigint), and a
    table of integer, smallint and text columns; all dropped after the test."""
    names = {k: unique_name(k) for k in ("f_int", "f_small", "f_over", "t_ints")}
    for name, arg, ret in (("f_int", "integer", "'integer'"), ("f_small", "smallint", "'smallint'"),
                           ("f_over", "integer", "'integer'"), ("f_over", "bigint", "'bigint'")):
        await pg_db.execute(f"CREATE FUNCTION {names[name]}(x {arg}) RETURNS text "
                            f"LANGUAGE sql AS $$SELECT {ret} || ' ' || x$$")
    await pg_db.execute(f"CREATE TABLE {names['t_ints']} (i int4, s int2, t text)")
    await pg_db.execute(f"INSERT INTO {names['t_ints']} VALUES (1, 10, 'one'), (2, 20, 'two')")
    yield names
    await pg_db.execute(f"DROP TABLE {names['t_ints']}")
    await pg_db.execute(f"DROP FUNCTION {names['f_int']}(integer), {names['f_small']}(smallint), "
                        f"{names['f_over']}(integer), {names['f_over']}(bigint)")


@pytest.mark.parametrize("cache", [None, 0], ids=["statement-cache", "no-statement-cache"])
async def test_ints_take_the_type_the_server_gives_them(int_funcs, cache):
    f = int_funcs
    d = keel.Database(with_statement_cache(cache))
    try:
        for _ in range(2):  # described the first time, from the cache the second
            assert await d.fetchval(f"SELECT {f['f_int']}($1)", 5) == "integer 5"
            assert await d.fetchval(f"SELECT {f['f_small']}($1)", -7) == "smallint -7"
            # Ambiguous with an unknown type: resolved as a bigint, as before.
            assert await d.fetchval(f"SELECT {f['f_over']}($1)", 5) == "bigint 5"
            assert await d.fetchval(f"SELECT s FROM {f['t_ints']} WHERE s = $1", 20) == 20
            assert await d.fetchval(f"SELECT t FROM {f['t_ints']} WHERE i = $1", 2) == "two"
            # The server says text for SELECT $1: a bigint as before, which comes back an int.
            assert await d.fetchval("SELECT $1", 5) == 5
            assert await d.fetchval("SELECT pg_typeof($1)::text", 5) == "bigint"
            assert await d.fetchval("SELECT $1 IS NULL", 5) is False
            assert await d.fetchrow("SELECT $1 + 0.5 AS n, $2 * 1.5::float8 AS f", 1, 2) == \
                (Decimal("1.5"), 3.0)
            assert await d.fetchval("SELECT $1::oid", 4000000000) == 4000000000
            assert await d.fetchval("SELECT $1 = ANY($2)", 2, [1, 2]) is True
            # A text column compared with an int stays the server's error, as before.
            with pytest.raises(keel.ProgrammingError, match="operator does not exist: text = "
                                                            "bigint"):
                await d.fetchval(f"SELECT i FROM {f['t_ints']} WHERE t = $1", 5)
            # Out of the range of the parameter's type: refused before anything is sent.
            with pytest.raises(keel.DataError, match=r"parameter \$1: 70000 is out of range for "
                                                     r"type smallint, the type PostgreSQL gives "
                                                     r"the parameter \(a cast, \$1::bigint"):
                await d.fetchval(f"SELECT {f['f_small']}($1)", 70000)
            with pytest.raises(keel.DataError, match=r"parameter \$2: 3000000000 is out of range "
                                                     r"for type integer"):
                await d.fetchval(f"SELECT $1::text, {f['f_int']}($2)", "x", 3 * 10**9)
            assert await d.fetchval("SELECT $1::bigint + 1", 3 * 10**9) == 3 * 10**9 + 1
    finally:
        await close_db(d)


@pytest.mark.parametrize("cache", [None, 0], ids=["statement-cache", "no-statement-cache"])
async def test_ints_inside_a_transaction_batches_and_prepared_statements(int_funcs, cache):
    f = int_funcs
    d = keel.Database(with_statement_cache(cache))
    try:
        async with d.connection() as conn:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {f['t_ints']} VALUES ($1, $2, 'three')", 3, 30)
                # Statements the server cannot type with an unknown int are described inside a
                # savepoint: the transaction goes on, and keeps its writes.
                assert await conn.fetchval(f"SELECT {f['f_over']}($1)", 1) == "bigint 1"
                assert await conn.fetchval("SELECT $1 IS NULL", 1) is False
                assert await conn.fetchval(f"SELECT {f['f_small']}($1)", 2) == "smallint 2"
                with pytest.raises(keel.DataError, match="out of range for type smallint"):
                    await conn.fetchval(f"SELECT {f['f_small']}($1)", 2**15)
                assert await conn.fetchval(f"SELECT count(*) FROM {f['t_ints']}") == 3
            assert await conn.fetchval(f"SELECT count(*) FROM {f['t_ints']}") == 3
            await conn.executemany(f"INSERT INTO {f['t_ints']} VALUES ($1, $2, $3)",
                                   [(4, 40, "four"), (5, None, "five"), (6, -32768, "six")])
            with pytest.raises(keel.DataError, match=r"row 1: parameter \$2: 40000 is out of "
                                                     r"range for type smallint"):
                await conn.executemany(f"INSERT INTO {f['t_ints']} VALUES ($1, $2, 'x')",
                                       [(7, 1), (8, 40000)])
            assert await conn.fetchval(f"SELECT count(*) FROM {f['t_ints']}") == 6
            stmt = await conn.prepare(f"SELECT {f['f_small']}($1)")
            assert await stmt.fetchval(3) == "smallint 3"
            assert await stmt.fetchval(4) == "smallint 4"
            with pytest.raises(keel.InternalError, match="the transaction was rolled back"):
                async with conn.transaction():
                    # A statement that fails anyway fails as it did, aborting the transaction.
                    with pytest.raises(keel.ProgrammingError, match="does not exist"):
                        await conn.fetchval("SELECT no_such_function($1)", 1)
                    with pytest.raises(keel.DatabaseError, match="current transaction is aborted"):
                        await conn.fetchval("SELECT 1")
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await close_db(d)


@pytest.mark.parametrize("cache", [None, 0], ids=["statement-cache", "no-statement-cache"])
async def test_an_int_statement_is_described_once_per_connection(cache):
    """The describe is one Parse of the statement's text on its first run; later runs send no
    more of them than before (one per run without the statement cache, none with it)."""
    from proxy import TcpProxy
    from urllib.parse import urlsplit
    u = urlsplit(PG_URL)
    with TcpProxy(u.hostname, u.port) as proxy:
        d = keel.Database({"default": "a", "databases": {"a": {
            "url": proxy.url(with_statement_cache(cache)), "pool": {"min_size": 1, "max_size": 1}}}})
        try:
            typed, untyped = f"SELECT $1 + 1 /* {unique_name('a')} */", \
                f"SELECT $1 /* {unique_name('b')} */"
            assert await d.fetchval(typed, 1) == 2
            assert await d.fetchval(untyped, 1) == 1
            first = [proxy.recorded(0).count(s.encode()) for s in (typed, untyped)]
            # Described (once more for SELECT $1, whose text type means bigint), then prepared.
            assert first == [2, 3]
            for i in range(10):
                assert await d.fetchval(typed, i) == i + 1
                assert await d.fetchval(untyped, i) == i
            more = [proxy.recorded(0).count(s.encode()) - n for s, n in zip((typed, untyped), first)]
            assert more == ([0, 0] if cache is None else [10, 10])
        finally:
            await close_db(d)


# Values of every type keel reads in binary, with their edges: a statement's first execution
# reads them in text, its later ones (a cached prepared statement whose columns all have binary
# decoders) in binary, and both give the same Python values.
BINARY_EXPRS = [
    "true", "(-32768)::int2", "2147483647::int4", "(-9223372036854775808)::int8",
    "4294967295::oid", "1.1::float4", "'3.4028235e38'::float4", "'-Infinity'::float4",
    "0.1::float8", "'-0'::float8", "1.10::numeric", "0.000::numeric", "'-0.000123'::numeric",
    "12345678.90123456789::numeric", "1e100::numeric", "'Infinity'::numeric", "10000::numeric",
    "'text'::text", "'x'::char(3)", "'ü€'::varchar", "'n'::name", "''::text", "'\\x00ff'::bytea",
    "''::bytea", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", "'2000-01-02'::date",
    "'infinity'::date", "'-infinity'::date", "'12:34:56.789'::time",
    "'12:34:56.5+05:30'::timetz", "'00:00:00-08'::timetz", "'2020-01-01 12:00:00.000001'::timestamp",
    "'infinity'::timestamp", "'-infinity'::timestamptz", "'294276-12-31 23:59:59'::timestamptz",
    "'294276-12-31 23:59:59.5'::timestamp",
    "'1969-12-31 23:59:59.999999+00'::timestamptz", "'2020-06-01 12:00+02'::timestamptz",
    "'1 year 2 mons -3 days 04:05:06.789'::interval", "'-00:00:01'::interval",
    "'{\"a\": [1, 2]}'::json", "'{\"b\":1,  \"a\": 2}'::jsonb", "'10.0.0.1'::inet",
    "'10.0.0.1/8'::inet", "'10.0.0.0/8'::cidr", "'::ffff:1.2.3.4'::inet", "'2001:db8::/32'::cidr",
    "pg_sleep(0)", "'[1,5)'::int4range", "'empty'::int4range", "'(,5]'::int8range",
    "'[1.5,)'::numrange", "'[2020-01-01,infinity)'::daterange",
    "'[2020-01-01 00:00, 2021-01-01)'::tstzrange", "'(2020-01-01,2021-01-01]'::tsrange",
    "ARRAY[1, NULL, 3]", "'{{1,2},{3,4}}'::int4[]", "'{}'::text[]", "'[0:1]={7,8}'::int4[]",
    "ARRAY['a,b', NULL, 'NULL', '\"', '{}']", "'{{{1}},{{2}}}'::int8[]",
    "ARRAY['[1,2)'::int4range, 'empty', NULL]", "ARRAY[1.5::float4, 0.1]",
    "ARRAY['{\"k\":1}'::jsonb, NULL]", "ARRAY['1 day'::interval]", "ARRAY['10.0.0.1'::inet]",
    "ARRAY[1.10::numeric]", "ARRAY['infinity'::timestamptz, '2000-01-01']",
    "ARRAY['2000-01-01'::date, 'infinity']", "ARRAY['a'::char(2)]", "ARRAY['12:00'::time]",
    "ARRAY[true, NULL]", "ARRAY['\\x01'::bytea, '']", "ARRAY['2000-01-01 10:00'::timestamp]",
    "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
]
# Values Python has no type for fail alike in both forms.
BINARY_ERRORS = ["'4713-01-01 BC'::date", "'24:00:00'::time", "'178000000 years'::interval"]


def _identical(a, b):
    """The same value of the same type (float NaN equal to NaN, -0.0 not to 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a != a and b != b) or (a == b and str(a) == str(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    if isinstance(a, keel.Range):
        return (a.isempty == b.isempty and a.lower_inc == b.lower_inc and
                a.upper_inc == b.upper_inc and _identical(a.lower, b.lower) and
                _identical(a.upper, b.upper))
    return a == b and repr(a) == repr(b)


def _text_db():
    return keel.Database(PG_URL + ("&" if "?" in PG_URL else "?") + "statement_cache_size=0")


async def _all_ways(conn, sql):
    """The first row's values by fetch, fetchrow, fetchval, a cursor and a prepared statement."""
    got = [tuple((await conn.fetch(sql))[0]), tuple(await conn.fetchrow(sql)),
           (await conn.fetchval(sql),)]
    async with conn.transaction():
        async for row in conn.cursor(sql):
            got.append(tuple(row))
    stmt = await conn.prepare(sql)
    got.append(tuple(await stmt.fetchrow()))
    return got


async def test_binary_results_are_the_values_text_gives(pg_db):
    text_db = _text_db()
    await text_db.start()
    try:
        sql = "SELECT " + ", ".join(BINARY_EXPRS)
        want = tuple(await text_db.fetchrow(sql))
        async with text_db.connection() as conn:
            ways = await _all_ways(conn, sql)
        async with pg_db.connection() as conn:
            # The first run of each way is in text on this connection, the later ones binary.
            ways += await _all_ways(conn, sql) + await _all_ways(conn, sql)
        for got in ways:
            for expr, w, g in zip(BINARY_EXPRS, want, got):
                assert _identical(w, g), (expr, w, g)
        # Each value in a statement of its own (other column sets, other cached statements).
        for expr in BINARY_EXPRS:
            w = await text_db.fetchval(f"SELECT {expr}")
            for _ in range(3):
                g = await pg_db.fetchval(f"SELECT {expr}")
                assert _identical(w, g), (expr, w, g)
        for expr in BINARY_ERRORS:
            with pytest.raises(keel.DataError) as text_error:
                await text_db.fetchval(f"SELECT {expr}")
            for _ in range(3):
                with pytest.raises(keel.DataError) as binary_error:
                    await pg_db.fetchval(f"SELECT {expr}")
                assert str(binary_error.value) == str(text_error.value)
    finally:
        await close_db(text_db)


# With extra_float_digits 0 the server writes a float8 to 15 significant digits (0.1 + 0.2 as
# "0.3") while its binary form is exact: so the first run (text) and the later ones (binary)
# can be told apart.
TEXT_SUM, BINARY_SUM = 0.3, 0.1 + 0.2


async def test_a_cached_statement_reads_binary_from_its_second_run(pg_db):
    async with pg_db.connection() as conn:
        await conn.execute("SET extra_float_digits = 0")
        try:
            sql = "SELECT g, 0.1::float8 + 0.2::float8 FROM generate_series(1, 300) g"
            assert (await conn.fetchrow(sql))[1] == TEXT_SUM
            assert (await conn.fetchrow(sql))[1] == BINARY_SUM
            # A streaming cursor (outside a transaction) runs the cached statement too.
            rows = [tuple(r) async for r in conn.cursor(sql, prefetch=7)]
            assert rows == [(g, BINARY_SUM) for g in range(1, 301)]
            # A column keel reads only in text (money) keeps the whole statement in text.
            for _ in range(3):
                assert await conn.fetchrow("SELECT 0.1::float8 + 0.2::float8, 1::money") == (
                    TEXT_SUM, "$1.00")
        finally:
            await conn.execute("RESET extra_float_digits")


async def test_without_the_statement_cache_results_stay_text():
    d = _text_db()
    await d.start()
    try:
        async with d.connection() as conn:
            await conn.execute("SET extra_float_digits = 0")
            for _ in range(3):
                assert await conn.fetchval("SELECT 0.1::float8 + 0.2::float8") == TEXT_SUM
    finally:
        await close_db(d)


def test_keel_sync_reads_binary_results_too():
    import keel.sync
    sql = "SELECT " + ", ".join(BINARY_EXPRS)
    with keel.sync.Database(PG_URL) as db:
        rows = [tuple(db.fetchrow(sql)) for _ in range(3)]
    for got in rows[1:]:
        for expr, w, g in zip(BINARY_EXPRS, rows[0], got):
            assert _identical(w, g), (expr, w, g)
