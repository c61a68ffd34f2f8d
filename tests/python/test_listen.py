# tests/python/test_listen.py - PostgreSQL notifications: add_listener / remove_listener, db.listen(), refusals elsewhere.
import asyncio
from urllib.parse import urlsplit

import pytest

import keel
from conftest import MONGO_URL, PG_URL, close_db, wait_until
from proxy import TcpProxy


def channel_name(prefix="keel_ch"):
    import uuid
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def listening(conn):
    return await conn.fetchval("SELECT count(*) FROM pg_listening_channels()")


async def test_add_listener_calls_back_like_asyncpg(pg_db):
    # callback(connection, pid, channel, payload): a plain function and a coroutine function.
    channel = channel_name('Mixed "Case"')
    got, got_async = [], []

    async def on_async(conn, pid, ch, payload):
        await asyncio.sleep(0)
        got_async.append((conn, pid, ch, payload))

    async with pg_db.connection() as conn:
        await conn.add_listener(channel, lambda *a: got.append(a))
        await conn.add_listener(channel, on_async)
        assert await listening(conn) == 1
        async with pg_db.connection() as sender:
            pid = await sender.fetchval("SELECT pg_backend_pid()")
            await sender.execute("SELECT pg_notify($1, $2)", channel, "héllo")
            await sender.execute("SELECT pg_notify($1, '')", channel)
        # conn runs nothing meanwhile: keel reads its socket while it is idle.
        await wait_until(lambda: len(got) == 2 and len(got_async) == 2)
        assert got == [(conn, pid, channel, "héllo"), (conn, pid, channel, "")]
        assert got_async == got


async def test_notifications_sent_by_the_listening_connection_itself(pg_db):
    channel = channel_name()
    got = []
    async with pg_db.connection() as conn:
        await conn.add_listener(channel, lambda c, pid, ch, p: got.append(p))
        # Delivered with the statement's results; the callback runs from the loop right after.
        await conn.execute(f"NOTIFY {channel}, 'self'")
        await wait_until(lambda: got == ["self"])
        # Many, in one transaction: all of them, in order, at commit.
        async with conn.transaction():
            for i in range(200):
                await conn.execute("SELECT pg_notify($1, $2)", channel, str(i))
            await asyncio.sleep(0.05)
            assert got == ["self"]
        await wait_until(lambda: len(got) == 201)
        assert got[1:] == [str(i) for i in range(200)]


async def test_remove_listener_unlistens_with_the_last_callback(pg_db):
    channel, other = channel_name(), channel_name()
    a, b = [], []

    def cb_a(*args):
        a.append(args[3])

    def cb_b(*args):
        b.append(args[3])

    async with pg_db.connection() as conn:
        await conn.add_listener(channel, cb_a)
        await conn.add_listener(channel, cb_b)
        await conn.add_listener(other, cb_a)
        assert await listening(conn) == 2
        await conn.remove_listener(channel, cb_a)
        await pg_db.execute(f"NOTIFY {channel}, '1'")
        await wait_until(lambda: b == ["1"])
        assert a == []
        # Removing what was never added does nothing.
        await conn.remove_listener(channel, cb_a)
        await conn.remove_listener(channel_name(), cb_a)
        await conn.remove_listener(channel, cb_b)
        assert await conn.fetchval(
            "SELECT string_agg(c::text, ',') FROM pg_listening_channels() c") == other
        await conn.remove_listener(other, cb_a)
        assert await listening(conn) == 0
        await pg_db.execute(f"NOTIFY {channel}, '2'")
        await asyncio.sleep(0.1)
        assert a == [] and b == ["1"]
        # Listening again after all were removed works.
        await conn.add_listener(channel, cb_a)
        await pg_db.execute(f"NOTIFY {channel}, '3'")
        await wait_until(lambda: a == ["3"])


async def test_adding_the_same_callback_twice_is_a_no_op(pg_db):
    # asyncpg keeps a set per channel: one call per notification, one remove_listener removes it.
    channel = channel_name()
    got, other = [], []

    def cb(*args):
        got.append(args[3])

    async with pg_db.connection() as conn:
        await conn.add_listener(channel, cb)
        await conn.add_listener(channel, cb)
        await conn.add_listener(channel, lambda *a: other.append(a[3]))
        await pg_db.execute(f"NOTIFY {channel}, '1'")
        await wait_until(lambda: other == ["1"])
        await asyncio.sleep(0.05)
        assert got == ["1"]
        await conn.remove_listener(channel, cb)
        await pg_db.execute(f"NOTIFY {channel}, '2'")
        await wait_until(lambda: other == ["1", "2"])
        await asyncio.sleep(0.05)
        assert got == ["1"]
        assert await listening(conn) == 1


