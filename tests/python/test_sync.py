# tests/python/test_sync.py - keel.sync.Database: the same methods as keel.Database without an event loop, on every engine.
import asyncio
import threading
import time

import pytest

import keel
import keel.sync
from conftest import MONGO_URL, ONE_SECOND_SQL, PG_URL, SLOW_SQL, UNIQUE_VIOLATION_SQLSTATE, unique_name


@pytest.fixture
def sdb(db_url):
    with keel.sync.Database(db_url) as d:
        yield d


@pytest.fixture
def table(sdb):
    name = unique_name("sync")
    sdb.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, label VARCHAR(40))")
    yield name
    if not sdb.closed:
        sdb.execute(f"DROP TABLE IF EXISTS {name}")


def test_queries(sdb, table, engine):
    assert sdb.databases == ["default"] and sdb.default_database == "default"
    assert sdb.engine() == engine
    assert sdb.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "one") == 1
    assert sdb.executemany(f"INSERT INTO {table} VALUES ($1, $2)",
                           [(2, "two"), (3, "three")]) is None
    assert sdb.copy_records_to_table(table, records=[(4, "four"), (5, None)]) == 2
    rows = sdb.fetch(f"SELECT id, label FROM {table} ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "one"), (2, "two"), (3, "three"), (4, "four"),
                                        (5, None)]
    assert isinstance(rows[0], keel.Record) and rows[0]["label"] == "one"
    row = sdb.fetchrow(f"SELECT id, label FROM {table} WHERE id = $1", 3)
    assert (row["id"], row["label"]) == (3, "three")
    assert sdb.fetchrow(f"SELECT id FROM {table} WHERE id = $1", 99) is None
    assert sdb.fetchval(f"SELECT count(*) FROM {table}") == 5
    assert sdb.fetchval(f"SELECT id, label FROM {table} WHERE id = 2", column=1) == "two"
    assert sdb.fetchval(f"SELECT id FROM {table} WHERE id = 99") is None
    assert sdb.execute(f"DELETE FROM {table} WHERE id > $1", 3) == 2
    assert sdb.fetch(f"SELECT * FROM {table} WHERE id > 100") == []
    assert sdb.ping() > 0
    stats = sdb.pool_stats()
    assert stats["leased"] == 0 and stats["max_size"] == 10


def test_connection_methods(sdb, table):
    with sdb.connection() as conn:
        assert isinstance(conn, keel.sync.Connection)
        assert conn.database == "default" and not conn.in_transaction
        assert conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "a") == 1
        conn.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(2, "b")])
        assert conn.copy_records_to_table(table, records=[("c", 3)],
                                          columns=["label", "id"]) == 1
        assert [r["label"] for r in conn.fetch(f"SELECT label FROM {table} ORDER BY id")] == [
            "a", "b", "c"]
        assert conn.fetchrow(f"SELECT id FROM {table} WHERE label = $1", "b")["id"] == 2
        assert conn.fetchval(f"SELECT label FROM {table} WHERE id = $1", 3) == "c"
        assert sdb.pool_stats()["leased"] == 1
    assert conn.released and sdb.pool_stats()["leased"] == 0
    with pytest.raises(keel.InterfaceError, match="released"):
        conn.fetchval("SELECT 1")
    # acquire / release by hand.
    conn = sdb.acquire()
    assert conn.fetchval("SELECT 2") == 2
    sdb.release(conn)
    sdb.release(conn)  # a no-op the second time
    assert sdb.pool_stats()["leased"] == 0
    with pytest.raises(TypeError, match="keel.sync.Connection"):
        sdb.release("conn")


def test_rows_into_models_and_record_classes(sdb, table):
    # fetch/fetchrow take keel.Database's into= and record_class=, on the Database and a
    # Connection; bad ones are TypeErrors before anything runs.
    import dataclasses

    import pydantic

    class Item(pydantic.BaseModel):
        id: int
        label: str | None

    class Labelled(keel.Record):
        @property
        def text(self) -> str:
            return f"{self.id}: {self.label}"

    sdb.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(1, "one"), (2, None)])
    sql = f"SELECT id, label FROM {table} ORDER BY id"
    assert sdb.fetch(sql, into=Item) == [Item(id=1, label="one"), Item(id=2, label=None)]
    assert sdb.fetchrow(sql, into=dict) == {"id": 1, "label": "one"}
    assert sdb.fetchrow(f"SELECT id, label FROM {table} WHERE id = 9", into=Item) is None
    rows = sdb.fetch(sql, record_class=Labelled)
    assert [type(r) for r in rows] == [Labelled, Labelled] and rows[0].text == "1: one"
    with sdb.connection() as conn:
        assert conn.fetch(sql, into=Item)[1] == Item(id=2, label=None)
        assert conn.fetchrow(sql, record_class=Labelled).text == "1: one"
        Point = dataclasses.make_dataclass("Point", ["id"])
        with pytest.raises(TypeError, match="label"):
            conn.fetch(sql, into=Point)  # what the class raises, and the connection goes on
        assert conn.fetchval("SELECT 1") == 1
    for bad, match in (({"into": 3}, "into= must be a class or callable"),
                       ({"into": dict, "record_class": Labelled}, "not both"),
                       ({"record_class": dict}, "subclass of keel.Record")):
        with pytest.raises(TypeError, match=match):
            sdb.fetch(sql, **bad)
    with pytest.raises(pydantic.ValidationError):
        sdb.fetch(f"SELECT label AS id, id AS label FROM {table}", into=Item)
    assert sdb.fetchval(f"SELECT count(*) FROM {table}") == 2


def test_json_serializer_and_deserializer(db_url, engine):
    # keel.Database's json_serializer= / json_deserializer=, on every SQL engine: parameters
    # (queries, executemany, copy) go through the serializer, JSON results through the
    # deserializer; what they raise is a DataError naming the parameter, the call then usable.
    import json

    def dumps(obj):
        return json.dumps({"wrapped": obj})

    def loads(text):
        return ("decoded", json.loads(text))

    name = unique_name("sjson")
    jtype = {"postgresql": "JSONB", "mysql": "JSON", "sqlite": "JSON"}[engine]
    with keel.sync.Database(db_url, json_serializer=dumps, json_deserializer=loads) as sdb:
        sdb.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, doc {jtype})")
        try:
            sdb.execute(f"INSERT INTO {name} VALUES ($1, $2)", 1, {"a": 1})
            sdb.executemany(f"INSERT INTO {name} VALUES ($1, $2)", [(2, {"b": 2})])
            if engine != "postgresql":  # PostgreSQL's binary COPY takes no serializer
                sdb.copy_records_to_table(name, records=[(3, {"c": 3})])
            docs = [r["doc"] for r in sdb.fetch(f"SELECT doc FROM {name} ORDER BY id")]
            assert docs[:2] == [("decoded", {"wrapped": {"a": 1}}),
                                ("decoded", {"wrapped": {"b": 2}})], docs
            if engine != "postgresql":
                assert docs[2] == ("decoded", {"wrapped": {"c": 3}}), docs
            with sdb.connection() as conn:
                conn.execute(f"INSERT INTO {name} VALUES ($1, $2)", 4, {"d": 4})
                assert conn.fetchval(f"SELECT doc FROM {name} WHERE id = 4") == (
                    "decoded", {"wrapped": {"d": 4}})
        finally:
            sdb.execute(f"DROP TABLE IF EXISTS {name}")


    def failing(obj):
        raise RuntimeError("no JSON today")

    with keel.sync.Database(db_url, json_serializer=failing) as sdb:
        with pytest.raises(keel.DataError, match=r"parameter \$1.*no JSON today") as info:
            sdb.fetchval("SELECT $1", {"a": 1})
        assert isinstance(info.value.__cause__, RuntimeError)
        assert sdb.fetchval("SELECT 1") == 1
    with keel.sync.Database(db_url) as sdb:  # keel's own JSON when none is given
        assert json.loads(sdb.fetchval("SELECT $1", {"a": 1})) == {"a": 1}
    with pytest.raises(TypeError, match="json_serializer must be callable"):
        keel.sync.Database(db_url, json_serializer="orjson")


def test_a_failing_json_deserializer_names_the_column(db_url, engine):
    name = unique_name("sjson")
    jtype = {"postgresql": "JSONB", "mysql": "JSON", "sqlite": "JSON"}[engine]
    with keel.sync.Database(db_url, json_deserializer=lambda s: 1 / 0) as sdb:
        sdb.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, doc {jtype})")
        try:
            sdb.execute(f"INSERT INTO {name} VALUES ($1, $2)", 1, {"a": 1})
            for call in (lambda: sdb.fetchval(f"SELECT id, doc FROM {name}", column=1),
                         lambda: sdb.fetch(f"SELECT id, doc FROM {name}")):
                with pytest.raises(keel.DataError, match='column "doc": cannot decode json '
                                                         "value: division by zero"):
                    call()
            assert sdb.fetchval(f"SELECT id FROM {name}") == 1
        finally:
            sdb.execute(f"DROP TABLE IF EXISTS {name}")


