# tests/python/test_sqlite.py - SQLite only: cached reads run inline on the event loop thread.
"""SQLite runs a cached read-only query inline on the loop thread when it fits the
`inline_steps` budget, and on a worker thread otherwise (src/engines/sqlite/sqlite.c). Both paths
must give the same results; a read that outgrows its budget or meets a lock moves to a worker, so
the loop never waits for it; a bad budget is a configuration error naming its key."""
import asyncio
import datetime
import decimal
import time

import pytest

import keel

COUNT_SQL = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $1) "
             "SELECT count(*) FROM n")


def sqlite_db(path, *, pool=1, **options):
    """An unstarted Database on the SQLite file path, with engine options."""
    return keel.Database({"default": "main", "databases": {"main": {
        "url": f"sqlite:///{path}",
        "pool": {"min_size": 1, "max_size": pool, "acquire_timeout": 10},
        "options": {k: str(v) for k, v in options.items()}}}})


class Ticker:
    """Counts how often the loop runs a task that sleeps 10 ms at a time."""

    def __init__(self):
        self.ticks = 0
        self.stop = False
        self.task = asyncio.create_task(self.run())

    async def run(self):
        while not self.stop:
            await asyncio.sleep(0.01)
            self.ticks += 1

    async def close(self):
        self.stop = True
        await self.task


@pytest.mark.parametrize("inline_steps", [1000, 0])
async def test_cached_reads_give_the_same_results_inline_or_not(tmp_path, inline_steps):
    async with sqlite_db(tmp_path / "t.db", inline_steps=inline_steps) as d:
        await d.execute("CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC, "
                        "day DATE, ok BOOLEAN)")
        await d.executemany("INSERT INTO p VALUES ($1, $2, $3, $4, $5)", [
            (i, f"item {i}", decimal.Decimal(f"{i}.50"), datetime.date(2024, 1, i % 28 + 1),
             i % 2 == 0) for i in range(1, 201)])
        async with d.connection() as conn:
            # The first run prepares the statement; the following ones find it cached.
            for i in (1, 2, 150, 200, 201):
                row = await conn.fetchrow("SELECT * FROM p WHERE id = $1", i)
                if i == 201:
                    assert row is None
                    continue
                assert tuple(row) == (i, f"item {i}", decimal.Decimal(f"{i}.50"),
                                      datetime.date(2024, 1, i % 28 + 1), i % 2 == 0)
            rows = await conn.fetch("SELECT id FROM p WHERE id <= $1 ORDER BY id DESC", 30)
            rows = await conn.fetch("SELECT id FROM p WHERE id <= $1 ORDER BY id DESC", 30)
            assert [r[0] for r in rows] == list(range(30, 0, -1))
            # Inside a transaction a read sees the transaction's own writes.
            async with conn.transaction():
                await conn.execute("UPDATE p SET name = 'changed' WHERE id = 7")
                assert await conn.fetchval("SELECT name FROM p WHERE id = $1", 7) == "changed"
                assert await conn.fetchval("SELECT name FROM p WHERE id = $1", 7) == "changed"
            # A run-time error of a cached read is raised as usual.
            assert await conn.fetchval("SELECT json_extract($1, '$.a')", '{"a": 3}') == 3
            with pytest.raises(keel.DatabaseError, match="malformed JSON"):
                await conn.fetchval("SELECT json_extract($1, '$.a')", "{nope")
            assert await conn.fetchval("SELECT count(*) FROM p") == 200


async def test_a_long_cached_read_moves_to_a_worker_and_the_loop_keeps_running(tmp_path):
    async with sqlite_db(tmp_path / "t.db") as d:
        async with d.connection() as conn:
            assert await conn.fetchval(COUNT_SQL, 10) == 10
            assert await conn.fetchval(COUNT_SQL, 10) == 10  # cached: runs inline
            ticker = Ticker()
            await asyncio.sleep(0.05)
            before, t0 = ticker.ticks, time.monotonic()
            assert await conn.fetchval(COUNT_SQL, 8_000_000) == 8_000_000
            elapsed, during = time.monotonic() - t0, ticker.ticks - before
            await ticker.close()
            assert elapsed >= 0.3, f"the long read took only {elapsed:.3f} s: the test proves nothing"
            # Run inline to its end, the read would have kept the loop from ticking at all.
            assert during >= 0.25 * elapsed / 0.01, (during, elapsed)
            assert await conn.fetchval(COUNT_SQL, 20) == 20


async def test_a_cached_read_blocked_by_a_writer_waits_on_a_worker(tmp_path):
    # In rollback-journal mode a writer's exclusive lock keeps every reader out.
    async with sqlite_db(tmp_path / "t.db", pool=2, journal_mode="DELETE",
                         transaction_mode="EXCLUSIVE") as d:
        await d.execute("CREATE TABLE w (x INTEGER)")
        await d.execute("INSERT INTO w VALUES (1)")
        async with d.connection() as writer, d.connection() as reader:
            assert await reader.fetchval("SELECT count(*) FROM w") == 1
            assert await reader.fetchval("SELECT count(*) FROM w") == 1
            ticker = Ticker()
            async with writer.transaction():
                await writer.execute("INSERT INTO w VALUES (2)")
                read = asyncio.create_task(reader.fetchval("SELECT count(*) FROM w"))
                await asyncio.sleep(0.3)
                # The read waits for the lock without holding up the loop.
                assert not read.done()
                assert ticker.ticks >= 5
            assert await asyncio.wait_for(read, 10) == 2
            await ticker.close()


async def test_a_cached_read_fails_once_busy_timeout_has_passed(tmp_path):
    async with sqlite_db(tmp_path / "t.db", pool=2, journal_mode="DELETE",
                         transaction_mode="EXCLUSIVE", busy_timeout=300) as d:
        await d.execute("CREATE TABLE w (x INTEGER)")
        async with d.connection() as writer, d.connection() as reader:
            assert await reader.fetchval("SELECT count(*) FROM w") == 0
            async with writer.transaction():
                t0 = time.monotonic()
                with pytest.raises(keel.OperationalError, match="locked"):
                    await reader.fetchval("SELECT count(*) FROM w")
                # The wait happened (on a worker): an inline read would have failed at once.
                assert time.monotonic() - t0 >= 0.25
            assert await reader.fetchval("SELECT count(*) FROM w") == 0


async def test_cancelling_cached_reads(tmp_path):
    async with sqlite_db(tmp_path / "t.db") as d:
        async with d.connection() as conn:
            assert await conn.fetchval("SELECT 7") == 7
            # Cancelled after the inline run, before its result was delivered.
            task = asyncio.create_task(conn.fetchval("SELECT 7"))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await conn.fetchval("SELECT 7") == 7
            # Cancelled while it runs on a worker after outgrowing its budget.
            assert await conn.fetchval(COUNT_SQL, 5) == 5
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(conn.fetchval(COUNT_SQL, 1_000_000_000), 0.2)
            assert time.monotonic() - t0 < 5
            assert await conn.fetchval(COUNT_SQL, 5) == 5


@pytest.mark.parametrize("value", ["-1", "lots", "2.5", "99999999999"])
def test_a_bad_inline_steps_is_a_config_error_naming_the_key(tmp_path, value):
    with pytest.raises(keel.ConfigError, match=r"databases\.main\.options\.inline_steps"):
        sqlite_db(tmp_path / "t.db", inline_steps=value)
