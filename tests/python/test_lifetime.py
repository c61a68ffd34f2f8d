# tests/python/test_lifetime.py - a Database's end: dropped without close, dropped inside the completion of its own operation, closed while worker jobs end.
"""What happens when the last reference to an open keel.Database goes.

A Database dropped while open closes itself on the next iteration of its event loop, never
inside the keel callback where the last reference often goes: the completion of an operation
nobody waits for any more holds the Database until it runs, and keel's own frames up the stack
(the engine reporting the outcome, the worker pool handing out finished jobs, the pool) still
use what a close frees. Each test then checks that nothing is left: the Database object is
freed, and the process holds no more file descriptors (sockets, SQLite files, the worker pool's
eventfd) and no more threads (the worker pool's) than before it. Under `make test-python-asan` a
use of freed memory or a leak in any of this fails the run.

Every engine runs them, MongoDB included: its operations and SQLite's complete from the worker
pool, PostgreSQL's and MySQL's from their sockets. A MongoDB operation is made slow with the
server's failCommand fail point, scoped to the test's own appName.
"""
import asyncio
import os
import threading
import time
import weakref

import pytest

import keel
from conftest import MONGO_URL, MYSQL_URL, PG_URL, SLOW_SQL, unique_name, wait_until

ENGINES = ["postgresql", "sqlite", "mysql", "mongodb"]


def resources():
    """Open file descriptors and threads of this process."""
    return len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task"))


async def all_released(before, timeout=30):
    """Waits until the process holds no more descriptors and threads than `before`."""
    def released():
        fds, threads = resources()
        return fds <= before[0] and threads <= before[1]
    try:
        await wait_until(released, timeout)
    except AssertionError:
        raise AssertionError(f"still held after the Database went: {resources()} "
                             f"(descriptors, threads) against {before} before it") from None


class Setup:
    """One engine's database for a test: its configuration and a slow operation on it."""

    def __init__(self, engine, tmp_path):
        self.engine = engine
        self.app = unique_name("keel-life")
        self.coll = unique_name("life")
        url = {"postgresql": PG_URL, "mysql": MYSQL_URL, "mongodb": MONGO_URL,
               "sqlite": f"sqlite:///{tmp_path}/life.db"}[engine]
        if engine == "mongodb":
            url += ("&" if "?" in url else "?") + "appName=" + self.app
        self.config = {"default": "main", "databases": {
            "main": {"url": url, "pool": {"min_size": 1, "max_size": 2}}}}

    async def prepare(self):
        """Makes the next slow() slow: on MongoDB, a fail point blocks the next find of this
        test's client for 1.5 s (the test is skipped on a server without one)."""
        if self.engine != "mongodb":
            return
        ctl = keel.Database(self.config)
        try:
            await ctl.collection(self.coll).insert_one({"_id": 1})
            cmd = {"configureFailPoint": "failCommand", "mode": {"times": 1},
                   "data": {"failCommands": ["find"], "blockConnection": True,
                            "blockTimeMS": 1500, "appName": self.app}}
            try:
                await ctl.command("admin", cmd)
            except keel.DatabaseError as exc:
                pytest.skip(f"the MongoDB server has no failCommand fail point: {exc}")
        finally:
            await asyncio.wait_for(ctl.close(), 30)

    async def cleanup(self):
        if self.engine != "mongodb":
            return
        ctl = keel.Database(self.config)
        try:
            await ctl.command("admin", {"configureFailPoint": "failCommand", "mode": "off"})
            await ctl.collection(self.coll).drop()
        finally:
            await asyncio.wait_for(ctl.close(), 30)

    def slow(self, target):
        """A slow operation on a Database or a Connection."""
        if self.engine == "mongodb":
            return target.collection(self.coll).find_one({})
        return target.fetchval(SLOW_SQL[self.engine])


@pytest.fixture(params=ENGINES)
async def setup(request, tmp_path):
    if request.param == "mongodb" and not MONGO_URL:
        pytest.skip("KEEL_TEST_MONGO_URL is empty")
    s = Setup(request.param, tmp_path)
    await s.prepare()
    yield s
    await s.cleanup()


async def test_a_temporary_database_of_a_cancelled_task_closes_itself(setup):
    # The task's only Database is a temporary; once the task is cancelled, the running
    # operation holds it, and its completion (the cancelled statement ending, the blocked find
    # returning) drops the last reference inside a keel callback.
    before = resources()
    refs = []

    async def work():
        d = keel.Database(setup.config)
        refs.append(weakref.ref(d))
        return await setup.slow(d)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    await wait_until(lambda: refs[0]() is None, 30)
    await all_released(before)


async def test_a_database_dropped_after_wait_for_timed_out_on_its_connection(setup):
    # The connection goes back while its cancelled operation still runs, so that operation's
    # completion holds the Connection, which holds the Database: when it runs, the last
    # reference goes inside the callback, between keel's report and its taking the
    # connection back.
    before = resources()
    d = keel.Database(setup.config)
    ref = weakref.ref(d)
    async with d.connection() as conn:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(setup.slow(conn), 0.3)
    del d, conn
    await wait_until(lambda: ref() is None, 30)
    await all_released(before)


async def test_a_database_dropped_without_close_closes_itself(setup):
    before = resources()
    d = keel.Database(setup.config)
    if setup.engine == "mongodb":
        assert await d.collection(setup.coll).count_documents({}) == 1
    else:
        assert await d.fetchval("SELECT 1") == 1
    ref = weakref.ref(d)
    del d
    assert ref() is None
    await all_released(before)


async def test_a_database_dropped_with_a_leased_connection_closes_when_it_goes(setup):
    before = resources()
    d = keel.Database(setup.config)
    conn = await d.acquire()
    ref = weakref.ref(d)
    del d
    await asyncio.sleep(0.05)
    assert ref() is not None  # the connection holds it
    # Dropped without release: it goes back, and the Database with it (once the future that
    # handed the connection over, alive until this task's step ends, has gone too).
    del conn
    await wait_until(lambda: ref() is None, 30)
    await all_released(before)


async def test_close_lets_other_threads_run_while_worker_jobs_end(tmp_path):
    # A MongoDB find blocked on the server cannot be stopped: the close waits for its worker
    # job to end. Other Python threads must run meanwhile, so the GIL is released there.
    if not MONGO_URL:
        pytest.skip("KEEL_TEST_MONGO_URL is empty")
    s = Setup("mongodb", tmp_path)
    await s.prepare()
    try:
        d = keel.Database(s.config)
        async with d.connection() as conn:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(s.slow(conn), 0.3)
        ticks = 0
        stop = False

        def count():
            nonlocal ticks
            while not stop:
                time.sleep(0.005)
                ticks += 1

        counter = threading.Thread(target=count)
        counter.start()
        try:
            time.sleep(0.05)
            started, ticks_before = time.monotonic(), ticks
            await asyncio.wait_for(d.close(), 30)
            elapsed, ticked = time.monotonic() - started, ticks - ticks_before
        finally:
            stop = True
            counter.join()
        assert elapsed > 0.5, ("the close no longer waits for the blocked find: this test needs "
                               "another worker job that outlives the close")
        # One tick every 5 ms when the thread runs; ask for one per 50 ms.
        assert ticked >= elapsed / 0.05, (ticked, elapsed)
    finally:
        await s.cleanup()
