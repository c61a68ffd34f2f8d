# tests/python/test_loop_stall.py - the event loop keeps turning while large results reach Python (issue 8, section 4).
"""No callback of keel's holds the asyncio loop long, whatever the size of a result.

A ticker task sleeps 1 ms at a time and records the gaps between its wake-ups while keel works:
100,000 small MongoDB documents streaming through a cursor (iterated, and to_list; aggregate's
cursors are the same), and fetch() of 1,000,000 PostgreSQL rows and 300,000 MySQL and SQLite
rows (and 3,000,000 PostgreSQL rows failing at the last, which are freed). The issue's bound is
that the longest gap stays under 50 ms; before results were handed over in slices, a cursor batch
of 100,000 documents was decoded into dicts in one completion (some 100 ms of CPU).

This is the suite's one timing assertion (doubled under AddressSanitizer, see BOUND), so it is
made robust against a loaded machine: only the gaps that overlap the work count, and with each
gap the ticker records the CPU time of the loop thread within it. A gap over the bound whose CPU
time is over it too was spent running code on the loop (that fails at once); one whose CPU time
is under it was spent waiting for a core that other processes held, and the measurement is
repeated once, then skipped as a machine too busy to tell. Each measurement prints its figures
(pytest -s shows them).

The sliced BSON decoding behind the MongoDB replies is checked against bson_decode directly,
and so are a cancel and a close that arrive while a reply is still being decoded.
"""
import asyncio
import gc
import os
import struct
import time
import weakref

import pytest

import keel
from conftest import MYSQL_URL, PG_URL, unique_name
from keel import _native

MONGO_URL = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")


def _sanitized():
    """True when AddressSanitizer is loaded (make test-python-asan preloads it)."""
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


# The bound. Under AddressSanitizer keel's C code runs several times slower (callbacks
# handing over PostgreSQL rows take up to 40 ms of CPU there) and so does the interpreter, whose
# every allocation goes through malloc: the bound is doubled, still far below what one
# undivided decoding of 100,000 documents takes there (some 450 ms of CPU).
BOUND = 0.100 if _sanitized() else 0.050
TICK = 0.001
NDOCS = 100_000
SQL_ROWS = {"postgresql": 1_000_000, "mysql": 300_000, "sqlite": 300_000}
MONGO_CONFIG = {"default": "docs", "databases": {"docs": {"url": MONGO_URL}}}


# ---- the ticker ----

async def _tick(gaps, stop):
    last_wall, last_cpu = time.perf_counter(), time.thread_time()
    while not stop:
        await asyncio.sleep(TICK)
        wall, cpu = time.perf_counter(), time.thread_time()
        gaps.append((last_wall, wall, cpu - last_cpu))
        last_wall, last_cpu = wall, cpu


async def longest_gap(work):
    """Awaits work() while the ticker runs: (its result, the longest gap overlapping it in
    seconds, the loop thread's CPU seconds within that gap). The result is returned, not
    dropped, so that freeing it is not counted as keel's."""
    # A full pass of Python's collector walks the whole heap of the process (pytest's included)
    # wherever an allocation happens to trigger it: that is the application's cost, not
    # keel's. Starting from a collected heap, keel's allocations alone do not trigger one
    # (what they allocate is not tracked by the collector, or only once complete).
    gc.collect()
    gaps, stop = [], []
    ticker = asyncio.ensure_future(_tick(gaps, stop))
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    result = await work()
    end = time.perf_counter()
    # Let the ticker record the gap in which the work ended.
    await asyncio.sleep(0.005)
    stop.append(True)
    await ticker
    wall, cpu = max(((b - a, c) for a, b, c in gaps if b > start and a < end),
                    default=(0.0, 0.0))
    return result, wall, cpu


async def check_bound(label, work, check_result):
    """Measures work() against BOUND: fails when the loop thread ran longer than that without
    letting the loop turn, retries once and then skips when only the machine's load did."""
    for attempt in (1, 2):
        result, wall, cpu = await longest_gap(work)
        check_result(result)
        del result
        print(f"\n{label}: longest gap between loop turns {wall * 1000:.1f} ms, "
              f"{cpu * 1000:.1f} ms of it CPU time of the loop thread (attempt {attempt})")
        if wall < BOUND:
            return
        assert cpu < BOUND, (
            f"{label}: the loop did not turn for {wall * 1000:.1f} ms, {cpu * 1000:.1f} ms of "
            f"which the loop thread was running (the bound is {BOUND * 1000:.0f} ms)")
    pytest.skip(f"{label}: the machine is too busy to measure: the loop waited "
                f"{wall * 1000:.1f} ms for a core ({cpu * 1000:.1f} ms running)")


