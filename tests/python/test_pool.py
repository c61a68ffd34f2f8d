# tests/python/test_pool.py - pools, cancellation and concurrency on the asyncio loop, on every engine.
import asyncio
import random
import re
import statistics
import time
import urllib.parse
import uuid

import pytest

import keel
import keel.sync
from conftest import ENGINES, MONGO_URL, ONE_SECOND_SQL, SERVER_URLS, SLOW_SQL, wait_until

ONE = {"min_size": 1, "max_size": 1, "acquire_timeout": 5}


async def test_pool_exhaustion_raises_pool_timeout(make_db):
    d = make_db(name="exhausted_db", pool={"min_size": 1, "max_size": 1, "acquire_timeout": 0.2})
    await d.start()
    held = await d.acquire()
    try:
        stats = d.pool_stats()
        assert stats["size"] == 1 and stats["leased"] == 1 and stats["idle"] == 0
        assert stats["max_size"] == 1 and stats["acquire_timeout"] == pytest.approx(0.2)
        t0 = time.monotonic()
        with pytest.raises(keel.PoolTimeout) as ei:
            await d.acquire()
        waited = time.monotonic() - t0
        assert 0.1 <= waited < 3
        message = str(ei.value)
        assert "exhausted_db" in message
        assert re.search(r"\b1\b", message), message
        assert isinstance(ei.value, keel.OperationalError)
        assert ei.value.database == "exhausted_db"
        assert ei.value.code == "KEEL_ERR_POOL_TIMEOUT"
        # Query methods that need a connection time out the same way.
        with pytest.raises(keel.PoolTimeout):
            await d.fetchval("SELECT 1")
        assert d.pool_stats()["waiting"] == 0
        assert await held.fetchval("SELECT 1") == 1
    finally:
        await d.release(held)
    conn = await d.acquire()
    assert await conn.fetchval("SELECT 2") == 2
    await d.release(conn)
    assert d.pool_stats()["leased"] == 0


async def test_waiters_are_served_in_fifo_order(make_db):
    d = make_db(pool=ONE)
    await d.start()
    held = await d.acquire()
    order = []

    async def worker(i):
        async with d.connection() as conn:
            order.append(i)
            await conn.fetchval("SELECT $1 + 0", i)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(worker(i)))
        # Queue the waiters one by one so their arrival order is known.
        await wait_until(lambda: d.pool_stats()["waiting"] == i + 1)
    assert order == []
    await d.release(held)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == list(range(6))
    assert d.pool_stats()["waiting"] == 0 and d.pool_stats()["leased"] == 0


async def test_cancelled_waiter_does_not_leak_a_connection(make_db):
    d = make_db(pool={"min_size": 1, "max_size": 1, "acquire_timeout": 30})
    await d.start()
    held = await d.acquire()
    waiter = asyncio.create_task(d.fetchval("SELECT 1"))
    await wait_until(lambda: d.pool_stats()["waiting"] == 1)
    waiter.cancel()
    done, _ = await asyncio.wait({waiter}, timeout=2)
    assert waiter in done and waiter.cancelled()
    await d.release(held)
    # The connection is not lost to the cancelled request: the next one gets it at once.
    async with asyncio.timeout(2):
        assert await d.fetchval("SELECT 7") == 7
    await wait_until(lambda: d.pool_stats()["leased"] == 0, timeout=2)
    stats = d.pool_stats()
    assert stats["size"] == 1 and stats["idle"] == 1 and stats["waiting"] == 0


async def test_cancelled_waiter_leaves_the_queue(make_db):
    # A cancelled acquire must stop counting as waiting (and stop being served) right away, not
    # when its acquire_timeout (30 s here) would have expired.
    d = make_db(pool={"min_size": 1, "max_size": 1, "acquire_timeout": 30})
    await d.start()
    held = await d.acquire()
    try:
        waiter = asyncio.create_task(d.fetchval("SELECT 1"))
        await wait_until(lambda: d.pool_stats()["waiting"] == 1)
        waiter.cancel()
        await asyncio.wait({waiter}, timeout=2)
        await wait_until(lambda: d.pool_stats()["waiting"] == 0, timeout=2)
    finally:
        await d.release(held)