def test_executemany_returning_on_postgresql():
    from conftest import PG_URL
    with keel.sync.Database(PG_URL) as sdb:
        rows = sdb.executemany("SELECT $1::int * 2 AS doubled", [(1,), (2,), (3,)])
        assert [r["doubled"] for r in rows] == [2, 4, 6]


def test_errors_are_keels_and_the_database_stays_usable(sdb, table, engine):
    sdb.execute(f"INSERT INTO {table} VALUES (1, 'x')")
    with pytest.raises(keel.IntegrityError) as ei:
        sdb.execute(f"INSERT INTO {table} VALUES (1, 'again')")
    assert ei.value.sqlstate == UNIQUE_VIOLATION_SQLSTATE[engine]
    assert ei.value.database == "default"
    with pytest.raises(keel.ProgrammingError):
        sdb.fetch("SELEKT 1")
    with pytest.raises(keel.ProgrammingError, match="placeholder|parameter"):
        sdb.fetchval(f"SELECT id FROM {table} WHERE id = $1")
    with pytest.raises(keel.DataError):
        sdb.fetchval("SELECT $1", object())
    with pytest.raises(keel.UnknownDatabaseError, match="nope"):
        sdb.fetchval("SELECT 1", database="nope")
    with pytest.raises(keel.UnknownDatabaseError, match="nope"):
        sdb.acquire("nope")
    with pytest.raises(IndexError, match="column 3 is out of range"):
        sdb.fetchval("SELECT 1", column=3)
    with pytest.raises(TypeError, match="statement must be a str"):
        sdb.fetch(b"SELECT 1")
    with pytest.raises(TypeError, match="database must be a str"):
        sdb.fetch("SELECT 1", database=1)
    with sdb.connection() as conn:
        with pytest.raises(keel.ProgrammingError):
            conn.execute("SELEKT 1")
        assert conn.fetchval("SELECT 1") == 1
    assert sdb.fetchval(f"SELECT count(*) FROM {table}") == 1


def test_transactions_commit_and_roll_back(sdb, table):
    with sdb.transaction() as conn:
        assert conn.in_transaction
        conn.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
    with pytest.raises(ValueError, match="boom"):
        with sdb.transaction() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (2, 'rolled back')")
            raise ValueError("boom")
    assert [r["id"] for r in sdb.fetch(f"SELECT id FROM {table}")] == [1]
    # A failing statement rolls its transaction back too; the error is the statement's.
    with pytest.raises(keel.IntegrityError):
        with sdb.transaction() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (3, 'rolled back')")
            conn.execute(f"INSERT INTO {table} VALUES (1, 'duplicate')")
    assert sdb.fetchval(f"SELECT count(*) FROM {table}") == 1
    # Nested: a savepoint.
    with sdb.connection() as conn:
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (4, 'outer')")
            with pytest.raises(KeyError):
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} VALUES (5, 'inner')")
                    raise KeyError("inner")
            assert conn.in_transaction
        assert not conn.in_transaction
        txn = conn.transaction()
        with txn:
            pass
        with pytest.raises(keel.InterfaceError, match="entered once"):
            with txn:
                pass
    assert [r["id"] for r in sdb.fetch(f"SELECT id FROM {table} ORDER BY id")] == [1, 4]
    assert sdb.pool_stats()["leased"] == 0


def test_a_caught_error_in_a_transaction_is_reported_by_its_commit_on_postgresql(sdb, table,
                                                                                 engine):
    # PostgreSQL rolls back a block in which a statement failed; its exit raises (trial
    # finding T20). MySQL and SQLite undo only the failed statement and commit the rest.
    def block():
        with sdb.transaction() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1, 'one')")
            with pytest.raises(keel.IntegrityError):
                conn.execute(f"INSERT INTO {table} VALUES (1, 'duplicate')")

    if engine == "postgresql":
        with pytest.raises(keel.InternalError, match="the transaction was rolled back") as info:
            block()
        assert info.value.sqlstate == "25P02"
        assert sdb.fetchval(f"SELECT count(*) FROM {table}") == 0
    else:
        block()
        assert sdb.fetchval(f"SELECT count(*) FROM {table}") == 1
    assert sdb.pool_stats()["leased"] == 0


def test_timeouts(db_url, engine):
    with keel.sync.Database({"databases": {"main": {"url": db_url,
                                                    "pool": {"max_size": 1}}}}) as sdb:
        started = time.monotonic()
        with pytest.raises(keel.QueryTimeout) as ei:
            sdb.fetchval(SLOW_SQL[engine], timeout=0.3)
        assert time.monotonic() - started < 5
        assert ei.value.sqlstate == "57014" and ei.value.database == "main"
        assert sdb.fetchval("SELECT 7") == 7
        with sdb.connection() as conn:
            with pytest.raises(keel.QueryTimeout):
                conn.fetchval(SLOW_SQL[engine], timeout=0.3)
            # The next call without timeout= runs under the configured command_timeout again.
            assert conn.fetchval("SELECT 8") == 8
            # The only connection is leased: the wait for one is bounded by timeout= too.
            started = time.monotonic()
            with pytest.raises(keel.QueryTimeout, match="still waiting for a connection"):
                sdb.fetchval("SELECT 1", timeout=0.2)
            with pytest.raises(keel.QueryTimeout, match="still waiting for a connection"):
                sdb.acquire(timeout=0.2)
            assert time.monotonic() - started < 5
        assert sdb.pool_stats()["waiting"] == 0
        assert sdb.fetchval("SELECT 9", timeout=5) == 9
        with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
            sdb.fetchval("SELECT 1", timeout=0)
        with pytest.raises(TypeError, match="timeout must be a number"):
            sdb.fetchval("SELECT 1", timeout="1")
        assert sdb.fetchval("SELECT 10", timeout=float("inf")) == 10


def test_a_thread_waiting_for_a_connection_lets_the_holder_run(db_url):
    # One connection, held by thread A; thread B asks the pool for one meanwhile. B's wait must
    # not keep A from running its statement and giving the connection back (it kept the
    # database's lock, so A waited until B's PoolTimeout after acquire_timeout).
    config = {"databases": {"main": {"url": db_url, "pool": {"max_size": 1,
                                                             "acquire_timeout": 5}}}}
    with keel.sync.Database(config) as sdb:
        sdb.fetchval("SELECT 1")
        b_waits = threading.Event()
        results = {}

        def holder():
            with sdb.connection() as conn:
                b_waits.wait(5)
                time.sleep(0.3)  # B is waiting for the pool now
                results["a"] = (conn.fetchval("SELECT 1"), time.monotonic())

        def waiter():
            b_waits.set()
            try:
                results["b"] = (sdb.fetchval("SELECT 2"), time.monotonic())
            except Exception as e:  # noqa: BLE001 - reported below
                results["b"] = (e, time.monotonic())

        started = time.monotonic()
        threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results["a"][0] == 1 and results["b"][0] == 2, results
        assert results["a"][1] - started < 3 and results["b"][1] - started < 3, (
            results, started)
        # A connection held and unused still makes the others wait, within their limits.
        with sdb.connection():
            at = time.monotonic()
            with pytest.raises(keel.QueryTimeout, match="still waiting for a connection"):
                sdb.fetchval("SELECT 3", timeout=0.3)
            assert 0.25 < time.monotonic() - at < 3
        assert sdb.pool_stats()["waiting"] == 0 and sdb.fetchval("SELECT 4") == 4

    config["databases"]["main"]["pool"]["acquire_timeout"] = 0.5
    with keel.sync.Database(config) as sdb:
        with sdb.connection():
            at = time.monotonic()
            with pytest.raises(keel.PoolTimeout, match="timed out after 0.5 s waiting for a "
                               "connection to database 'main' .pool max_size 1, 1 in use"):
                sdb.fetchval("SELECT 5")
            with pytest.raises(keel.PoolTimeout):
                sdb.acquire()
            assert 0.9 < time.monotonic() - at < 5
        assert sdb.fetchval("SELECT 6") == 6


def test_many_threads_share_a_small_pool(db_url, engine):
    # 12 threads, 2 connections: each job holds a connection for two statements (and, but on
    # SQLite, a transaction); every job gets its turn well within acquire_timeout.
    from concurrent.futures import ThreadPoolExecutor

    config = {"databases": {"main": {"url": db_url, "pool": {"max_size": 2,
                                                             "acquire_timeout": 20}}}}
    with keel.sync.Database(config) as sdb:
        def job(i):
            if i % 2:
                with sdb.connection() as conn:
                    conn.fetchval("SELECT 1")
                    time.sleep(0.002)
                    return conn.fetchval("SELECT $1", i)
            with sdb.transaction() as conn:
                return conn.fetchval("SELECT $1", i)

        started = time.monotonic()
        with ThreadPoolExecutor(12) as pool:
            assert list(pool.map(job, range(120))) == list(range(120))
        assert time.monotonic() - started < 15
        stats = sdb.pool_stats()
        assert stats["leased"] == 0 and stats["waiting"] == 0 and stats["size"] <= 2, stats