# ---- MongoDB ----

def _document(i):
    return {"i": i, "name": f"user-{i}", "score": i * 0.5, "active": i % 2 == 0}


@pytest.fixture(scope="module")
def stall_collection():
    """A collection of NDOCS small documents, inserted once for the module (SecantusDB is slow
    to insert into), dropped at the end."""
    name = unique_name("stall")

    async def seed():
        db = keel.Database(MONGO_CONFIG)
        try:
            await asyncio.wait_for(db.ping("docs"), 30)
        except keel.Error as exc:
            pytest.fail(f"no MongoDB server at {MONGO_URL} (start one with scripts/mongo-server): "
                        f"{exc}")
        coll = db.collection(name)
        for first in range(0, NDOCS, 10_000):
            await coll.insert_many([_document(i) for i in range(first, first + 10_000)])
        await db.close()

    async def drop():
        db = keel.Database(MONGO_CONFIG)
        await db.collection(name).drop()
        await db.close()

    asyncio.run(seed())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def mongo(stall_collection):
    db = keel.Database(MONGO_CONFIG)
    await db.start()
    yield db
    await asyncio.wait_for(db.close(), 30)


def _all_documents(docs):
    assert len(docs) == NDOCS
    assert sorted(d["i"] for d in docs) == list(range(NDOCS))
    assert docs[0] == {"_id": docs[0]["_id"], **_document(docs[0]["i"])}


async def test_cursor_iteration_leaves_the_loop_turning(mongo, stall_collection):
    coll = mongo.collection(stall_collection)

    async def iterate():
        # Every document is kept, as an application would: freeing them is not keel's time.
        return [doc async for doc in coll.find({})]

    await check_bound("MongoDB: async for over 100,000 documents", iterate, _all_documents)


async def test_cursor_to_list_leaves_the_loop_turning(mongo, stall_collection):
    coll = mongo.collection(stall_collection)
    await check_bound("MongoDB: find().to_list() of 100,000 documents",
                      lambda: coll.find({}).to_list(), _all_documents)


# Documents in the reply of _find_many: enough for several slices of decoding.
NREPLY = 30_000


def _find_many(name):
    # One reply with NREPLY documents (limit spares the server the rest of the collection).
    return {"find": name, "limit": NREPLY, "batchSize": NREPLY}


async def _awaiting(op):
    return await op


async def _reply_being_decoded(send):
    """An op of send() (a command) whose reply has arrived and is being decoded (it takes well
    over one slice), and the task awaiting it. A loaded machine can hold the test back long
    enough for the whole decoding to pass unseen: then the command is sent again (each try's
    own error, if any, is the failure)."""
    for _ in range(5):
        op = send()
        task = asyncio.ensure_future(_awaiting(op))
        deadline = time.monotonic() + 60
        while not op._decoding and not task.done():
            assert time.monotonic() < deadline, "the reply never arrived"
            await asyncio.sleep(0.001)
        if op._decoding:
            return op, task
        task.result()
    pytest.fail("in 5 tries, every reply was decoded before the test saw it being decoded")


async def test_cancel_while_a_reply_is_decoded(mongo, stall_collection):
    op, task = await _reply_being_decoded(
        lambda: mongo._command(None, _find_many(stall_collection), None))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not op._decoding
    # The database goes on, and closes without waiting for the abandoned decoding.
    assert (await mongo.command(None, {"ping": 1}))["ok"] == 1
    await asyncio.wait_for(mongo.close(), 10)


