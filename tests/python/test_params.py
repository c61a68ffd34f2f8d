# tests/python/test_params.py - arguments are converted (snapshotted) when the call is made, whatever the caller or a value's own code does to them afterwards.
"""Parameters are a snapshot of the arguments at the call.

An operation that cannot start at once (the pool is exhausted, or its connection is still
ending a cancelled statement) runs later with the values its arguments had when it was called:
lists, dicts and bytearrays the caller changes meanwhile change nothing. Converting a value may
run Python code (a tzinfo's utcoffset(), a Decimal subclass's __str__, a UUID subclass's int, a
custom sequence): whatever that code does to the lists being converted, nothing crashes (the
suite also runs under ASan, see `make test-python-asan`) and what is stored is what was passed.
"""
import asyncio
import datetime
import decimal
import uuid

import pytest

import keel
from conftest import MONGO_URL, SLOW_SQL, unique_name, wait_until

ONE = {"min_size": 1, "max_size": 1}
UTC = datetime.timezone.utc


def fresh(text):
    """An equal str that is a new object (never interned), held by nobody but the caller."""
    return "".join(list(text))


async def table(d, types, name):
    await d.execute(f"CREATE TABLE {name} (i {types['int']}, s {types['text']}, "
                    f"j {types['json']}, b {types['bytes']})")


async def rows_of(d, name):
    return sorted((r["i"], r["s"], r["j"], None if r["b"] is None else bytes(r["b"]))
                  for r in await d.fetch(f"SELECT i, s, j, b FROM {name}"))


async def waiting(d):
    """Lets the calls made just before run until they wait for a connection."""
    await wait_until(lambda: d.pool_stats()["waiting"] > 0)


# ---- operations that wait for a connection ----

async def test_executemany_waiting_for_a_connection_sends_the_rows_as_they_were(make_db, types):
    d = make_db(pool=ONE)
    t = unique_name("snap")
    await table(d, types, t)
    try:
        held = await d.acquire()
        rows = [[1, "one", ["a"], bytearray(b"x")], [2, "two", {"k": 1}, bytearray(b"y")]]
        task = asyncio.create_task(
            d.executemany(f"INSERT INTO {t} (i, s, j, b) VALUES ($1, $2, $3, $4)", rows))
        await waiting(d)
        # The caller changes everything it passed while the batch waits.
        rows[0][1] = "changed"
        rows[0][2].append("b")
        rows[0][3][0] = ord("z")
        rows[1][2]["k"] = 2
        rows.append([3, "three", None, None])
        del rows[0]
        await d.release(held)
        await asyncio.wait_for(task, 30)
        assert await rows_of(d, t) == [(1, "one", ["a"], b"x"), (2, "two", {"k": 1}, b"y")]
    finally:
        await d.execute(f"DROP TABLE {t}")


async def test_execute_waiting_for_a_connection_sends_the_values_as_they_were(make_db, types):
    d = make_db(pool=ONE)
    t = unique_name("snap")
    await table(d, types, t)
    try:
        held = await d.acquire()
        doc, blob = {"k": [1, 2]}, bytearray(b"abc")
        task = asyncio.create_task(
            d.execute(f"INSERT INTO {t} (i, s, j, b) VALUES ($1, $2, $3, $4)", 1, "s", doc, blob))
        await waiting(d)
        doc["k"].append(3)
        doc["new"] = True
        blob[0] = ord("X")
        blob.extend(b"def")  # possible: keel holds no buffer of the caller's bytearray
        await d.release(held)
        await asyncio.wait_for(task, 30)
        assert await rows_of(d, t) == [(1, "s", {"k": [1, 2]}, b"abc")]
    finally:
        await d.execute(f"DROP TABLE {t}")


async def test_copy_waiting_for_a_connection_loads_the_records_as_they_were(make_db, types):
    d = make_db(pool=ONE)
    t = unique_name("snap")
    await table(d, types, t)
    try:
        held = await d.acquire()
        records = [[1, "one"], [2, "two"]]
        columns = ["i", "s"]
        task = asyncio.create_task(d.copy_records_to_table(t, records=records, columns=columns))
        await waiting(d)
        records[0][0] = 10
        records.append([3, "three"])
        columns.reverse()
        await d.release(held)
        assert await asyncio.wait_for(task, 30) == 2
        assert await rows_of(d, t) == [(1, "one", None, None), (2, "two", None, None)]
    finally:
        await d.execute(f"DROP TABLE {t}")


