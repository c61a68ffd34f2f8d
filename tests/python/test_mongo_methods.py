# tests/python/test_mongo_methods.py - the pymongo methods of collections: bulk_write, distinct, find_one_and_*, indexes, collections, chaining, session=, watch.
"""pymongo's collection methods on keel, against the server at KEEL_TEST_MONGO_URL (SecantusDB).

Each method has its happy path, its bad input (a clear error, the pool still serving) and its
raw_result where it has one. Collections have unique names and are dropped after each test.
pymongo's own operation classes are checked when pymongo is installed (SecantusDB brings it).
"""
import asyncio
import os
import sys

import pytest

import keel
from conftest import unique_name, wait_until

MONGO_URL = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")


@pytest.fixture
async def mongo_db(tmp_path):
    d = keel.Database({"default": "docs", "databases": {
        "docs": {"url": MONGO_URL},
        "other": {"url": MONGO_URL},
        "local": {"url": "sqlite:///" + str(tmp_path / "local.db")}}})
    await d.start()
    try:
        await asyncio.wait_for(d.ping("docs"), 30)
    except keel.Error as exc:
        pytest.fail(f"no MongoDB server at {MONGO_URL} (start one with scripts/mongo-server): {exc}")
    yield d
    await asyncio.wait_for(d.close(), 30)


@pytest.fixture
async def new_coll(mongo_db):
    made = []

    def make(prefix="m"):
        c = mongo_db.collection(unique_name(prefix))
        made.append(c)
        return c

    yield make
    for c in made:
        await c.drop()


@pytest.fixture
def coll(new_coll):
    return new_coll()


def pool_whole(db):
    return db.pool_stats("docs")["leased"] == 0


def import_pymongo():
    """pymongo, for its operation, IndexModel and Collation classes (skipped without it), kept
    from loading its C extension _cmessage: its module init leaks a few strings, which
    LeakSanitizer reports at exit under make test-python-asan. Its pure-Python fallback is
    all these classes need."""
    sys.modules.setdefault("pymongo._cmessage", None)
    return pytest.importorskip("pymongo")


# ---- raw_result ----

async def test_write_results_carry_the_servers_reply(mongo_db, coll):
    r = await coll.insert_one({"_id": 1, "a": 1})
    assert r.raw_result["n"] == 1 and r.raw_result["ok"] == 1.0
    r = await coll.insert_many([{"_id": 2}, {"_id": 3}])
    assert r.raw_result["n"] == 2 and r.inserted_ids == [2, 3]
    r = await coll.update_many({}, {"$set": {"b": 1}})
    assert (r.matched_count, r.modified_count) == (3, 3)
    assert r.raw_result["n"] == 3 and r.raw_result["nModified"] == 3
    assert r.raw_result["updatedExisting"] is True and not r.did_upsert
    # pymongo's shape: upserted is the _id itself, updatedExisting says whether one matched.
    r = await coll.update_one({"_id": 9}, {"$set": {"b": 1}}, upsert=True)
    assert r.upserted_id == 9 and r.raw_result["upserted"] == 9 and r.did_upsert
    assert r.raw_result["updatedExisting"] is False and r.raw_result["n"] == 1
    r = await coll.replace_one({"_id": 9}, {"c": 1})
    assert r.raw_result["nModified"] == 1 and r.raw_result["updatedExisting"] is True
    assert "upserted" not in r.raw_result and not r.did_upsert
    r = await coll.update_one({"_id": 99}, {"$set": {"b": 1}})
    assert r.raw_result["updatedExisting"] is False and not r.did_upsert
    r = await coll.replace_one({"_id": 10}, {"c": 2}, upsert=True)
    assert r.did_upsert and r.raw_result["upserted"] == 10 and r.matched_count == 0
    r = await coll.delete_many({"b": 1})
    assert r.deleted_count == 3 and r.raw_result["n"] == 3
    # raw_result stays out of repr and of equality.
    assert "raw_result" not in repr(r)
    assert r == keel.DeleteResult(3, True, {"anything": 1})
    # insert_many sent as several commands: n summed, each reply kept.
    big = "x" * (2 * 1024 * 1024)
    r = await coll.insert_many([{"big": big} for _ in range(10)])
    assert r.raw_result["n"] == 10 and len(r.raw_result["replies"]) == 2
    assert sum(reply["n"] for reply in r.raw_result["replies"]) == 10


# ---- distinct ----

async def test_distinct(mongo_db, coll):
    await coll.insert_many([{"k": 1, "t": ["a", "b"], "s": {"x": 1}}, {"k": 2, "t": ["b"]},
                            {"k": 2, "s": {"x": 2}}, {"k": None}])
    assert sorted((await coll.distinct("k")), key=repr) == sorted([1, 2, None], key=repr)
    assert sorted(await coll.distinct("t")) == ["a", "b"]              # array elements
    assert sorted(await coll.distinct("s.x")) == [1, 2]                # dotted paths
    assert await coll.distinct("k", {"t": "a"}) == [1]
    assert await coll.distinct("nowhere") == []
    assert await mongo_db.collection(unique_name("missing")).distinct("k") == []

    with pytest.raises(TypeError, match="key must be a field name"):
        await coll.distinct(5)
    with pytest.raises(TypeError, match="filter must be a dict"):
        await coll.distinct("k", ["k"])
    with pytest.raises(keel.ProgrammingError, match="bogus"):
        await coll.distinct("k", {"k": {"$bogus": 1}})
    assert pool_whole(mongo_db) and await coll.distinct("k", {"k": 1}) == [1]


# ---- find_one_and_* ----