@pytest.mark.parametrize("max_size", [1, 4])
def test_sqlite_transactions_of_several_threads(tmp_path, max_size):
    # 8 threads × 50 transactions on one SQLite file: SQLite has one writer at a time, so a BEGIN
    # IMMEDIATE waits for the other connection's commit; that wait lets the other threads run
    # (it used to keep the database's turn, and the holder of the write lock could not commit:
    # "database is locked" after busy_timeout).
    with keel.sync.Database(f"sqlite:///{tmp_path}/w.db?max_size={max_size}") as sdb:
        sdb.execute("CREATE TABLE w (t INTEGER, i INTEGER, PRIMARY KEY (t, i))")
        errors = []

        def job(t):
            for i in range(50):
                try:
                    with sdb.transaction() as conn:
                        n = conn.fetchval("SELECT count(*) FROM w WHERE t = $1", t)
                        conn.execute("INSERT INTO w VALUES ($1, $2)", t, n)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)

        started = time.monotonic()
        threads = [threading.Thread(target=job, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [] and time.monotonic() - started < 30
        assert sdb.fetchval("SELECT count(*) FROM w") == 400
        assert [tuple(r) for r in sdb.fetch("SELECT t, count(*), max(i) FROM w GROUP BY t")] == [
            (t, 50, 49) for t in range(8)]
        assert sdb.pool_stats()["size"] <= max_size


def test_ctrl_c_during_a_call_leaves_the_database_usable(sdb, engine):
    # SIGINT while a statement runs (Ctrl-C in a script, "interrupt kernel" in a notebook): the
    # KeyboardInterrupt reaches the caller within a fraction of a second, the statement is
    # cancelled on the server, and the database goes on, its connection back in the pool.
    import os
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sdb.fetchval(SLOW_SQL[engine])
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.5
    assert sdb.fetchval("SELECT 1") == 1
    stats = sdb.pool_stats()
    assert stats["leased"] == 0 and stats["waiting"] == 0, stats
    # On a leased connection, inside a transaction: the block rolls back.
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with sdb.transaction() as conn:
                conn.fetchval(SLOW_SQL[engine])
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.5 and conn.released
    assert sdb.fetchval("SELECT 2") == 2


_CTRL_C_SCRIPT = """
import sys, time, keel.sync
url, what = sys.argv[1], sys.argv[2]
with keel.sync.Database({"databases": {"main": {"url": url, "pool": {"max_size": 1,
                                                 "acquire_timeout": 60}}}}) as db:
    db.fetchval("SELECT 1")
    held = db.acquire() if what == "pool" else None
    print("started", flush=True)
    started = time.monotonic()
    try:
        db.fetchval(sys.argv[3])
    except KeyboardInterrupt:
        print("interrupted after %.2f" % (time.monotonic() - started), flush=True)
    if held is not None:
        db.release(held)
    print("then", db.fetchval("SELECT 7"), db.pool_stats()["leased"], flush=True)
"""


@pytest.mark.parametrize("what", ["statement", "pool"])
def test_ctrl_c_interrupts_a_script(db_url, engine, what):
    # A script that gets SIGINT (Ctrl-C) during a long statement, or while it waits for a
    # pooled connection: KeyboardInterrupt within about a tenth of a second, not when the call
    # would have returned; the script goes on with the same database.
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT, db_url, what,
                             SLOW_SQL[engine]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("interrupted after "), out
    assert float(lines[0].split()[-1]) < 2.0, out
    assert lines[1] == "then 7 0", out


def test_the_gil_is_released_while_a_call_blocks(sdb, engine):
    ticks = 0
    stop = threading.Event()

    def count():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    try:
        sdb.fetchval(ONE_SECOND_SQL[engine])
    finally:
        stop.set()
        t.join()
    assert ticks > 50


def test_threads_share_a_database(sdb):
    errors, results = [], []

    def work(n):
        try:
            for i in range(20):
                results.append(sdb.fetchval("SELECT $1", n * 100 + i) - n * 100)
                with sdb.connection() as conn:
                    conn.fetchval("SELECT 1")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == sorted(list(range(20)) * 4)


async def test_a_running_event_loop_is_not_needed_nor_touched(db_url, engine):
    # As in a notebook: a loop runs in this thread; the synchronous API works beside it.
    loop = asyncio.get_running_loop()
    before = len(asyncio.all_tasks(loop))
    with keel.sync.Database(db_url) as sdb:
        assert sdb.fetchval("SELECT 40 + 2") == 42
        with sdb.transaction() as conn:
            assert conn.fetchval("SELECT 1") == 1
    assert asyncio.get_running_loop() is loop and len(asyncio.all_tasks(loop)) == before
    # The asynchronous API still works on the loop afterwards.
    async with keel.Database(db_url) as d:
        assert await d.fetchval("SELECT 5") == 5


def test_close(db_url):
    sdb = keel.sync.Database(db_url)
    conn = sdb.acquire()
    assert not sdb.closed
    sdb.close()
    sdb.close()
    assert sdb.closed
    with pytest.raises(keel.InterfaceError, match="closed"):
        sdb.fetchval("SELECT 1")
    with pytest.raises(keel.InterfaceError, match="closed"):
        sdb.acquire()
    with pytest.raises(keel.InterfaceError, match="closed"):
        conn.fetchval("SELECT 1")
    with pytest.raises(keel.InterfaceError, match="closed"):
        sdb.start()
    sdb.release(conn)
    assert "closed" in repr(sdb)


def test_close_waits_for_a_call_running_in_another_thread(db_url, engine):
    # Calls take turns: close() from one thread lets a statement running in another finish (it
    # returns its result, not an error), then closes; later calls raise InterfaceError.
    sdb = keel.sync.Database(db_url)
    sdb.fetchval("SELECT 1")  # connected
    result = {}

    def slow():
        try:
            result["value"] = sdb.fetchval(ONE_SECOND_SQL[engine])
        except Exception as e:  # noqa: BLE001 - reported below
            result["value"] = e

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.4)  # the call has started (the statement runs about a second)
    started = time.monotonic()
    sdb.close()
    waited = time.monotonic() - started
    thread.join(10)
    assert not thread.is_alive() and "value" in result
    assert not isinstance(result["value"], Exception), result
    assert waited > 0.1, waited  # it waited for the rest of the statement
    assert sdb.closed
    with pytest.raises(keel.InterfaceError, match="closed"):
        sdb.fetchval("SELECT 1")


def test_close_with_a_timeout_waits_for_connections_other_threads_hold(db_url, engine):
    # close(timeout=) lets a thread finish with its connection (new work is refused meanwhile)
    # and returns as soon as it is released.
    sdb = keel.sync.Database(db_url)
    leased, done = threading.Event(), {}

    def worker():
        with sdb.connection() as conn:
            leased.set()
            time.sleep(0.3)
            done["value"] = conn.fetchval("SELECT 5")

    thread = threading.Thread(target=worker)
    thread.start()
    assert leased.wait(10)
    closer = threading.Thread(target=sdb.close, kwargs={"timeout": 30})
    started = time.monotonic()
    closer.start()
    time.sleep(0.05)
    assert not sdb.closed
    with pytest.raises(keel.InterfaceError, match="the database is closed"):
        sdb.fetchval("SELECT 1")
    closer.join(10)
    thread.join(10)
    assert not closer.is_alive() and not thread.is_alive()
    assert done == {"value": 5} and sdb.closed
    assert 0.2 < time.monotonic() - started < 10


def test_close_with_a_timeout_closes_a_connection_still_held(db_url):
    # After timeout= the close goes on: the holder's next call raises InterfaceError. timeout=0,
    # the default, closes at once (a thread holding a connection itself would wait for ever).
    for kwargs, least in (({"timeout": 0.3}, 0.3), ({"timeout": 0}, 0.0), ({}, 0.0)):
        sdb = keel.sync.Database(db_url)
        conn = sdb.acquire()
        started = time.monotonic()
        sdb.close(**kwargs)
        assert sdb.closed and least <= time.monotonic() - started < 5, kwargs
        with pytest.raises(keel.InterfaceError, match="closed"):
            conn.fetchval("SELECT 1")
        sdb.release(conn)
    with keel.sync.Database(db_url) as sdb:
        with pytest.raises(ValueError, match="must be 0 or more seconds"):
            sdb.close(timeout=-1)
        assert not sdb.closed


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/x?connect_timeout=2",
                                 "mysql://root@127.0.0.1:1/x"])
