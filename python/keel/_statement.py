# python/keel/_statement.py - prepared statements (Connection.prepare) and the types that describe them.
"""Prepared statements, as asyncpg's: ``stmt = await conn.prepare(sql)``.

A PreparedStatement belongs to the connection that prepared it and runs there; it describes its
parameters and columns (``stmt.parameters``, ``stmt.columns``) and runs any number of times with
``fetch``, ``fetchrow``, ``fetchval`` and ``executemany``. It is unusable once its connection is
released.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _native

if TYPE_CHECKING:
    from . import Connection, Record


class Type(NamedTuple):
    """A parameter's or a column's type: the engine's name for it ("int8", "varchar",
    "INTEGER"; PostgreSQL names a type it has no built-in name for by its OID) and the keel
    type its values come back as ("int", "text", "timestamptz"…). Either is None when the
    engine does not say: MySQL and SQLite do not type parameters, and SQLite has no declared
    type for an expression."""

    name: str | None
    keel_type: str | None


class Attribute(NamedTuple):
    """A column of a prepared statement's result: its name and Type."""

    name: str
    type: Type


class PreparedStatement:
    """A statement prepared on a Connection (Connection.prepare).

    It runs on that connection, inside its transaction when there is one, as many times as
    needed; on MySQL and SQLite the statement prepared by prepare() is the one that runs, on
    PostgreSQL the connection's statement cache prepares it on its first run with the types of
    the values given. Using it after the connection was released raises InterfaceError.
    """

    __slots__ = ("_conn", "_sql", "_parameters", "_columns", "_rowtype")

    def __init__(self, conn: Connection, sql: str,
                 description: tuple[tuple[tuple[str | None, str | None], ...],
                                    tuple[tuple[str, str | None, str | None], ...]],
                 rowtype: type[Record] | None = None) -> None:
        params, cols = description
        self._rowtype = rowtype  # prepare(record_class=…), checked there
        self._conn = conn
        self._sql = sql
        self._parameters = tuple(Type(*p) for p in params)
        self._columns = tuple(Attribute(name, Type(tname, kind)) for name, tname, kind in cols)

    @property
    def parameters(self) -> tuple[Type, ...]:
        """The types of $1…$n, in order."""
        return self._parameters

    @property
    def columns(self) -> tuple[Attribute, ...]:
        """The columns of its result, in order (empty for a statement that returns no rows)."""
        return self._columns

    def get_parameters(self) -> tuple[Type, ...]:
        """asyncpg's name for parameters."""
        return self._parameters

    def get_attributes(self) -> tuple[Attribute, ...]:
        """asyncpg's name for columns."""
        return self._columns

    def get_query(self) -> str:
        """The statement's text."""
        return self._sql

    def __repr__(self) -> str:
        return f"<PreparedStatement {self._sql!r} on {self._conn!r}>"

    def _check(self, args: Sequence[Any]) -> None:
        if self._conn.released:
            raise _native.InterfaceError(
                "this prepared statement's connection has been released: prepare it again "
                "on a leased connection")
        n, given = len(self._parameters), len(args)
        if given != n:
            takes = ("no parameters" if n == 0 else "1 parameter ($1)" if n == 1
                     else f"{n} parameters ($1…${n})")
            raise _native.ProgrammingError(
                f"the prepared statement takes {takes} but {given} "
                f"{'was' if given == 1 else 'were'} given")

    async def fetch(self, *args: Any, timeout: float | None = None) -> list[Record]:
        """All rows, as a list of Records."""
        self._check(args)
        if self._rowtype is not None:
            return await self._conn._query(_native.MODE_FETCH, self._sql, args, 0, timeout,
                                           self._rowtype)
        return await self._conn._query(_native.MODE_FETCH, self._sql, args, 0, timeout)

    async def fetchrow(self, *args: Any, timeout: float | None = None) -> Record | None:
        """The first row as a Record, or None."""
        self._check(args)
        if self._rowtype is not None:
            return await self._conn._query(_native.MODE_FETCHROW, self._sql, args, 0, timeout,
                                           self._rowtype)
        return await self._conn._query(_native.MODE_FETCHROW, self._sql, args, 0, timeout)

    async def fetchval(self, *args: Any, column: int = 0,
                       timeout: float | None = None) -> Any:
        """One value of the first row (column index), or None when there is no row."""
        self._check(args)
        return await self._conn._query(_native.MODE_FETCHVAL, self._sql, args, column, timeout)

    async def executemany(self, rows: Iterable[Sequence[Any]], *,
                          timeout: float | None = None) -> list[Record] | None:
        """Runs the statement once per row of parameters, in one atomic batch (see
        Connection.executemany): None, or the rows a RETURNING statement returns."""
        if self._conn.released:
            self._check(())
        return await self._conn._executemany(self._sql, rows, timeout)
