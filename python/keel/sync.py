# python/keel/sync.py - the synchronous API for scripts and notebooks: keel.sync.Database, on the C core's blocking path, without asyncio.
"""keeldb without an event loop.

    import keel.sync

    with keel.sync.Database("postgresql://…") as db:
        rows = db.fetch("SELECT * FROM items WHERE id = $1", 42)
        with db.transaction() as conn:
            conn.execute("UPDATE items SET n = n + 1 WHERE id = $1", 42)

The methods are keel.Database's, with the same arguments, results and exceptions, called without
await. Each call blocks until it is done, on the C core's synchronous path (keel's own blocking
loop), with the GIL released meanwhile; no asyncio loop is needed, and one already running in the
thread (a Jupyter notebook's) is neither needed nor touched. A Database may be shared by threads:
their calls take turns.
"""
from __future__ import annotations

import functools
import inspect
import math
import time as _time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Callable

from . import Config, Record, _codecs, _collection, _cursor, _listen, _native, _rowtype, _statement
from . import Database as _AsyncDatabase
from . import _COMMITTED, _FAILED, _NEW, _ROLLED_BACK, _STARTED, _STATE_TEXT, _close_timeout
from . import _manual_end
from ._collection import _deadline, _left
from ._listen import Notification
from ._native import check_timeout
from ._native import InterfaceError, InternalError, ProgrammingError

__all__ = ["Database", "Connection", "Transaction", "PreparedStatement", "RowCursor", "Collection",
           "Cursor", "ChangeStream", "Listener", "Notification"]

_FETCH = _native.MODE_FETCH
_FETCHROW = _native.MODE_FETCHROW
_FETCHVAL = _native.MODE_FETCHVAL
_EXECUTE = _native.MODE_EXECUTE


