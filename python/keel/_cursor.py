# python/keel/_cursor.py - cursors over a statement's rows (Connection.cursor): server-side, or streamed, bounded by prefetch.
"""Cursors, as asyncpg's: ``async for row in conn.cursor(sql, *args, prefetch=N)``, or
``cur = await conn.cursor(sql, *args)`` and then ``fetch(n)``, ``fetchrow()``, ``forward(n)``.

Two kinds. On PostgreSQL and MySQL/MariaDB inside a transaction, a query (SELECT, VALUES, WITH,
TABLE) gets a server-side cursor (ServerCursor), read prefetch rows at a time, each read its own
operation, so other statements run on the connection between them: PostgreSQL's is SQL's
DECLARE … NO SCROLL CURSOR, FETCH FORWARD, MOVE FORWARD and CLOSE; MySQL's a read-only cursor of
the prepared-statement protocol. Everywhere else the statement streams its rows from the
server; keel pauses it whenever ``prefetch`` Records wait to be taken (the rest stay on the
server's side of the socket, or in SQLite's statement), so memory stays bounded by prefetch
plus one batch of the engine whatever the size of the result. That statement occupies its
connection until its rows are read or the cursor is closed.
"""
from __future__ import annotations

import asyncio
import re
import weakref
from typing import TYPE_CHECKING, Any

from . import _native

if TYPE_CHECKING:
    from types import TracebackType

    from . import Connection, Record

DEFAULT_PREFETCH = 50