async def test_add_listener_redoes_a_listen_undone_by_a_rollback(pg_db):
    # A LISTEN run inside a transaction block that rolls back is undone by the server; the next
    # add_listener of the channel listens again, and both callbacks are then called.
    channel = channel_name()
    got1, got2 = [], []
    async with pg_db.connection() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.add_listener(channel, lambda *a: got1.append(a[3]))
                raise RuntimeError
        assert await listening(conn) == 0
        await conn.add_listener(channel, lambda *a: got2.append(a[3]))
        assert await listening(conn) == 1
        await pg_db.execute(f"NOTIFY {channel}, 'x'")
        await wait_until(lambda: got1 == ["x"] and got2 == ["x"])
        # A nested block (savepoint) rolled back undoes its LISTEN too; add_listener redoes it.
        other = channel_name()
        got3 = []
        cb3 = lambda *a: got3.append(a[3])  # noqa: E731
        async with conn.transaction():
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await conn.add_listener(other, cb3)
                    raise RuntimeError
            await conn.add_listener(other, cb3)
        assert await listening(conn) == 2
        await pg_db.execute(f"NOTIFY {other}, 'y'")
        await wait_until(lambda: got3 == ["y"])


async def test_a_released_connection_unlistens_before_anyone_else_gets_it():
    db = keel.Database({"databases": {"main": {"url": PG_URL,
                                               "pool": {"min_size": 1, "max_size": 1}}}})
    await db.start()
    try:
        channel = channel_name()
        got = []
        conn = await db.acquire()
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.add_listener(channel, lambda *a: got.append(a))
        await db.release(conn)
        with pytest.raises(keel.InterfaceError):
            await conn.add_listener(channel, print)
        # The pool's only connection: the same session, and it listens to nothing.
        async with db.connection() as again:
            assert await again.fetchval("SELECT pg_backend_pid()") == pid
            assert await listening(again) == 0
            await again.execute(f"NOTIFY {channel}, 'after release'")
        await asyncio.sleep(0.1)
        assert got == []
        # Released inside a transaction: rolled back, then unlistened.
        async with db.connection() as conn:
            await conn.add_listener(channel, lambda *a: got.append(a))
            await conn.execute("BEGIN")
        async with db.connection() as again:
            assert await again.fetchval("SELECT pg_backend_pid()") == pid
            assert await listening(again) == 0
            assert not again.in_transaction
            # LISTEN run by hand, without add_listener: undone on release all the same.
            await again.execute(f"LISTEN {channel}")
            assert await listening(again) == 1
        async with db.connection() as again:
            assert await listening(again) == 0
    finally:
        await close_db(db)


async def test_a_callback_that_raises_goes_to_the_loops_exception_handler(pg_db):
    loop = asyncio.get_running_loop()
    reported, after = [], []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda lp, ctx: reported.append(ctx))
    channel = channel_name()

    def bad(*args):
        raise ValueError("listener bug")

    async def bad_async(*args):
        raise KeyError("async listener bug")

    try:
        async with pg_db.connection() as conn:
            await conn.add_listener(channel, bad)
            await conn.add_listener(channel, bad_async)
            await conn.add_listener(channel, lambda *a: after.append(a[3]))
            await pg_db.execute(f"NOTIFY {channel}, 'x'")
            await wait_until(lambda: len(reported) == 2 and after == ["x"])
            assert {type(r["exception"]) for r in reported} == {ValueError, KeyError}
            assert all("notification listener" in r["message"] for r in reported)
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        loop.set_exception_handler(old)


async def test_db_listen_yields_notifications(pg_db):
    channel = channel_name()
    async with pg_db.listen(channel) as notes:
        assert pg_db.pool_stats()["leased"] == 1
        pid = await pg_db.fetchval("SELECT pg_backend_pid()")
        for payload in ("a", "b", "c"):
            await pg_db.execute("SELECT pg_notify($1, $2)", channel, payload)
        seen = []
        async for n in notes:
            assert isinstance(n, keel.Notification)
            seen.append(n)
            if len(seen) == 3:
                break
        assert [n.payload for n in seen] == ["a", "b", "c"]
        assert seen[0] == keel.Notification(channel, "a", pid)
        assert (seen[0].channel, seen[0].pid) == (channel, pid)
    assert pg_db.pool_stats()["leased"] == 0
    # Closed: iteration ends, and it cannot start again.
    with pytest.raises(StopAsyncIteration):
        await anext(notes)
    with pytest.raises(keel.InterfaceError, match="closed"):
        await notes.start()
    async with pg_db.connection() as conn:
        assert await listening(conn) == 0


async def test_db_listen_starts_at_the_first_iteration_and_ends_when_dropped(pg_db):
    channel = channel_name()
    notes = pg_db.listen(channel)
    assert "new" in repr(notes) and notes.channel == channel
    first = asyncio.ensure_future(anext(notes))
    await wait_until(lambda: pg_db.pool_stats()["leased"] == 1)
    await asyncio.sleep(0.05)  # LISTEN has run by now
    await pg_db.execute(f"NOTIFY {channel}, 'first'")
    assert (await asyncio.wait_for(first, 5)).payload == "first"
    assert "listening" in repr(notes)
    # A wait that times out leaves the listener usable.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(notes), 0.1)
    await pg_db.execute(f"NOTIFY {channel}, 'second'")
    assert (await asyncio.wait_for(anext(notes), 5)).payload == "second"
    # Dropped without closing: its connection goes back all the same.
    del notes, first
    await wait_until(lambda: pg_db.pool_stats()["leased"] == 0)


