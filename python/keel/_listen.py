# python/keel/_listen.py - PostgreSQL notifications: Connection.add_listener / remove_listener and Database.listen.
"""LISTEN/NOTIFY on keel connections.

The extension hands each notification that arrives on a connection to one handler per
connection (Connection._set_notify_handler, keel_conn_set_notify_handler in C): it reads the
socket of a listening connection whenever data arrives, idle or not. The handler here only queues
work on the loop; callbacks run from the loop, never inside keel's own callback. A connection
that listens stays with its holder until released, and keel runs UNLISTEN * before it goes back
to the pool.
"""
from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._native import InterfaceError, NotSupportedError

if TYPE_CHECKING:
    from . import Connection, Database


class Notification(NamedTuple):
    """A NOTIFY received: its channel, its payload ("" when it had none) and the process id of
    the server session that sent it."""

    channel: str
    payload: str
    pid: int


def quote_channel(channel: object) -> str:
    """The channel as a quoted identifier for LISTEN / UNLISTEN (its case and spaces kept)."""
    if not isinstance(channel, str):
        raise TypeError(f"a channel is a str, not {type(channel).__name__}")
    if not channel or "\0" in channel:
        raise InterfaceError("a channel is a non-empty name without NUL characters")
    return '"' + channel.replace('"', '""') + '"'


def require_notifications(engine: str, database: str | None) -> None:
    """Refuses a listener on database (None: the default one) when its engine, engine, is not
    PostgreSQL: NotSupportedError before any connection is leased."""
    if engine != "postgresql":
        name = database if database is not None else "the default database"
        raise NotSupportedError(
            f"listen(): {name} uses the {engine} engine, which has no notifications: "
            "LISTEN/NOTIFY is PostgreSQL's")


class _Listeners:
    """The listeners of one connection: channel -> callbacks. Holds the connection weakly, so
    that the connection (which holds this object's handler) is freed by reference counting."""

    __slots__ = ("conn", "channels", "loop")

    def __init__(self, conn: Connection) -> None:
        self.conn = weakref.ref(conn)
        self.channels: dict[str, list[Callable[..., Any]]] = {}
        self.loop = asyncio.get_running_loop()

    def handler(self, pid: int | None, channel: str | None, payload: str | None,
                exc: BaseException | None) -> None:
        conn = self.conn()
        if conn is None or exc is not None or channel is None:
            return
        for cb in list(self.channels.get(channel, ())):
            if inspect.iscoroutinefunction(cb):
                self.loop.create_task(self._await(cb, conn, pid, channel, payload))
            else:
                self.loop.call_soon(self._call, cb, conn, pid, channel, payload)

    def _report(self, cb: Callable[..., Any], e: BaseException) -> None:
        self.loop.call_exception_handler({
            "message": f"unhandled exception in notification listener {cb!r}",
            "exception": e,
        })

    def _call(self, cb: Callable[..., Any], *args: Any) -> None:
        try:
            cb(*args)
        except Exception as e:
            self._report(cb, e)

    async def _await(self, cb: Callable[..., Any], *args: Any) -> None:
        try:
            await cb(*args)
        except Exception as e:
            self._report(cb, e)


# The listeners of each Connection that has some; the entry goes with the Connection.
_listeners: weakref.WeakKeyDictionary[Connection, _Listeners] = weakref.WeakKeyDictionary()


async def add_listener(conn: Connection, channel: str, callback: Callable[..., Any]) -> None:
    quoted = quote_channel(channel)
    if not callable(callback):
        raise TypeError(f"a listener callback is callable, not {type(callback).__name__}")
    if conn.released:
        raise InterfaceError("the connection has been released: its listeners went with it")
    state = _listeners.get(conn)
    if state is None:
        state = _Listeners(conn)
        conn._set_notify_handler(state.handler)  # NotSupportedError on other engines
        _listeners[conn] = state
    # LISTEN every time: it is idempotent on the server, and redoes a LISTEN that a rolled-back
    # transaction undid (keel's own record of the channel would otherwise say it is listened).
    await conn.execute(f"LISTEN {quoted}")
    callbacks = state.channels.setdefault(channel, [])
    if callback not in callbacks:  # a set per channel, as asyncpg: a second add is a no-op
        callbacks.append(callback)


async def remove_listener(conn: Connection, channel: str, callback: Callable[..., Any]) -> None:
    quoted = quote_channel(channel)
    state = _listeners.get(conn)
    callbacks = state.channels.get(channel) if state is not None else None
    if state is None or callbacks is None or callback not in callbacks:
        return
    callbacks.remove(callback)
    if callbacks:
        return
    del state.channels[channel]
    if not conn.released:
        await conn.execute(f"UNLISTEN {quoted}")
    if not state.channels and _listeners.get(conn) is state:
        del _listeners[conn]
        if not conn.released:
            conn._set_notify_handler(None)


class Listener:
    """The notifications of one channel, as an async iterator (Database.listen).

    Listening starts at ``async with`` (or at the first iteration): a connection is leased for
    it and LISTEN runs there. Each iteration yields a Notification(channel, payload, pid), in the
    order the server sent them; notifications wait in an unbounded queue until read. Closing it
    (leaving ``async with``, aclose(), or dropping it) releases the connection, which unlistens
    before it goes back to the pool. A connection lost meanwhile raises ConnectionLost from the
    iteration, once; the listener is closed then.
    """

    __slots__ = ("_db", "_database", "_channel", "_quoted", "_conn", "_queue", "_closed",
                 "__weakref__")

    def __init__(self, db: Database, channel: str, database: str | None) -> None:
        self._quoted = quote_channel(channel)
        self._db = db
        self._database = database
        self._channel = channel
        self._conn: Connection | None = None
        self._queue: asyncio.Queue[Notification | BaseException] | None = None
        self._closed = False

    @property
    def channel(self) -> str:
        return self._channel

    async def start(self) -> None:
        """Leases the connection and runs LISTEN (a no-op when already listening)."""
        if self._closed:
            raise InterfaceError(f"the listener of channel {self._channel!r} is closed")
        if self._conn is not None:
            return
        require_notifications(self._db.engine(self._database), self._database)
        conn = await self._db._acquire(self._database)
        try:
            self._queue = asyncio.Queue()
            ref = weakref.ref(self)

            def handler(pid: int | None, channel: str | None, payload: str | None,
                        exc: BaseException | None) -> None:
                listener = ref()
                if listener is not None and listener._queue is not None:
                    listener._queue.put_nowait(
                        exc if exc is not None else Notification(channel, payload, pid))

            conn._set_notify_handler(handler)
            await conn.execute(f"LISTEN {self._quoted}")
        except BaseException:
            self._db._release(conn)
            raise
        self._conn = conn

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> Notification:
        if self._closed:
            raise StopAsyncIteration
        if self._conn is None:
            await self.start()
        assert self._queue is not None
        item = await self._queue.get()
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        return item

    async def aclose(self) -> None:
        """Stops listening and releases the connection. Idempotent."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            self._db._release(conn)

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "listening" if self._conn is not None else "new"
        return f"<keel.Listener channel={self._channel!r} {state}>"