class Database(_native.SyncDatabase):
    """Named, pooled databases used synchronously; the configuration forms are keel.Database's:

    Database()                      DATABASE_URL, else SQLite ./keel.db (plus KEEL_… overrides)
    Database("postgresql://…")      one database, "default", at a URL
    Database("keel.yaml")           a YAML configuration file; Database("notes.db"): SQLite
    Database({"default": …, "databases": {…}})   a nested dict of the same schema

    An invalid configuration raises ConfigError here, naming the key path. Nothing connects
    until the first call. close() (or leaving `with`) closes every pool at once: a connection
    still leased then is closed too, and using it raises InterfaceError; a call running in
    another thread is not interrupted, close() waits for it to end. close(timeout=) first
    waits for leased connections to be released (see close).
    """

    __slots__ = ("_config",)

    def __init__(self, config: Config = None, *,
                 json_serializer: Callable[[Any], str | bytes] | None = None,
                 json_deserializer: Callable[[str], Any] | None = None) -> None:
        # keel.Database validates (same errors); its configuration is copied, it is never started.
        # Its json_serializer / json_deserializer are this Database's too.
        self._config = _AsyncDatabase(config, json_serializer=json_serializer,
                                      json_deserializer=json_deserializer)
        super().__init__(self._config)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float | None = 0) -> None:
        """Closes every pool (idempotent). timeout= (seconds) first waits up to that long for
        the connections other threads lease to be released, refusing new work meanwhile
        (InterfaceError); None waits as long as it takes. 0, the default, closes at once: a
        thread that closes while it holds a connection itself would otherwise wait for ever.
        Connections still leased then are closed (their next call raises InterfaceError)."""
        limit = _close_timeout(timeout)
        if limit != 0 and not self.closed:
            self._close_begin()
            deadline = None if limit is None else _time.monotonic() + limit
            while self._leased and (deadline is None or _time.monotonic() < deadline):
                _time.sleep(0.001)
        super().close()

    def start(self) -> None:
        """Nothing to do (pools fill on demand); there for symmetry with keel.Database."""
        if self.closed:
            raise InterfaceError("the database is closed")

    @property
    def databases(self) -> list[str]:
        """The configured database names, in configuration order."""
        return self._config.databases

    @property
    def default_database(self) -> str:
        return self._config.default_database

    def engine(self, name: str | None = None) -> str:
        """The engine of database name (None: the default)."""
        return self._config.engine(name)

    def pool_stats(self, name: str | None = None) -> dict[str, Any]:
        """size, idle, leased, waiting, min_size, max_size and acquire_timeout of a pool."""
        self._config.engine(name)  # UnknownDatabaseError naming it, as keel.Database
        return self._pool_stats(name)

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """A pool's size, idle, in_use, waiting, min_size, max_size, its totals since open
        (connects, connect_failures, acquires, acquire_timeouts) and acquire_wait_p50 and
        acquire_wait_p99 in seconds, over the latest 1024 acquires served."""
        self._config.engine(name)  # UnknownDatabaseError naming it, as keel.Database
        return self._stats(name)

    def __repr__(self) -> str:
        return (f"<keel.sync.Database databases={self.databases!r}"
                f"{' closed' if self.closed else ''}>")

    # timeout= (seconds) on every query method: QueryTimeout when the call has not finished by
    # then, the wait for a pooled connection included; the statement is cancelled on the server.
    # None: the database's command_timeout (none by default).

    # record_class= (a subclass of keel.Record) and into= (a pydantic model, a dataclass, any
    # callable taking the columns as keyword arguments) as on keel.Database.

    def fetch(self, sql: str, *args: Any, database: str | None = None,
              timeout: float | None = None, record_class: type[Record] | None = None,
              into: Any = None) -> list[Any]:
        """All rows, as a list of Records (or of record_class / into objects)."""
        return self._query(_FETCH, sql, args, database, 0, timeout, _rowtype(record_class, into))

    def fetchrow(self, sql: str, *args: Any, database: str | None = None,
                 timeout: float | None = None, record_class: type[Record] | None = None,
                 into: Any = None) -> Any:
        """The first row as a Record (or a record_class / into object), or None."""
        return self._query(_FETCHROW, sql, args, database, 0, timeout,
                           _rowtype(record_class, into))

    def fetchval(self, sql: str, *args: Any, column: int = 0, database: str | None = None,
                 timeout: float | None = None) -> Any:
        """One value of the first row (column index), or None when there is no row."""
        return self._query(_FETCHVAL, sql, args, database, column, timeout)

    def execute(self, sql: str, *args: Any, database: str | None = None,
                timeout: float | None = None) -> int:
        """Runs a statement; returns the number of rows affected (0 when not reported)."""
        return self._query(_EXECUTE, sql, args, database, 0, timeout)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], *,
                    database: str | None = None,
                    timeout: float | None = None) -> list[Record] | None:
        """Runs a statement once per row of parameters, in one atomic batch. None, or, for a
        statement that returns rows (INSERT … RETURNING), every row's Records in order."""
        return self._executemany(sql, rows, database, timeout)

    def set_type_codec(self, typename: str, *, schema: str = "public",
                       encoder: Callable[[Any], Any] | None,
                       decoder: Callable[[Any], Any] | None, format: str = "text",
                       database: str | None = None) -> None:
        """A codec for a PostgreSQL type, as keel.Database.set_type_codec: decoder(text) makes
        each value of its columns, encoder(value) the text of a parameter of the type for values
        keel does not convert itself (format='tuple' / 'binary' for dates, times, timestamps and
        intervals: their tuple form / binary form; format='tuple' for composite types: a tuple
        of the fields' values). For every connection of this Database."""
        where = f"database '{database if database is not None else self.default_database}'"

        async def run(sql: str, *a: Any) -> Any:
            return self.fetchrow(sql, *a, database=database)

        _drive(_codecs.set_type_codec(self._config, run, typename, schema=schema,
                                      encoder=encoder, decoder=decoder, format=format,
                                      engine=self.engine(database), where=where))

    def _query(self, mode: int, sql: str, args: tuple[Any, ...], database: str | None,
               *rest: Any) -> Any:
        if _codecs.encoding:
            args = _encode_args(self, sql, args, database, None)
        return super()._query(mode, sql, args, database, *rest)

    def _executemany(self, sql: str, rows: Any, database: str | None,
                     timeout: float | None) -> Any:
        if _codecs.encoding:
            rows = _encode_rows(self, sql, rows, database, None)
        return super()._executemany(sql, rows, database, timeout)

    def copy_records_to_table(self, table_name: str, *, records: Iterable[Sequence[Any]],
                              columns: Sequence[str] | None = None,
                              schema_name: str | None = None, database: str | None = None,
                              timeout: float | None = None) -> int:
        """Loads records into a table in one atomic bulk operation (see
        keel.Connection.copy_records_to_table); returns the number of rows loaded."""
        return self._copy(table_name, records, columns, schema_name, database, timeout)

    def acquire(self, database: str | None = None, *,
                timeout: float | None = None) -> Connection:
        """Leases a connection; give it back with release(). timeout= bounds the wait
        (QueryTimeout when it passes); the pool's acquire_timeout still applies."""
        return self._acquire(database, timeout, Connection)

    def release(self, connection: Connection) -> None:
        """Gives a leased connection back to its pool (a no-op when already released)."""
        if not isinstance(connection, Connection):
            raise TypeError(f"release takes a keel.sync.Connection, not "
                            f"{type(connection).__name__}")
        connection._release()

    def connection(self, database: str | None = None) -> _ConnectionContext:
        """with db.connection(name) as conn: a leased Connection, released on exit."""
        return _ConnectionContext(self, database)

    def transaction(self, database: str | None = None) -> _TransactionContext:
        """with db.transaction() as conn: BEGIN … COMMIT, or ROLLBACK on exception."""
        return _TransactionContext(self, database)

    def listen(self, channel: str, *, database: str | None = None,
               timeout: float | None = None) -> Listener:
        """The notifications (PostgreSQL's NOTIFY) of channel, as a blocking iterator of
        Notification(channel, payload, pid): ``with db.listen("jobs") as notes: for n in
        notes: …``. timeout= (seconds) bounds the wait for each next notification: when none
        comes within it, the iteration ends (as psycopg's notifies(timeout=)); None waits
        without end. A connection is leased for it, kept out of the pool while it listens, and
        unlistened when the listener closes. NotSupportedError on other engines; ConnectionLost
        from the iteration when its connection is lost."""
        return Listener(self, channel, database, timeout)

    def ping(self, name: str | None = None, *, timeout: float | None = None) -> float:
        """Round-trip time in seconds of the cheapest request (SELECT 1; MongoDB's ping)."""
        started = _time.perf_counter()
        self._ping(name, timeout)
        return _time.perf_counter() - started

    def collection(self, name: str, database: str | None = None, *,
                   dbname: str | None = None) -> Collection:
        """A MongoDB collection (see keel.Database.collection); NotSupportedError when the
        database is not a MongoDB one."""
        return Collection(name, db=self, database=database, dbname=dbname)

    def __getitem__(self, name: str) -> Collection:
        """db["users"]: db.collection("users"), in the default database."""
        return Collection(name, db=self)

    def list_collection_names(self, database: str | None = None, *, dbname: str | None = None,
                              filter: dict[str, Any] | None = None, session: Any = None,
                              timeout: float | None = None) -> list[str]:
        """The collection names of a MongoDB database (see keel.Database)."""
        return _list_collection_names(Collection("$cmd", db=self, database=database,
                                                 dbname=dbname), filter, session, timeout)

    def create_collection(self, name: str, database: str | None = None, *,
                          dbname: str | None = None, check_exists: bool = True,
                          session: Any = None, timeout: float | None = None,
                          **options: Any) -> Collection:
        """Creates a collection and returns it (see keel.Database.create_collection)."""
        return _create_collection(Collection("$cmd", db=self, database=database, dbname=dbname),
                                  name, options, check_exists, session, timeout)

    def watch(self, pipeline: Sequence[dict[str, Any]] | None = None,
              database: str | None = None, *, dbname: str | None = None,
              **options: Any) -> ChangeStream:
        """A ChangeStream of every collection of a MongoDB database (see keel.Database.watch);
        options as Collection.watch takes them. Each change names its collection in
        change["ns"]."""
        return Collection("$cmd", db=self, database=database, dbname=dbname).watch(
            pipeline, **options, _whole_database=True)

    def command(self, dbname: str | None, cmd: dict[str, Any], *, database: str | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        """Runs one MongoDB command and returns the server's reply (see keel.Database.command)."""
        return self._command(dbname, cmd, database, timeout)

    def _release(self, connection: Connection) -> None:
        connection._release()


class Connection(_native.SyncConnection):
    """A connection leased from a pool of a keel.sync.Database (acquire, connection,
    transaction). Attributes: database (name), engine, in_transaction, released."""

    __slots__ = ()

    def fetch(self, sql: str, *args: Any, timeout: float | None = None,
              record_class: type[Record] | None = None, into: Any = None) -> list[Any]:
        return self._query(_FETCH, sql, args, 0, timeout, _rowtype(record_class, into))

    def fetchrow(self, sql: str, *args: Any, timeout: float | None = None,
                 record_class: type[Record] | None = None, into: Any = None) -> Any:
        return self._query(_FETCHROW, sql, args, 0, timeout, _rowtype(record_class, into))

    def fetchval(self, sql: str, *args: Any, column: int = 0,
                 timeout: float | None = None) -> Any:
        return self._query(_FETCHVAL, sql, args, column, timeout)

    def execute(self, sql: str, *args: Any, timeout: float | None = None) -> int:
        return self._query(_EXECUTE, sql, args, 0, timeout)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], *,
                    timeout: float | None = None) -> list[Record] | None:
        return self._executemany(sql, rows, timeout)

    def copy_records_to_table(self, table_name: str, *, records: Iterable[Sequence[Any]],
                              columns: Sequence[str] | None = None,
                              schema_name: str | None = None,
                              timeout: float | None = None) -> int:
        """See keel.Connection.copy_records_to_table."""
        return self._copy(table_name, records, columns, schema_name, timeout)

    def set_type_codec(self, typename: str, *, schema: str = "public",
                       encoder: Callable[[Any], Any] | None,
                       decoder: Callable[[Any], Any] | None, format: str = "text") -> None:
        """As Database.set_type_codec, looking the type up on this connection: the codec is
        the Database's (connections are pooled), so it applies to every connection of it."""
        async def run(sql: str, *a: Any) -> Any:
            return self.fetchrow(sql, *a)

        _drive(_codecs.set_type_codec(self._db._config, run, typename, schema=schema,
                                      encoder=encoder, decoder=decoder, format=format,
                                      engine=self.engine,
                                      where=f"database '{self.database}'"))

    def _query(self, mode: int, sql: str, args: tuple[Any, ...], *rest: Any) -> Any:
        if _codecs.encoding:
            args = _encode_args(self._db, sql, args, self.database, self)
        return super()._query(mode, sql, args, *rest)

    def _executemany(self, sql: str, rows: Any, timeout: float | None) -> Any:
        if _codecs.encoding:
            rows = _encode_rows(self._db, sql, rows, self.database, self)
        return super()._executemany(sql, rows, timeout)

    def cursor(self, sql: str, *args: Any, prefetch: int | None = None,
               timeout: float | None = None, record_class: type[Record] | None = None,
               into: Any = None) -> RowCursor:
        """A streaming cursor over sql's rows (see keel.Connection.cursor): ``for row in
        conn.cursor(sql, *args, prefetch=50)``, or ``cur = conn.cursor(…)`` then ``cur.fetch(n)``,
        ``cur.fetchrow()``, ``cur.forward(n)``, ``cur.close()`` (or ``with conn.cursor(…) as
        cur``). The statement starts here; at most prefetch rows (plus one batch of the engine)
        are held however large the result, and it occupies the connection until its rows are
        read or the cursor is closed. timeout= bounds the whole statement, time between
        fetches included."""
        rowtype = _rowtype(record_class, into)
        if not isinstance(sql, str):
            raise TypeError(f"the statement must be a str, not {type(sql).__name__}")
        n = _cursor.DEFAULT_PREFETCH if prefetch is None else _cursor._count(prefetch, "prefetch", 1)
        if _codecs.encoding:
            args = _encode_args(self._db, sql, args, self.database, self)
        return RowCursor(self, sql, args, n, timeout, rowtype)

    def prepare(self, sql: str, *, timeout: float | None = None,
                record_class: type[Record] | None = None) -> PreparedStatement:
        """Prepares sql ($1…$n) on this connection without running it (see
        keel.Connection.prepare): the PreparedStatement describes its parameters and columns
        and runs with fetch, fetchrow, fetchval and executemany on this connection. The
        server's error when it cannot prepare it; NotSupportedError on MongoDB."""
        rowtype = _rowtype(record_class, None)
        return PreparedStatement(self, sql, self._prepare(sql, timeout), rowtype)

    def transaction(self) -> Transaction:
        """with conn.transaction(): a transaction, or a savepoint when nested; by hand:
        tr.start(), then tr.commit() or tr.rollback()."""
        return Transaction(self)

    def add_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        """Calls callback(connection, pid, channel, payload) for each notification (PostgreSQL's
        NOTIFY) of channel, from wait_notifications(): the connection queues what arrives
        (while it runs statements too) and the callbacks run in the thread that waits, never in
        the middle of another call. Runs LISTEN each time (idempotent; it redoes one a
        rolled-back transaction undid); adding the same callback again is a no-op. Releasing
        the connection removes every listener (keel unlistens before it goes back to the
        pool). NotSupportedError on other engines."""
        quoted = _listen.quote_channel(channel)
        if not callable(callback):
            raise TypeError(f"a listener callback is callable, not {type(callback).__name__}")
        if self.released:
            raise InterfaceError("the connection has been released: its listeners went with it")
        channels = _listeners.get(self)
        if channels is None:
            self._listen(True)  # NotSupportedError on other engines
            channels = _listeners[self] = {}
        self.execute(f"LISTEN {quoted}")
        callbacks = channels.setdefault(channel, [])
        if callback not in callbacks:
            callbacks.append(callback)

    def remove_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        """Removes a callback added by add_listener (a no-op when it was not added); the last
        one of a channel runs UNLISTEN."""
        quoted = _listen.quote_channel(channel)
        channels = _listeners.get(self)
        callbacks = channels.get(channel) if channels is not None else None
        if channels is None or callbacks is None or callback not in callbacks:
            return
        callbacks.remove(callback)
        if callbacks:
            return
        del channels[channel]
        if not self.released:
            self.execute(f"UNLISTEN {quoted}")
        if not channels:
            del _listeners[self]
            if not self.released:
                self._listen(False)

    def wait_notifications(self, timeout: float | None = None) -> int:
        """Waits until notifications have come (at most timeout seconds; None: without end)
        and calls the add_listener callbacks of each, in the order the server sent them;
        returns how many notifications were handed over (0 when none came in time; those of
        channels without a callback any more are dropped). What a callback raises propagates
        from here; the notifications after it wait for the next call. Ctrl-C stops the wait.
        ConnectionLost when the connection was lost while it listened."""
        wait = _wait_seconds(timeout)
        if _listeners.get(self) is None:
            raise InterfaceError("wait_notifications: the connection has no listeners "
                                 "(add_listener first)")
        delivered = 0
        while True:
            items = self._notifications(wait if delivered == 0 else 0.0, 1)
            if not items:
                return delivered
            pid, channel, payload = items[0]
            delivered += 1
            channels = _listeners.get(self)
            for callback in list(channels.get(channel, ()) if channels is not None else ()):
                callback(self, pid, channel, payload)

    def collection(self, name: str, *, dbname: str | None = None) -> Collection:
        """A MongoDB collection whose operations run on this connection (and its transaction)."""
        return Collection(name, conn=self, dbname=dbname)

    def __getitem__(self, name: str) -> Collection:
        """conn["users"]: conn.collection("users")."""
        return Collection(name, conn=self)

    def list_collection_names(self, *, dbname: str | None = None,
                              filter: dict[str, Any] | None = None,
                              timeout: float | None = None) -> list[str]:
        """The collection names of the MongoDB database, on this connection."""
        return _list_collection_names(Collection("$cmd", conn=self, dbname=dbname), filter, None,
                                      timeout)

    def create_collection(self, name: str, *, dbname: str | None = None,
                          check_exists: bool = True, timeout: float | None = None,
                          **options: Any) -> Collection:
        """Creates a collection on this connection (see Database.create_collection)."""
        return _create_collection(Collection("$cmd", conn=self, dbname=dbname), name, options,
                                  check_exists, None, timeout)

    def command(self, dbname: str | None, cmd: dict[str, Any], *,
                timeout: float | None = None) -> dict[str, Any]:
        """Runs one MongoDB command on this connection."""
        return self._command(dbname, cmd, timeout)