async def test_find_one_and_update(mongo_db, coll):
    await coll.insert_many([{"_id": 1, "n": 5, "g": "a"}, {"_id": 2, "n": 7, "g": "a"}])
    before = await coll.find_one_and_update({"g": "a"}, {"$inc": {"n": 1}}, sort=[("n", -1)])
    assert before == {"_id": 2, "n": 7, "g": "a"}                        # BEFORE by default
    after = await coll.find_one_and_update({"g": "a"}, {"$inc": {"n": 1}}, sort=[("n", 1)],
                                           return_document=keel.ReturnDocument.AFTER,
                                           projection={"n": 1, "_id": 0})
    assert after == {"n": 6}
    assert await coll.find_one_and_update({"g": "zz"}, {"$set": {"n": 0}}) is None
    # upsert: BEFORE gives None (nothing was there), AFTER the inserted document.
    assert await coll.find_one_and_update({"_id": 3}, {"$set": {"n": 0}}, upsert=True) is None
    doc = await coll.find_one_and_update({"_id": 4}, {"$set": {"n": 0}}, upsert=True,
                                         return_document=keel.ReturnDocument.AFTER)
    assert doc == {"_id": 4, "n": 0}
    # An array filter and a pipeline update.
    await coll.insert_one({"_id": 5, "xs": [1, 5, 9]})
    doc = await coll.find_one_and_update({"_id": 5}, {"$set": {"xs.$[big]": 0}},
                                         array_filters=[{"big": {"$gt": 4}}],
                                         return_document=True)
    assert doc["xs"] == [1, 0, 0]
    doc = await coll.find_one_and_update({"_id": 5}, [{"$set": {"m": {"$size": "$xs"}}}],
                                         return_document=True, projection=["m"])
    assert doc == {"_id": 5, "m": 3}

    with pytest.raises(keel.ProgrammingError, match=r"\$ operators"):
        await coll.find_one_and_update({"_id": 1}, {"n": 1})
    with pytest.raises(TypeError, match="return_document must be ReturnDocument"):
        await coll.find_one_and_update({"_id": 1}, {"$set": {"n": 1}}, return_document="after")
    with pytest.raises(TypeError, match="upsert must be True or False"):
        await coll.find_one_and_update({"_id": 1}, {"$set": {"n": 1}}, upsert=1)
    with pytest.raises(keel.ProgrammingError, match="bogus"):
        await coll.find_one_and_update({"_id": 1}, {"$bogus": {"n": 1}})
    assert pool_whole(mongo_db) and (await coll.find_one({"_id": 1}))["n"] == 6


async def test_find_one_and_replace_and_delete(mongo_db, coll):
    await coll.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    old = await coll.find_one_and_replace({"n": {"$gt": 0}}, {"n": 10}, sort={"n": -1})
    assert old == {"_id": 2, "n": 2}
    new = await coll.find_one_and_replace({"_id": 1}, {"n": 11},
                                          return_document=keel.ReturnDocument.AFTER)
    assert new == {"_id": 1, "n": 11}
    new = await coll.find_one_and_replace({"_id": 3}, {"n": 3}, upsert=True,
                                          return_document=keel.ReturnDocument.AFTER)
    assert new == {"_id": 3, "n": 3}
    gone = await coll.find_one_and_delete({}, sort=[("n", -1)], projection={"_id": 1})
    assert gone == {"_id": 1}
    assert await coll.find_one_and_delete({"_id": 1}) is None
    assert sorted(d["_id"] for d in await coll.find().to_list()) == [2, 3]

    with pytest.raises(keel.ProgrammingError, match="replacement document cannot hold"):
        await coll.find_one_and_replace({"_id": 2}, {"$set": {"n": 1}})
    with pytest.raises(TypeError, match="replacement must be a dict"):
        await coll.find_one_and_replace({"_id": 2}, [("n", 1)])
    with pytest.raises(TypeError, match="sort must be"):
        await coll.find_one_and_delete({}, sort=[1, 2])
    with pytest.raises(keel.ProgrammingError, match="bogus"):
        await coll.find_one_and_delete({"n": {"$bogus": 1}})
    assert pool_whole(mongo_db) and await coll.count_documents({}) == 2


def test_return_document_is_pymongos():
    assert keel.ReturnDocument.BEFORE is False and keel.ReturnDocument.AFTER is True
    pymongo = import_pymongo()
    assert pymongo.ReturnDocument.AFTER == keel.ReturnDocument.AFTER
    assert pymongo.ReturnDocument.BEFORE == keel.ReturnDocument.BEFORE


# ---- bulk_write ----

async def test_bulk_write(mongo_db, coll):
    await coll.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}, {"_id": 3, "n": 3}])
    doc = {"n": 4}
    r = await coll.bulk_write([
        keel.InsertOne(doc),
        keel.UpdateOne({"_id": 1}, {"$inc": {"n": 10}}),
        keel.UpdateMany({"n": {"$lt": 4}}, {"$set": {"small": True}}),
        keel.ReplaceOne({"_id": 3}, {"n": 30}),
        keel.UpdateOne({"_id": 7}, {"$set": {"n": 7}}, upsert=True),
        keel.DeleteOne({"_id": 2}),
        keel.InsertOne({"_id": 8}),
        keel.DeleteMany({"n": {"$gte": 30}}),
        keel.ReplaceOne({"_id": 9}, {"n": 9}, upsert=True),
    ])
    assert isinstance(r, keel.BulkWriteResult) and r.acknowledged
    assert "_id" in doc                                      # added to the caller's dict
    assert (r.inserted_count, r.matched_count, r.modified_count, r.deleted_count,
            r.upserted_count) == (2, 4, 4, 2, 2)
    assert r.upserted_ids == {4: 7, 8: 9}
    assert r.raw_result == r.bulk_api_result == {
        "writeErrors": [], "writeConcernErrors": [], "nInserted": 2, "nUpserted": 2,
        "nMatched": 4, "nModified": 4, "nRemoved": 2,
        "upserted": [{"index": 4, "_id": 7}, {"index": 8, "_id": 9}]}
    assert {d["_id"]: d.get("n") for d in await coll.find().to_list()} == {
        1: 11, doc["_id"]: 4, 7: 7, 8: None, 9: 9}

    # Unordered: everything else runs, then the first error is raised naming its request.
    with pytest.raises(keel.IntegrityError, match=r"bulk_write request 1: .*E11000") as info:
        await coll.bulk_write([keel.InsertOne({"_id": 20}), keel.InsertOne({"_id": 1}),
                               keel.DeleteOne({"_id": 8}), keel.InsertOne({"_id": 21})],
                              ordered=False)
    assert info.value.database == "docs" and info.value.engine == "mongodb"
    assert await coll.count_documents({"_id": {"$in": [20, 21, 8]}}) == 2     # 20, 21; 8 gone
    # Ordered: stops at the failing request.
    with pytest.raises(keel.IntegrityError, match=r"bulk_write request 2: .*E11000"):
        await coll.bulk_write([keel.DeleteOne({"_id": 20}), keel.InsertOne({"_id": 30}),
                               keel.InsertOne({"_id": 1}), keel.DeleteOne({"_id": 21})])
    assert await coll.count_documents({"_id": {"$in": [20, 21, 30]}}) == 2    # 21 kept