def test_a_dead_server_is_a_connect_error(url):
    with keel.sync.Database(url) as sdb:
        started = time.monotonic()
        with pytest.raises(keel.ConnectError):
            sdb.fetchval("SELECT 1")
        with pytest.raises(keel.ConnectError):
            sdb.acquire(timeout=5)
        assert time.monotonic() - started < 20
        assert sdb.pool_stats()["leased"] == 0


def test_a_silent_server_is_a_connect_error_within_connect_timeout():
    import socket
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        url = f"postgresql://postgres@127.0.0.1:{port}/x"
        with keel.sync.Database({"databases": {"main": {"url": url,
                                                        "connect_timeout": 0.3}}}) as sdb:
            started = time.monotonic()
            with pytest.raises(keel.ConnectError) as ei:
                sdb.fetchval("SELECT 1")
            assert ei.value.code == "KEEL_ERR_TIMEOUT"
            with pytest.raises(keel.ConnectError):
                sdb.fetchval("SELECT 1", timeout=10)
            with pytest.raises(keel.ConnectError):
                sdb.acquire(timeout=10)
            assert time.monotonic() - started < 8


def test_configuration_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with keel.sync.Database("notes.db") as sdb:
        assert sdb.engine() == "sqlite"
        sdb.execute("CREATE TABLE n (a INTEGER)")
    assert (tmp_path / "notes.db").exists()
    with keel.sync.Database({"databases": {"a": {"url": "sqlite::memory:"},
                                           "b": {"url": "sqlite:///b.db"}},
                             "default": "b"}) as sdb:
        assert sdb.databases == ["a", "b"] and sdb.default_database == "b"
        assert sdb.fetchval("SELECT 3", database="a") == 3
        assert sdb.pool_stats("a")["size"] >= 1
        with pytest.raises(keel.UnknownDatabaseError):
            sdb.pool_stats("c")
    with pytest.raises(keel.ConfigError, match="databases.a.pool.max_size"):
        keel.sync.Database({"databases": {"a": {"url": "sqlite::memory:",
                                                "pool": {"max_size": "many"}}}})
    with pytest.raises(keel.ConfigError):
        keel.sync.Database(42)
    with pytest.raises(TypeError, match="configured keel.Database"):
        keel._native.SyncDatabase("sqlite::memory:")


# ---- MongoDB ----

@pytest.fixture
def mongo():
    with keel.sync.Database(MONGO_URL) as sdb:
        name = unique_name("sync")
        yield sdb, name
        sdb.collection(name).drop()


def test_mongo_collections(mongo):
    sdb, name = mongo
    coll = sdb.collection(name)
    assert isinstance(coll, keel.sync.Collection) and coll.database == "default"
    res = coll.insert_one({"_id": 1, "n": 1})
    assert res.inserted_id == 1
    coll.insert_many([{"_id": i, "n": i} for i in range(2, 11)])
    assert coll.find_one({"_id": 3}) == {"_id": 3, "n": 3}
    assert coll.find_one(4)["n"] == 4
    assert coll.find_one({"_id": 99}) is None
    assert coll.count_documents({"n": {"$gt": 5}}) == 5
    assert coll.estimated_document_count() == 10
    assert coll.update_one({"_id": 1}, {"$set": {"n": 100}}).modified_count == 1
    assert coll.update_many({"n": {"$lt": 4}}, {"$inc": {"n": 1000}}).matched_count == 2
    assert coll.delete_many({"n": {"$gte": 1000}}).deleted_count == 2
    # Cursors: several batches, iterated and listed; a with block closes one half read.
    docs = list(coll.find({}, sort=[("_id", 1)], batch_size=3))
    assert [d["_id"] for d in docs] == [1, 4, 5, 6, 7, 8, 9, 10]
    cursor = coll.find({}, sort=[("_id", 1)], batch_size=2)
    assert [d["_id"] for d in cursor.to_list(3)] == [1, 4, 5]
    assert cursor.alive and cursor.cursor_id
    assert [d["_id"] for d in cursor.to_list()] == [6, 7, 8, 9, 10]
    assert not cursor.alive
    with coll.find({}, sort=[("_id", 1)], batch_size=2) as cursor:
        next(cursor)
        assert cursor.next()["_id"] == 4  # pymongo's name, not a coroutine as keel.Cursor's
    assert not cursor.alive and sdb.pool_stats()["leased"] == 0
    agg = coll.aggregate([{"$group": {"_id": None, "total": {"$sum": "$n"}}}])
    assert [d["total"] for d in agg] == [100 + 4 + 5 + 6 + 7 + 8 + 9 + 10]
    assert sdb.command(None, {"ping": 1})["ok"] == 1
    assert sdb.ping() > 0
    assert sdb.pool_stats()["leased"] == 0


def test_mongo_errors_and_transactions(mongo):
    sdb, name = mongo
    coll = sdb.collection(name)
    coll.insert_one({"_id": "a"})
    with pytest.raises(keel.IntegrityError):
        coll.insert_one({"_id": "a"})
    with pytest.raises(TypeError):
        coll.insert_many({"_id": "not a list"})
    with pytest.raises(keel.NotSupportedError):
        with keel.sync.Database("sqlite::memory:") as lite:
            lite.collection("x")
    with pytest.raises(keel.NotSupportedError, match="use collection"):
        sdb.fetch("SELECT 1")
    # A transaction: committed, or rolled back on exception.
    with sdb.transaction() as conn:
        conn.collection(name).insert_one({"_id": "b"})
    with pytest.raises(RuntimeError, match="undo"):
        with sdb.transaction() as conn:
            conn.collection(name).insert_one({"_id": "c"})
            raise RuntimeError("undo")
    assert sorted(d["_id"] for d in coll.find()) == ["a", "b"]
    with sdb.connection() as conn:
        assert conn.command(None, {"ping": 1})["ok"] == 1
        assert conn.collection(name).count_documents({}) == 2
    assert coll.find_one({"_id": "a"}) == {"_id": "a"}


def test_mongo_pymongo_methods(mongo):
    sdb, name = mongo
    coll = sdb[name]
    assert isinstance(coll, keel.sync.Collection)
    result = coll.bulk_write([keel.InsertOne({"_id": 1, "k": "a"}),
                              keel.InsertOne({"_id": 2, "k": "b"}),
                              keel.UpdateOne({"_id": 1}, {"$set": {"k": "c"}})])
    assert result.inserted_count == 2 and result.modified_count == 1
    assert sorted(coll.distinct("k")) == ["b", "c"]
    doc = coll.find_one_and_update({"_id": 2}, {"$set": {"k": "d"}},
                                   return_document=keel.ReturnDocument.AFTER)
    assert doc == {"_id": 2, "k": "d"}
    # Chained cursor options, and a cursor whose list is awaited by keel.Collection's code.
    assert [d["_id"] for d in coll.find().sort("_id", -1).limit(1)] == [2]
    coll.create_index("k")
    assert "k_1" in coll.index_information()
    assert [ix["name"] for ix in coll.list_indexes()] == ["_id_", "k_1"]
    assert name in sdb.list_collection_names()
    other = unique_name("sync")
    created = sdb.create_collection(other)
    try:
        assert isinstance(created, keel.sync.Collection)
        with pytest.raises(keel.ProgrammingError, match="already exists"):
            sdb.create_collection(other)
    finally:
        created.drop()
    # session= takes a keel.sync connection; keel.Connection objects and others are refused.
    with sdb.transaction() as conn:
        coll.insert_one({"_id": 3}, session=conn)
        assert conn[name].count_documents({}) == 3
    with pytest.raises(TypeError, match="keel.sync.Connection"):
        coll.insert_one({"_id": 4}, session="conn")
    assert sdb.pool_stats()["leased"] == 0


def test_release_rolls_back_an_open_transaction_at_once(engine, db_url):
    # keel rolls back a released connection's transaction on its loop, which a synchronous
    # database runs only inside its next call: the ROLLBACK is sent at the release, so the
    # transaction's locks go at once all the same.
    if engine == "sqlite":
        pytest.skip("SQLite's lock is the file's, tested the same way below")
    name = unique_name("sync")
    with keel.sync.Database(db_url) as one, keel.sync.Database(db_url) as other:
        one.execute(f"CREATE TABLE {name} (a INTEGER)")
        try:
            conn = one.acquire()
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {name} VALUES (1)")
            lock = {"postgresql": f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE",
                    "mysql": f"SELECT * FROM {name} FOR UPDATE"}[engine]
            conn.execute(lock)
            one.release(conn)
            # Another pool (another session) is not held up, and the row is gone.
            assert other.fetchval(f"SELECT count(*) FROM {name}", timeout=3) == 0
            if engine == "mysql":
                other.execute(f"ALTER TABLE {name} ADD COLUMN b INTEGER", timeout=3)
        finally:
            other.execute(f"DROP TABLE IF EXISTS {name}")