async def test_an_operation_queued_behind_a_cancelled_one_runs_with_its_arguments_as_they_were(
        make_db, engine, types):
    d = make_db(pool=ONE)
    t = unique_name("snap")
    await table(d, types, t)
    try:
        async with d.connection() as conn:
            slow = asyncio.create_task(conn.fetchval(SLOW_SQL[engine]))
            await asyncio.sleep(0.3)
            slow.cancel()
            # The cancellation reaches the statement on this turn of the loop; its end, which
            # needs the server, comes on a later one: the batch waits for it on the connection.
            await asyncio.sleep(0)
            rows = [[1, "one"], [2, "two"]]
            batch = asyncio.create_task(
                conn.executemany(f"INSERT INTO {t} (i, s) VALUES ($1, $2)", rows))
            await asyncio.sleep(0)
            rows[0][1] = "changed"
            rows.clear()
            with pytest.raises(asyncio.CancelledError):
                await slow
            await asyncio.wait_for(batch, 30)
            assert await rows_of(conn, t) == [(1, "one", None, None), (2, "two", None, None)]
    finally:
        await d.execute(f"DROP TABLE {t}")


# ---- values whose conversion runs code that changes what is being converted ----

class ClearingTz(datetime.tzinfo):
    """UTC, but asking for the offset empties a list (the rows being converted)."""

    def __init__(self, victim):
        self.victim = victim

    def utcoffset(self, dt):
        self.victim.clear()
        return datetime.timedelta(0)

    def dst(self, dt):
        return datetime.timedelta(0)

    def tzname(self, dt):
        return "UTC"


class SwappingDecimal(decimal.Decimal):
    """A Decimal whose str() replaces every other value of the row it is in."""

    row = None

    def __str__(self):
        for i, v in enumerate(self.row):
            if v is not self:
                self.row[i] = None
        return decimal.Decimal.__str__(self)


class ClearingUuid(uuid.UUID):
    """A UUID that empties a list (set on the class: UUIDs are immutable) when its int is read."""

    victim = None

    def __getattribute__(self, name):
        if name == "int" and type(self).victim is not None:
            type(self).victim.clear()
        return super().__getattribute__(name)


class ClearingRow:
    """A sequence whose length, asked for when it is read, empties the list of rows."""

    def __init__(self, values, victim):
        self.values, self.victim = values, victim

    def __len__(self):
        self.victim.clear()
        return len(self.values)

    def __getitem__(self, i):
        return self.values[i]


async def test_a_value_that_empties_the_rows_while_converted(make_db, types):
    d = make_db()
    t = unique_name("hostile")
    await d.execute(f"CREATE TABLE {t} (i {types['int']}, s {types['text']}, "
                    f"ts {types['timestamptz']})")
    try:
        rows = []
        when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=ClearingTz(rows))
        rows.extend([[1, fresh("one"), when], [2, fresh("two"), None], [3, fresh("three"), None]])
        await d.executemany(f"INSERT INTO {t} (i, s, ts) VALUES ($1, $2, $3)", rows)
        got = await d.fetch(f"SELECT i, s, ts FROM {t} ORDER BY i")
        assert [(r["i"], r["s"]) for r in got] == [(1, "one"), (2, "two"), (3, "three")]
        assert got[0]["ts"].replace(tzinfo=UTC) == when.replace(tzinfo=UTC)
    finally:
        await d.execute(f"DROP TABLE {t}")


async def test_a_value_that_drops_the_other_values_of_its_row_while_converted(make_db, types):
    d = make_db()
    t = unique_name("hostile")
    await d.execute(f"CREATE TABLE {t} (s {types['text']}, n {types['numeric']}, "
                    f"b {types['bytes']})")
    try:
        row = [fresh("before the decimal"), SwappingDecimal("12.5"), bytes(bytearray(b"raw"))]
        row[1].row = row
        await d.executemany(f"INSERT INTO {t} (s, n, b) VALUES ($1, $2, $3)", [row])
        r = await d.fetchrow(f"SELECT s, n, b FROM {t}")
        assert (r["s"], r["n"], bytes(r["b"])) == ("before the decimal", decimal.Decimal("12.5"),
                                                    b"raw")
        assert row[0] is None and row[2] is None  # its __str__ did run
    finally:
        await d.execute(f"DROP TABLE {t}")


