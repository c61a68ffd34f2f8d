# python/keel/__init__.py - the public Python API of keeldb: Database, Connection, Transaction, Record, collections, errors.
"""keeldb for asyncio.

    db = keel.Database("postgresql://…")      # or a dict, a YAML or SQLite path, or nothing
    async with db:
        rows = await db.fetch("SELECT * FROM items WHERE id = $1", 42)

Queries run in C (libkeel) on the running asyncio loop; see keel._native.
"""
from __future__ import annotations

import asyncio
import math
import os
import time as _time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Union

from . import _codecs, _collection, _listen, _native
from ._listen import Listener, Notification
from ._cursor import CursorFactory, RowCursor, ServerCursor
from ._statement import Attribute, PreparedStatement, Type
from ._range import Range
from ._collection import (
    BulkWriteResult,
    ChangeStream,
    Collection,
    Cursor,
    DeleteMany,
    DeleteOne,
    DeleteResult,
    IndexModel,
    InsertManyResult,
    InsertOne,
    InsertOneResult,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
    UpdateResult,
    flush_kills as _flush_kills,
)
from ._native import (
    ConfigError,
    ConnectError,
    ConnectionLost,
    DatabaseError,
    CheckViolationError,
    DataError,
    Error,
    ExclusionViolationError,
    ForeignKeyViolationError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotNullViolationError,
    NotSupportedError,
    ObjectId,
    OperationalError,
    PoolTimeout,
    ProgrammingError,
    QueryCanceledError,
    QueryTimeout,
    Record,
    Regex,
    Timestamp,
    UniqueViolationError,
    UnknownDatabaseError,
)

__version__ = "0.1.0"

Config = Union[str, "os.PathLike[str]", "dict[str, Any]", None]

__all__ = [
    "Database",
    "Range",
    "Connection",
    "Transaction",
    "Record",
    "Notification",
    "Listener",
    "Error",
    "InterfaceError",
    "ConfigError",
    "UnknownDatabaseError",
    "DatabaseError",
    "OperationalError",
    "PoolTimeout",
    "ConnectionLost",
    "ConnectError",
    "QueryCanceledError",
    "QueryTimeout",
    "IntegrityError",
    "UniqueViolationError",
    "ForeignKeyViolationError",
    "NotNullViolationError",
    "CheckViolationError",
    "ExclusionViolationError",
    "ProgrammingError",
    "DataError",
    "InternalError",
    "NotSupportedError",
    "PreparedStatement",
    "CursorFactory",
    "RowCursor",
    "ServerCursor",
    "Type",
    "Attribute",
    "Collection",
    "Cursor",
    "InsertOneResult",
    "InsertManyResult",
    "UpdateResult",
    "DeleteResult",
    "BulkWriteResult",
    "ChangeStream",
    "ReturnDocument",
    "InsertOne",
    "UpdateOne",
    "UpdateMany",
    "ReplaceOne",
    "DeleteOne",
    "DeleteMany",
    "IndexModel",
    "ObjectId",
    "Regex",
    "Timestamp",
    "__version__",
]

_FETCH = _native.MODE_FETCH
_FETCHROW = _native.MODE_FETCHROW
_FETCHVAL = _native.MODE_FETCHVAL
_EXECUTE = _native.MODE_EXECUTE


def _setting(value: object) -> str:
    """The text of one configuration value: bools as true/false, everything else str()'d."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _flatten(prefix: str, value: object, out: list[tuple[str, str]]) -> None:
    """Appends (dotted.key.path, text) pairs for every scalar of a nested dict (lists by index)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                path = f"{prefix}.{key!r}" if prefix else repr(key)
                raise ConfigError(f"configuration keys must be str: {path}")
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(f"{prefix}.{i}" if prefix else str(i), item, out)
    elif value is not None:
        out.append((prefix, _setting(value)))