def _encoders(db: Database) -> Any:
    """The set_type_codec state of db when it has an encoder, else None."""
    codecs = db._config.__dict__.get("_keel_codecs")
    return codecs if codecs is not None and codecs.encoders else None


def _describer(db: Database, sql: str, database: str | None,
               conn: Connection | None) -> Callable[[], Any]:
    """What _codecs calls to learn the parameter types of sql: a prepare on conn, or on a
    connection leased for it."""
    async def prepare() -> Any:
        if conn is not None:
            return conn.prepare(sql)
        with db.connection(database) as c:
            return c.prepare(sql)
    return prepare


def _encode_args(db: Database, sql: str, args: tuple[Any, ...], database: str | None,
                 conn: Connection | None) -> tuple[Any, ...]:
    """args with the encoders of set_type_codec applied (as keel.Database's)."""
    codecs = _encoders(db)
    if codecs is None or not _codecs._needs_encoding(args):
        return args
    key = (conn.database if conn is not None else database, sql)
    return _drive(_codecs._encode(codecs, key, _describer(db, sql, database, conn), args))  # type: ignore[no-any-return]


def _encode_rows(db: Database, sql: str, rows: Any, database: str | None,
                 conn: Connection | None) -> Any:
    """executemany's rows with the encoders of set_type_codec applied."""
    codecs = _encoders(db)
    if codecs is None:
        return rows
    key = (conn.database if conn is not None else database, sql)
    return _drive(_codecs._encode_rows(codecs, key, _describer(db, sql, database, conn), rows))