async def test_bulk_write_bad_input(mongo_db, coll):
    await coll.insert_one({"_id": 1})
    with pytest.raises(keel.ProgrammingError, match="at least one operation"):
        await coll.bulk_write([])
    with pytest.raises(TypeError, match="takes a list of write operations"):
        await coll.bulk_write(keel.InsertOne({"a": 1}))
    with pytest.raises(TypeError, match=r"request 1 is not a write operation .*: dict"):
        await coll.bulk_write([keel.InsertOne({"a": 1}), {"insertOne": {"a": 1}}])
    with pytest.raises(keel.ProgrammingError, match=r"request 0 \(UpdateOne\).*\$ operators"):
        await coll.bulk_write([keel.UpdateOne({}, {"a": 1})])
    with pytest.raises(keel.ProgrammingError, match=r"request 1 \(ReplaceOne\).*cannot hold"):
        await coll.bulk_write([keel.DeleteOne({}), keel.ReplaceOne({}, {"$set": {"a": 1}})])
    with pytest.raises(TypeError, match=r"request 0 \(DeleteMany\).*filter must be a dict"):
        await coll.bulk_write([keel.DeleteMany(None)])
    with pytest.raises(keel.DataError, match=r"request 0 \(InsertOne\).*bad"):
        await coll.bulk_write([keel.InsertOne({"bad": {1, 2}})])
    with pytest.raises(TypeError, match=r"request 0 \(UpdateMany\): upsert must be True or False"):
        await coll.bulk_write([keel.UpdateMany({}, {"$set": {"a": 1}}, upsert="yes")])
    with pytest.raises(TypeError, match="ordered must be True or False"):
        await coll.bulk_write([keel.DeleteOne({})], ordered="yes")
    # upsert=None is False, as pymongo's default.
    assert (await coll.bulk_write([keel.UpdateOne({"_id": 5}, {"$set": {"a": 0}},
                                                  upsert=None)])).upserted_count == 0
    # Nothing of a refused request list was sent.
    assert await coll.count_documents({}) == 1
    # A server error in a group of updates names the request.
    with pytest.raises(keel.ProgrammingError, match=r"bulk_write request 2: .*bogus"):
        await coll.bulk_write([keel.InsertOne({"_id": 2}), keel.UpdateOne({}, {"$set": {"a": 1}}),
                               keel.UpdateOne({}, {"$bogus": {"a": 1}})])
    assert pool_whole(mongo_db) and await coll.count_documents({"a": 1}) == 1


async def test_bulk_write_takes_pymongos_operations(mongo_db, coll):
    pymongo = import_pymongo()
    r = await coll.bulk_write([
        pymongo.InsertOne({"_id": 1, "n": 1}),
        pymongo.InsertOne({"_id": 2, "n": 2}),
        pymongo.UpdateOne({"_id": 1}, {"$set": {"n": 10}}),
        pymongo.UpdateMany({}, {"$inc": {"m": 1}}),
        pymongo.ReplaceOne({"_id": 3}, {"n": 3}, upsert=True),
        pymongo.DeleteOne({"_id": 2}),
        pymongo.DeleteMany({"n": 99}),
    ])
    assert (r.inserted_count, r.matched_count, r.modified_count, r.deleted_count,
            r.upserted_ids) == (2, 3, 3, 1, {4: 3})
    assert await coll.find(sort="_id").to_list() == [{"_id": 1, "n": 10, "m": 1},
                                                     {"_id": 3, "n": 3}]
    with pytest.raises(keel.ProgrammingError, match=r"request 0 \(UpdateMany\)"):
        await coll.bulk_write([pymongo.UpdateMany({}, {"n": 1})])


# ---- indexes ----

async def test_indexes(mongo_db, coll):
    await coll.insert_one({"a": 1, "b": 2})
    names = await coll.create_indexes([keel.IndexModel([("a", 1), ("b", -1)]),
                                       keel.IndexModel("b", name="by_b", unique=True)])
    assert names == ["a_1_b_-1", "by_b"]
    listed = await coll.list_indexes().to_list()
    assert [i["name"] for i in listed] == ["_id_", "a_1_b_-1", "by_b"]
    # Awaitable, as pymongo's async list_indexes.
    cursor = await coll.list_indexes()
    assert isinstance(cursor, keel.Cursor) and len([i async for i in cursor]) == 3
    info = await coll.index_information()
    assert info["_id_"]["key"] == [("_id", 1)]
    assert info["a_1_b_-1"]["key"] == [("a", 1), ("b", -1)]
    assert info["by_b"]["unique"] is True and info["by_b"]["key"] == [("b", 1)]
    await coll.drop_index("by_b")
    await coll.drop_index([("a", 1), ("b", -1)])          # by its keys
    assert list(await coll.index_information()) == ["_id_"]
    await coll.create_index("c")
    await coll.create_index([("d", -1)])
    await coll.drop_indexes()
    assert list(await coll.index_information()) == ["_id_"]
    # A collection that does not exist has no indexes (no error, as pymongo).
    missing = mongo_db.collection(unique_name("missing"))
    assert await missing.list_indexes().to_list() == [] and await missing.index_information() == {}

    with pytest.raises(keel.ProgrammingError, match=r"index not found.*nope|nope.*not found"):
        await coll.drop_index("nope")
    with pytest.raises(keel.ProgrammingError, match="drop_indexes"):
        await coll.drop_index("*")
    with pytest.raises(TypeError, match="index 1 is not an IndexModel"):
        await coll.create_indexes([keel.IndexModel("x"), {"key": {"y": 1}}])
    with pytest.raises(keel.ProgrammingError, match="at least one index"):
        await coll.create_indexes([])
    with pytest.raises(keel.ProgrammingError, match="at least one key"):
        keel.IndexModel([])
    with pytest.raises(TypeError, match="index name"):
        keel.IndexModel("x", name=5)
    await coll.insert_one({"a": 1, "b": 2})
    with pytest.raises(keel.IntegrityError, match="E11000"):
        await coll.create_indexes([keel.IndexModel("a", name="ua", unique=True)])
    assert pool_whole(mongo_db) and "ua" not in await coll.index_information()