async def test_many_connections_opened_at_once(engine, tmp_path, db_url):
    # Every round opens eight connections together; for SQLite each round uses a new file, so
    # the connections also race to set up the file (journal mode) - none may fail for that.
    rounds = 25 if engine == "sqlite" else 5
    for i in range(rounds):
        url = db_url if engine != "sqlite" else "sqlite:///" + str(tmp_path / f"round{i}.db")
        d = keel.Database({"databases": {"main": {
            "url": url, "pool": {"min_size": 1, "max_size": 8, "acquire_timeout": 10}}}})
        try:
            await d.start()
            gate = asyncio.Event()
            entered = 0

            async def worker():
                nonlocal entered
                async with d.connection() as conn:
                    entered += 1
                    await gate.wait()
                    return await conn.fetchval("SELECT 1")

            tasks = [asyncio.create_task(worker()) for _ in range(8)]
            await wait_until(lambda: entered == 8 or any(t.done() for t in tasks), timeout=10)
            gate.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failures = [r for r in results if r != 1]
            assert failures == [], f"round {i}: {failures[0]!r}"
        finally:
            await d.close()


async def test_pool_never_exceeds_max_size(make_db):
    d = make_db(pool={"min_size": 1, "max_size": 3, "acquire_timeout": 30})
    await d.start()
    peak = 0
    full = asyncio.Event()

    async def worker(i):
        nonlocal peak
        async with d.connection() as conn:
            stats = d.pool_stats()
            peak = max(peak, stats["leased"])
            if stats["leased"] == 3:
                full.set()
            assert stats["size"] <= 3
            assert await conn.fetchval("SELECT $1 + 0", i) == i
            if i < 3:
                # The first three hold on until three are out at once, so the pool has to grow
                # to max_size however long its connects take (on a loaded machine the others
                # could all be served by two connections before a third is open).
                await full.wait()
            await asyncio.sleep(0.005)

    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(40))), 30)
    assert peak == 3
    stats = d.pool_stats()
    assert stats["leased"] == 0 and stats["waiting"] == 0 and stats["size"] <= 3


async def cancel_after(task, delay=0.2):
    await asyncio.sleep(delay)
    assert not task.done(), "the slow query finished before it could be cancelled"
    task.cancel()
    t0 = time.monotonic()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done, "the cancelled query did not stop"
    assert task.cancelled()
    return time.monotonic() - t0


async def test_cancelling_a_pooled_query(make_db, engine):
    d = make_db(pool=ONE)
    assert await d.fetchval("SELECT 1") == 1
    task = asyncio.create_task(d.fetchval(SLOW_SQL[engine]))
    assert await cancel_after(task) < 3
    # The pool has a single connection: it is free, and idle on the server, only if the query
    # was cancelled there (otherwise it would stay busy for ten seconds).
    async with asyncio.timeout(3):
        assert await d.fetchval("SELECT 1") == 1
    await wait_until(lambda: d.pool_stats()["leased"] == 0)
    assert d.pool_stats()["size"] == 1


async def test_cancelling_a_query_on_a_dedicated_connection(make_db, engine):
    d = make_db(pool=ONE)
    await d.start()
    async with d.connection() as conn:
        task = asyncio.create_task(conn.fetchval(SLOW_SQL[engine]))
        assert await cancel_after(task) < 3
        async with asyncio.timeout(3):
            assert await conn.fetchval("SELECT 1") == 1
            assert conn.in_transaction is False
            assert await conn.fetchval("SELECT $1 + 1", 1) == 2
    assert d.pool_stats()["leased"] == 0