def _count(value: object, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < least:
        raise ValueError(f"{what} must be at least {least}, not {value}")
    return value


# What a server-side cursor takes: one query. A string with a ';' before its end (several
# statements, or one with a ';' in a literal, which is rare) streams instead: on PostgreSQL,
# without parameters, keel sends it with the simple protocol, which would run the statements
# after the DECLARE; MySQL cannot prepare it.
_DECLARABLE = re.compile(r"[\s(]*(select|values|with|table)\b", re.IGNORECASE)
_END = " \t\n\r\f;"


def _declarable(sql: str) -> str | None:
    """sql without its trailing ';', when it can be a server-side cursor's query; else None."""
    body = sql.rstrip(_END)
    if ";" in body or not _DECLARABLE.match(body):
        return None
    return body


# The numbers of the server-side cursors open on each connection (keel_cursor_<n>): the lowest
# free one is taken, so that the FETCH, MOVE and CLOSE statements of cursors repeat the same few
# texts, which the connection's statement cache keeps prepared, instead of filling it with new
# ones. A number is given back when its cursor is closed on the server.
_open_cursors: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


def _take_number(conn: Any) -> int:
    used = _open_cursors.setdefault(conn, set())
    n = 1
    while n in used:
        n += 1
    used.add(n)
    return n


def _give_back(conn: Any, n: int) -> None:
    used = _open_cursors.get(conn)
    if used is not None:
        used.discard(n)


def _retrieved(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


class CursorFactory:
    """What Connection.cursor returns: iterate it (``async for row in …``) for every row, or
    await it for a RowCursor to fetch from. Nothing runs until then."""

    __slots__ = ("_conn", "_sql", "_args", "_prefetch", "_timeout", "_rowtype")

    def __init__(self, conn: Connection, sql: str, args: tuple[Any, ...], prefetch: int | None,
                 timeout: float | None, rowtype: Any = None) -> None:
        self._conn = conn
        self._rowtype = rowtype
        self._sql = sql
        self._args = args
        self._prefetch = DEFAULT_PREFETCH if prefetch is None else _count(prefetch, "prefetch", 1)
        self._timeout = timeout

    def _open(self) -> RowCursor:
        conn = self._conn
        kind = _SERVER_CURSORS.get(conn.engine)
        if kind is not None and conn.in_transaction:
            query = _declarable(self._sql)
            if query is not None:
                return kind(conn, query, self._args, self._prefetch, self._timeout,
                            self._rowtype)
        if self._rowtype is None:
            op = self._conn._cursor(self._sql, self._args, self._prefetch, self._timeout)
        else:
            op = self._conn._cursor(self._sql, self._args, self._prefetch, self._timeout,
                                    self._rowtype)
        return RowCursor(self._conn, op)

    def __aiter__(self) -> RowCursor:
        return self._open()

    def __await__(self) -> Any:
        return self._opened().__await__()

    async def _opened(self) -> RowCursor:
        cur = self._open()
        if isinstance(cur, ServerCursor):
            await cur._ensure_open()  # errors of the statement are raised here, as asyncpg's are
        return cur


class RowCursor:
    """A statement's rows, read on demand (see Connection.cursor). Also an async iterator of
    its rows and an async context manager that closes it."""

    __slots__ = ("_conn", "_op", "_closed", "_exhausted", "_batch", "_at")

    def __init__(self, conn: Connection, op: Any) -> None:
        self._conn = conn
        self._op = op
        self._closed = False  # by close()
        self._exhausted = False  # every row was read
        self._batch: list[Record] = []
        self._at = 0
        # A cursor left unread (its connection released, say) reports its error when read,
        # never as an asyncio "exception was never retrieved".
        op._future.add_done_callback(_retrieved)

    @property
    def closed(self) -> bool:
        """True once closed, or once every row was read."""
        return self._closed or self._exhausted

    def _ended(self) -> bool:
        """The statement is over and every row it buffered was taken: raises its error, if any."""
        op = self._op
        if self._exhausted:
            return True
        if not op._future.done() or op._buffered:
            return False
        self._exhausted = True
        op._future.result()  # the statement's error, if it failed
        return True

    async def _wait(self) -> None:
        try:
            await self._op._more()
        except asyncio.CancelledError:
            self._close_now()
            raise

    async def _take(self, n: int) -> list[Record]:
        """Up to n rows: fewer only at the end."""
        if self._closed:
            raise _native.InterfaceError("the cursor is closed")
        out: list[Record] = []
        if self._exhausted:
            return out
        if self._at < len(self._batch):
            out = self._batch[self._at:self._at + n]
            self._at += len(out)
        op = self._op
        while len(out) < n:
            out.extend(op._take(n - len(out)))
            if len(out) >= n or self._ended():
                break
            if not op._buffered:
                await self._wait()
        return out

    async def fetch(self, n: int, *, timeout: float | None = None) -> list[Record]:
        """The next n rows (fewer at the end, [] after it). timeout= bounds this wait:
        QueryTimeout when it passes, and the cursor is closed (its statement cancelled)."""
        _count(n, "n", 1)
        if timeout is None:
            return await self._take(n)
        try:
            return await asyncio.wait_for(self._take(n), timeout)
        except asyncio.TimeoutError:
            self._close_now()
            raise _native.QueryTimeout(
                f"timeout: the cursor's fetch did not finish within {timeout:g} s (timeout=); "
                "the cursor was closed and its statement cancelled") from None

    async def fetchrow(self, *, timeout: float | None = None) -> Record | None:
        """The next row, or None after the last."""
        rows = await self.fetch(1, timeout=timeout)
        return rows[0] if rows else None

    async def forward(self, n: int, *, timeout: float | None = None) -> int:
        """Skips the next n rows (they are read and dropped); returns how many were skipped."""
        _count(n, "n", 1)
        skipped = 0
        while skipped < n:
            got = len(await self.fetch(min(n - skipped, 1024), timeout=timeout))
            skipped += got
            if got == 0:
                break
        return skipped

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._exhausted:
            return
        self._batch = []
        fut = self._op._future
        if fut.done():
            if not fut.cancelled():
                fut.exception()  # retrieved: the cursor was closed before reading it
        else:
            self._op.cancel()  # stops the statement on the server; the connection serves on

    def __del__(self) -> None:
        # Dropped unread (a loop left with break): its statement is cancelled, so that the
        # connection serves the next statement instead of staying busy with it.
        try:
            if not self._closed and not self._exhausted and not self._op._future.done():
                self._op.cancel()
        except Exception:  # interpreter shutdown, a closed loop: nothing left to stop
            pass

    async def close(self) -> None:
        """Stops the statement (on the server) and frees its connection for other statements.
        Idempotent; a cursor read to its end is closed already."""
        self._close_now()

    def __aiter__(self) -> RowCursor:
        return self

    async def __anext__(self) -> Record:
        if self._at < len(self._batch):
            row = self._batch[self._at]
            self._at += 1
            return row
        if self._closed or self._exhausted:
            raise StopAsyncIteration
        op = self._op
        while True:
            batch = op._take(1 << 30)
            if batch:
                self._batch, self._at = batch, 1
                return batch[0]
            if self._ended():
                raise StopAsyncIteration
            await self._wait()

    async def __aenter__(self) -> RowCursor:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._close_now()

    def __repr__(self) -> str:
        return f"<RowCursor on {self._conn!r}{' closed' if self._closed else ''}>"


# How an error names a cursor the server does not have (invalid_cursor_name): its transaction
# ended in a way conn._txn_epoch could not see (a string "COMMIT; BEGIN" run as one statement).
_NO_CURSOR = "34000"
# in_failed_sql_transaction: the block failed; its rollback removes the cursor.
_FAILED_BLOCK = "25P02"
# forward(n) on MySQL reads the rows it skips, at most this many at a time.
_SKIP_CHUNK = 1024


class ServerCursor(RowCursor):
    """A server-side cursor, opened by Connection.cursor inside a transaction on PostgreSQL and
    MySQL/MariaDB: the result stays on the server and is read prefetch rows at a time (fetch(n):
    n), each read an operation of its own, so that other statements run on the connection
    between them. The subclasses talk to each server."""

    __slots__ = ("_query", "_args", "_prefetch", "_timeout", "_rowtype", "_on_server")

    def __init__(self, conn: Connection, query: str, args: tuple[Any, ...], prefetch: int,
                 timeout: float | None, rowtype: Any) -> None:
        self._conn = conn
        self._op = None
        self._closed = False
        self._exhausted = False
        self._batch = []
        self._at = 0
        self._query = query
        self._args = args
        self._prefetch = prefetch
        self._timeout = timeout
        self._rowtype = rowtype
        self._on_server = False  # opened and not closed (by keel) yet

    # ---- what each server does ----

    async def _open(self) -> None:
        """Opens the cursor on the server (self._on_server); raises the statement's error."""
        raise NotImplementedError

    async def _read(self, n: int, timeout: float | None) -> list[Record]:
        """The next n rows from the server (fewer only at the end)."""
        raise NotImplementedError

    async def _skip(self, n: int, timeout: float | None) -> int:
        """Skips the next n rows on the server; how many there were."""
        raise NotImplementedError

    async def _close_on_server(self) -> None:
        """Closes the open cursor on the server (self._on_server is then False)."""
        raise NotImplementedError

    # ---- shared ----

    async def _ensure_open(self) -> None:
        if not (self._on_server or self._closed or self._exhausted):
            await self._open()

    async def _at_end(self) -> None:
        """Every row was read: the cursor is closed on the server."""
        self._exhausted = True
        await self._close_on_server()

    async def _take(self, n: int, timeout: float | None = None) -> list[Record]:
        """Up to n rows: those buffered by async for first, then one read for the rest."""
        if self._closed:
            raise _native.InterfaceError("the cursor is closed")
        out = self._batch[self._at:self._at + n]
        self._at += len(out)
        if len(out) == n or self._exhausted:
            return out
        await self._ensure_open()
        want = n - len(out)
        rows = await self._read(want, timeout)
        out.extend(rows)
        if len(rows) < want:
            await self._at_end()
        return out

    async def fetch(self, n: int, *, timeout: float | None = None) -> list[Record]:
        """The next n rows (fewer at the end, [] after it), in one read. timeout= bounds it
        (None: the cursor's timeout=); QueryTimeout when it passes, and the cursor is closed
        (on PostgreSQL the transaction failed with it)."""
        _count(n, "n", 1)
        return await self._take(n, timeout)

    async def forward(self, n: int, *, timeout: float | None = None) -> int:
        """Skips the next n rows (PostgreSQL: on the server, with MOVE); returns how many were
        skipped."""
        _count(n, "n", 1)
        if self._closed:
            raise _native.InterfaceError("the cursor is closed")
        skipped = min(n, len(self._batch) - self._at)
        self._at += skipped
        if skipped == n or self._exhausted:
            return skipped
        await self._ensure_open()
        want = n - skipped
        moved = await self._skip(want, timeout)
        if moved < want:
            await self._at_end()
        return skipped + moved

    async def close(self) -> None:
        """Closes the cursor on the server. Idempotent; a cursor read to its end is closed
        already."""
        if self._closed:
            return
        self._closed = True
        self._batch = []
        if self._on_server:
            await self._close_on_server()

    def __del__(self) -> None:
        # Nothing runs for a dropped cursor: PostgreSQL's ends with its transaction, MySQL's
        # goes with the object that holds it.
        pass

    async def __anext__(self) -> Record:
        if self._at < len(self._batch):
            row = self._batch[self._at]
            self._at += 1
            return row
        if self._closed or self._exhausted:
            raise StopAsyncIteration
        await self._ensure_open()
        rows = await self._read(self._prefetch, None)
        if len(rows) < self._prefetch:
            await self._at_end()
        if not rows:
            raise StopAsyncIteration
        self._batch, self._at = rows, 1
        return rows[0]

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class _PgCursor(ServerCursor):
    """PostgreSQL's: DECLARE keel_cursor_<n> NO SCROLL CURSOR FOR the query (its parameters
    bound as every statement's), FETCH FORWARD, MOVE FORWARD and CLOSE, each a statement. The
    cursor ends with its transaction."""

    __slots__ = ("_number", "_epoch")

    def __init__(self, conn: Connection, query: str, args: tuple[Any, ...], prefetch: int,
                 timeout: float | None, rowtype: Any) -> None:
        super().__init__(conn, query, args, prefetch, timeout, rowtype)
        self._number = 0  # keel_cursor_<number> once DECLAREd
        self._epoch = 0  # conn._txn_epoch in the cursor's transaction

    @property
    def _name(self) -> str:
        return f"keel_cursor_{self._number}"

    def _ended_with(self, keep_number: bool) -> None:
        """The cursor is over (closed, failed or its transaction gone). keep_number: the server
        may still have it (a failed block, which its rollback or a savepoint's may keep), so its
        name stays taken."""
        self._closed = True
        self._batch = []
        if self._on_server:
            self._on_server = False
            if not keep_number:
                _give_back(self._conn, self._number)

    def _transaction_ended(self) -> _native.InterfaceError:
        self._ended_with(keep_number=False)
        return _native.InterfaceError(
            f"the cursor's transaction has ended (committed or rolled back), and its server-side "
            f"cursor {self._name} with it: a cursor opened inside a transaction is read inside "
            "it")

    async def _run(self, mode: int, sql: str, timeout: float | None) -> Any:
        """One statement on the cursor (FETCH, MOVE, CLOSE); an error ends the cursor."""
        conn = self._conn
        if not conn.released and conn._txn_epoch != self._epoch:
            raise self._transaction_ended()
        if timeout is None:
            timeout = self._timeout
        try:
            if mode == _native.MODE_FETCH and self._rowtype is not None:
                return await conn._query(mode, sql, (), 0, timeout, self._rowtype)
            return await conn._query(mode, sql, (), 0, timeout)
        except _native.Error as e:
            if getattr(e, "sqlstate", None) == _NO_CURSOR:
                raise self._transaction_ended() from e
            # The statement failed, was cancelled or timed out: the block is failed, and the
            # cursor with it.
            self._ended_with(keep_number=True)
            raise
        except asyncio.CancelledError:
            self._ended_with(keep_number=True)
            raise

    async def _open(self) -> None:
        conn = self._conn
        self._number = _take_number(conn)
        try:
            await conn.execute(f"DECLARE {self._name} NO SCROLL CURSOR FOR {self._query}",
                               *self._args, timeout=self._timeout)
        except BaseException:
            _give_back(conn, self._number)
            self._closed = True
            raise
        self._on_server = True
        self._epoch = conn._txn_epoch

    async def _read(self, n: int, timeout: float | None) -> list[Record]:
        return await self._run(_native.MODE_FETCH, f"FETCH FORWARD {n} {self._name}", timeout)

    async def _skip(self, n: int, timeout: float | None) -> int:
        return await self._run(_native.MODE_EXECUTE, f"MOVE FORWARD {n} {self._name}", timeout)

    async def _close_on_server(self) -> None:
        conn = self._conn
        if conn.released or conn._txn_epoch != self._epoch:
            self._ended_with(keep_number=False)  # its transaction's end removed it
            return
        try:
            await self._run(_native.MODE_EXECUTE, f"CLOSE {self._name}", None)
        except _native.Error as e:
            # A failed block refuses every statement but its rollback, which removes the
            # cursor: nothing is left to close.
            if getattr(e, "sqlstate", None) != _FAILED_BLOCK:
                raise
            return
        self._on_server = False
        _give_back(conn, self._number)


class _MyCursor(ServerCursor):
    """MySQL/MariaDB's: a read-only cursor of the prepared-statement protocol on a statement of
    its own (keel_conn_cursor_open), read with COM_STMT_FETCH, prefetch rows per round trip.
    MariaDB materialises the result in a temporary table when the cursor opens. Closing it
    costs no round trip; it is not tied to the transaction."""

    __slots__ = ("_cursor",)

    def __init__(self, conn: Connection, query: str, args: tuple[Any, ...], prefetch: int,
                 timeout: float | None, rowtype: Any) -> None:
        super().__init__(conn, query, args, prefetch, timeout, rowtype)
        self._cursor: Any = None  # the native cursor; closed when it goes

    def _failed(self) -> None:
        self._closed = True
        self._batch = []
        self._on_server = False
        self._cursor = None

    async def _open(self) -> None:
        try:
            self._cursor = await self._conn._cursor_open(self._query, self._args,
                                                         self._prefetch, self._timeout)
        except BaseException:
            self._closed = True
            raise
        self._on_server = True

    async def _read(self, n: int, timeout: float | None) -> list[Record]:
        if timeout is None:
            timeout = self._timeout
        try:
            if self._rowtype is not None:
                return await self._conn._cursor_fetch(self._cursor, n, timeout, self._rowtype)
            return await self._conn._cursor_fetch(self._cursor, n, timeout)
        except BaseException:
            self._failed()
            raise

    async def _skip(self, n: int, timeout: float | None) -> int:
        # The protocol has no way to skip: the rows are read, and dropped.
        skipped = 0
        while skipped < n:
            want = min(n - skipped, _SKIP_CHUNK)
            got = len(await self._read(want, timeout))
            skipped += got
            if got < want:
                break
        return skipped

    async def _close_on_server(self) -> None:
        self._on_server = False
        self._cursor = None  # its statement is closed with the next one on the connection


# The engines whose cursors inside a transaction are server-side, and how.
_SERVER_CURSORS: dict[str, type[ServerCursor]] = {"postgresql": _PgCursor, "mysql": _MyCursor}
