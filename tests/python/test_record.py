# tests/python/test_record.py - keel.Record: tuple and mapping access on rows from every engine.
import asyncio
import gc
import sys
import weakref

import pytest

import keel

ROW_SQL = "SELECT 1 AS id, 'x' AS name, NULL AS missing"


async def test_record_index_and_key_access(db):
    r = await db.fetchrow(ROW_SQL)
    assert isinstance(r, keel.Record)
    assert r[0] == 1 and r[1] == "x" and r[2] is None
    assert r[-1] is None and r[-3] == 1
    assert r["id"] == 1 and r["name"] == "x" and r["missing"] is None
    assert r.get("name") == "x"
    assert r.get("nope") is None
    assert r.get("nope", 5) == 5
    assert r.get("missing", 5) is None


async def test_record_mapping_protocol(db):
    r = await db.fetchrow(ROW_SQL)
    assert dict(r) == {"id": 1, "name": "x", "missing": None}
    assert list(r.keys()) == ["id", "name", "missing"]
    assert list(r.values()) == [1, "x", None]
    assert list(r.items()) == [("id", 1), ("name", "x"), ("missing", None)]
    assert len(r) == 3


async def test_record_iterates_values_like_a_tuple(db):
    r = await db.fetchrow(ROW_SQL)
    assert list(r) == [1, "x", None]
    assert tuple(r) == (1, "x", None)
    a, b, c = r
    assert (a, b, c) == (1, "x", None)


async def test_record_errors(db):
    r = await db.fetchrow(ROW_SQL)
    with pytest.raises(KeyError) as ei:
        r["nope"]
    assert "nope" in str(ei.value)
    with pytest.raises(IndexError):
        r[3]
    with pytest.raises(IndexError):
        r[-4]


async def test_record_repr(db):
    r = await db.fetchrow(ROW_SQL)
    assert repr(r) == "<Record id=1 name='x' missing=None>"
    r2 = await db.fetchrow("SELECT 'it''s' AS q")
    assert repr(r2) == "<Record q=\"it's\">"


async def test_record_equality(db):
    r1 = await db.fetchrow(ROW_SQL)
    r2 = await db.fetchrow(ROW_SQL)
    r3 = await db.fetchrow("SELECT 2 AS id, 'x' AS name, NULL AS missing")
    assert r1 == r2
    assert not (r1 != r2)
    assert r1 != r3


async def test_records_of_one_result_are_independent(db):
    rows = await db.fetch("SELECT 1 AS n, 'a' AS s UNION ALL SELECT 2, 'b' ORDER BY 1")
    assert [dict(r) for r in rows] == [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}]
    first = rows[0]
    del rows
    assert first["s"] == "a" and list(first.keys()) == ["n", "s"]


async def test_record_with_many_columns(db):
    cols = ", ".join(f"{i} AS c{i}" for i in range(100))
    r = await db.fetchrow(f"SELECT {cols}")
    assert len(r) == 100
    assert r["c99"] == 99 and r[50] == 50
    assert list(r.keys())[-1] == "c99"


async def test_reference_cycles_through_records_are_collected(db, new_table, types):
    class Holder:
        pass

    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']}, doc {types['json']})")
    await db.execute(f"INSERT INTO {t} (id, doc) VALUES ($1, $2)", 1, {"a": [1]})
    # A row whose JSON value is made to refer back to it forms a cycle the collector frees
    # (rows of plain values are left out of the collector's work; these must not be).
    row = await db.fetchrow(f"SELECT id, doc FROM {t}")
    assert row["doc"] == {"a": [1]}
    holder = Holder()
    holder.row = row
    row["doc"]["a"].append(holder)
    gone = weakref.ref(holder)
    del row, holder
    # The event loop may hold the finished future (and its result) until its next rounds.
    await db.fetchval("SELECT 1")
    await asyncio.sleep(0)
    gc.collect()
    assert gone() is None


async def test_deeply_nested_records_release_their_type_once(db):
    # Records inside containers nested deeper than CPython's trashcan limit (50 levels) are
    # deallocated in two steps: the first call is deferred, the second frees. Each record holds
    # one reference to its heap type, and freeing N records must drop exactly N of them; an
    # extra drop per deferred record ends with the type freed while the module still uses it.
    n = 500
    rows = await db.fetch(
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < $1) "
        "SELECT n FROM c", n)
    assert len(rows) == n
    record_type = type(rows[0])
    assert record_type is keel.Record
    # Popping leaves the chain the records' only owner (the finished future keeps `rows`).
    chain = None
    while rows:
        chain = [chain, rows.pop()]
    before = sys.getrefcount(record_type)
    del chain
    assert sys.getrefcount(record_type) == before - n
    # The type is intact: new records of it work.
    assert [tuple(r) for r in await db.fetch("SELECT 1 AS a UNION ALL SELECT 2")] == [(1,), (2,)]