async def test_cancelling_a_task_inside_a_transaction_rolls_back(make_db, engine, types):
    d = make_db(pool=ONE)
    t = "t_cancel_" + uuid.uuid4().hex[:10]
    await d.execute(f"CREATE TABLE {t} (id {types['int']})")
    try:
        async def work():
            async with d.transaction() as conn:
                await conn.execute(f"INSERT INTO {t} VALUES (1)")
                await conn.fetchval(SLOW_SQL[engine])

        task = asyncio.create_task(work())
        assert await cancel_after(task, 0.3) < 3
        async with asyncio.timeout(3):
            assert await d.fetchval(f"SELECT count(*) FROM {t}") == 0
        async with d.connection() as conn:
            assert conn.in_transaction is False
        assert d.pool_stats()["leased"] == 0
    finally:
        await d.execute(f"DROP TABLE IF EXISTS {t}")


async def test_wait_for_timeout_cancels_the_query(make_db, engine):
    d = make_db(pool=ONE)
    await d.start()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(d.fetchval(SLOW_SQL[engine]), 0.2)
    async with asyncio.timeout(3):
        assert await d.fetchval("SELECT 1") == 1


async def test_event_loop_stays_responsive_during_a_long_query(db, engine):
    ticks = 0
    stop = False

    async def ticker():
        nonlocal ticks
        while not stop:
            await asyncio.sleep(0.01)
            ticks += 1

    await db.fetchval("SELECT 1")
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    before = ticks
    t0 = time.monotonic()
    await db.fetchval(ONE_SECOND_SQL[engine])
    elapsed = time.monotonic() - t0
    during = ticks - before
    stop = True
    await task
    assert elapsed >= 0.3, f"the long query took only {elapsed:.3f} s: the test proves nothing"
    # A loop blocked by the query would tick about once; a free one ticks every 10 ms.
    assert during >= 0.25 * elapsed / 0.01, (during, elapsed)


# Half a second of waiting on the server, per server engine.
HALF_SECOND_SQL = {"postgresql": "SELECT pg_sleep(0.5)", "mysql": "SELECT SLEEP(0.5)"}


@pytest.mark.parametrize("server", list(HALF_SECOND_SQL))
async def test_pooled_queries_run_concurrently_on_servers(server):
    d = keel.Database({"databases": {"main": {
        "url": SERVER_URLS[server], "pool": {"min_size": 4, "max_size": 4, "acquire_timeout": 10}}}})
    async with d:
        # Open all four connections first so only the queries are measured.
        conns = [await d.acquire() for _ in range(4)]
        for c in conns:
            await d.release(c)
        assert d.pool_stats()["size"] == 4
        t0 = time.monotonic()
        results = await asyncio.gather(*(d.fetchval(HALF_SECOND_SQL[server]) for _ in range(4)))
        elapsed = time.monotonic() - t0
        serial = 4 * 0.5
        assert len(results) == 4
        assert elapsed < 0.6 * serial, f"4 queries of 0.5 s took {elapsed:.3f} s: not concurrent"
        assert d.pool_stats()["leased"] == 0


async def test_connection_reports_busy_instead_of_interleaving(make_db, engine):
    # Two operations on one connection at once cannot share it: the second is refused clearly
    # (InterfaceError, "another operation is in progress") and the first completes normally.
    d = make_db(pool=ONE)
    await d.start()
    async with d.connection() as conn:
        first = asyncio.create_task(conn.fetchval(ONE_SECOND_SQL[engine]))
        await asyncio.sleep(0.05)
        with pytest.raises(keel.InterfaceError) as ei:
            await conn.fetchval("SELECT 1")
        assert ei.value.code == "KEEL_ERR_BUSY"
        # A guard against a hang only: SQLite's "one second" of counting takes several times
        # that on a loaded machine, and more again under ASan (make test-python-asan).
        await asyncio.wait_for(first, 60)
        assert await conn.fetchval("SELECT 1") == 1