async def test_create_indexes_takes_pymongos_index_model(coll):
    pymongo = import_pymongo()
    names = await coll.create_indexes([pymongo.IndexModel([("k", pymongo.DESCENDING)]),
                                       pymongo.IndexModel("j", name="jj", sparse=True)])
    assert names == ["k_-1", "jj"]
    info = await coll.index_information()
    assert info["k_-1"]["key"] == [("k", -1)] and info["jj"]["sparse"] is True


# ---- collections of a database ----

async def test_collections_of_a_database(mongo_db):
    name = unique_name("made")
    made = await mongo_db.create_collection(name)
    try:
        assert isinstance(made, keel.Collection) and made.name == name
        assert name in await mongo_db.list_collection_names()
        assert await mongo_db.list_collection_names(filter={"name": name}) == [name]
        assert await mongo_db.list_collection_names("other", filter={"name": name}) == [name]
        with pytest.raises(keel.ProgrammingError, match=f"collection '{name}' already exists"):
            await mongo_db.create_collection(name)
        # db["name"]: a collection of the default database; conn["name"] one of the connection.
        c = mongo_db[name]
        assert isinstance(c, keel.Collection) and c.database == "docs" and c.name == name
        await c.insert_one({"x": 1})
        async with mongo_db.connection() as conn:
            assert await conn[name].count_documents({}) == 1
            assert name in await conn.list_collection_names()
        # Options go to the create command as they are.
        capped = await mongo_db.create_collection(unique_name("capped"), capped=True,
                                                  size=4096)
        await capped.drop()
    finally:
        await made.drop()
    assert name not in await mongo_db.list_collection_names(filter={"name": name})

    with pytest.raises(TypeError, match="collection name must be a str"):
        mongo_db[5]
    with pytest.raises(TypeError, match="not iterable"):
        iter(mongo_db)
    with pytest.raises(TypeError, match="not iterable"):
        "users" in mongo_db
    async with mongo_db.connection() as conn:
        with pytest.raises(TypeError, match="not iterable"):
            list(conn)
    with pytest.raises(keel.ProgrammingError, match="invalid collection name"):
        await mongo_db.create_collection("")
    with pytest.raises(keel.NotSupportedError, match="'local' is a sqlite database"):
        await mongo_db.list_collection_names("local")
    with pytest.raises(keel.UnknownDatabaseError):
        await mongo_db.list_collection_names("nosuch")
    with pytest.raises(TypeError, match="filter must be a dict"):
        await mongo_db.list_collection_names(filter="x")
    with pytest.raises(TypeError, match="check_exists must be True or False"):
        await mongo_db.create_collection("x", check_exists="no")
    with pytest.raises(keel.DatabaseError):
        await mongo_db.create_collection(unique_name("bad"), check_exists=False, capped="big")
    assert pool_whole(mongo_db)


# ---- cursors: chaining and awaiting ----

async def test_find_chaining(mongo_db, coll):
    await coll.insert_many([{"_id": i, "g": i % 2} for i in range(10)])
    docs = await coll.find({"g": 0}).sort("_id", -1).skip(1).limit(2).to_list()
    assert [d["_id"] for d in docs] == [6, 4]
    docs = await coll.find().sort([("g", 1), ("_id", -1)]).limit(3).to_list()
    assert [d["_id"] for d in docs] == [8, 6, 4]
    assert [d["_id"] async for d in coll.find().sort({"_id": 1}).batch_size(3).skip(7)] == [7, 8, 9]
    assert [d["_id"] async for d in coll.find().sort("_id").limit(-2)] == [0, 1]
    await coll.create_index("g")
    assert len(await coll.find({"g": 1}).hint("g_1").to_list()) == 5
    assert len(await coll.find({"g": 1}).hint([("g", 1)]).to_list()) == 5
    # Later calls replace earlier ones; 0 removes the option.
    assert len(await coll.find().limit(2).limit(0).skip(3).skip(0).to_list()) == 10

    cursor = coll.find().sort("_id").limit(2)
    assert (await cursor.next())["_id"] == 0 and (await cursor.next())["_id"] == 1
    with pytest.raises(StopAsyncIteration):
        await cursor.next()
    cursor = coll.find().sort("_id")
    await cursor.__anext__()
    with pytest.raises(keel.InterfaceError, match="already been read"):
        cursor.limit(1)
    await cursor.aclose()
    with pytest.raises(keel.InterfaceError, match="applies to find"):
        coll.aggregate([]).sort("_id")
    with pytest.raises(TypeError, match="skip must be an int"):
        coll.find().skip("1")
    with pytest.raises(ValueError, match="skip must be >= 0"):
        coll.find().skip(-1)
    with pytest.raises(TypeError, match="limit must be an int"):
        coll.find().limit(1.5)
    with pytest.raises(ValueError, match="batch_size must be >= 0"):
        coll.find().batch_size(-1)
    with pytest.raises(TypeError, match="sort"):
        coll.find().sort(5, 1)
    with pytest.raises(keel.ProgrammingError, match="hint"):
        await coll.find().hint("no_such_index").to_list()
    assert pool_whole(mongo_db)