async def test_a_uuid_and_a_sequence_that_empty_the_rows_while_converted(make_db, types):
    d = make_db()
    t = unique_name("hostile")
    await d.execute(f"CREATE TABLE {t} (i {types['int']}, s {types['text']}, u {types['uuid']})")
    try:
        rows = []
        u = ClearingUuid("12345678-1234-5678-1234-567812345678")
        ClearingUuid.victim = rows
        rows.extend([[1, fresh("one"), u], ClearingRow([2, fresh("two"), None], rows),
                     (3, fresh("three"), None)])
        await d.executemany(f"INSERT INTO {t} (i, s, u) VALUES ($1, $2, $3)", rows)
        got = [(r["i"], r["s"], r["u"]) for r in
               await d.fetch(f"SELECT i, s, u FROM {t} ORDER BY i")]
        stored = uuid.UUID("12345678-1234-5678-1234-567812345678")
        if types["uuid"].startswith("CHAR"):  # MySQL keeps a UUID as its text
            stored = str(stored)
        assert got == [(1, "one", stored), (2, "two", None), (3, "three", None)]
    finally:
        ClearingUuid.victim = None
        await d.execute(f"DROP TABLE {t}")


async def test_copy_of_records_emptied_while_converted(make_db, types):
    d = make_db()
    t = unique_name("hostile")
    await d.execute(f"CREATE TABLE {t} (i {types['int']}, s {types['text']}, "
                    f"ts {types['timestamptz']})")
    try:
        records = []
        when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=ClearingTz(records))
        records.extend([[1, fresh("one"), when], [2, fresh("two"), None]])
        assert await d.copy_records_to_table(t, records=records, columns=["i", "s", "ts"]) == 2
        got = await d.fetch(f"SELECT i, s FROM {t} ORDER BY i")
        assert [(r["i"], r["s"]) for r in got] == [(1, "one"), (2, "two")]
    finally:
        await d.execute(f"DROP TABLE {t}")


async def test_a_value_that_fails_while_converting_names_its_row_and_keeps_the_pool_usable(
        make_db, types):
    class Broken(datetime.tzinfo):
        def utcoffset(self, dt):
            raise RuntimeError("no offset today")

    d = make_db(pool=ONE)
    t = unique_name("hostile")
    await d.execute(f"CREATE TABLE {t} (i {types['int']}, ts {types['timestamptz']})")
    try:
        rows = [(1, None), (2, datetime.datetime(2024, 1, 1, tzinfo=Broken()))]
        with pytest.raises(keel.DataError) as info:
            await d.executemany(f"INSERT INTO {t} (i, ts) VALUES ($1, $2)", rows)
        assert "row 1" in str(info.value) and "utcoffset() failed" in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert await d.fetchval(f"SELECT count(*) FROM {t}") == 0
        assert d.pool_stats()["leased"] == 0
    finally:
        await d.execute(f"DROP TABLE {t}")


# ---- MongoDB documents ----

@pytest.fixture
async def mongo():
    if not MONGO_URL:
        pytest.skip("KEEL_TEST_MONGO_URL is empty")
    d = keel.Database({"default": "docs",
                       "databases": {"docs": {"url": MONGO_URL, "pool": ONE}}})
    name = unique_name("snap")
    yield d, d.collection(name)
    try:
        await d.collection(name).drop()
    finally:
        await asyncio.wait_for(d.close(), 30)


async def test_documents_waiting_for_a_connection_are_stored_as_they_were(mongo):
    d, coll = mongo
    await coll.insert_one({"_id": 0})
    held = await d.acquire()
    docs = [{"_id": 1, "tags": ["a"]}, {"_id": 2, "n": 1}]
    task = asyncio.create_task(coll.insert_many(docs))
    await waiting(d)
    docs[0]["tags"].append("b")
    docs[1]["n"] = 2
    docs.append({"_id": 3})
    await d.release(held)
    await asyncio.wait_for(task, 30)
    assert await coll.find({"_id": {"$gt": 0}}, sort=[("_id", 1)]).to_list() == [
        {"_id": 1, "tags": ["a"]}, {"_id": 2, "n": 1}]


async def test_a_document_value_that_empties_its_document_and_the_list_while_encoded(mongo):
    d, coll = mongo
    docs = []
    doc = {"_id": 1}
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=ClearingTz(docs))
    doc["when"] = when
    doc["after"] = fresh("kept")
    docs.extend([doc, {"_id": 2}])
    # Iterating the list stops where Python's own iteration of a list emptied under it stops:
    # after the document being encoded, which goes in whole.
    result = await coll.insert_many(docs)
    assert result.inserted_ids == [1]
    stored = await coll.find_one({"_id": 1})
    assert stored["after"] == "kept"
    assert stored["when"] == when.replace(tzinfo=UTC)
