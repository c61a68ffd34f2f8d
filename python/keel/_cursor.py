# python/keel/_cursor.py - streaming cursors over a statement's rows (Connection.cursor), bounded by prefetch.
"""Cursors, as asyncpg's: ``async for row in conn.cursor(sql, *args, prefetch=N)``, or
``cur = await conn.cursor(sql, *args)`` and then ``fetch(n)``, ``fetchrow()``, ``forward(n)``.

The statement streams its rows from the server; keel pauses it whenever ``prefetch`` Records
wait to be taken (the rest stay on the server's side of the socket, or in SQLite's statement),
so memory stays bounded by prefetch plus one batch of the engine whatever the size of the
result. The statement occupies its connection until its rows are read or the cursor is closed.
"""
from __future__ import annotations

import asyncio
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
        return self._open()


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