async def test_aggregate_is_awaitable(mongo_db, coll):
    await coll.insert_many([{"g": i % 3} for i in range(9)])
    pipeline = [{"$group": {"_id": "$g", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
    cursor = await coll.aggregate(pipeline)
    assert isinstance(cursor, keel.Cursor) and cursor.cursor_id is not None   # it ran
    assert [d async for d in cursor] == [{"_id": 0, "n": 3}, {"_id": 1, "n": 3}, {"_id": 2, "n": 3}]
    assert [d["n"] async for d in coll.aggregate(pipeline)] == [3, 3, 3]     # still iterable
    async with await coll.aggregate(pipeline, batch_size=1) as cursor:
        assert (await cursor.__anext__())["_id"] == 0 and cursor.alive
    assert not cursor.alive
    # Batches of one through getMore, awaited first.
    cursor = await coll.aggregate([{"$sort": {"_id": 1}}]).batch_size(2)
    assert len(await cursor.to_list()) == 9
    assert (await cursor) is cursor                            # awaiting again is harmless
    with pytest.raises(keel.ProgrammingError):
        await coll.aggregate([{"$nosuchstage": 1}])
    assert pool_whole(mongo_db)


# ---- session= ----

async def test_session_runs_operations_in_the_transaction(mongo_db, coll):
    other = mongo_db.collection(coll.name)
    await coll.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    async with mongo_db.transaction() as session:
        await coll.insert_one({"_id": 3}, session=session)
        await coll.update_one({"_id": 1}, {"$set": {"n": 10}}, session=session)
        await coll.bulk_write([keel.DeleteOne({"_id": 2})], session=session)
        assert await coll.find_one_and_update({"_id": 3}, {"$set": {"n": 3}},
                                              return_document=True, session=session) == {
            "_id": 3, "n": 3}
        # Inside: the transaction's view; outside it: the committed one.
        assert [d["_id"] async for d in coll.find(session=session).sort("_id")] == [1, 3]
        assert await coll.count_documents({}, session=session) == 2
        assert sorted(await coll.distinct("n", session=session)) == [3, 10]
        assert await other.count_documents({}) == 2
        assert [d["_id"] for d in await (await coll.aggregate([{"$sort": {"_id": 1}}],
                                                              session=session)).to_list()] == [1, 3]
    assert {d["_id"]: d["n"] for d in await coll.find().to_list()} == {1: 10, 3: 3}

    # A transaction that ends with an exception: every session= write is rolled back.
    with pytest.raises(RuntimeError):
        async with mongo_db.transaction() as session:
            await coll.insert_many([{"_id": 4}, {"_id": 5}], session=session)
            await coll.delete_many({}, session=session)
            await coll.find_one_and_delete({"_id": 4}, session=session)
            await coll.replace_one({"_id": 1}, {"n": 0}, upsert=True, session=session)
            raise RuntimeError("abort")
    assert {d["_id"]: d["n"] for d in await coll.find().to_list()} == {1: 10, 3: 3}
    # conn.transaction() and the Transaction object both work as a session.
    async with mongo_db.connection() as conn:
        txn = conn.transaction()
        with pytest.raises(ZeroDivisionError):
            async with txn:
                await coll.insert_one({"_id": 6}, session=txn)
                await coll.insert_one({"_id": 7}, session=conn)
                1 / 0
    assert await coll.count_documents({}) == 2
    assert pool_whole(mongo_db)


async def test_session_bad_input(mongo_db, coll):
    with pytest.raises(TypeError, match="session must be a keel.Connection .*not str"):
        await coll.insert_one({"a": 1}, session="s")
    with pytest.raises(TypeError, match="session must be a keel.Connection"):
        coll.find(session=object())
    async with mongo_db.connection("other") as conn:
        with pytest.raises(keel.ProgrammingError,
                           match="connection of database 'other', the collection belongs to "
                                 "database 'docs'"):
            await coll.insert_one({"a": 1}, session=conn)
    async with mongo_db.connection("local") as conn:
        with pytest.raises(keel.NotSupportedError, match="'local' is a sqlite database"):
            await coll.delete_many({}, session=conn)
    conn = await mongo_db.acquire()
    await mongo_db.release(conn)
    with pytest.raises(keel.InterfaceError, match="released"):
        await coll.insert_one({"a": 1}, session=conn)
    assert await coll.count_documents({}) == 0 and pool_whole(mongo_db)


# ---- watch ----

async def watch_or_skip(coll, **kwargs):
    """An opened change stream, or a skip naming the server's refusal."""
    stream = coll.watch(**kwargs)
    try:
        return await stream
    except keel.DatabaseError as exc:
        if "changeStream" in str(exc) or "replica set" in str(exc):
            pytest.skip(f"the server refuses change streams: {exc}")
        raise


async def next_change(stream, timeout=20):
    return await asyncio.wait_for(stream.__anext__(), timeout)


async def test_watch(mongo_db, coll):
    stream = await watch_or_skip(coll, max_await_time_ms=200)
    async with stream:
        assert stream.alive and stream.resume_token is not None
        assert await stream.try_next() is None      # nothing yet: one wait, then None
        await coll.insert_one({"_id": 1, "n": 1})
        await coll.update_one({"_id": 1}, {"$set": {"n": 2}})
        await coll.delete_one({"_id": 1})
        changes = [await next_change(stream) for _ in range(3)]
        assert [c["operationType"] for c in changes] == ["insert", "update", "delete"]
        assert changes[0]["fullDocument"] == {"_id": 1, "n": 1}
        assert changes[1]["updateDescription"]["updatedFields"] == {"n": 2}
        assert changes[2]["documentKey"] == {"_id": 1}
        assert stream.resume_token == changes[2]["_id"]
    assert not stream.alive and pool_whole(mongo_db)

    # async with opens the stream without an await first; next() is pymongo's name.
    async with coll.watch(max_await_time_ms=100) as stream:
        await coll.insert_one({"_id": 7})
        assert (await asyncio.wait_for(stream.next(), 20))["documentKey"] == {"_id": 7}

    # A pipeline after $changeStream, and full_document="updateLookup".
    async with await watch_or_skip(coll, pipeline=[{"$match": {"operationType": "update"}}],
                                   full_document="updateLookup", max_await_time_ms=200) as s:
        await coll.insert_one({"_id": 2, "n": 0})
        await coll.update_one({"_id": 2}, {"$inc": {"n": 5}})
        change = await next_change(s)
        assert change["operationType"] == "update" and change["fullDocument"] == {"_id": 2, "n": 5}


async def test_close_with_a_timeout_ends_a_change_stream_in_another_task(mongo_db):
    # A task waiting for changes holds its connection; close(timeout=) closes it anyway, and the
    # stream raises InterfaceError (not resumed: the database is gone). The collection is never
    # created (a stream does not create it), so nothing is left to drop.
    stream = await watch_or_skip(mongo_db.collection(unique_name("w")), max_await_time_ms=500)
    opened = asyncio.Event()

    async def consume():
        async with stream:
            opened.set()
            async for _ in stream:
                pass

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(opened.wait(), 10)
    await asyncio.sleep(0.2)  # the stream waits on the server (getMore)
    await asyncio.wait_for(mongo_db.close(timeout=0.2), 20)
    assert mongo_db.closed
    with pytest.raises(keel.InterfaceError, match="database 'docs' was closed"):
        await asyncio.wait_for(task, 10)


async def test_watch_resumes(mongo_db, coll):
    async with await watch_or_skip(coll, max_await_time_ms=200) as stream:
        await coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}])
        first = await next_change(stream)
        assert first["documentKey"] == {"_id": 1}
        token = stream.resume_token
    # resume_after: the changes after the token, none lost, none repeated.
    async with await watch_or_skip(coll, resume_after=token, max_await_time_ms=200) as stream:
        assert [(await next_change(stream))["documentKey"]["_id"] for _ in range(2)] == [2, 3]
    async with await watch_or_skip(coll, start_after=token, max_await_time_ms=200) as stream:
        assert (await next_change(stream))["documentKey"] == {"_id": 2}
    # start_at_operation_time: from a write's operationTime (raw_result), that write included.
    at = (await coll.insert_one({"_id": 10})).raw_result["operationTime"]
    await coll.insert_one({"_id": 11})
    assert isinstance(at, keel.Timestamp)
    async with await watch_or_skip(coll, start_at_operation_time=at,
                                   max_await_time_ms=200) as stream:
        assert [(await next_change(stream))["documentKey"]["_id"] for _ in range(2)] == [10, 11]

    # The server loses the cursor (killed from another connection): the stream resumes by
    # itself from its token.
    async with await watch_or_skip(coll, max_await_time_ms=200) as stream:
        await coll.insert_one({"_id": 4})
        assert (await next_change(stream))["documentKey"] == {"_id": 4}
        killed = stream._cursor.cursor_id
        reply = await mongo_db.command(None, {"killCursors": coll.name, "cursors": [killed]})
        assert reply["cursorsKilled"] == [killed]
        await coll.insert_one({"_id": 5})
        assert (await next_change(stream))["documentKey"] == {"_id": 5}
        assert stream._cursor.cursor_id != killed
    # The lost cursor's connection goes back once its (useless) kill has been tried.
    await wait_until(lambda: pool_whole(mongo_db), timeout=30)