async def test_listen_whose_connection_is_lost_raises_connection_lost():
    u = urlsplit(PG_URL)
    with TcpProxy(u.hostname, u.port) as proxy:
        db = keel.Database({"databases": {"main": {"url": proxy.url(PG_URL),
                                                   "pool": {"min_size": 0, "max_size": 1}}}})
        await db.start()
        try:
            async with db.listen("keel_lost") as notes:
                proxy.cut()
                with pytest.raises(keel.ConnectionLost) as e:
                    await asyncio.wait_for(anext(notes), 10)
                assert e.value.database == "main"
                assert "while it listened" in str(e.value)
                with pytest.raises(StopAsyncIteration):
                    await anext(notes)
            assert db.pool_stats()["leased"] == 0
            # The pool serves again.
            assert await db.fetchval("SELECT 1") == 1
        finally:
            await close_db(db)


async def test_close_with_a_timeout_ends_a_listen_iteration_in_another_task():
    # The task would wait for notifications for ever, and close() for its connection: with
    # timeout= the close goes on, and the iteration ends with an InterfaceError saying why.
    db = keel.Database({"databases": {"main": {"url": PG_URL}}})
    await db.start()
    channel = channel_name()
    got = []

    async def consume():
        async for note in db.listen(channel):
            got.append(note.payload)

    task = asyncio.ensure_future(consume())
    await wait_until(lambda: db.pool_stats()["leased"] == 1)
    await db.execute(f"NOTIFY {channel}, 'before'")
    await wait_until(lambda: got == ["before"])
    await asyncio.wait_for(db.close(timeout=0.2), 10)
    assert db.closed
    with pytest.raises(keel.InterfaceError,
                       match="database 'main' was closed while this connection listened") as e:
        await asyncio.wait_for(task, 5)
    assert e.value.database == "main"
    assert got == ["before"]


async def test_close_with_a_timeout_ends_add_listener_quietly():
    # add_listener's callbacks are not called with the close; the block's next statement raises.
    db = keel.Database(PG_URL)
    await db.start()
    got = []
    with pytest.raises(keel.InterfaceError, match="was closed while this connection was leased"):
        async with db.connection() as conn:
            await conn.add_listener(channel_name(), lambda *a: got.append(a))
            await asyncio.wait_for(db.close(timeout=0), 10)
            await conn.fetchval("SELECT 1")
    assert db.closed and got == []


async def test_add_listener_on_a_lost_connection_is_not_called(pg_db):
    got = []
    async with pg_db.connection() as conn:
        await conn.add_listener(channel_name(), lambda *a: got.append(a))
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await pg_db.execute("SELECT pg_terminate_backend($1::int)", pid)
        await asyncio.sleep(0.2)
        assert got == []
        with pytest.raises(keel.ConnectionLost):
            await conn.fetchval("SELECT 1")
    assert await pg_db.fetchval("SELECT 2") == 2


async def test_bad_channels_and_callbacks_are_refused(pg_db):
    async with pg_db.connection() as conn:
        with pytest.raises(TypeError, match="a channel is a str"):
            await conn.add_listener(42, print)
        with pytest.raises(keel.InterfaceError, match="non-empty name"):
            await conn.add_listener("", print)
        with pytest.raises(keel.InterfaceError, match="NUL"):
            await conn.add_listener("a\0b", print)
        with pytest.raises(TypeError, match="callable"):
            await conn.add_listener("ok", "not callable")
        assert await listening(conn) == 0
        assert await conn.fetchval("SELECT 1") == 1
    with pytest.raises(TypeError, match="a channel is a str"):
        pg_db.listen(None)
    with pytest.raises(keel.UnknownDatabaseError):
        await pg_db.listen("x", database="nope").start()
    assert pg_db.pool_stats()["leased"] == 0


@pytest.mark.parametrize("engine", ["sqlite", "mysql", "mongodb"])
async def test_notifications_are_refused_on_other_engines(engine, db_url):
    if engine == "mongodb" and not MONGO_URL:
        pytest.skip("KEEL_TEST_MONGO_URL is empty")
    db = keel.Database(MONGO_URL if engine == "mongodb" else db_url)
    await db.start()
    refused = f"the {engine} engine, which has no notifications: LISTEN/NOTIFY is PostgreSQL's"
    try:
        async with db.connection() as conn:
            with pytest.raises(keel.NotSupportedError, match=refused):
                await conn.add_listener("ch", print)
            if engine != "mongodb":
                assert await conn.fetchval("SELECT 1") == 1
        with pytest.raises(keel.NotSupportedError, match=refused):
            async with db.listen("ch"):
                pass
        with pytest.raises(keel.NotSupportedError, match=refused):
            await anext(db.listen("ch"))
        assert db.pool_stats()["leased"] == 0
    finally:
        await close_db(db)