def _rowtype(record_class: type[Record] | None, into: Any) -> Any:
    """What fetch/fetchrow turn rows into: None (Record), a Record subclass, or a callable taking
    the columns as keyword arguments. TypeError naming what was wrong otherwise."""
    if record_class is not None:
        if into is not None:
            raise TypeError("fetch: give record_class= or into=, not both")
        if not (isinstance(record_class, type) and issubclass(record_class, Record)):
            raise TypeError("record_class must be a subclass of keel.Record, not "
                            f"{record_class!r}")
        return record_class
    if into is not None and not callable(into):
        raise TypeError("into= must be a class or callable taking the columns as keyword "
                        f"arguments (a pydantic model, a dataclass…), not {type(into).__name__}")
    return into


def _close_timeout(timeout: object) -> float | None:
    """close()'s timeout=: None (wait as long as it takes; math.inf too) or seconds >= 0."""
    if timeout is None:
        return None
    # True would be one second: a flag passed in the wrong place, not a duration.
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("close(timeout=) takes a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"close(timeout=) must be 0 or more seconds, not {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


def _is_url(text: str) -> bool:
    return "://" in text or text.startswith("sqlite:")


class Database(_native.Database):
    """Named, pooled databases bound to the running asyncio loop.

    Database()                      the file named by KEEL_CONFIG (as keel check), else
                                    DATABASE_URL, else SQLite ./keel.db (plus KEEL_… environment
                                    overrides; other KEEL_… variables are ignored); ./keel.yaml
                                    is read only when named, here or by KEEL_CONFIG
    Database("postgresql://…")      one database, "default", at a URL
    Database("keel.yaml")           a YAML configuration file (str or os.PathLike)
    Database("notes.db")            an SQLite database, "default" (a name ending in .db, .sqlite
                                    or .sqlite3, or a file with SQLite's header)
    Database(":memory:")            an in-memory SQLite database, as sqlite3's (sqlite::memory:)
    Database({"default": …, "databases": {…}})   a nested dict of the same schema

    An invalid configuration raises ConfigError here, naming the key path.

    json_serializer (obj -> str | bytes) and json_deserializer (str -> object) replace keel's
    JSON encoding of dict and list parameters and decoding of JSON results (orjson.dumps and
    orjson.loads, msgspec.json.encode and .decode) on every database of this Database.
    """

    def __init__(self, config: Config = None, *,
                 json_serializer: Callable[[Any], str | bytes] | None = None,
                 json_deserializer: Callable[[str], Any] | None = None) -> None:
        url: str | None = None
        path: str | None = None
        settings: list[tuple[str, str]] = []
        from_env = False
        if config is None:
            # The file keel check reads too (its ./keel.yaml fallback aside).
            path = os.environ.get("KEEL_CONFIG") or None
            from_env = path is not None
        elif isinstance(config, dict):
            _flatten("", config, settings)
        elif isinstance(config, str) and _is_url(config):
            url = config
        elif config == ":memory:":  # sqlite3.connect(":memory:")'s name for it
            url = "sqlite::memory:"
        elif isinstance(config, (str, bytes, os.PathLike)):
            path = os.fsdecode(os.fspath(config))
        else:
            raise ConfigError(
                "a configuration is a URL, a path to a YAML file or an SQLite database, "
                f"or a dict, not {type(config).__name__}")
        try:
            super().__init__(url=url, path=path, settings=settings,
                             json_serializer=json_serializer,
                             json_deserializer=json_deserializer)
        except ConfigError as e:
            if from_env and path is not None and path in str(e):
                raise ConfigError(f"KEEL_CONFIG: {e}") from e
            raise

    async def start(self) -> None:
        """Binds to the running loop and starts filling the pools (never fails on a down server)."""
        self._start()

    async def close(self, timeout: float | None = None) -> None:
        """Refuses new work at once, waits for leased connections to come back and running
        operations to end, then closes every pool. Idempotent.

        timeout= (seconds) bounds that wait: once it passes, the database is closed anyway.
        Running statements are cancelled on the server and raise InterfaceError ("database …
        was closed"), as does the next call on a connection still leased (a cursor's fetch, a
        change stream, a statement in ``async with db.connection()``); a ``db.listen()``
        iteration ends with it. 0 closes at once; None (the default) waits as long as it takes.
        A close cancelled while it waits goes on without a deadline."""
        limit = _close_timeout(timeout)
        waiter = self._close()
        if waiter is None:
            return
        if limit is not None and not waiter.done():
            if limit > 0:
                await asyncio.wait((waiter,), timeout=limit)
            if not waiter.done():
                self._close_now()
        await waiter

    async def __aenter__(self) -> Database:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # timeout= (seconds) on every query method: the call raises QueryTimeout when it has not
    # finished by then, the wait for a pooled connection included, and the statement is
    # cancelled on the server. None: the database's command_timeout (none by default).

    # record_class= (a subclass of keel.Record, as asyncpg's) makes the rows instances of it;
    # into= (a pydantic model, a dataclass, any callable taking the columns as keyword
    # arguments) builds objects from the rows directly, without Records.

    async def fetch(self, sql: str, *args: Any, database: str | None = None,
                    timeout: float | None = None, record_class: type[Record] | None = None,
                    into: Any = None) -> list[Any]:
        """All rows, as a list of Records (or of record_class / into objects)."""
        if record_class is None and into is None:
            return await self._query(_FETCH, sql, args, database, 0, timeout)
        return await self._query(_FETCH, sql, args, database, 0, timeout,
                                 _rowtype(record_class, into))

    async def fetchrow(self, sql: str, *args: Any, database: str | None = None,
                       timeout: float | None = None, record_class: type[Record] | None = None,
                       into: Any = None) -> Any:
        """The first row as a Record (or a record_class / into object), or None."""
        if record_class is None and into is None:
            return await self._query(_FETCHROW, sql, args, database, 0, timeout)
        return await self._query(_FETCHROW, sql, args, database, 0, timeout,
                                 _rowtype(record_class, into))

    async def fetchval(self, sql: str, *args: Any, column: int = 0,
                       database: str | None = None, timeout: float | None = None) -> Any:
        """One value of the first row (column index), or None when there is no row."""
        return await self._query(_FETCHVAL, sql, args, database, column, timeout)

    async def execute(self, sql: str, *args: Any, database: str | None = None,
                      timeout: float | None = None) -> int:
        """Runs a statement; returns the number of rows affected (0 when not reported)."""
        return await self._query(_EXECUTE, sql, args, database, 0, timeout)

    async def set_type_codec(self, typename: str, *, schema: str = "public",
                             encoder: Callable[[Any], Any] | None,
                             decoder: Callable[[Any], Any] | None, format: str = "text",
                             database: str | None = None) -> None:
        """A codec for a PostgreSQL type (asyncpg's set_type_codec): decoder(text) makes each
        value of its columns, encoder(value) the text of a parameter of the type for values keel
        does not convert itself. format='tuple' / 'binary' (dates, times, timestamps, intervals):
        the decoder takes, the encoder gives, asyncpg's tuple form / the binary form;
        format='tuple' for a composite type: a tuple of its fields' values. For every
        connection of this Database."""
        where = f"database '{database if database is not None else self.default_database}'"
        await _codecs.set_type_codec(
            self, lambda sql, *a: self.fetchrow(sql, *a, database=database), typename,
            schema=schema, encoder=encoder, decoder=decoder, format=format,
            engine=self.engine(database), where=where)
        if encoder is not None:
            _codecs.install(self)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]], *,
                          database: str | None = None,
                          timeout: float | None = None) -> list[Record] | None:
        """Runs a statement once per row of parameters, in one atomic batch (timeout= covers
        the whole batch). None, or, for a statement that returns rows (INSERT … RETURNING),
        every row's Records in order."""
        if _codecs.encoding:
            rows = await _codecs.encode_db_rows(self, sql, rows, database)
        return await self._executemany(sql, rows, database, timeout)

    async def copy_records_to_table(self, table_name: str, *,
                                    records: Iterable[Sequence[Any]],
                                    columns: Sequence[str] | None = None,
                                    schema_name: str | None = None,
                                    database: str | None = None,
                                    timeout: float | None = None) -> int:
        """Loads records into a table in one atomic bulk operation on a leased connection (see
        Connection.copy_records_to_table); returns the number of rows loaded."""
        return await self._copy(table_name, records, columns, schema_name, database, timeout)

    async def acquire(self, database: str | None = None, *,
                      timeout: float | None = None) -> Connection:
        """Leases a connection; give it back with release(). timeout= bounds the wait (the
        pool's acquire_timeout and connect_timeout still apply): QueryTimeout when it passes."""
        return await self._acquire(database, timeout)

    async def release(self, connection: Connection) -> None:
        """Gives a leased connection back to its pool (a no-op when already released)."""
        try:
            if _collection._pending_kills:
                await _flush_kills(connection)
        finally:
            self._release(connection)

    def connection(self, database: str | None = None) -> _ConnectionContext:
        """async with db.connection(name) as conn: a leased Connection, released on exit."""
        return _ConnectionContext(self, database)

    def transaction(self, database: str | None = None) -> _TransactionContext:
        """async with db.transaction() as conn: BEGIN … COMMIT, or ROLLBACK on exception."""
        return _TransactionContext(self, database)

    async def ping(self, name: str | None = None, *, timeout: float | None = None) -> float:
        """Round-trip time in seconds of a trivial query (MongoDB: the ping command); raises like
        a query (QueryTimeout when timeout= passes first)."""
        mongodb = self.engine(name) == "mongodb"
        started = _time.perf_counter()
        if mongodb:
            await self._command("admin", {"ping": 1}, name, timeout)
        else:
            await self._query(_EXECUTE, "SELECT 1", (), name, 0, timeout)
        return _time.perf_counter() - started

    def listen(self, channel: str, *, database: str | None = None) -> Listener:
        """The notifications (PostgreSQL's NOTIFY) of channel, as an async iterator of
        Notification(channel, payload, pid): ``async with db.listen("jobs") as notes: async for
        n in notes: …``. A connection is leased for it, kept out of the pool while it listens,
        and unlistened when the listener closes. NotSupportedError on other engines;
        ConnectionLost from the iteration when its connection is lost."""
        return Listener(self, channel, database)

    def collection(self, name: str, database: str | None = None, *,
                   dbname: str | None = None) -> Collection:
        """A MongoDB collection of database (a configuration name; None: the default), in the
        MongoDB database dbname (None: the one in the database's URL). Each operation leases a
        connection for itself; cursors keep theirs until exhausted or closed.
        NotSupportedError when the database is not a MongoDB one."""
        return Collection(name, db=self, database=database, dbname=dbname)

    def __getitem__(self, name: str) -> Collection:
        """db["users"]: db.collection("users"), in the default database (pymongo's
        client["app"]["users"] is db.collection("users", dbname="app"))."""
        return Collection(name, db=self)

    # db[name] is item access, not a sequence: iter(db) and `x in db` are TypeErrors, as with
    # pymongo's Database (without this, Python would iterate db[0], db[1]…).
    __iter__ = None  # type: ignore[assignment]

    async def list_collection_names(self, database: str | None = None, *,
                                    dbname: str | None = None, filter: dict[str, Any] | None = None,
                                    session: Any = None, timeout: float | None = None) -> list[str]:
        """The collection names of a MongoDB database (see collection() for database and
        dbname); filter applies to listCollections' documents ({"name": {"$regex": …}})."""
        return await _collection.list_collection_names(
            Collection("$cmd", db=self, database=database, dbname=dbname), filter, session,
            timeout)

    async def create_collection(self, name: str, database: str | None = None, *,
                                dbname: str | None = None, check_exists: bool = True,
                                session: Any = None, timeout: float | None = None,
                                **options: Any) -> Collection:
        """Creates a collection (options go into MongoDB's create command as they are:
        capped=True, size=…, validator={…}…) and returns it. With check_exists, one that exists
        already is a ProgrammingError."""
        return await _collection.create_collection(
            Collection("$cmd", db=self, database=database, dbname=dbname), name, options,
            check_exists, session, timeout)

    def watch(self, pipeline: Sequence[dict[str, Any]] | None = None,
              database: str | None = None, *, dbname: str | None = None,
              **options: Any) -> ChangeStream:
        """A ChangeStream of every collection of a MongoDB database (see collection() for
        database and dbname); options as Collection.watch takes them (session= included). Each
        change names its collection in change["ns"]."""
        return Collection("$cmd", db=self, database=database, dbname=dbname).watch(
            pipeline, **options, _whole_database=True)

    async def command(self, dbname: str | None, cmd: dict[str, Any], *,
                      database: str | None = None, session: Any = None,
                      timeout: float | None = None) -> dict[str, Any]:
        """Runs one MongoDB command (a dict whose first key is the command name) in the MongoDB
        database dbname (None: the one in the URL) on a connection of database (session=: on
        that Connection of it), and returns the server's reply. Server errors raise the mapped
        keel error."""
        if session is not None:
            conn = _collection._session_conn(
                session, database if database is not None else self.default_database)
            return await _collection._conn_command(conn, dbname, cmd, timeout)
        return await self._command(dbname, cmd, database, timeout)