async def test_watch_in_a_session_and_bad_input(mongo_db, coll):
    async with mongo_db.connection() as conn:
        async with await watch_or_skip(coll, session=conn, max_await_time_ms=200) as stream:
            await coll.insert_one({"_id": 1})
            assert (await next_change(stream))["documentKey"] == {"_id": 1}
        assert await conn[coll.name].count_documents({}) == 1      # conn still serves

    with pytest.raises(TypeError, match="pipeline must be a list"):
        coll.watch({"$match": {}})
    with pytest.raises(keel.ProgrammingError, match="resume_after or start_after, not both"):
        coll.watch(resume_after={"_data": "00"}, start_after={"_data": "00"})
    with pytest.raises(TypeError, match="max_await_time_ms must be an int"):
        coll.watch(max_await_time_ms=-1)
    with pytest.raises(TypeError, match="start_at_operation_time must be a keel.Timestamp"):
        coll.watch(start_at_operation_time=5)
    with pytest.raises(TypeError, match="fullDocument must be a str"):
        coll.watch(full_document=True)
    async with await watch_or_skip(coll, max_await_time_ms=10):    # the server has them
        pass
    with pytest.raises(keel.DatabaseError):
        await coll.watch(full_document="bogus")
    with pytest.raises(keel.DatabaseError):
        async for _ in coll.watch(resume_after={"_data": "not a token"}):
            pass
    assert pool_whole(mongo_db)


