# tests/python/test_mongo_replset.py - the MongoDB engine against a replica-set URL, on a SecantusDB of the test's own.
"""The engine through libmongoc's replica-set topology (a URL with replicaSet=).

SecantusDB presents itself as the primary of a one-node replica set named "secantus" unless it
is started with --standalone. The shared server at KEEL_TEST_MONGO_URL is reached with a direct
URL everywhere else; here a private SecantusDB (in memory, on a free port, stopped after the
module) is reached by its set name, so that server discovery, primary selection, getMore on the
selected server, transactions and concurrent commands on many connections go through the
topology code. Being the test's own, its fail points (test commands are on) disturb no other
suite. scripts/mongo-server installs SecantusDB into the project's virtual environment.
"""
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time

import pytest

import keel
from conftest import unique_name

SET_NAME = "secantus"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def replset_port():
    # Looked up, not imported: the server's modules (numpy among them) stay out of this process.
    if importlib.util.find_spec("secantus") is None:
        pytest.fail("SecantusDB is not installed in this environment: run scripts/mongo-server")
    port = free_port()
    # The server is not keel's code: under the sanitized suite (make test-python-asan) it runs
    # without the preloaded ASan runtime and the extension's path, whose leak check at its exit
    # would report the server's own allocations.
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "PYTHONPATH", "PYTHONMALLOC")
           and not k.endswith("SAN_OPTIONS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
         "--storage-path", ":memory:", "--log-level", "WARNING", "--enable-test-commands"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while not answers(port):
            if proc.poll() is not None:
                pytest.fail(f"SecantusDB exited with {proc.returncode}: "
                            f"{proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail("SecantusDB did not listen within 60 s")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def url(port, set_name=SET_NAME, extra=""):
    return f"mongodb://127.0.0.1:{port}/keel_replset?replicaSet={set_name}{extra}"


def database(port, size=8, min_size=1, **kw):
    return keel.Database({"default": "rs", "databases": {"rs": {
        "url": url(port, **kw), "pool": {"min_size": min_size, "max_size": size}}}})


async def test_the_engine_works_through_the_replica_set_topology(replset_port):
    db = database(replset_port)
    await db.start()
    try:
        hello = await db.command("admin", {"hello": 1})
        assert hello["setName"] == SET_NAME and hello["isWritablePrimary"]
        coll = db.collection(unique_name("rs"))
        await coll.insert_many([{"_id": i, "v": i % 7} for i in range(200)])
        assert await coll.find_one({"_id": 42}) == {"_id": 42, "v": 0}
        # A cursor over several batches: its getMores go to the server that opened it.
        seen = [d["_id"] async for d in coll.find({}, sort="_id", batch_size=16)]
        assert seen == list(range(200))
        # Every connection of the pool busy at once, each on its own thread.
        found = await asyncio.gather(*(coll.find_one({"_id": i}) for i in range(64)))
        assert [d["_id"] for d in found] == list(range(64))
        assert db.pool_stats("rs")["size"] == 8
        async with db.connection("rs") as conn:
            c = conn.collection(coll.name)
            async with conn.transaction():
                await c.insert_one({"_id": 1000})
                await c.update_one({"_id": 0}, {"$set": {"v": -1}})
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await c.insert_one({"_id": 1001})
                    raise RuntimeError("abort")
        assert await coll.count_documents({}) == 201
        assert (await coll.find_one({"_id": 0}))["v"] == -1
        assert await coll.find_one({"_id": 1001}) is None
        await coll.drop()
    finally:
        await asyncio.wait_for(db.close(), 30)


async def test_a_replica_set_name_the_server_does_not_have_fails_the_connect(replset_port):
    # The seed answers as a member of another set: libmongoc's topology drops it, and no
    # server is left to select. The error names the host, within the connect timeout.
    db = database(replset_port, set_name="not_" + SET_NAME, extra="&connectTimeoutMS=2000")
    await db.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(keel.Error, match=f"127.0.0.1:{replset_port}"):
            await db.command("admin", {"ping": 1})
        assert time.monotonic() - t0 < 20
    finally:
        await asyncio.wait_for(db.close(), 30)


async def test_every_pooled_connection_runs_a_command_at_once_past_32(replset_port):
    # Each connection has a thread of its own: 40 finds that the server holds for 1.5 s each,
    # on a pool of 40, all run at once. When connections shared at most 32 threads per db, the
    # last 8 waited for the first 32 to end (3 s and more).
    app = unique_name("lanes")
    size, block_ms = 40, 1500
    db = database(replset_port, size=size, min_size=size, extra=f"&appName={app}")
    await db.start()
    try:
        coll = db.collection(unique_name("rs"))
        await coll.insert_one({"_id": 1})
        deadline = time.monotonic() + 60
        while db.pool_stats("rs")["size"] < size:
            assert time.monotonic() < deadline, "the pool did not open its 40 connections"
            await asyncio.sleep(0.05)
        await db.command("admin", {
            "configureFailPoint": "failCommand", "mode": {"times": size},
            "data": {"failCommands": ["find"], "blockConnection": True,
                     "blockTimeMS": block_ms, "appName": app}})
        try:
            t0 = time.monotonic()
            found = await asyncio.gather(*(coll.find_one({"_id": 1}) for _ in range(size)))
            took = time.monotonic() - t0
        finally:
            await db.command("admin", {"configureFailPoint": "failCommand", "mode": "off"})
        assert found == [{"_id": 1}] * size
        assert block_ms / 1000 <= took < 2 * block_ms / 1000, took
        await coll.drop()
    finally:
        await asyncio.wait_for(db.close(), 30)