def test_release_rolls_back_on_sqlite(tmp_path):
    url = "sqlite:///" + str(tmp_path / "locks.db")
    with keel.sync.Database(url) as one, keel.sync.Database(url) as other:
        one.execute("CREATE TABLE t (a INTEGER)")
        with one.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (1)")
        # The write lock went with the rollback: another connection writes at once.
        assert other.execute("INSERT INTO t VALUES (2)", timeout=3) == 1
        assert other.fetchval("SELECT count(*) FROM t") == 1


def test_a_transaction_started_and_ended_by_hand(sdb, table):
    with sdb.connection() as conn:
        tr = conn.transaction()
        with pytest.raises(keel.InterfaceError, match="cannot commit the transaction: it was "
                           "not started"):
            tr.commit()
        tr.start()
        assert conn.in_transaction
        conn.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
        inner = conn.transaction()
        inner.start()
        conn.execute(f"INSERT INTO {table} VALUES (2, 'undone')")
        with pytest.raises(keel.InterfaceError, match="a transaction nested in it is still open"):
            tr.commit()
        inner.rollback()
        tr.commit()
        assert not conn.in_transaction
        with pytest.raises(keel.InterfaceError, match="it was already committed"):
            tr.rollback()
        with pytest.raises(keel.InterfaceError, match="cannot start the transaction: it was "
                           "already committed"):
            tr.start()
        tr = conn.transaction()
        tr.start()
        conn.execute(f"INSERT INTO {table} VALUES (3, 'rolled back')")
        tr.rollback()
        with pytest.raises(keel.InterfaceError, match="it was already rolled back"):
            tr.commit()
        block = conn.transaction()
        with block:
            with pytest.raises(keel.InterfaceError, match="used as a with block"):
                block.rollback()
    assert [r["id"] for r in sdb.fetch(f"SELECT id FROM {table} ORDER BY id")] == [1]
    assert sdb.pool_stats()["leased"] == 0


# ---- prepared statements ----

SYNC_PARAMETER_TYPES = {
    "postgresql": [keel.Type("int4", "int"), keel.Type("text", "text")],
    "sqlite": [keel.Type(None, None)] * 2,
    "mysql": [keel.Type(None, None)] * 2,
}


def test_prepare_describes_and_runs_again_and_again(sdb, table, engine):
    sdb.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(i, f"item {i}") for i in range(1, 11)])
    with sdb.connection() as conn:
        stmt = conn.prepare(f"SELECT id, label FROM {table} WHERE id <= $1 AND label <> $2 "
                            "ORDER BY id")
        assert isinstance(stmt, keel.sync.PreparedStatement)
        assert isinstance(stmt, keel.PreparedStatement)
        assert [c.name for c in stmt.columns] == ["id", "label"]
        assert [c.type.keel_type for c in stmt.columns] == ["int", "text"]
        assert list(stmt.parameters) == SYNC_PARAMETER_TYPES[engine]
        assert stmt.get_parameters() == stmt.parameters
        assert stmt.get_attributes() == stmt.columns
        assert stmt.get_query().startswith(f"SELECT id, label FROM {table}")
        assert "keel.sync.PreparedStatement" in repr(stmt)
        assert [r["id"] for r in stmt.fetch(3, "")] == [1, 2, 3]
        assert [r["id"] for r in stmt.fetch(5, "item 2")] == [1, 3, 4, 5]
        assert stmt.fetchrow(10, "")["label"] == "item 1"
        assert stmt.fetchval(2, "", column=1) == "item 1"
        assert stmt.fetch(0, "") == [] and stmt.fetchrow(0, "") is None
        assert stmt.fetchval(0, "") is None
        assert conn.fetchval("SELECT 2") == 2  # other statements in between change nothing
        for n in range(1, 11):
            assert len(stmt.fetch(n, "", timeout=5)) == n
        ins = conn.prepare(f"INSERT INTO {table} VALUES ($1, $2)")
        assert ins.columns == () and len(ins.parameters) == 2


def test_prepared_executemany_and_record_class(sdb, table, engine):
    class Item(keel.Record):
        pass

    with sdb.transaction() as conn:
        ins = conn.prepare(f"INSERT INTO {table} VALUES ($1, $2)")
        assert ins.executemany([(100 + i, f"new {i}") for i in range(20)]) is None
        if engine != "mysql":  # MySQL has no DELETE … RETURNING
            ret = conn.prepare(f"DELETE FROM {table} WHERE id = $1 RETURNING id")
            assert [r["id"] for r in ret.executemany([(100,), (-1,)])] == [100]
        stmt = conn.prepare(f"SELECT id FROM {table} WHERE id = $1", record_class=Item)
        assert type(stmt.fetchrow(101)) is Item
        assert all(type(r) is Item for r in stmt.fetch(102))
        with pytest.raises(TypeError, match="record_class"):
            conn.prepare("SELECT 1", record_class=dict)
    n = 19 if engine != "mysql" else 20
    assert sdb.fetchval(f"SELECT count(*) FROM {table}") == n


def test_prepare_bad_input_and_the_connection_stays_usable(sdb, table, engine):
    sdb.execute(f"INSERT INTO {table} VALUES (3, 'item 3')")
    with sdb.connection() as conn:
        stmt = conn.prepare(f"SELECT label FROM {table} WHERE id = $1")
        with pytest.raises(keel.ProgrammingError,
                           match=r"takes 1 parameter \(\$1\) but 2 were given"):
            stmt.fetch(1, 2)
        with pytest.raises(keel.ProgrammingError, match="takes 1 parameter .* but 0 were given"):
            stmt.fetchval()
        with pytest.raises(keel.ProgrammingError, match="takes no parameters but 1 was given"):
            conn.prepare("SELECT 1").fetch(1)
        with pytest.raises(keel.DataError):
            stmt.fetch(object())
        with pytest.raises(keel.ProgrammingError, match="no_such_table") as ei:
            conn.prepare("SELECT * FROM no_such_table WHERE id = $1")
        if engine != "sqlite":
            assert ei.value.sqlstate == {"postgresql": "42P01", "mysql": "42S02"}[engine]
        with pytest.raises(keel.ProgrammingError):
            conn.prepare("SELEC 1")
        with pytest.raises(TypeError, match="must be a str"):
            conn.prepare(b"SELECT 1")
        assert stmt.fetchval(3) == "item 3"
        assert conn.fetchval("SELECT 41 + 1") == 42 and not conn.in_transaction
    # Once its connection is released, neither it nor the connection prepares or runs.
    with pytest.raises(keel.InterfaceError, match="connection has been released"):
        stmt.fetchval(3)
    with pytest.raises(keel.InterfaceError, match="connection has been released"):
        stmt.executemany([(1,)])
    with pytest.raises(keel.InterfaceError):
        conn.prepare("SELECT 1")
    assert sdb.pool_stats()["leased"] == 0


def test_prepare_on_mongodb_is_not_supported(mongo):
    sdb, _ = mongo
    with sdb.connection() as conn:
        with pytest.raises(keel.NotSupportedError):
            conn.prepare("SELECT 1")
        assert conn.command(None, {"ping": 1})["ok"] == 1


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


def test_set_type_codec_decodes_and_encodes_on_postgresql():
    from conftest import PG_URL
    with keel.sync.Database(PG_URL) as sdb:
        name, t = unique_name("spt"), unique_name("spgt")
        sdb.execute(f"CREATE TYPE {name} AS (x int, y int)")
        try:
            sdb.execute(f"CREATE TABLE {t} (id int, p {name})")
            sdb.set_type_codec(name, encoder=point_text, decoder=point_of)
            assert sdb.fetchval(f"SELECT ROW(1, 2)::{name}") == Point(1, 2)
            assert sdb.fetchval(f"SELECT $1::{name}", Point(3, 4)) == Point(3, 4)
            assert sdb.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, Point(5, 6)) == 1
            assert sdb.fetchval(f"SELECT $1::{name}[]", [Point(1, 2), None]) == [Point(1, 2),
                                                                                  None]
            sdb.executemany(f"INSERT INTO {t} VALUES ($1, $2)",
                            ((i, Point(i, -i)) for i in range(10, 12)))
            # Every connection of the Database has it, and a prepared statement too.
            with sdb.connection() as conn:
                assert conn.fetchval(f"SELECT p FROM {t} WHERE id = 1") == Point(5, 6)
                assert conn.fetchrow(f"SELECT $1::{name} AS p", Point(0, -1))["p"] == Point(0, -1)
                conn.executemany(f"INSERT INTO {t} VALUES ($1, $2)", [(13, Point(1, 3)), (14, None)])
                stmt = conn.prepare(f"SELECT p FROM {t} WHERE p = $1::{name}")
                assert stmt.fetchval(Point(10, -10)) == Point(10, -10)
            assert [r["p"] for r in sdb.fetch(f"SELECT p FROM {t} ORDER BY id")] == [
                Point(5, 6), Point(10, -10), Point(11, -11), Point(1, 3), None]
            # A value keel converts itself is never given to an encoder.
            assert sdb.fetchval(f"SELECT $1::{name}", "(9,9)") == Point(9, 9)
            # Another Database (sync or not) is untouched.
            with keel.sync.Database(PG_URL) as other:
                assert other.fetchval(f"SELECT ROW(1, 2)::{name}") == "(1,2)"
        finally:
            sdb.execute(f"DROP TABLE IF EXISTS {t}")
            sdb.execute(f"DROP TYPE IF EXISTS {name} CASCADE")