async def test_every_method_runs_on_the_session(tmp_path):
    """With a pool of one connection held as the session, an operation that leased another
    would wait for it and fail (PoolTimeout): each one passing shows it ran on the session."""
    d = keel.Database({"databases": {"default": {
        "url": MONGO_URL, "pool": {"min_size": 1, "max_size": 1, "acquire_timeout": 2}}}})
    async with d:
        c = d.collection(unique_name("s"))
        s = await d.acquire()
        try:
            await c.insert_one({"_id": 1, "a": 1}, session=s)
            await c.insert_many([{"_id": 2, "a": 2}, {"_id": 3, "a": 2}], session=s)
            assert len(await c.find(session=s).to_list()) == 3
            assert (await c.find_one({"_id": 1}, session=s))["a"] == 1
            assert len(await c.aggregate([], session=s).to_list()) == 3
            assert len(await (await c.aggregate([], session=s)).to_list()) == 3
            assert await c.count_documents({}, session=s) == 3
            assert await c.estimated_document_count(session=s) == 3
            assert sorted(await c.distinct("a", session=s)) == [1, 2]
            assert (await c.update_one({"_id": 1}, {"$set": {"b": 1}}, session=s)).modified_count == 1
            assert (await c.update_many({}, {"$set": {"c": 1}}, session=s)).modified_count == 3
            assert (await c.replace_one({"_id": 3}, {"a": 3}, session=s)).modified_count == 1
            assert (await c.find_one_and_update({"_id": 1}, {"$set": {"a": 0}}, session=s))["a"] == 1
            assert (await c.find_one_and_replace({"_id": 1}, {"a": 1}, session=s))["a"] == 0
            assert (await c.bulk_write([keel.InsertOne({"_id": 4})], session=s)).inserted_count == 1
            assert (await c.find_one_and_delete({"_id": 4}, session=s)) == {"_id": 4}
            assert (await c.delete_one({"_id": 3}, session=s)).deleted_count == 1
            assert await c.create_index("a", session=s) == "a_1"
            assert await c.create_indexes([keel.IndexModel("b")], session=s) == ["b_1"]
            assert len(await c.list_indexes(session=s).to_list()) == 3
            assert set(await c.index_information(session=s)) == {"_id_", "a_1", "b_1"}
            await c.drop_index("a_1", session=s)
            await c.drop_indexes(session=s)
            async with await watch_or_skip(c, session=s, max_await_time_ms=10):
                pass
            assert c.name in await d.list_collection_names(session=s)
            other = await d.create_collection(unique_name("s"), session=s)
            assert (await d.command(None, {"count": c.name}, session=s))["n"] == 2
            assert (await c.delete_many({}, session=s)).deleted_count == 2
            await other.drop(session=s)
            # Without session= the operation waits for the one connection, held here.
            with pytest.raises(keel.PoolTimeout):
                await c.count_documents({})
            await c.drop(session=s)
        finally:
            await d.release(s)
        # And without session= the one connection is leased and given back as usual.
        assert await c.count_documents({}) == 0


async def test_watch_ends_on_invalidate_and_can_be_cancelled(mongo_db, coll):
    # Cancelling the task waiting for a change kills the cursor and gives the connection back.
    stream = await watch_or_skip(coll, max_await_time_ms=100)
    task = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not stream.alive
    await wait_until(lambda: pool_whole(mongo_db), timeout=30)
    await stream.aclose()

    # Dropping the collection ends the stream: drop, then invalidate, then nothing more.
    async with await watch_or_skip(coll, max_await_time_ms=100) as stream:
        await coll.insert_one({"_id": 1})
        await coll.drop()
        kinds = [change["operationType"] async for change in stream]
        assert kinds == ["insert", "drop", "invalidate"]
        assert not stream.alive and await stream.try_next() is None
    assert pool_whole(mongo_db)


async def test_watch_a_whole_database(mongo_db, new_coll):
    a, b = new_coll("wa"), new_coll("wb")
    stream = mongo_db.watch([{"$match": {"ns.coll": {"$in": [a.name, b.name]}}}],
                            max_await_time_ms=200)
    try:
        await stream
    except keel.DatabaseError as exc:
        pytest.skip(f"the server refuses database change streams: {exc}")
    async with stream:
        await a.insert_one({"_id": 1})
        await b.insert_one({"_id": 2})
        changes = [await next_change(stream) for _ in range(2)]
        assert [(c["ns"]["coll"], c["documentKey"]["_id"]) for c in changes] == [
            (a.name, 1), (b.name, 2)]
        assert "database" in repr(stream)
    with pytest.raises(keel.NotSupportedError, match="'local' is a sqlite database"):
        mongo_db.watch(database="local")
    with pytest.raises(TypeError, match="pipeline must be a list"):
        mongo_db.watch("x")
    assert pool_whole(mongo_db)


async def test_hints_array_filters_and_collations(mongo_db, coll):
    await coll.insert_many([{"_id": 1, "name": "Ada", "xs": [1, 9]},
                            {"_id": 2, "name": "ada", "xs": [2, 8]}])
    await coll.create_index("name")
    r = await coll.update_one({"_id": 1}, {"$set": {"xs.$[big]": 0}},
                              array_filters=[{"big": {"$gt": 5}}], hint="_id_")
    assert r.modified_count == 1 and (await coll.find_one(1))["xs"] == [1, 0]
    assert (await coll.update_many({}, {"$set": {"h": 1}}, hint=[("name", 1)])).modified_count == 2
    assert (await coll.replace_one({"_id": 2}, {"name": "ada"}, hint={"_id": 1})).matched_count == 1
    doc = await coll.find_one_and_update({"_id": 2}, {"$set": {"t": 1}}, hint="_id_",
                                         return_document=keel.ReturnDocument.AFTER)
    assert doc == {"_id": 2, "name": "ada", "t": 1}
    r = await coll.bulk_write([
        keel.UpdateMany({"name": "ada"}, {"$set": {"ci": True}},
                        collation={"locale": "en", "strength": 2}),        # Ada and ada
        keel.UpdateOne({"_id": 1}, {"$set": {"xs.$[small]": 5}}, array_filters=[{"small": 1}],
                       hint="_id_"),
        keel.DeleteOne({"name": "ADA"}, collation={"locale": "en", "strength": 2}, hint="name_1"),
    ])
    assert (r.matched_count, r.modified_count, r.deleted_count) == (3, 3, 1)
    assert await coll.count_documents({}) == 1
    assert (await coll.delete_many({}, hint="_id_")).deleted_count == 1
    assert await coll.find_one_and_delete({}, hint="_id_") is None

    with pytest.raises(TypeError, match="array_filters must be a list"):
        await coll.update_one({}, {"$set": {"a": 1}}, array_filters={"x": 1})
    with pytest.raises(keel.DatabaseError, match="hint"):
        await coll.update_one({}, {"$set": {"a": 1}}, hint="no_such_index")
    with pytest.raises(keel.ProgrammingError, match="at least one key"):
        await coll.delete_one({}, hint=[])
    assert pool_whole(mongo_db)