async def test_cancel_while_a_reply_is_decoded_on_a_connection(mongo, stall_collection):
    async with mongo.connection() as conn:
        op, task = await _reply_being_decoded(
            lambda: conn._command(None, _find_many(stall_collection)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The connection is free for the next command right away.
        assert (await conn.command(None, {"ping": 1}))["ok"] == 1


async def test_close_waits_for_a_reply_being_decoded(mongo, stall_collection):
    op, task = await _reply_being_decoded(
        lambda: mongo._command(None, _find_many(stall_collection), None))
    await asyncio.wait_for(mongo.close(), 10)
    reply = await task
    docs = reply["cursor"]["firstBatch"]
    assert len(docs) == NREPLY
    assert all(d == {"_id": d["_id"], **_document(d["i"])} for d in docs)


# ---- the sliced decoding itself ----

def _docs(n, **extra):
    return [{"_id": _native.ObjectId(), "i": i, "s": "x" * (i % 7), **extra} for i in range(n)]


@pytest.mark.parametrize("doc", [
    # A cursor's batch (second level), and arrays at the first level, large and small.
    {"cursor": {"firstBatch": _docs(3000), "id": 0, "ns": "db.c"}, "ok": 1.0},
    {"values": list(range(20_000)), "small": [1, 2, 3], "after": "kept in order"},
    # A large array at the third level is decoded in place.
    {"a": {"b": {"c": _docs(2000)}}, "z": 1},
    # More large arrays than are deferred: the rest are decoded in place.
    {f"k{i}": list(range(3000)) for i in range(20)},
    # Nested arrays and empty ones inside a deferred array.
    {"cursor": {"nextBatch": [[i, [i, []], {"x": [i]}] for i in range(5000)]}},
    {},
])
@pytest.mark.parametrize("budget_us", [0, 50, 4000])
def test_sliced_decoding_equals_bson_decode(doc, budget_us):
    data = _native.bson_encode(doc)
    decoded, steps = _native._bson_decode_sliced(data, budget_us)
    assert decoded == _native.bson_decode(data) == doc
    assert list(decoded) == list(doc)
    if budget_us == 0 and len(data) > 100_000:
        assert steps > 1000  # one element per step


def _array_doc(key, elements):
    """A document {key: [elements...]} built by hand, elements given as (type, payload)."""
    body = b"".join(bytes([t]) + str(i).encode() + b"\0" + payload
                    for i, (t, payload) in enumerate(elements))
    array = struct.pack("<i", len(body) + 5) + body + b"\0"
    inner = b"\x04" + key.encode() + b"\0" + array
    return struct.pack("<i", len(inner) + 5) + inner + b"\0"


def _int32(v):
    return (0x10, struct.pack("<i", v))


def _string(s):
    b = s.encode()
    return (0x02, struct.pack("<i", len(b) + 1) + b + b"\0")


@pytest.mark.parametrize("bad, message", [
    ((0x02, struct.pack("<i", 1000) + b"ab\0"), "bad string length"),
    ((0x02, struct.pack("<i", 3) + b"\xff\xfe\0"), "not valid UTF-8"),
    ((0x0E, struct.pack("<i", 2) + b"a\0"), "unsupported BSON type 0x0E"),
])
@pytest.mark.parametrize("budget_us", [0, 4000])
def test_sliced_decoding_errors_name_the_element(bad, message, budget_us):
    # A bad element deep inside a deferred array fails like bson_decode, at the same key path.
    data = _array_doc("values", [_string("padding" * 3)] * 2000 + [bad] + [_int32(1)] * 10)
    with pytest.raises(keel.DataError) as plain:
        _native.bson_decode(data)
    with pytest.raises(keel.DataError) as sliced:
        _native._bson_decode_sliced(data, budget_us)
    assert message in str(sliced.value)
    assert "at 'values.2000'" in str(sliced.value)
    assert str(sliced.value) == str(plain.value)


def test_sliced_decoding_of_a_malformed_deferred_array():
    good = _array_doc("values", [_int32(i) for i in range(5000)])
    # The array's last byte is not its terminating NUL.
    bad = bytearray(good)
    bad[-2] = 1
    with pytest.raises(keel.DataError, match="not terminated by NUL at 'values'"):
        _native._bson_decode_sliced(bytes(bad), 0)
    # An element whose key runs to the end of the array.
    body = b"\x10" + b"k" * 20_000
    array = struct.pack("<i", len(body) + 5) + body + b"\0"
    inner = b"\x04values\0" + array
    data = struct.pack("<i", len(inner) + 5) + inner + b"\0"
    with pytest.raises(keel.DataError, match="unterminated key at 'values'"):
        _native._bson_decode_sliced(data, 0)
    with pytest.raises(keel.DataError, match="the document length does not match"):
        _native._bson_decode_sliced(good[:-1], 0)


# ---- letting go of what nobody reads ----

class _Item:
    __slots__ = ("__weakref__",)


async def test_let_go_frees_a_large_list_over_several_loop_iterations():
    # The test keeps its own reference to watch the list go (_let_go's callers drop theirs).
    n = 1_000_000
    items = [_Item() for _ in range(n)]
    refs = [weakref.ref(items[0]), weakref.ref(items[-1])]
    _native._let_go(items)
    assert len(items) == n  # nothing is freed inside the call
    await asyncio.sleep(0)
    # Emptied from its end, a budget per iteration of the loop: a million take several.
    assert 0 < len(items) < n
    assert refs[0]() is not None and refs[1]() is None
    iterations = 1
    while items:
        iterations += 1
        assert iterations < 10_000, "the list is never emptied"
        await asyncio.sleep(0)
    assert refs[0]() is None
    # Small lists go at once, and so does a list handed over outside a running loop.
    small = [_Item()]
    ref = weakref.ref(small[0])
    _native._let_go(small)
    del small
    assert ref() is None


def test_let_go_without_a_running_loop_frees_at_once():
    items = [_Item() for _ in range(10_000)]
    ref = weakref.ref(items[5000])
    _native._let_go(items)
    del items
    assert ref() is None


async def test_a_closed_cursor_lets_go_of_its_buffered_documents(mongo, stall_collection):
    cursor = mongo.collection(stall_collection).find({}, limit=5000, batch_size=5000)
    async for _ in cursor:
        break
    await cursor.aclose()
    assert not cursor.alive
    assert await cursor.to_list() == []


async def test_a_failed_fetch_lets_go_of_its_rows_over_several_turns():
    # The Records of a statement that fails at its last row (3,000,000 of them) were freed in
    # one go when the error came: some 80 ms of CPU.
    n = 3_000_000
    db = keel.Database(PG_URL)
    await db.start()
    try:
        sql = (f"SELECT CASE WHEN g < {n} THEN g ELSE 1 / (g - {n}) END "
               f"FROM generate_series(1, {n}) AS g")

        async def work():
            try:
                await db.fetch(sql)
            except keel.DataError as exc:
                return exc
            return None

        def check(exc):
            assert isinstance(exc, keel.DataError) and exc.sqlstate == "22012"

        await check_bound(f"postgresql: fetch() of {n:,} rows failing at the last",
                          work, check)
    finally:
        await asyncio.wait_for(db.close(), 30)


# ---- SQL engines ----

# SQL_ROWS rows of one small integer each.
SERIES_SQL = {
    "postgresql": "SELECT g FROM generate_series(1, {n}) AS g",
    # Six digits crossed (MySQL and SQLite have no generate_series), cut to n rows.
    "mysql": "WITH RECURSIVE d(v) AS (SELECT 0 UNION ALL SELECT v + 1 FROM d WHERE v < 9) "
             "SELECT a.v + 10 * b.v + 100 * c.v + 1000 * e.v + 10000 * f.v + 100000 * g.v + 1 "
             "AS n FROM d a, d b, d c, d e, d f, d g "
             "WHERE a.v + 10 * b.v + 100 * c.v + 1000 * e.v + 10000 * f.v + 100000 * g.v < {n}",
}
SERIES_SQL["sqlite"] = SERIES_SQL["mysql"]


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
async def test_fetch_leaves_the_loop_turning(engine, tmp_path):
    url = {"postgresql": PG_URL, "mysql": MYSQL_URL,
           "sqlite": "sqlite:///" + str(tmp_path / "stall.db")}[engine]
    n = SQL_ROWS[engine]
    db = keel.Database(url)
    await db.start()
    try:
        def check(rows):
            assert len(rows) == n
            assert {r[0] for r in rows} == set(range(1, n + 1))

        await check_bound(f"{engine}: fetch() of {n:,} rows",
                          lambda: db.fetch(SERIES_SQL[engine].format(n=n)), check)
    finally:
        await asyncio.wait_for(db.close(), 30)