def test_set_type_codec_through_a_connection_on_postgresql():
    from conftest import PG_URL
    with keel.sync.Database(PG_URL) as sdb:
        with sdb.connection() as conn:
            conn.set_type_codec("json", schema="pg_catalog", encoder=None,
                                decoder=lambda s: ("json", s))
            assert conn.fetchval("SELECT '[1, 2]'::json") == ("json", "[1, 2]")
        assert sdb.fetchval("SELECT '{}'::json") == ("json", "{}")
        assert sdb.fetchval("SELECT '{}'::jsonb") == {}
        sdb.set_type_codec("json", schema="pg_catalog", encoder=None, decoder=None)
        assert sdb.fetchval("SELECT '[1]'::json") == [1]


class Months:
    """An interval as months only, a value for a tuple or binary encoder."""

    def __init__(self, n):
        self.n = n


def test_tuple_and_binary_codecs_on_postgresql():
    import struct
    with keel.sync.Database(PG_URL) as sdb:
        sdb.set_type_codec("interval", schema="pg_catalog", encoder=lambda m: (m.n, 0, 0),
                           decoder=lambda t: ("tuple", t), format="tuple")
        sql = "SELECT '1 year 2 days 00:00:01'::interval, $1::interval"
        with sdb.connection() as conn:
            # The first run (text results) and the later ones (binary) agree.
            assert [tuple(conn.fetchrow(sql, Months(2))) for _ in range(3)] == [
                (("tuple", (12, 2, 1000000)), ("tuple", (2, 0, 0)))] * 3
        assert sdb.fetchval("SELECT $1::interval[]", [Months(1), None]) == [
            ("tuple", (1, 0, 0)), None]
        with sdb.connection() as conn:
            conn.set_type_codec("date", schema="pg_catalog", format="binary",
                                encoder=lambda m: struct.pack(">i", m.n * 31),
                                decoder=lambda b: ("binary", b))
        assert tuple(sdb.fetchrow("SELECT 'infinity'::date, $1::date::text", Months(1))) == (
            ("binary", struct.pack(">i", 2**31 - 1)), "2000-02-01")


def test_tuple_codec_for_a_composite_on_postgresql():
    with keel.sync.Database(PG_URL) as sdb:
        name = unique_name("spt")
        sdb.execute(f"CREATE TYPE {name} AS (x int, label text)")
        try:
            with sdb.connection() as conn:
                conn.set_type_codec(name, format="tuple", encoder=lambda p: (p.x, str(p.y)),
                                    decoder=lambda t: ("tuple", t))
                sql = f"SELECT ROW(1, 'a, \"b\"')::{name}, $1::{name}"
                # The first run (text results) and the later ones agree.
                assert [tuple(conn.fetchrow(sql, Point(2, 3))) for _ in range(3)] == [
                    (("tuple", (1, 'a, "b"')), ("tuple", (2, "3")))] * 3
            assert sdb.fetchval(f"SELECT $1::{name}[]", [Point(4, None), None]) == [
                ("tuple", (4, "None")), None]
        finally:
            sdb.execute(f"DROP TYPE {name}")


def test_set_type_codec_bad_input(sdb, engine):
    if engine != "postgresql":
        with pytest.raises(keel.NotSupportedError, match="type codecs are PostgreSQL's"):
            sdb.set_type_codec("x", encoder=str, decoder=str)
        with sdb.connection() as conn:
            with pytest.raises(keel.NotSupportedError, match="type codecs are PostgreSQL's"):
                conn.set_type_codec("x", encoder=str, decoder=str)
            assert conn.fetchval("SELECT 1") == 1
        return
    with pytest.raises(ValueError, match=r"unknown type: public\.no_such_type"):
        sdb.set_type_codec("no_such_type", encoder=str, decoder=str)
    with pytest.raises(keel.NotSupportedError, match="format='binary' is available for the "
                                                     "pg_catalog types bool, bpchar"):
        sdb.set_type_codec("point", schema="pg_catalog", encoder=str, decoder=str,
                           format="binary")
    with pytest.raises(keel.NotSupportedError, match="keel decodes pg_catalog.int4 itself"):
        sdb.set_type_codec("int4", schema="pg_catalog", encoder=str, decoder=int)
    with pytest.raises(TypeError, match="decoder must be callable, not int"):
        sdb.set_type_codec("json", schema="pg_catalog", encoder=None, decoder=1)
    name = unique_name("spt")
    sdb.execute(f"CREATE TYPE {name} AS (x int, y int)")
    try:
        sdb.set_type_codec(name, encoder=point_text, decoder=lambda s: 1 / 0)
        with pytest.raises(keel.DataError, match=f'column "p": cannot decode text value: the '
                                                 f"decoder of type {name} failed: division by "
                                                 "zero"):
            sdb.fetchval(f"SELECT 1 AS a, ROW(1, 2)::{name} AS p", column=1)
        with pytest.raises(keel.DataError, match=rf"parameter \$1: the encoder of type {name} "
                                                 r"failed: 'object' object has no attribute 'x'"):
            sdb.fetchval(f"SELECT $1::{name}", object())
        with sdb.connection() as conn:
            with pytest.raises(keel.DataError, match=rf"parameter \$1: the encoder of type {name}"):
                conn.execute(f"SELECT $1::{name}", object())
            assert conn.fetchval("SELECT 1") == 1
        sdb.set_type_codec(name, encoder=lambda p: 5, decoder=None)
        with pytest.raises(keel.DataError, match=r"returned int, not str"):
            sdb.fetchval(f"SELECT $1::{name}", Point(1, 2))
        assert sdb.fetchval("SELECT 1") == 1
    finally:
        sdb.execute(f"DROP TYPE {name} CASCADE")


# ---- cursors ----

COUNT_TO = ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < {}) "
            "SELECT n FROM t")


def test_cursor_streams_rows(sdb, engine):
    class Row(keel.Record):
        pass

    with sdb.connection() as conn:
        q = COUNT_TO.format(1000)
        assert [r["n"] for r in conn.cursor(q, prefetch=10)] == list(range(1, 1001))
        with conn.cursor(q + " WHERE n > $1", 990, prefetch=3) as cur:
            assert isinstance(cur, keel.sync.RowCursor) and not cur.closed
            assert [r["n"] for r in cur.fetch(2)] == [991, 992]
            assert cur.fetchrow()["n"] == 993
            assert cur.forward(5) == 5
            assert [r["n"] for r in cur.fetch(10)] == [999, 1000]
            assert cur.fetch(10) == [] and cur.fetchrow() is None and cur.closed
        assert all(type(r) is Row for r in conn.cursor(q, record_class=Row, prefetch=500))
        assert [p.n for p in conn.cursor(COUNT_TO.format(3), into=lambda n: type("P", (), {"n": n}))] == [1, 2, 3]
        assert conn.cursor(q).forward(5000) == 1000
        # Closed early, or dropped in the middle of a for loop: the connection serves on.
        cur = conn.cursor(q, prefetch=1)
        assert cur.fetchrow()["n"] == 1
        cur.close()
        cur.close()
        assert cur.closed
        with pytest.raises(keel.InterfaceError, match="cursor is closed"):
            cur.fetch(1)
        for r in conn.cursor(q, prefetch=5):
            if r["n"] == 3:
                break
        assert conn.fetchval("SELECT 41 + 1") == 42
        # Inside a transaction too.
        with conn.transaction():
            assert len(conn.cursor(q, timeout=10).fetch(3000)) == 1000
        assert not conn.in_transaction


def test_cursor_bad_input_and_errors(sdb, engine):
    q = COUNT_TO.format(100)
    with sdb.connection() as conn:
        with pytest.raises(ValueError, match="prefetch must be at least 1, not 0"):
            conn.cursor(q, prefetch=0)
        with pytest.raises(TypeError, match="prefetch must be an int, not str"):
            conn.cursor(q, prefetch="5")
        with pytest.raises(TypeError, match="must be a str"):
            conn.cursor(b"SELECT 1")
        with pytest.raises(keel.ProgrammingError, match="no_such_table"):
            list(conn.cursor("SELECT * FROM no_such_table"))
        with pytest.raises(keel.DataError):
            conn.cursor("SELECT $1", object())
        cur = conn.cursor(q, prefetch=2)
        with pytest.raises(ValueError, match="n must be at least 1, not 0"):
            cur.fetch(0)
        # The connection is busy with the cursor until it is read or closed (its rows may
        # all have arrived already).
        with pytest.raises(keel.InterfaceError, match="busy"):
            conn.cursor(q)
        assert cur.fetchrow()["n"] == 1
        cur.close()
        assert conn.fetchval("SELECT 1") == 1
    # A connection released with a cursor open: the cursor's statement is stopped.
    conn = sdb.acquire()
    cur = conn.cursor(q, prefetch=2)
    sdb.release(conn)
    with pytest.raises(keel.InterfaceError):
        cur.fetch(5)
    assert sdb.pool_stats()["leased"] == 0 and sdb.fetchval("SELECT 7") == 7