async def test_cancelling_a_query_that_fails_when_killed_on_mysql():
    # SLEEP() ends quietly when KILL QUERY stops it; most statements end with an error instead
    # (ER_QUERY_INTERRUPTED). Cancelling one of those must leave the connection just as clean.
    # max_statement_time bounds the statement should cancellation fail.
    d = keel.Database({"databases": {"main": {"url": SERVER_URLS["mysql"], "pool": ONE}}})
    async with d:
        async with d.connection() as conn:
            thread = await conn.fetchval("SELECT CONNECTION_ID()")
            task = asyncio.create_task(conn.fetchval(
                "SET STATEMENT max_statement_time = 20 FOR "
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) "
                "SELECT count(*) FROM c a, c b, c d, c e"))
            assert await cancel_after(task) < 3
            async with asyncio.timeout(3):
                assert await conn.fetchval("SELECT CONNECTION_ID()") == thread
                assert conn.in_transaction is False
                assert await conn.fetchval("SELECT $1 + 1", 1) == 2
        assert d.pool_stats()["leased"] == 0


# A statement of a few tens of milliseconds per engine, for cancellations that race its end.
SHORT_SQL = {
    "postgresql": "SELECT pg_sleep(0.02)",
    "mysql": "SELECT SLEEP(0.02)",
    "sqlite": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100000) "
              "SELECT count(*) FROM c",
}


async def test_a_late_cancel_never_reaches_the_next_statement(make_db, engine):
    # Cancelling a task whose statement is just ending races the cancel request (a second
    # session asking the server to stop "what runs now") with the end of the statement. The
    # request must not outlive its statement: the statements that follow on the connection
    # are never cancelled by it. Each round cancels near the end; the seed fixes the timings.
    d = make_db(pool=ONE)
    sql = SHORT_SQL[engine]
    assert await d.fetchval("SELECT 1") == 1  # connected: the timings below are the statement's
    timings = []
    for _ in range(5):
        t0 = time.monotonic()
        await d.fetchval(sql)
        timings.append(time.monotonic() - t0)
    duration = statistics.median(timings)
    rnd = random.Random(20240601)
    hit = []
    cancelled = 0
    # At least 60 rounds, and more (bounded) until enough cancellations landed while the
    # statement still ran: how many do depends on the machine's load, not on keel.
    i = 0
    while i < 60 or (cancelled < 5 and i < 400):
        i += 1
        task = asyncio.create_task(d.fetchval(sql))
        await asyncio.sleep(duration * rnd.uniform(0.7, 1.0))
        task.cancel()
        try:
            await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            cancelled += 1
        except keel.Error as e:
            hit.append((i, "the cancelled task's own statement", repr(e)))
        for follow in (sql, "SELECT 1"):
            try:
                await asyncio.wait_for(d.fetchval(follow), 10)
            except keel.Error as e:
                hit.append((i, follow, repr(e)))
    assert hit == [], f"{len(hit)} statements were cancelled by an earlier cancel: {hit[:3]}"
    assert cancelled >= 5, f"only {cancelled} of {i} statements were cancelled: the test proves little"
    assert d.pool_stats()["leased"] == 0


async def test_cancelling_a_batch_stops_it_and_rolls_it_back(make_db, engine, types):
    # A batch of 200,000 rows takes far longer than the 50 ms the test lets it run. Cancelling
    # the task stops the batch on the server and undoes it (batches are atomic on cancellation
    # too): no row is left, and the single pooled connection is free and clean at once.
    d = make_db(pool=ONE)
    t = "t_cancel_batch_" + uuid.uuid4().hex[:10]
    await d.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, v TEXT)")
    try:
        rows = [(i, "v" * 50) for i in range(200000)]
        task = asyncio.create_task(d.executemany(f"INSERT INTO {t} (id, v) VALUES ($1, $2)", rows))
        assert await cancel_after(task, 0.05) < 3
        async with asyncio.timeout(3):
            async with d.connection() as conn:
                assert conn.in_transaction is False
                assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 0
        assert d.pool_stats()["leased"] == 0
    finally:
        await d.execute(f"DROP TABLE IF EXISTS {t}")