class Connection(_native.Connection):
    """A connection leased from a pool. Get one with Database.acquire / connection / transaction.

    Attributes: database (name), engine ("postgresql" | "sqlite" | "mongodb"), in_transaction.
    """

    __slots__ = ()

    # timeout= (seconds) applies to that call only: QueryTimeout when it has not finished by
    # then (the statement is cancelled on the server; the connection stays usable, or is
    # discarded when released if the server did not answer the cancel). None: the database's
    # command_timeout.

    async def fetch(self, sql: str, *args: Any, timeout: float | None = None,
                    record_class: type[Record] | None = None, into: Any = None) -> list[Any]:
        if _codecs.encoding:
            args = await _codecs.encode_conn_args(self, sql, args)
        if record_class is None and into is None:
            return await self._query(_FETCH, sql, args, 0, timeout)
        return await self._query(_FETCH, sql, args, 0, timeout, _rowtype(record_class, into))

    async def fetchrow(self, sql: str, *args: Any, timeout: float | None = None,
                       record_class: type[Record] | None = None, into: Any = None) -> Any:
        if _codecs.encoding:
            args = await _codecs.encode_conn_args(self, sql, args)
        if record_class is None and into is None:
            return await self._query(_FETCHROW, sql, args, 0, timeout)
        return await self._query(_FETCHROW, sql, args, 0, timeout, _rowtype(record_class, into))

    async def fetchval(self, sql: str, *args: Any, column: int = 0,
                       timeout: float | None = None) -> Any:
        if _codecs.encoding:
            args = await _codecs.encode_conn_args(self, sql, args)
        return await self._query(_FETCHVAL, sql, args, column, timeout)

    async def execute(self, sql: str, *args: Any, timeout: float | None = None) -> int:
        if _codecs.encoding:
            args = await _codecs.encode_conn_args(self, sql, args)
        return await self._query(_EXECUTE, sql, args, 0, timeout)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]], *,
                          timeout: float | None = None) -> list[Record] | None:
        if _codecs.encoding:
            rows = await _codecs.encode_conn_rows(self, sql, rows)
        return await self._executemany(sql, rows, timeout)

    async def copy_records_to_table(self, table_name: str, *,
                                    records: Iterable[Sequence[Any]],
                                    columns: Sequence[str] | None = None,
                                    schema_name: str | None = None,
                                    timeout: float | None = None) -> int:
        """Loads records (any iterable of sequences, one value per column) into a table in one
        atomic bulk operation, as asyncpg's method of the same name; returns the number of rows
        loaded. columns names the columns the values go to (None: every column of the table, in
        order); names are used as stored (quoted: case and spaces are kept). PostgreSQL uses
        binary COPY; MySQL/MariaDB and SQLite an atomic batch of INSERTs. A value that does not
        fit its column raises DataError naming the row and column, and nothing is loaded."""
        return await self._copy(table_name, records, columns, schema_name, timeout)

    def cursor(self, sql: str, *args: Any, prefetch: int | None = None,
               timeout: float | None = None, record_class: type[Record] | None = None,
               into: Any = None) -> CursorFactory:
        """A cursor over sql's rows, as asyncpg's: ``async for row in conn.cursor(sql, *args,
        prefetch=50)``, or ``cur = await conn.cursor(…)`` then ``cur.fetch(n)``,
        ``cur.fetchrow()``, ``cur.forward(n)``, ``cur.close()``. record_class= / into= make the
        rows what fetch makes them.

        On PostgreSQL and MySQL/MariaDB inside a transaction, a query gets a server-side
        cursor (ServerCursor: PostgreSQL's DECLARE … CURSOR, ended with the transaction; MySQL's
        prepared-statement cursor), and other statements run on the connection between fetches;
        timeout= bounds each of its operations. Elsewhere the statement streams (RowCursor):
        at most prefetch rows (plus one batch of the engine) are held however large the result,
        the statement occupies the connection until its rows are read or the cursor is closed,
        and timeout= bounds the whole statement, time spent between fetches included."""
        return CursorFactory(self, sql, args, prefetch, timeout, _rowtype(record_class, into))

    async def prepare(self, sql: str, *, timeout: float | None = None,
                      record_class: type[Record] | None = None) -> PreparedStatement:
        """Prepares sql ($1…$n) on this connection without running it, as asyncpg's prepare:
        the PreparedStatement describes its parameters and columns and runs with fetch,
        fetchrow, fetchval and executemany on this connection. A statement the server cannot
        prepare raises the server's error (ProgrammingError for a syntax error or an unknown
        table); NotSupportedError on MongoDB. record_class= (a subclass of keel.Record): what
        its fetch and fetchrow return rows as."""
        rowtype = _rowtype(record_class, None)
        return PreparedStatement(self, sql, await self._prepare(sql, timeout), rowtype)

    async def set_type_codec(self, typename: str, *, schema: str = "public",
                             encoder: Callable[[Any], Any] | None,
                             decoder: Callable[[Any], Any] | None,
                             format: str = "text") -> None:
        """As Database.set_type_codec, looking the type up on this connection: the codec is
        the Database's (connections are pooled), so it applies to every connection of it."""
        await _codecs.set_type_codec(
            self._db, lambda sql, *a: self.fetchrow(sql, *a), typename, schema=schema,
            encoder=encoder, decoder=decoder, format=format, engine=self.engine,
            where=f"database '{self.database}'")
        if encoder is not None:
            _codecs.install(self._db)

    async def add_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        """Calls callback(connection, pid, channel, payload) for each notification (PostgreSQL's
        NOTIFY) of channel, as asyncpg does; callback may be a coroutine function (then run as a
        task). Each call runs LISTEN (idempotent; it redoes one a rolled-back transaction undid);
        adding the same callback again is a no-op (asyncpg's set). The connection receives them while
        it is leased, idle or not; releasing it removes every listener (keel unlistens before
        it goes back to the pool). NotSupportedError on other engines."""
        await _listen.add_listener(self, channel, callback)

    async def remove_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        """Removes a callback added by add_listener (a no-op when it was not added); the last
        one of a channel runs UNLISTEN."""
        await _listen.remove_listener(self, channel, callback)

    def transaction(self) -> Transaction:
        """async with conn.transaction(): a transaction, or a savepoint when nested (MongoDB has
        no savepoints: a nested transaction raises NotSupportedError). By hand: tr.start(),
        then tr.commit() or tr.rollback()."""
        return Transaction(self)

    def collection(self, name: str, *, dbname: str | None = None) -> Collection:
        """A MongoDB collection whose operations run on this connection (and so inside its
        transaction). NotSupportedError on an SQL connection."""
        return Collection(name, conn=self, dbname=dbname)

    def __getitem__(self, name: str) -> Collection:
        """conn["users"]: conn.collection("users")."""
        return Collection(name, conn=self)

    __iter__ = None  # type: ignore[assignment]  # not a sequence (see Database.__iter__)

    async def list_collection_names(self, *, dbname: str | None = None,
                                    filter: dict[str, Any] | None = None,
                                    timeout: float | None = None) -> list[str]:
        """The collection names of the MongoDB database, on this connection."""
        return await _collection.list_collection_names(
            Collection("$cmd", conn=self, dbname=dbname), filter, None, timeout)

    async def create_collection(self, name: str, *, dbname: str | None = None,
                                check_exists: bool = True, timeout: float | None = None,
                                **options: Any) -> Collection:
        """Creates a collection on this connection (see Database.create_collection)."""
        return await _collection.create_collection(
            Collection("$cmd", conn=self, dbname=dbname), name, options, check_exists, None,
            timeout)

    async def command(self, dbname: str | None, cmd: dict[str, Any], *,
                      timeout: float | None = None) -> dict[str, Any]:
        """Runs one MongoDB command on this connection (see Database.command)."""
        return await _collection._conn_command(self, dbname, cmd, timeout)