def test_cursor_a_row_that_cannot_be_decoded_names_its_column(db_url, engine):
    jtype = {"postgresql": "JSONB", "mysql": "JSON", "sqlite": "JSON"}[engine]
    name = unique_name("scur")
    with keel.sync.Database(db_url, json_deserializer=lambda s: 1 / 0) as sdb:
        sdb.execute(f"CREATE TABLE {name} (id INTEGER, doc {jtype})")
        try:
            sdb.executemany(f"INSERT INTO {name} VALUES ($1, $2)", [(1, None), (2, None), (3, '{"a": 1}')])
            with sdb.connection() as conn:
                cur = conn.cursor(f"SELECT id, doc FROM {name} ORDER BY id", prefetch=10)
                assert [r["id"] for r in cur.fetch(2)] == [1, 2]
                with pytest.raises(keel.DataError, match='column "doc"'):
                    cur.fetch(2)
                assert cur.fetch(1) == []
                assert conn.fetchval("SELECT 5") == 5
        finally:
            sdb.execute(f"DROP TABLE {name}")


def test_cursor_timeout(db_url, engine):
    with keel.sync.Database(db_url) as sdb, sdb.connection() as conn:
        with pytest.raises(keel.QueryTimeout):
            list(conn.cursor(SLOW_SQL[engine], timeout=0.2))
        assert conn.fetchval("SELECT 3") == 3


def test_cursor_streams_a_huge_result_without_reading_it_all(sdb, engine):
    # 10**8 rows: reading them all would take minutes and gigabytes; the cursor hands over the
    # first ones at once and its close stops the statement. (MariaDB computes a recursive CTE
    # whole before its first row: its SEQUENCE engine's table streams.)
    sql = ("SELECT seq AS n FROM seq_1_to_100000000" if engine == "mysql"
           else COUNT_TO.format(10**8))
    with sdb.connection() as conn:
        started = time.monotonic()
        cur = conn.cursor(sql, prefetch=5, timeout=30)
        assert [r["n"] for r in cur.fetch(3)] == [1, 2, 3]
        assert cur.forward(1000) == 1000 and cur.fetchrow()["n"] == 1004
        cur.close()
        assert time.monotonic() - started < 5
        assert conn.fetchval("SELECT 6") == 6


# ---- notifications (PostgreSQL's LISTEN/NOTIFY) ----

def _channel():
    import uuid
    return f"keel_sync_{uuid.uuid4().hex[:8]}"


def test_listen_iterates_notifications_until_its_timeout():
    channel = _channel()
    with keel.sync.Database(PG_URL) as sdb:
        with sdb.listen(channel, timeout=0.3) as notes:
            assert sdb.pool_stats()["leased"] == 1  # its connection stays out of the pool
            pid = sdb.fetchval("SELECT pg_backend_pid()")
            sdb.execute("SELECT pg_notify($1, $2)", channel, "héllo")
            sdb.execute("SELECT pg_notify($1, '')", channel)
            started = time.monotonic()
            got = list(notes)  # the two, then 0.3 s without one: the loop ends
            assert 0.25 < time.monotonic() - started < 3
            assert got == [keel.Notification(channel, "héllo", pid),
                           keel.Notification(channel, "", pid)]
            assert isinstance(got[0], keel.sync.Notification)
            # The listener stays open: a later notification comes to the next iteration,
            # which waits for it (sent from another thread meanwhile).
            sender = threading.Timer(0.2, sdb.execute, ("SELECT pg_notify($1, 'late')", channel))
            sender.start()
            assert next(notes).payload == "late"
            sender.join()
            assert "listening" in repr(notes)
        assert "closed" in repr(notes) and list(notes) == []
        # Its connection was unlistened and went back to the pool.
        assert sdb.pool_stats()["leased"] == 0
        with sdb.connection() as conn:
            assert conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        # Started by the first iteration, without `with`; close() by hand.
        notes = sdb.listen(channel, timeout=0.05)
        assert "new" in repr(notes) and list(notes) == [] and sdb.pool_stats()["leased"] == 1
        notes.close()
        assert sdb.pool_stats()["leased"] == 0
        with pytest.raises(keel.InterfaceError, match="closed"):
            notes.start()


def test_listen_waits_without_end_and_ctrl_c_stops_it():
    import os
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    with keel.sync.Database(PG_URL) as sdb:
        with sdb.listen(_channel()) as notes:
            timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
            started = time.monotonic()
            timer.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    next(notes)
            finally:
                timer.cancel()
            assert time.monotonic() - started < 2
        assert sdb.fetchval("SELECT 1") == 1 and sdb.pool_stats()["leased"] == 0


def test_close_ends_a_wait_for_notifications_in_another_thread():
    # close() waits for other threads' calls to end, but not for a wait for notifications,
    # which may never end: that one raises InterfaceError.
    sdb = keel.sync.Database(PG_URL)
    result = {}
    listening = threading.Event()

    def wait():
        try:
            with sdb.listen(_channel()) as notes:
                listening.set()
                result["value"] = next(notes)
        except Exception as e:  # noqa: BLE001 - reported below
            result["value"] = e

    thread = threading.Thread(target=wait)
    thread.start()
    assert listening.wait(10)
    time.sleep(0.2)
    started = time.monotonic()
    sdb.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 3
    assert isinstance(result["value"], keel.InterfaceError), result
    assert "closed" in str(result["value"])


def test_add_listener_calls_back_from_wait_notifications():
    channel, other = _channel(), _channel()
    got = []
    with keel.sync.Database(PG_URL) as sdb, sdb.connection() as conn:
        def on(c, pid, ch, payload):
            got.append((c, pid, ch, payload))

        conn.add_listener(channel, on)
        conn.add_listener(channel, on)  # a no-op the second time
        conn.add_listener(other, on)
        assert conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 2
        pid = sdb.fetchval("SELECT pg_backend_pid()")
        sdb.execute("SELECT pg_notify($1, 'one')", channel)
        assert conn.fetchval("SELECT 1") == 1  # callbacks never run inside another call
        assert got == []
        sdb.execute("SELECT pg_notify($1, 'two')", other)
        delivered = conn.wait_notifications(5)  # one or both, as they have come
        if delivered == 1:
            delivered += conn.wait_notifications(5)
        assert delivered == 2
        assert got == [(conn, pid, channel, "one"), (conn, pid, other, "two")]
        started = time.monotonic()
        assert conn.wait_notifications(0.2) == 0  # none in time
        assert 0.15 < time.monotonic() - started < 3
        # A callback that raises: the exception propagates, the next notification waits.
        def boom(*a):
            raise ValueError("boom")

        conn.remove_listener(other, on)
        conn.add_listener(other, boom)
        with sdb.transaction() as sender:  # both arrive together, at the commit
            sender.execute("SELECT pg_notify($1, 'x')", other)
            sender.execute("SELECT pg_notify($1, 'three')", channel)
        with pytest.raises(ValueError, match="boom"):
            conn.wait_notifications(5)
        assert conn.wait_notifications(5) == 1 and got[-1][3] == "three"
        conn.remove_listener(other, boom)
        conn.remove_listener(channel, on)
        conn.remove_listener(channel, on)  # a no-op
        assert conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        with pytest.raises(keel.InterfaceError, match="add_listener first"):
            conn.wait_notifications(0)
        conn.add_listener(channel, on)
    # Released: unlistened before anyone else gets the connection.
    with keel.sync.Database({"databases": {"main": {"url": PG_URL,
                                                    "pool": {"max_size": 1}}}}) as one:
        with one.connection() as conn:
            conn.add_listener(channel, on)
        with one.connection() as conn2:
            assert conn2.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        with pytest.raises(keel.InterfaceError, match="released"):
            conn.add_listener(channel, on)


def test_bad_listen_arguments_are_refused():
    with keel.sync.Database(PG_URL) as sdb:
        with pytest.raises(TypeError, match="a channel is a str"):
            sdb.listen(None)
        with pytest.raises(keel.InterfaceError, match="non-empty name"):
            sdb.listen("")
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            sdb.listen("ch", timeout=-1)
        with pytest.raises(TypeError, match="timeout must be a number"):
            sdb.listen("ch", timeout="1")
        with pytest.raises(keel.UnknownDatabaseError):
            sdb.listen("x", database="nope").start()
        with sdb.connection() as conn:
            with pytest.raises(TypeError, match="callable"):
                conn.add_listener("ok", "not callable")
            with pytest.raises(TypeError, match="a channel is a str"):
                conn.add_listener(42, print)
        assert sdb.pool_stats()["leased"] == 0