@pytest.mark.parametrize("server", list(SERVER_URLS))
async def test_failing_connects_back_off_while_the_loop_keeps_running(server, tmp_path):
    # Every connect fails at once (the password is a secret file that does not exist), and the
    # caller asks again as soon as it gets the error: it gets that error each time, but the pool
    # spaces its attempts out (50 ms doubling up to 2 s) and the loop keeps running other tasks.
    missing = tmp_path / "no-such-secret"
    d = keel.Database({"databases": {"main": {
        "url": SERVER_URLS[server], "password": "${file:" + str(missing) + "}",
        "pool": {"acquire_timeout": 30}}}})
    ticks = 0
    stop = False

    async def ticker():
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    attempts = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 1.5:
            with pytest.raises(keel.Error) as ei:
                await d.fetchval("SELECT 1")
            assert "no-such-secret" in str(ei.value)
            assert not isinstance(ei.value, keel.PoolTimeout)
            attempts += 1
        # Once the secret exists, the pool connects again.
        missing.write_text(urllib.parse.urlsplit(SERVER_URLS[server]).password or "")
        assert await d.fetchval("SELECT 1") == 1
    finally:
        stop = True
        await tick_task
        await d.close()
    assert 2 <= attempts <= 20, attempts
    assert ticks > 10



# ---- the pool's lifecycle: idle_timeout, max_lifetime, ping_after_idle, max_waiters, stats ----

# Every engine with a pool, MongoDB included when a server is configured.
LIFECYCLE_ENGINES = ENGINES + (["mongodb"] if MONGO_URL else [])

STATS_KEYS = {"size", "idle", "in_use", "waiting", "min_size", "max_size", "connects",
              "connect_failures", "acquires", "acquire_timeouts", "acquire_wait_p50",
              "acquire_wait_p99"}


@pytest.fixture(params=LIFECYCLE_ENGINES)
def lifecycle_url(request, sqlite_url):
    return {"mongodb": MONGO_URL, **SERVER_URLS}.get(request.param, sqlite_url)


def pool_db(url, **pool):
    return keel.Database({"databases": {"main": {"url": url, "pool": pool}}})


async def test_idle_connections_close_down_to_min_size(lifecycle_url):
    d = pool_db(lifecycle_url, min_size=1, max_size=3, idle_timeout=0.2, max_lifetime=0)
    try:
        held = [await d.acquire() for _ in range(3)]
        for conn in held:
            await d.release(conn)
        assert d.stats()["size"] == 3 and d.stats()["idle"] == 3
        await wait_until(lambda: d.stats()["size"] == 1, timeout=5)
        await asyncio.sleep(0.4)  # never below min_size
        stats = d.stats()
        assert (stats["size"], stats["idle"], stats["connects"]) == (1, 1, 3)
        await d.ping()
    finally:
        await d.close()


async def test_old_connections_are_recycled_apart(lifecycle_url):
    # Ten connections opened together, each replaced once max_lifetime (less up to a tenth of
    # jitter) is over: the replacements come one by one, not all at once.
    d = pool_db(lifecycle_url, min_size=10, max_size=10, max_lifetime=1, idle_timeout=0)
    try:
        await d.start()
        await wait_until(lambda: d.stats()["connects"] == 10 and d.stats()["idle"] == 10)
        seen = {}
        deadline = time.monotonic() + 5
        while len(seen) < 10 and time.monotonic() < deadline:
            connects = d.stats()["connects"]
            for n in range(11, connects + 1):
                seen.setdefault(n, time.monotonic())
            await asyncio.sleep(0.002)
        assert len(seen) == 10, seen
        spread = max(seen.values()) - min(seen.values())
        assert spread >= 0.02, spread
        await wait_until(lambda: d.stats()["size"] == 10)
        assert d.stats()["connect_failures"] == 0
        await d.ping()
    finally:
        await d.close()


async def test_a_leased_connection_outlives_max_lifetime_and_goes_when_released(lifecycle_url):
    d = pool_db(lifecycle_url, min_size=1, max_size=1, max_lifetime=0.2)
    try:
        async with d.connection() as conn:
            await asyncio.sleep(0.4)
            if d.engine() != "mongodb":
                assert await conn.fetchval("SELECT 1") == 1
            assert d.stats()["connects"] == 1
        await wait_until(lambda: d.stats()["connects"] == 2 and d.stats()["idle"] == 1)
        await d.ping()
    finally:
        await d.close()


