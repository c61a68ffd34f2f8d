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


# ---- Records into models: attribute access, pydantic, record_class=, into= -------------------

import dataclasses  # noqa: E402
from collections.abc import Mapping  # noqa: E402

import pydantic  # noqa: E402


class User(pydantic.BaseModel):
    id: int
    name: str
    missing: int | None = None


@dataclasses.dataclass
class UserRow:
    id: int
    name: str
    missing: object = None


class NamedRecord(keel.Record):
    """A record_class with a property and a method of its own."""

    @property
    def label(self):
        return f"{self.id}:{self.name}"

    def keys(self):  # overrides keel.Record.keys
        return ["overridden"]


async def test_record_attribute_access(db, engine):
    q = "`" if engine == "mysql" else '"'
    r = await db.fetchrow(f"SELECT 1 AS id, 'x' AS name, 2 AS {q}keys{q}, 3 AS _private")
    assert r.id == 1 and r.name == "x" and r._private == 3
    # A column never hides a method: keys() is still keys(); the column is r["keys"].
    assert r.keys() == ["id", "name", "keys", "_private"] and r["keys"] == 2
    assert callable(r.get) and callable(r.values) and callable(r.items)
    with pytest.raises(AttributeError, match="nope"):
        r.nope
    assert getattr(r, "nope", 7) == 7
    assert not hasattr(r, "__dict__")
    with pytest.raises(AttributeError):
        r.id = 2


async def test_pydantic_model_validate_reads_records(db):
    r = await db.fetchrow(ROW_SQL)
    assert isinstance(r, Mapping)
    assert User.model_validate(r) == User(id=1, name="x")
    assert User.model_validate(r, from_attributes=True) == User(id=1, name="x")
    # A row that does not fit is pydantic's ValidationError, naming the field.
    bad = await db.fetchrow("SELECT 'abc' AS id, 'x' AS name")
    with pytest.raises(pydantic.ValidationError, match="id"):
        User.model_validate(bad)


async def test_fetch_into_a_model_builds_models(db):
    rows = await db.fetch("SELECT 1 AS id, 'x' AS name UNION ALL SELECT 2, 'y' ORDER BY 1",
                          into=User)
    assert rows == [User(id=1, name="x"), User(id=2, name="y")]
    assert await db.fetchrow("SELECT 3 AS id, 'z' AS name", into=User) == User(id=3, name="z")
    assert await db.fetchrow("SELECT 3 AS id, 'z' AS name WHERE 1 = 0", into=User) is None
    assert await db.fetch("SELECT 3 AS id, 'z' AS name WHERE 1 = 0", into=User) == []
    assert await db.fetchrow(ROW_SQL, into=UserRow) == UserRow(1, "x")
    assert await db.fetchrow(ROW_SQL, into=dict) == {"id": 1, "name": "x", "missing": None}
    async with db.connection() as conn:
        assert await conn.fetch(ROW_SQL, into=UserRow) == [UserRow(1, "x")]
        assert await conn.fetchrow(ROW_SQL, into=User) == User(id=1, name="x")


async def test_fetch_into_many_rows_and_columns(db):
    cols = ", ".join(f"{i} AS c{i}" for i in range(40))
    rows = await db.fetch(" UNION ALL ".join([f"SELECT {cols}"] * 300), into=dict)
    assert len(rows) == 300 and rows[0] == {f"c{i}": i for i in range(40)}


async def test_fetch_into_errors_leave_the_connection_usable(db):
    async with db.connection() as conn:
        # A row the model refuses: pydantic's error, and the connection answers again.
        with pytest.raises(pydantic.ValidationError):
            await conn.fetch("SELECT 'abc' AS id, 'x' AS name", into=User)
        assert await conn.fetchval("SELECT 5") == 5
        # A column the class does not take.
        with pytest.raises(TypeError, match="extra"):
            await conn.fetchrow("SELECT 1 AS id, 'x' AS name, 2 AS extra", into=UserRow)
        # Two columns of one name cannot both be keyword arguments.
        with pytest.raises(keel.ProgrammingError, match="'id' appears twice"):
            await conn.fetch("SELECT 1 AS id, 2 AS id", into=dict)
        assert await conn.fetchval("SELECT 6") == 6
    with pytest.raises(TypeError, match="into= must be a class or callable"):
        await db.fetch(ROW_SQL, into=42)


async def test_record_class_makes_instances_of_the_subclass(db):
    rows = await db.fetch(ROW_SQL, record_class=NamedRecord)
    r = rows[0]
    assert type(r) is NamedRecord and isinstance(r, keel.Record)
    assert r.label == "1:x" and r.id == 1 and r["name"] == "x" and r[0] == 1
    assert r.keys() == ["overridden"]  # the subclass's own method wins
    assert r == (1, "x", None)
    r.note = "instances of a subclass have a __dict__"
    assert r.note.startswith("instances")
    async with db.connection() as conn:
        r2 = await conn.fetchrow(ROW_SQL, record_class=NamedRecord)
        assert type(r2) is NamedRecord and r2.label == "1:x"
    assert User.model_validate(r2, from_attributes=True) == User(id=1, name="x")
    ref = weakref.ref(type(r2))
    del r, r2, rows
    gc.collect()
    assert ref() is NamedRecord


async def test_record_class_refuses_what_is_not_a_record_subclass(db):
    for bad in (dict, User, 3, keel.Connection):
        with pytest.raises(TypeError, match="record_class must be a subclass of keel.Record"):
            await db.fetch(ROW_SQL, record_class=bad)
    with pytest.raises(TypeError, match="not both"):
        await db.fetchrow(ROW_SQL, record_class=NamedRecord, into=User)
    with pytest.raises(TypeError, match="cannot create"):
        NamedRecord()
    assert await db.fetchval("SELECT 1") == 1


async def test_prepare_with_record_class(db):
    async with db.connection() as conn:
        stmt = await conn.prepare("SELECT 1 AS id, 'x' AS name, $1 AS missing",
                                  record_class=NamedRecord)
        rows = await stmt.fetch(None)
        assert [type(r) for r in rows] == [NamedRecord] and rows[0].label == "1:x"
        row = await stmt.fetchrow(None)
        assert type(row) is NamedRecord and row == (1, "x", None)
        plain = await conn.prepare("SELECT 1 AS id")
        assert type(await plain.fetchrow()) is keel.Record
        with pytest.raises(TypeError, match="record_class must be a subclass of keel.Record"):
            await conn.prepare("SELECT 1", record_class=User)
        assert await conn.fetchval("SELECT 1") == 1
