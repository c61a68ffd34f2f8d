# tests/python/test_mongo_config.py - MongoDB databases given by parts (host lists, IPv6, socket paths), and commands keel passes through as written.
"""MongoDB configured from host/port/user keys rather than a URL, and commands with fields keel
would otherwise set itself.

A user relies on a bad host list or a password without a user being a ConfigError naming the
key, on a host keel cannot reach being a ConnectError naming where it tried (an IPv6 address
bracketed, a socket path as written), never a hang; and on a command's own comment and an
aggregation whose last stage writes ($out) doing what they do with any MongoDB driver.
"""
import os
import re

import pytest

import keel
from conftest import unique_name

MONGO_URL = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")

pytestmark = pytest.mark.skipif(not MONGO_URL, reason="KEEL_TEST_MONGO_URL is empty")

# Fail fast instead of after libmongoc's default 30 s of server selection.
FAST = {"serverSelectionTimeoutMS": "300", "connectTimeoutMS": "300"}


def parts(**entry):
    entry.setdefault("engine", "mongodb")
    entry.setdefault("database", "keel_test")
    return {"databases": {"m": entry}}


@pytest.mark.parametrize("entry, message", [
    ({"host": "db 1"}, "databases.m.host: a MongoDB host list holds names, addresses and ports "
                       "separated by commas"),
    ({"host": "h1/x"}, "databases.m.host: a MongoDB host list"),
    ({"host": "h1@h2"}, "databases.m.host: a MongoDB host list"),
    ({"host": "127.0.0.1", "password": "s3cret"},
     "databases.m.password: MongoDB needs a user name with a password"),
])
def test_bad_parts_are_a_config_error_naming_the_key(entry, message):
    # Checked with the configuration, when the Database is made: nothing is started.
    with pytest.raises(keel.ConfigError) as e:
        keel.Database(parts(**entry))
    assert str(e.value).startswith(message), str(e.value)
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize("entry, where", [
    ({"host": "::1", "port": 1}, "[::1]:1"),
    ({"host": "/tmp/keel-test-no-such-mongodb.sock"}, "/tmp/keel-test-no-such-mongodb.sock"),
])
async def test_an_unreachable_host_is_a_connect_error_naming_it(entry, where):
    db = keel.Database(parts(options=FAST, **entry))
    try:
        expected = "cannot connect to MongoDB at " + re.escape(where)
        with pytest.raises(keel.ConnectError, match=expected):
            await db.start()
            await db.command(None, {"ping": 1})
    finally:
        await db.close()


@pytest.fixture
async def mongo():
    db = keel.Database(MONGO_URL)
    await db.start()
    yield db
    await db.close()


async def test_a_commands_own_comment_is_kept(mongo):
    coll = mongo.collection(unique_name("comment"))
    try:
        await coll.insert_one({"_id": 1})
        reply = await mongo.command(None, {"find": coll.name, "filter": {}, "comment": "mine"})
        assert reply["cursor"]["firstBatch"] == [{"_id": 1}]
    finally:
        await coll.drop()


async def test_an_aggregation_ending_in_out_writes_its_documents(mongo):
    src = mongo.collection(unique_name("src"))
    dst = mongo.collection(unique_name("dst"))
    try:
        await src.insert_many([{"_id": i, "n": i} for i in range(5)])
        got = await src.aggregate([{"$match": {"n": {"$gte": 2}}}, {"$out": dst.name}]).to_list()
        assert got == []
        assert await dst.count_documents({}) == 3
        assert [d["_id"] async for d in dst.find({}, sort=[("_id", 1)])] == [2, 3, 4]
    finally:
        await src.drop()
        await dst.drop()


async def test_a_command_names_a_bad_database_name(mongo):
    async with mongo.connection() as conn:
        for target in (mongo, conn):
            with pytest.raises(TypeError, match="dbname must be a str or None, not int"):
                await target.command(5, {"ping": 1})
            for name in ("", "a\0b"):
                with pytest.raises(keel.ProgrammingError,
                                   match="dbname must be a non-empty name without NUL characters"):
                    await target.command(name, {"ping": 1})
        assert (await conn.command(None, {"ping": 1}))["ok"] == 1


async def test_a_seed_list_that_does_not_resolve_is_a_connect_error_naming_it():
    # mongodb+srv:// looks its hosts up in DNS (.invalid never resolves, RFC 6761).
    db = keel.Database("mongodb+srv://keel:s3cret@cluster0.keel-no-such.invalid/app"
                       "?serverSelectionTimeoutMS=500")
    try:
        with pytest.raises(keel.ConnectError) as e:
            await db.start()
            await db.command(None, {"ping": 1})
    finally:
        await db.close()
    assert "cannot connect to MongoDB at cluster0.keel-no-such.invalid (DNS SRV)" in str(e.value)
    assert "s3cret" not in str(e.value)