_native.set_connection_class(Connection)


class Transaction:
    """A transaction block on a Connection: BEGIN/COMMIT/ROLLBACK at the outermost level,
    SAVEPOINT/RELEASE/ROLLBACK TO (savepoints keel_sp_1, keel_sp_2…) when nested.

    ``async with conn.transaction():``, or by hand as asyncpg's: ``tr = conn.transaction();
    await tr.start(); … await tr.commit()`` (or ``await tr.rollback()``)."""

    __slots__ = ("_conn", "_depth", "_state", "_managed")

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._depth: int | None = None
        self._state = _NEW
        self._managed = False

    async def start(self) -> None:
        """BEGIN (SAVEPOINT when a transaction is open on the connection). InterfaceError when
        this Transaction was already started."""
        if self._state is not _NEW:
            raise InterfaceError(f"cannot start the transaction: it {_STATE_TEXT[self._state]}")
        conn = self._conn
        depth = conn._depth
        await conn._txn(_native.TXN_BEGIN if depth == 0 else _native.TXN_SAVEPOINT, depth)
        self._depth = depth
        self._state = _STARTED
        conn._depth = depth + 1

    async def commit(self) -> None:
        """COMMIT (RELEASE of its savepoint when nested). InterfaceError when the transaction is
        not started, already ended, used as ``async with`` or has a nested one still open; the
        transaction is ended even when the commit raises (see the docs for PostgreSQL)."""
        depth = _manual_end(self, "commit")
        self._state = _FAILED
        await self._conn._txn(_native.TXN_COMMIT if depth == 0 else _native.TXN_RELEASE, depth)
        self._state = _COMMITTED

    async def rollback(self) -> None:
        """ROLLBACK (ROLLBACK TO its savepoint when nested). InterfaceError when the transaction
        is not started, already ended, used as ``async with`` or has a nested one still open;
        after a commit that raised it ends what the failed commit left open, if anything."""
        conn = self._conn
        if self._state is _FAILED:
            self._state = _ROLLED_BACK
            if self._depth == 0 and conn.in_transaction and conn._depth == 0:
                await conn._txn(_native.TXN_ROLLBACK, 0)
            return
        depth = _manual_end(self, "roll back")
        self._state = _ROLLED_BACK
        await conn._txn(_native.TXN_ROLLBACK if depth == 0 else _native.TXN_ROLLBACK_TO, depth)

    async def __aenter__(self) -> Connection:
        if self._state is not _NEW:
            raise InterfaceError("a Transaction can only be entered once")
        await self.start()
        self._managed = True
        return self._conn

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        conn = self._conn
        depth = self._depth
        assert depth is not None, "__aexit__ without __aenter__"
        conn._depth = depth
        if exc_type is None:
            self._state = _FAILED
            await conn._txn(_native.TXN_COMMIT if depth == 0 else _native.TXN_RELEASE, depth)
            self._state = _COMMITTED
            return False
        self._state = _ROLLED_BACK
        try:
            await conn._txn(_native.TXN_ROLLBACK if depth == 0 else _native.TXN_ROLLBACK_TO,
                            depth)
        except Error:
            # The error that ended the block is the one to report; a connection whose rollback
            # failed is rolled back or discarded by the pool when it is released.
            pass
        return False