class PreparedStatement(_statement.PreparedStatement):
    """A statement prepared on a keel.sync.Connection (Connection.prepare): keel.PreparedStatement's
    attributes (parameters, columns, get_parameters(), get_attributes(), get_query()) and
    methods, called without await. Using it once its connection is released raises
    InterfaceError."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<keel.sync.PreparedStatement {self._sql!r} on {self._conn!r}>"

    def fetch(self, *args: Any,  # type: ignore[override]
              timeout: float | None = None) -> list[Any]:
        """All rows, as a list of Records (or of prepare's record_class)."""
        self._check(args)
        return self._conn._query(_FETCH, self._sql, args, 0, timeout,  # type: ignore[no-any-return]
                                 self._rowtype)

    def fetchrow(self, *args: Any, timeout: float | None = None) -> Any:  # type: ignore[override]
        """The first row as a Record (or prepare's record_class), or None."""
        self._check(args)
        return self._conn._query(_FETCHROW, self._sql, args, 0, timeout, self._rowtype)

    def fetchval(self, *args: Any, column: int = 0,  # type: ignore[override]
                 timeout: float | None = None) -> Any:
        """One value of the first row (column index), or None when there is no row."""
        self._check(args)
        return self._conn._query(_FETCHVAL, self._sql, args, column, timeout)

    def executemany(self, rows: Iterable[Sequence[Any]], *,  # type: ignore[override]
                    timeout: float | None = None) -> list[Record] | None:
        """Runs the statement once per row of parameters, in one atomic batch: None, or the
        rows a RETURNING statement returns."""
        if self._conn.released:
            self._check(())
        return self._conn._executemany(self._sql, rows,  # type: ignore[no-any-return]
                                       timeout)


class RowCursor:
    """A statement's rows, read on demand (Connection.cursor): fetch(n), fetchrow(), forward(n),
    close(); an iterator of its rows and a context manager that closes it."""

    __slots__ = ("_conn", "_closed", "_exhausted", "__weakref__")

    def __init__(self, conn: Connection, sql: str, args: tuple[Any, ...], prefetch: int,
                 timeout: float | None, rowtype: Any) -> None:
        self._conn = conn
        self._exhausted = False  # every row was read
        self._closed = True  # by close(); until the statement starts, nothing to close
        conn._cursor(sql, args, prefetch, timeout, rowtype)
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once closed, or once every row was read."""
        return self._closed or self._exhausted

    def _take(self, n: int) -> list[Any]:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        if self._exhausted:
            return []
        try:
            rows, more = self._conn._cursor_take(n)
        except BaseException:
            self._exhausted = True
            raise
        if not more:
            self._exhausted = True
        return rows  # type: ignore[no-any-return]

    def fetch(self, n: int) -> list[Any]:
        """The next n rows (fewer at the end, [] after it)."""
        return self._take(_cursor._count(n, "n", 1))

    def fetchrow(self) -> Any:
        """The next row, or None after the last."""
        rows = self._take(1)
        return rows[0] if rows else None

    def forward(self, n: int) -> int:
        """Skips the next n rows (they are read and dropped); returns how many were skipped."""
        _cursor._count(n, "n", 1)
        skipped = 0
        while skipped < n:
            got = len(self._take(min(n - skipped, 1024)))
            skipped += got
            if got == 0:
                break
        return skipped

    def close(self) -> None:
        """Stops the statement (on the server) and frees its connection for other statements.
        Idempotent; a cursor read to its end is closed already."""
        if self._closed:
            return
        self._closed = True
        if not self._exhausted and not self._conn.released:
            self._conn._cursor_close()

    def __del__(self) -> None:
        # Dropped unread (a loop left with break): its statement is cancelled, so that the
        # connection serves the next statement instead of staying busy with it.
        try:
            self.close()
        except Exception:
            pass

    def __iter__(self) -> RowCursor:
        return self

    def __next__(self) -> Any:
        rows = self._take(1) if not self._closed else []
        if not rows:
            raise StopIteration
        return rows[0]

    def __enter__(self) -> RowCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<keel.sync.RowCursor on {self._conn!r}"
                f"{' closed' if self.closed else ''}>")


# The add_listener callbacks of each sync Connection that has some: channel -> callbacks.
_listeners: weakref.WeakKeyDictionary[Connection, dict[str, list[Callable[..., Any]]]] = (
    weakref.WeakKeyDictionary())


def _wait_seconds(timeout: float | None) -> float:
    """A wait's timeout= as _notifications takes it: seconds >= 0, or -1 for None (no end)."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, not {timeout!r}")
    return -1.0 if math.isinf(timeout) else float(timeout)


class Listener:
    """The notifications of one channel, as a blocking iterator (Database.listen).

    Listening starts at ``with`` (or at the first iteration): a connection is leased for it and
    LISTEN runs there. Each iteration yields a Notification(channel, payload, pid), in the order
    the server sent them; they wait in the connection's queue until read. With timeout=, an
    iteration that waits longer than that for the next one ends the loop (the listener stays
    open: iterating again goes on). Ctrl-C stops the wait. Closing it (leaving ``with``,
    close(), or dropping it) releases the connection, which unlistens before it goes back to
    the pool. A connection lost meanwhile raises ConnectionLost from the iteration, once; the
    listener is closed then.
    """

    __slots__ = ("_db", "_database", "_channel", "_quoted", "_wait", "_conn", "_closed",
                 "__weakref__")

    def __init__(self, db: Database, channel: str, database: str | None,
                 timeout: float | None) -> None:
        self._quoted = _listen.quote_channel(channel)
        self._wait = _wait_seconds(timeout)
        self._db = db
        self._database = database
        self._channel = channel
        self._conn: Connection | None = None
        self._closed = False

    @property
    def channel(self) -> str:
        return self._channel

    def start(self) -> None:
        """Leases the connection and runs LISTEN (a no-op when already listening)."""
        if self._closed:
            raise InterfaceError(f"the listener of channel {self._channel!r} is closed")
        if self._conn is not None:
            return
        _listen.require_notifications(self._db.engine(self._database), self._database)
        conn = self._db.acquire(self._database)
        try:
            conn._listen(True)
            conn.execute(f"LISTEN {self._quoted}")
        except BaseException:
            conn._release()
            raise
        self._conn = conn

    def __iter__(self) -> Listener:
        return self

    def __next__(self) -> Notification:
        if self._closed:
            raise StopIteration
        if self._conn is None:
            self.start()
        assert self._conn is not None
        try:
            items = self._conn._notifications(self._wait, 1)
        except _native.ConnectionLost:
            self.close()
            raise
        if not items:
            raise StopIteration
        pid, channel, payload = items[0]
        return Notification(channel, payload, pid)

    def close(self) -> None:
        """Stops listening and releases the connection. Idempotent."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn._release()

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            self._conn = None
            conn._release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "listening" if self._conn is not None else "new"
        return f"<keel.sync.Listener channel={self._channel!r} {state}>"


class Transaction:
    """A transaction block on a Connection: BEGIN/COMMIT/ROLLBACK at the outermost level,
    SAVEPOINT/RELEASE/ROLLBACK TO when nested, as keel.Transaction: ``with conn.transaction():``
    or ``tr = conn.transaction(); tr.start(); … tr.commit()`` (or ``tr.rollback()``)."""

    __slots__ = ("_conn", "_depth", "_state", "_managed")

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._depth: int | None = None
        self._state = _NEW
        self._managed = False

    def start(self) -> None:
        """See keel.Transaction.start."""
        if self._state is not _NEW:
            raise InterfaceError(f"cannot start the transaction: it {_STATE_TEXT[self._state]}")
        conn = self._conn
        depth = conn._depth
        conn._txn(_native.TXN_BEGIN if depth == 0 else _native.TXN_SAVEPOINT, depth)
        self._depth = depth
        self._state = _STARTED
        conn._depth = depth + 1

    def commit(self) -> None:
        """See keel.Transaction.commit."""
        depth = _manual_end(self, "commit")
        self._state = _FAILED
        self._conn._txn(_native.TXN_COMMIT if depth == 0 else _native.TXN_RELEASE, depth)
        self._state = _COMMITTED

    def rollback(self) -> None:
        """See keel.Transaction.rollback."""
        conn = self._conn
        if self._state is _FAILED:
            self._state = _ROLLED_BACK
            if self._depth == 0 and conn.in_transaction and conn._depth == 0:
                conn._txn(_native.TXN_ROLLBACK, 0)
            return
        depth = _manual_end(self, "roll back")
        self._state = _ROLLED_BACK
        conn._txn(_native.TXN_ROLLBACK if depth == 0 else _native.TXN_ROLLBACK_TO, depth)

    def __enter__(self) -> Connection:
        if self._state is not _NEW:
            raise InterfaceError("a Transaction can only be entered once")
        self.start()
        self._managed = True
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        conn = self._conn
        depth = self._depth
        assert depth is not None, "__exit__ without __enter__"
        conn._depth = depth
        if exc_type is None:
            self._state = _FAILED
            conn._txn(_native.TXN_COMMIT if depth == 0 else _native.TXN_RELEASE, depth)
            self._state = _COMMITTED
            return False
        self._state = _ROLLED_BACK
        try:
            conn._txn(_native.TXN_ROLLBACK if depth == 0 else _native.TXN_ROLLBACK_TO, depth)
        except _native.Error:
            # The error that ended the block is the one to report; the pool rolls back or
            # discards a connection whose rollback failed when it is released.
            pass
        return False


class _ConnectionContext:
    __slots__ = ("_db", "_database", "_conn")

    def __init__(self, db: Database, database: str | None) -> None:
        self._db = db
        self._database = database
        self._conn: Connection | None = None

    def __enter__(self) -> Connection:
        self._conn = self._db.acquire(self._database)
        return self._conn

    def __exit__(self, *exc: object) -> bool:
        conn, self._conn = self._conn, None
        assert conn is not None, "__exit__ without __enter__"
        conn._release()
        return False


class _TransactionContext:
    __slots__ = ("_db", "_database", "_conn", "_txn")

    def __init__(self, db: Database, database: str | None) -> None:
        self._db = db
        self._database = database
        self._conn: Connection | None = None
        self._txn: Transaction | None = None

    def __enter__(self) -> Connection:
        conn = self._db.acquire(self._database)
        txn = Transaction(conn)
        try:
            txn.__enter__()
        except BaseException:
            conn._release()
            raise
        self._conn, self._txn = conn, txn
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        conn, self._conn = self._conn, None
        txn, self._txn = self._txn, None
        assert conn is not None and txn is not None, "__exit__ without __enter__"
        try:
            txn.__exit__(exc_type, exc, tb)
        finally:
            conn._release()
        return False


# ---- MongoDB ----

def _drive(coro: Any) -> Any:
    """Runs a coroutine of keel's collection code to its end. The commands it awaits are this
    module's synchronous ones, which never suspend, so it ends in one step, without any event
    loop (and without touching one that runs in the thread)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise InternalError("keel.sync: a collection operation waited for the event loop")


def _session_conn(session: object, database: str) -> Connection:
    """The connection an operation given session= runs on: a keel.sync.Connection (of
    db.transaction(), db.connection(), db.acquire()) or a keel.sync.Transaction's."""
    conn = session._conn if isinstance(session, Transaction) else session
    if not isinstance(conn, Connection):
        raise TypeError("session must be a keel.sync.Connection (from db.transaction(), "
                        f"db.connection() or db.acquire()), not {type(session).__name__}")
    if conn.engine != "mongodb":
        raise _collection._unsupported(conn.database, conn.engine)
    if conn.database != database:
        exc = ProgrammingError(f"session= is a connection of database '{conn.database}', the "
                               f"collection belongs to database '{database}'")
        exc.database = database
        exc.engine = "mongodb"
        raise exc
    return conn


class Cursor(_collection.Cursor):
    """The results of find(), aggregate() or list_indexes(), fetched in batches as they are
    iterated (options chain before the first batch, as keel.Cursor's: find().sort().limit()):

        for doc in cursor: ...
        docs = cursor.to_list()            # or to_list(length) for at most length more
        with coll.find(...) as cursor: ... # killed on the server on exit
        cursor.close()

    A cursor of a database-level collection holds a pooled connection from its first batch
    until it is exhausted or closed: close the cursors you stop reading (or use with).
    """

    __slots__ = ()

    @classmethod
    def _of(cls, cursor: _collection.Cursor) -> Cursor:
        """This module's cursor for the command of a cursor keel.Collection made (unused)."""
        out = cls(cursor._coll, cursor._cmd, cursor._batch_size, cursor._timeout,
                  cursor._session)
        out._missing_ok = cursor._missing_ok
        return out

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> Any:
        try:
            return _drive(self.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def next(self) -> Any:  # type: ignore[override]
        """The next document (pymongo's name); StopIteration when there is none."""
        return self.__next__()

    def to_list(self, length: int | None = None) -> list[Any]:  # type: ignore[override]
        """The remaining documents (at most length of them; the cursor stays open for more)."""
        return _drive(super().to_list(length))  # type: ignore[no-any-return]

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # type: ignore[override]
        """Kills the server-side cursor (if any) and gives back its leased connection."""
        _drive(self.aclose())

    def __repr__(self) -> str:
        return super().__repr__().replace("<keel.Cursor", "<keel.sync.Cursor", 1)

    def __del__(self) -> None:
        # A cursor dropped while open gives its leased connection back; the server forgets the
        # cursor after its idle timeout (10 minutes). Nothing blocks here.
        conn = getattr(self, "_conn", None)
        if conn is not None and self._owned:
            self._conn = None
            conn._release()

    # The steps keel.Cursor awaits, done synchronously here (they never suspend).

    async def __anext__(self) -> Any:
        while self._pos >= len(self._batch):
            if self._closed or self._id == 0:
                raise StopAsyncIteration
            await self._fetch()
        doc = self._batch[self._pos]
        self._batch[self._pos] = None
        self._pos += 1
        return doc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._batch = []
        conn, owned, cursor_id = self._conn, self._owned, self._id
        self._conn = None
        self._id = 0
        if conn is None:
            return
        try:
            if cursor_id:
                self._kill(conn, cursor_id)
        finally:
            if owned:
                conn._release()

    async def _open(self) -> None:
        coll = self._coll
        timeout = self._timeout
        deadline = _deadline(timeout)
        if self._session is not None:
            conn = self._session
        elif coll._conn is not None:
            conn = coll._conn
        else:
            conn = coll._db.acquire(coll._database, timeout=timeout)
            self._owned = True
        self._conn = conn
        try:
            left = _left(deadline, timeout, coll._database)
            reply = conn._command(coll._dbname, self._cmd, left)
        except ProgrammingError as exc:
            self._abandon()
            if self._missing_ok and "(code 26)" in str(exc):
                return  # NamespaceNotFound: no collection, no documents
            raise
        except BaseException:
            self._abandon()
            raise
        self._op_time = reply.get("operationTime")
        self._take(reply, "firstBatch")

    async def _get_more(self) -> None:
        conn = self._conn
        assert conn is not None and self._id
        cmd: dict[str, Any] = {"getMore": self._id, "collection": self._ns_coll}
        if self._batch_size:
            cmd["batchSize"] = self._batch_size
        if self._await_ms is not None:
            cmd["maxTimeMS"] = self._await_ms  # a change stream's wait for changes
        try:
            reply = conn._command(self._ns_db, cmd, self._timeout)
        except BaseException:
            self._abandon()
            raise
        self._take(reply, "nextBatch")

    def _finish(self) -> None:
        conn, owned = self._conn, self._owned
        self._conn = None
        if owned and conn is not None:
            conn._release()

    def _drop_batch(self) -> None:
        self._batch = []
        self._pos = 0

    def _abandon(self) -> None:
        conn, owned, cursor_id = self._conn, self._owned, self._id
        self._closed = True
        self._conn = None
        self._id = 0
        self._batch = []
        if conn is None:
            return
        try:
            # Not on a connection still busy with a command Ctrl-C left running: the kill would
            # wait for its end; the server times the cursor out instead.
            if cursor_id and not conn.released and not conn._busy:
                self._kill(conn, cursor_id)
        finally:
            if owned:
                conn._release()

    def _kill(self, conn: Connection, cursor_id: int) -> None:
        try:
            conn._command(self._ns_db, {"killCursors": self._ns_coll, "cursors": [cursor_id]},
                          None)
        except _native.Error:
            pass  # best effort: the server times the cursor out


class ChangeStream(_collection.ChangeStream):
    """The changes to a collection (Collection.watch) or a MongoDB database (Database.watch),
    each one a dict as the server reports it, as keel.ChangeStream's, without await:

        with coll.watch() as stream:              # opens it on the server
            for change in stream: ...             # waits for the next change
            change = stream.try_next()            # a change, or None when none came in one wait
        stream.resume_token                       # resume_after= / start_after= of a later watch()

    Iterating blocks until a change comes (each wait on the server is max_await_time_ms, then
    the next one starts); Ctrl-C stops it. The stream holds a connection (of the pool, or
    session=) until closed, and resumes by itself once after an error that allows it.
    """

    __slots__ = ()

    _Cursor = Cursor

    def __iter__(self) -> ChangeStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            change = self.try_next()
            if change is not None:
                return change
            cursor = self._cursor
            if self._closed or cursor is None or not cursor.alive:
                raise StopIteration

    def next(self) -> dict[str, Any]:  # type: ignore[override]
        """The next change, waiting for it (pymongo's name); StopIteration once the stream has
        ended."""
        return self.__next__()

    def try_next(self) -> dict[str, Any] | None:  # type: ignore[override]
        """The next change, or None when the server had none within one wait (its
        max_await_time_ms) or the stream ended."""
        return _drive(super().try_next())  # type: ignore[no-any-return]

    def open(self) -> ChangeStream:
        """Opens the stream on the server (iterating or with does it too) and returns it."""
        return _drive(self._opened())  # type: ignore[no-any-return]

    def __enter__(self) -> ChangeStream:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # type: ignore[override]
        """Kills the server-side cursor and gives back its connection."""
        _drive(self.aclose())

    def __repr__(self) -> str:
        return super().__repr__().replace("<keel.ChangeStream", "<keel.sync.ChangeStream", 1)


def _cursor_method(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Collection, *args: Any, **kwargs: Any) -> Cursor:
        return Cursor._of(method(self, *args, **kwargs))
    call.__qualname__ = f"Collection.{name}"
    return call


def _synchronous(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Collection, *args: Any, **kwargs: Any) -> Any:
        return _drive(method(self, *args, **kwargs))
    call.__qualname__ = f"Collection.{name}"
    return call


class Collection(_collection.Collection):
    """A MongoDB collection of a keel.sync.Database or Connection: keel.Collection's methods
    (insert_one, find_one, update_many, bulk_write, count_documents …), called without await;
    find(), aggregate() and list_indexes() return a synchronous Cursor, watch() a synchronous
    ChangeStream. session= takes a keel.sync.Connection."""

    __slots__ = ()

    _ChangeStream = ChangeStream

    def _sibling(self, name: str) -> Collection:
        if self._conn is not None:
            return Collection(name, conn=self._conn, dbname=self._dbname)
        return Collection(name, db=self._db, database=self._database, dbname=self._dbname)

    def _session(self, session: object) -> Connection | None:  # type: ignore[override]
        return None if session is None else _session_conn(session, self._database)

    async def _run(self, cmd: dict[str, Any], timeout: float | None,
                   session: object = None) -> Any:
        conn = self._session(session) if session is not None else self._conn
        if conn is not None:
            return conn._command(self._dbname, cmd, timeout)
        assert self._db is not None
        return self._db._command(self._dbname, cmd, self._database, timeout)



# keel.Collection's coroutine methods, synchronous here, and its methods that return a cursor,
# returning this module's.
for _name, _method in inspect.getmembers(_collection.Collection, inspect.isfunction):
    if _name.startswith("_") or _name in vars(Collection):
        continue
    if inspect.iscoroutinefunction(_method):
        setattr(Collection, _name, _synchronous(_name, _method))
    elif _method.__annotations__.get("return") == "Cursor":
        setattr(Collection, _name, _cursor_method(_name, _method))
del _name, _method


def _list_collection_names(place: Collection, filter: Mapping[str, Any] | None, session: Any,
                           timeout: float | None) -> list[str]:
    cmd: dict[str, Any] = {"listCollections": 1, "nameOnly": True, "cursor": {}}
    if filter is not None:
        cmd["filter"] = _collection._filter(filter)
    with Cursor(place, cmd, None, timeout, place._session(session)) as cursor:
        return [entry["name"] for entry in cursor]


def _create_collection(place: Collection, name: str, options: dict[str, Any],
                       check_exists: bool, session: Any, timeout: float | None) -> Collection:
    coll = place._sibling(name)
    conn = place._session(session)
    deadline = _deadline(timeout)
    if _collection._check_bool(check_exists, "create_collection: check_exists"):
        if _list_collection_names(place, {"name": name}, conn,
                                  _left(deadline, timeout, place._database)):
            exc = ProgrammingError(f"collection {name!r} already exists")
            exc.database = place._database
            exc.engine = "mongodb"
            raise exc
    _drive(coll._run({"create": name, **options}, _left(deadline, timeout, place._database),
                     conn))
    return coll