async def test_large_bulk_writes_are_split(mongo_db, coll):
    big = "x" * (3 * 1024 * 1024)
    r = await coll.bulk_write([keel.InsertOne({"_id": i, "big": big}) for i in range(8)]
                              + [keel.DeleteOne({"_id": 0})])
    assert (r.inserted_count, r.deleted_count) == (8, 1)
    assert await coll.count_documents({}) == 7


async def test_connection_collections_and_change_stream_checks(mongo_db, coll):
    async with mongo_db.connection() as conn:
        made = await conn.create_collection(unique_name("conn"))
        try:
            assert made.name in await conn.list_collection_names(filter={"name": made.name})
            await made.insert_one({"_id": 1})            # on conn
            assert await conn[made.name].count_documents({}) == 1
        finally:
            await made.drop()
    # A pipeline that removes the resume token (_id) is refused, by keel or by the server.
    async with await watch_or_skip(coll, pipeline=[{"$project": {"_id": 0}}],
                                   max_await_time_ms=100) as stream:
        await coll.insert_one({"_id": 1})
        with pytest.raises(keel.DatabaseError, match="resume token"):
            await next_change(stream)
        assert not stream.alive
    # A server error on getMore kills the cursor, then gives its connection back.
    await wait_until(lambda: pool_whole(mongo_db), timeout=30)


async def test_insert_many_errors_name_the_document(mongo_db, coll):
    await coll.insert_one({"_id": "dup"})
    big = "x" * (3 * 1024 * 1024)
    docs = [{"_id": i, "big": big} for i in range(7)] + [{"_id": "dup"}, {"_id": 8}]
    # Seven 3 MiB documents fill more than one command: the duplicate is the second one's.
    with pytest.raises(keel.IntegrityError, match=r"^insert_many document 7: .*E11000") as info:
        await coll.insert_many(docs)
    assert info.value.database == "docs" and info.value.code == "KEEL_ERR_INTEGRITY"
    assert await coll.count_documents({}) == 8                      # 0-6 and the first dup
    await coll.delete_many({"_id": {"$ne": "dup"}})
    with pytest.raises(keel.IntegrityError, match=r"^insert_many document 7: .*E11000"):
        await coll.insert_many([{"_id": i, "big": big} for i in range(7)]
                               + [{"_id": "dup"}, {"_id": 8}], ordered=False)
    assert await coll.count_documents({}) == 9                      # all but the duplicate
    assert pool_whole(mongo_db)


async def test_collation_on_every_method_that_compares(mongo_db, coll):
    ci = {"locale": "en", "strength": 2}                              # case-insensitive
    await coll.insert_many([{"_id": 1, "name": "Ada"}, {"_id": 2, "name": "ada"},
                            {"_id": 3, "name": "Bob"}, {"_id": 4, "name": "Cy"}])
    await coll.create_index("name")
    assert len(await coll.find({"name": "ADA"}).to_list()) == 0
    assert len(await coll.find({"name": "ADA"}, collation=ci).to_list()) == 2
    assert len(await coll.find({"name": "ADA"}).collation(ci).sort("_id").to_list()) == 2
    assert (await coll.find_one({"name": "BOB"}, collation=ci))["_id"] == 3
    assert await coll.count_documents({"name": "ada"}, collation=ci) == 2
    assert await coll.count_documents({"name": "ada"}, hint="name_1") == 1
    assert len(await coll.distinct("name", {"name": "ADA"}, collation=ci)) == 1
    assert len(await coll.aggregate([{"$match": {"name": "ADA"}}], collation=ci).to_list()) == 2
    assert len(await coll.aggregate([{"$match": {"name": "Ada"}}], hint="name_1").to_list()) == 1
    r = await coll.update_many({"name": "ADA"}, {"$set": {"a": 1}}, collation=ci)
    assert r.matched_count == 2
    assert (await coll.update_one({"name": "BOB"}, {"$set": {"b": 1}}, collation=ci)).matched_count == 1
    assert (await coll.replace_one({"name": "CY"}, {"name": "Cy", "c": 1},
                                   collation=ci)).matched_count == 1
    doc = await coll.find_one_and_update({"name": "bob"}, {"$set": {"b": 2}}, collation=ci,
                                         return_document=keel.ReturnDocument.AFTER)
    assert doc == {"_id": 3, "name": "Bob", "b": 2}
    doc = await coll.find_one_and_replace({"name": "cy"}, {"name": "Cy"}, collation=ci)
    assert doc == {"_id": 4, "name": "Cy", "c": 1}
    assert (await coll.find_one_and_delete({"name": "CY"}, collation=ci))["_id"] == 4
    assert (await coll.delete_one({"name": "BOB"}, collation=ci)).deleted_count == 1
    assert (await coll.delete_many({"name": "ADA"}, collation=ci)).deleted_count == 2

    for bad in ("en", 5):
        with pytest.raises(TypeError, match="collation must be a dict"):
            coll.find(collation=bad)
        with pytest.raises(TypeError, match="collation must be a dict"):
            await coll.delete_many({}, collation=bad)
    assert pool_whole(mongo_db)


async def test_pymongos_collation_object(coll):
    import_pymongo()
    from pymongo import collation
    ci = collation.Collation("en", strength=collation.CollationStrength.SECONDARY)
    await coll.insert_many([{"name": "Ada"}, {"name": "ada"}])
    assert await coll.count_documents({"name": "ADA"}, collation=ci) == 2
    r = await coll.bulk_write([keel.DeleteMany({"name": "ADA"}, collation=ci)])
    assert r.deleted_count == 2