KILL = {"postgresql": ("SELECT pg_backend_pid()", "SELECT pg_terminate_backend({})"),
        "mysql": ("SELECT CONNECTION_ID()", "KILL {}")}


@pytest.mark.parametrize("server", list(KILL))
async def test_a_connection_killed_while_idle_is_replaced_without_an_error(server):
    own_id, kill = KILL[server]
    d = pool_db(SERVER_URLS[server], min_size=1, max_size=1, ping_after_idle=0.05)
    killer = keel.Database(SERVER_URLS[server])
    try:
        first = await d.fetchval(own_id)
        await killer.execute(kill.format(first))
        await asyncio.sleep(0.2)
        second = await d.fetchval(own_id)
        assert second != first
        stats = d.stats()
        assert (stats["connects"], stats["size"], stats["acquires"]) == (2, 1, 2)
    finally:
        await killer.close()
        await d.close()


async def test_an_idle_connection_is_pinged_and_kept(lifecycle_url):
    d = pool_db(lifecycle_url, min_size=1, max_size=1, ping_after_idle=0.05)
    try:
        await d.ping()
        await asyncio.sleep(0.1)
        await d.ping()
        assert d.stats()["connects"] == 1 and d.stats()["acquires"] == 2
    finally:
        await d.close()


async def test_max_waiters_refuses_at_once(make_db):
    d = make_db(name="queued", pool={"min_size": 1, "max_size": 1, "max_waiters": 1,
                                     "acquire_timeout": 10})
    held = await d.acquire()
    try:
        waiter = asyncio.create_task(d.fetchval("SELECT 1"))
        await wait_until(lambda: d.stats()["waiting"] == 1)
        t0 = time.monotonic()
        with pytest.raises(keel.PoolTimeout) as ei:
            await d.fetchval("SELECT 2")
        assert time.monotonic() - t0 < 1
        message = str(ei.value)
        assert "requests waiting for a connection to database 'queued' is full" in message
        assert "max_waiters 1" in message
        assert ei.value.database == "queued"
        assert d.stats()["acquire_timeouts"] == 1
    finally:
        await d.release(held)
    assert await asyncio.wait_for(waiter, 5) == 1


async def test_stats_count_and_time_acquires(make_db):
    d = make_db(pool={"min_size": 0, "max_size": 1, "acquire_timeout": 0.2})
    stats = d.stats()
    assert set(stats) == STATS_KEYS
    assert all(stats[k] == 0 for k in STATS_KEYS - {"max_size"})
    for _ in range(3):
        await d.fetchval("SELECT 1")
    held = await d.acquire()
    try:
        with pytest.raises(keel.PoolTimeout):
            await d.acquire()
        late = asyncio.create_task(d.fetchval("SELECT 1"))
        await asyncio.sleep(0.15)
    finally:
        await d.release(held)
    assert await late == 1
    stats = d.stats()
    assert (stats["connects"], stats["connect_failures"]) == (1, 0)
    assert (stats["acquires"], stats["acquire_timeouts"]) == (5, 1)
    assert stats["in_use"] == 0 and stats["size"] == 1
    # Five waits: four at once, one of 0.15 s, which is the p99 (nearest rank).
    assert 0.14 <= stats["acquire_wait_p99"] < 5, stats
    assert stats["acquire_wait_p50"] < 0.1, stats
    assert d.stats("main") == stats
    assert set(d.pool_stats()) == {"size", "idle", "leased", "waiting", "min_size", "max_size",
                                   "acquire_timeout"}
    with pytest.raises(keel.UnknownDatabaseError):
        d.stats("nope")


def test_sync_database_stats(db_url):
    with keel.sync.Database({"databases": {"main": {"url": db_url, "pool": {"max_size": 2}}}}) as d:
        d.fetchval("SELECT 1")
        stats = d.stats()
        assert set(stats) == STATS_KEYS
        assert (stats["connects"], stats["acquires"], stats["max_size"]) == (1, 1, 2)
        assert d.stats("main") == stats
        with pytest.raises(keel.UnknownDatabaseError):
            d.stats("nope")