# The states of a Transaction (keel.Transaction, keel.sync.Transaction).
_NEW = "new"
_STARTED = "started"
_COMMITTED = "committed"
_ROLLED_BACK = "rolled back"
_FAILED = "failed"  # its commit raised: ended, or left for rollback() to end
_STATE_TEXT = {
    _STARTED: "was already started",
    _COMMITTED: "was already committed",
    _ROLLED_BACK: "was already rolled back",
    _FAILED: "was already ended by a commit that failed",
}


def _manual_end(txn: Any, what: str) -> int:
    """The depth of txn, which commit()/rollback() end; InterfaceError when they may not."""
    if txn._state is _NEW:
        raise InterfaceError(f"cannot {what} the transaction: it was not started "
                             "(await start() first, or use async with)")
    if txn._state is not _STARTED:
        raise InterfaceError(f"cannot {what} the transaction: it {_STATE_TEXT[txn._state]}")
    if txn._managed:
        raise InterfaceError(f"cannot {what} a transaction used as a with block by hand: "
                             "leaving the block commits it, an exception rolls it back")
    depth: int = txn._depth
    conn = txn._conn
    if conn._depth != depth + 1:
        raise InterfaceError(f"cannot {what} the transaction: a transaction nested in it is "
                             "still open (end it first)")
    conn._depth = depth
    return depth