def test_notifications_are_refused_on_other_engines(db_url, engine):
    if engine == "postgresql":
        pytest.skip("PostgreSQL has notifications")
    with keel.sync.Database(db_url) as sdb:
        with sdb.connection() as conn:
            with pytest.raises(keel.NotSupportedError, match="LISTEN/NOTIFY is PostgreSQL's"):
                conn.add_listener("ch", print)
            assert conn.fetchval("SELECT 1") == 1
        with pytest.raises(keel.NotSupportedError, match="LISTEN/NOTIFY is PostgreSQL's"):
            with sdb.listen("ch"):
                pass
        with pytest.raises(keel.NotSupportedError):
            next(sdb.listen("ch"))
        assert sdb.pool_stats()["leased"] == 0


@pytest.mark.skipif(not MONGO_URL, reason="KEEL_TEST_MONGO_URL is empty")
def test_notifications_are_refused_on_mongodb():
    with keel.sync.Database(MONGO_URL) as sdb:
        with pytest.raises(keel.NotSupportedError, match="mongodb engine"):
            sdb.listen("ch").start()
        with sdb.connection() as conn:
            with pytest.raises(keel.NotSupportedError):
                conn.add_listener("ch", print)
        assert sdb.pool_stats()["leased"] == 0


def test_listen_whose_connection_is_lost_raises_connection_lost():
    from urllib.parse import urlsplit

    from proxy import TcpProxy

    u = urlsplit(PG_URL)
    with TcpProxy(u.hostname, u.port) as proxy:
        config = {"databases": {"main": {"url": proxy.url(PG_URL),
                                         "pool": {"min_size": 0, "max_size": 1}}}}
        with keel.sync.Database(config) as sdb:
            with sdb.listen("keel_lost", timeout=10) as notes:
                proxy.cut()
                with pytest.raises(keel.ConnectionLost, match="while it listened") as e:
                    next(notes)
                assert e.value.database == "main"
                assert list(notes) == []
            assert sdb.pool_stats()["leased"] == 0


# ---- MongoDB change streams ----

def _watch_or_skip(coll, **kwargs):
    """An opened synchronous change stream, or a skip naming the server's refusal."""
    stream = coll.watch(**kwargs)
    try:
        return stream.open()
    except keel.DatabaseError as exc:
        if "changeStream" in str(exc) or "replica set" in str(exc):
            pytest.skip(f"the server refuses change streams: {exc}")
        raise


def test_watch_iterates_changes(mongo):
    mongo_sdb, name = mongo
    coll = mongo_sdb[name]
    with _watch_or_skip(coll, max_await_time_ms=200) as stream:
        assert isinstance(stream, keel.sync.ChangeStream) and "open" in repr(stream)
        assert stream.alive and stream.resume_token is not None
        assert stream.try_next() is None  # nothing yet: one wait, then None
        coll.insert_one({"_id": 1, "n": 1})
        coll.update_one({"_id": 1}, {"$set": {"n": 2}})
        coll.delete_one({"_id": 1})
        changes = [next(stream) for _ in range(3)]
        assert [c["operationType"] for c in changes] == ["insert", "update", "delete"]
        assert changes[0]["fullDocument"] == {"_id": 1, "n": 1}
        assert changes[1]["updateDescription"]["updatedFields"] == {"n": 2}
        assert stream.resume_token == changes[2]["_id"]
        assert mongo_sdb.pool_stats()["leased"] == 1  # the stream holds its connection
    assert not stream.alive and mongo_sdb.pool_stats()["leased"] == 0
    # A pipeline after $changeStream, full_document="updateLookup", next() (pymongo's name),
    # and a stream opened by its first iteration.
    stream = coll.watch([{"$match": {"operationType": "update"}}],
                        full_document="updateLookup", max_await_time_ms=100)
    coll.insert_one({"_id": 2, "n": 0})  # before the stream opens: not seen
    try:
        assert stream.try_next() is None
        coll.update_one({"_id": 2}, {"$inc": {"n": 5}})
        change = stream.next()
        assert change["operationType"] == "update" and change["fullDocument"] == {"_id": 2, "n": 5}
    finally:
        stream.close()
    assert mongo_sdb.pool_stats()["leased"] == 0
    with pytest.raises(TypeError, match="pipeline must be a list"):
        coll.watch({"$match": {}})
    with pytest.raises(keel.ProgrammingError, match="resume_after or start_after, not both"):
        coll.watch(resume_after={"_data": "00"}, start_after={"_data": "00"})


def test_watch_resumes_and_ends_on_invalidate(mongo):
    mongo_sdb, name = mongo
    coll = mongo_sdb[name]
    with _watch_or_skip(coll, max_await_time_ms=200) as stream:
        coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}])
        assert next(stream)["documentKey"] == {"_id": 1}
        token = stream.resume_token
    # resume_after / start_after: the changes after the token, none lost, none repeated.
    with coll.watch(resume_after=token, max_await_time_ms=200) as stream:
        assert [next(stream)["documentKey"]["_id"] for _ in range(2)] == [2, 3]
    with coll.watch(start_after=token, max_await_time_ms=200) as stream:
        assert next(stream)["documentKey"] == {"_id": 2}
    # The server loses the cursor (killed from another connection): the stream resumes by
    # itself from its token.
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_one({"_id": 4})
        assert next(stream)["documentKey"] == {"_id": 4}
        killed = stream._cursor.cursor_id
        reply = mongo_sdb.command(None, {"killCursors": coll.name, "cursors": [killed]})
        assert reply["cursorsKilled"] == [killed]
        coll.insert_one({"_id": 5})
        assert next(stream)["documentKey"] == {"_id": 5}
        assert stream._cursor.cursor_id != killed
    # Dropping the collection ends the stream: drop, then invalidate, then the loop ends.
    with coll.watch(max_await_time_ms=100) as stream:
        coll.insert_one({"_id": 6})
        coll.drop()
        assert [c["operationType"] for c in stream] == ["insert", "drop", "invalidate"]
        assert not stream.alive and stream.try_next() is None
    assert mongo_sdb.pool_stats()["leased"] == 0


def test_watch_a_whole_database_and_on_a_session(mongo):
    mongo_sdb, name = mongo
    a, b = mongo_sdb[name], mongo_sdb[unique_name("wb")]
    try:
        stream = mongo_sdb.watch([{"$match": {"ns.coll": {"$in": [a.name, b.name]}}}],
                                 max_await_time_ms=200)
        try:
            stream.open()
        except keel.DatabaseError as exc:
            pytest.skip(f"the server refuses database change streams: {exc}")
        with stream:
            a.insert_one({"_id": 1})
            b.insert_one({"_id": 2})
            changes = [next(stream) for _ in range(2)]
            assert [(c["ns"]["coll"], c["documentKey"]["_id"]) for c in changes] == [
                (a.name, 1), (b.name, 2)]
            assert "database" in repr(stream)
        with mongo_sdb.connection() as conn:
            with a.watch(session=conn, max_await_time_ms=100) as stream:
                a.insert_one({"_id": 3})
                assert next(stream)["documentKey"] == {"_id": 3}
            assert conn[a.name].count_documents({}) == 2  # conn still serves
        assert mongo_sdb.pool_stats()["leased"] == 0
    finally:
        a.drop()
        b.drop()


def test_ctrl_c_stops_a_change_stream(mongo):
    # The server may honour the cancel of a waiting getMore only when its wait ends
    # (max_await_time_ms): Ctrl-C does not wait for that. The pool takes a leased connection
    # back once the command has ended; a connection of the caller's serves its next command
    # after it.
    import os
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    mongo_sdb, name = mongo
    coll = mongo_sdb[name]

    def interrupted(stream):
        timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                next(stream)
        finally:
            timer.cancel()
            stream.close()
        assert time.monotonic() - started < 1.5

    interrupted(_watch_or_skip(coll, max_await_time_ms=3000))
    assert coll.count_documents({}) == 0
    deadline = time.monotonic() + 10
    while mongo_sdb.pool_stats()["leased"] and time.monotonic() < deadline:
        mongo_sdb.ping()  # the loop runs only inside calls: this one takes the connection back
        time.sleep(0.05)
    assert mongo_sdb.pool_stats()["leased"] == 0
    with mongo_sdb.connection() as conn:
        interrupted(coll.watch(session=conn, max_await_time_ms=3000))
        assert conn[name].insert_one({"_id": 1}).inserted_id == 1
        assert conn[name].count_documents({}) == 1
    deadline = time.monotonic() + 10
    while mongo_sdb.pool_stats()["leased"] and time.monotonic() < deadline:
        mongo_sdb.ping()  # the loop runs only inside calls: this one takes the connection back
        time.sleep(0.05)
    assert mongo_sdb.pool_stats()["leased"] == 0