class _ConnectionContext:
    __slots__ = ("_db", "_database", "_conn")

    def __init__(self, db: Database, database: str | None) -> None:
        self._db = db
        self._database = database
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._conn = await self._db._acquire(self._database)
        return self._conn

    async def __aexit__(self, *exc: object) -> bool:
        conn, self._conn = self._conn, None
        assert conn is not None, "__aexit__ without __aenter__"
        try:
            if _collection._pending_kills:
                await _flush_kills(conn)
        finally:
            self._db._release(conn)
        return False


class _TransactionContext:
    __slots__ = ("_db", "_database", "_conn", "_txn")

    def __init__(self, db: Database, database: str | None) -> None:
        self._db = db
        self._database = database
        self._conn: Connection | None = None
        self._txn: Transaction | None = None

    async def __aenter__(self) -> Connection:
        conn = await self._db._acquire(self._database)
        txn = Transaction(conn)
        try:
            await txn.__aenter__()
        except BaseException:
            self._db._release(conn)
            raise
        self._conn = conn
        self._txn = txn
        return conn

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        conn, self._conn = self._conn, None
        txn, self._txn = self._txn, None
        assert conn is not None and txn is not None, "__aexit__ without __aenter__"
        try:
            await txn.__aexit__(exc_type, exc, tb)
            if _collection._pending_kills:
                await _flush_kills(conn)
        finally:
            self._db._release(conn)
        return False


# keel.sync.Database, the synchronous API, is there after `import keel` (it builds on the above).
from . import sync  # noqa: E402
