# python/keel/_collection.py - MongoDB collections over document commands: CRUD, streaming cursors and write results.
"""MongoDB collections, with pymongo's names.

    users = db.collection("users", database="docs")      # or conn.collection("users")
    await users.insert_one({"name": "ada"})
    async for doc in users.find({"age": {"$gt": 30}}, sort=[("age", -1)]):
        ...

Every operation is one MongoDB command (insert, find, getMore, killCursors, update, delete,
aggregate, distinct, findAndModify, createIndexes, listIndexes, dropIndexes, listCollections,
create, drop) or, for insert_many and bulk_write, as few as MongoDB's limits allow, sent through
Connection._command / Database._command, which encode the command to BSON, run it and decode the
reply in C. session= (a keel Connection, e.g. of db.transaction()) makes an operation run on that
connection, and so in its transaction. watch() is a ChangeStream: aggregate with $changeStream,
read with getMore, resumed from its resume token after a resumable error.

timeout= (seconds) on every method bounds the call as on the SQL methods: QueryTimeout when it
has not finished by then (None: the database's command_timeout). insert_many's covers all of its
commands; a cursor's (find, aggregate) covers each batch it fetches: the first one with the wait
for a connection, then each getMore.

Cursors stream their results in batches with getMore. A cursor of a database-level collection
leases a connection for its lifetime (the server-side cursor lives on it) and gives it back when
the cursor is exhausted or closed; a cursor of a connection-level collection uses that
connection. An abandoned cursor is killed on the server: by aclose() or leaving `async with`
right away; when it is garbage collected (e.g. after a `break` out of `async for` over a
temporary), from a task scheduled on its loop for a leased connection, or before the next
command keel sends on the user's connection (or when that connection is given back).
"""
from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Generator, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from . import _native
from ._native import (
    ConnectionLost,
    Error,
    InterfaceError,
    NotSupportedError,
    ObjectId,
    ProgrammingError,
    QueryTimeout,
    RawDocument,
    check_timeout,
)

if TYPE_CHECKING:
    from . import Connection, Database

__all__ = [
    "Collection",
    "Cursor",
    "ChangeStream",
    "InsertOneResult",
    "InsertManyResult",
    "UpdateResult",
    "DeleteResult",
    "BulkWriteResult",
    "ReturnDocument",
    "InsertOne",
    "UpdateOne",
    "UpdateMany",
    "ReplaceOne",
    "DeleteOne",
    "DeleteMany",
    "IndexModel",
]

SortSpec = Union[str, Sequence[tuple[str, Any]], Mapping[str, Any], None]

# The most documents MongoDB takes in one write command, and the budget for the documents of one
# insert command: a command may be 16 KiB larger than a document, which leaves room for the
# command's own fields and those libmongoc adds (lsid, $clusterTime, txnNumber…).
_MAX_WRITE_BATCH = 100_000
_MAX_BATCH_BYTES = 16 * 1024 * 1024
# The bytes an array element adds around a document: type byte, index key and its NUL.
_ELEMENT_OVERHEAD = 8

# Iterating a cursor hands over documents already received without awaiting anything, so a batch
# of 100,000 would be read in one step of the task, holding the event loop as long: every
# _HANDOVER_EVERY documents the cursor checks the time, and once _HANDOVER_SECONDS have passed
# since it last let the loop run it yields to it (asyncio.sleep(0)). keel's own callbacks keep to
# the same budget (docs/python.md, "Results never hold the loop").
_HANDOVER_EVERY = 128
_HANDOVER_SECONDS = 0.004


# ---- results ----
#
# raw_result is the server's reply to the write command (for a call sent as several commands,
# see each class). It is left out of repr() and of comparisons.

@dataclass(frozen=True)
class InsertOneResult:
    """Outcome of insert_one: the _id of the document (generated when it had none)."""
    inserted_id: Any
    acknowledged: bool = True
    raw_result: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class InsertManyResult:
    """Outcome of insert_many: the _id of every document, in order.

    raw_result is the server's reply when the documents went in one command; when they needed
    several, {"n": the documents inserted, "ok": 1.0, "replies": [each reply, in order]}.
    """
    inserted_ids: list[Any] = field(default_factory=list)
    acknowledged: bool = True
    raw_result: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of update_one / update_many / replace_one.

    matched_count does not count an upserted document; upserted_id is its _id, or None.
    raw_result is the server's reply in pymongo's shape: n, nModified, ok, updatedExisting,
    and upserted: the _id, when a document was upserted.
    """
    matched_count: int
    modified_count: int
    upserted_id: Any = None
    acknowledged: bool = True
    raw_result: Any = field(default=None, repr=False, compare=False)

    @property
    def did_upsert(self) -> bool:
        """Whether a document was upserted (pymongo 4.9's name)."""
        return isinstance(self.raw_result, Mapping) and "upserted" in self.raw_result


@dataclass(frozen=True)
class DeleteResult:
    """Outcome of delete_one / delete_many."""
    deleted_count: int
    acknowledged: bool = True
    raw_result: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class BulkWriteResult:
    """Outcome of bulk_write. upserted_ids maps the index of each request that upserted to the
    _id of the document it inserted. raw_result (also bulk_api_result, pymongo's name) sums the
    server's replies: {"writeErrors": [], "writeConcernErrors": [], "nInserted", "nUpserted",
    "nMatched", "nModified", "nRemoved", "upserted": [{"index", "_id"}…]}."""
    inserted_count: int = 0
    matched_count: int = 0
    modified_count: int = 0
    deleted_count: int = 0
    upserted_count: int = 0
    upserted_ids: dict[int, Any] = field(default_factory=dict)
    acknowledged: bool = True
    raw_result: Any = field(default=None, repr=False, compare=False)

    @property
    def bulk_api_result(self) -> Any:
        return self.raw_result


class ReturnDocument:
    """return_document= of find_one_and_update / find_one_and_replace: the document as it was
    BEFORE the change, or AFTER it (the same values as pymongo's ReturnDocument, so either
    works)."""
    BEFORE = False
    AFTER = True


# ---- bulk_write's operations (pymongo's classes are accepted too) ----

@dataclass(frozen=True)
class InsertOne:
    """Inserts document (an _id is added to it when it has none)."""
    document: Any


@dataclass(frozen=True)
class UpdateOne:
    """Applies update ($ operators or a pipeline) to the first document filter matches."""
    filter: Any
    update: Any
    upsert: bool = False
    collation: Any = None
    array_filters: Any = None
    hint: Any = None


@dataclass(frozen=True)
class UpdateMany:
    """Applies update ($ operators or a pipeline) to every document filter matches."""
    filter: Any
    update: Any
    upsert: bool = False
    collation: Any = None
    array_filters: Any = None
    hint: Any = None


@dataclass(frozen=True)
class ReplaceOne:
    """Replaces the first document filter matches (its _id is kept)."""
    filter: Any
    replacement: Any
    upsert: bool = False
    collation: Any = None
    hint: Any = None


@dataclass(frozen=True)
class DeleteOne:
    """Deletes the first document filter matches."""
    filter: Any
    collation: Any = None
    hint: Any = None


@dataclass(frozen=True)
class DeleteMany:
    """Deletes every document filter matches."""
    filter: Any
    collation: Any = None
    hint: Any = None


class IndexModel:
    """One index for create_indexes: IndexModel(keys, name=None, unique=…, **options), with
    keys as create_index takes them. document is the index specification sent to the server."""

    __slots__ = ("document",)

    def __init__(self, keys: str | Sequence[tuple[str, Any]] | Mapping[str, Any],
                 **options: Any) -> None:
        spec = _index_keys(keys)
        name = options.pop("name", None)
        if name is None:
            name = _index_name(spec)
        elif not isinstance(name, str) or not name:
            raise TypeError("an index name must be a non-empty str")
        self.document: dict[str, Any] = {"key": spec, "name": name, **options}

    def __repr__(self) -> str:
        return f"IndexModel({self.document!r})"


# ---- argument helpers ----

def _unsupported(database: str, engine: str) -> NotSupportedError:
    exc = NotSupportedError(
        f"database '{database}' is a {engine} database: collections need a MongoDB database")
    exc.database = database
    exc.engine = engine
    exc.code = "KEEL_ERR_UNSUPPORTED"
    return exc


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a collection name must be a str, not {type(name).__name__}")
    if not name or "\0" in name:
        raise ProgrammingError(f"invalid collection name {name!r}: it must be non-empty, "
                               "without NUL characters")
    return name


def _filter(value: object, what: str = "filter") -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, not {type(value).__name__}")
    return value


def _sort(sort: SortSpec) -> dict[str, Any] | None:
    """pymongo's sort forms: "field", [("field", 1), ("other", -1)] or a dict."""
    if sort is None:
        return None
    if isinstance(sort, str):
        return {sort: 1}
    if isinstance(sort, Mapping):
        return dict(sort)
    spec: dict[str, Any] = {}
    for item in sort:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"sort must be a list of (field, direction) pairs, not {sort!r}")
        spec[item[0]] = item[1]
    return spec


def _projection(projection: object) -> Mapping[str, Any] | None:
    """A dict, or a list of field names to include."""
    if projection is None or isinstance(projection, Mapping):
        return projection
    if isinstance(projection, (list, tuple)):
        return {name: 1 for name in projection}
    raise TypeError(f"projection must be a dict or a list of field names, not "
                    f"{type(projection).__name__}")


def _with_id(document: object) -> tuple[Mapping[str, Any], Any]:
    """The document to insert and its _id, adding ObjectId() when it has none.

    Like pymongo, the _id is added to the caller's dict (so doc["_id"] works afterwards); an
    immutable mapping is copied instead.
    """
    if not isinstance(document, Mapping):
        raise TypeError(f"a document must be a dict, not {type(document).__name__}")
    if "_id" in document:
        return document, document["_id"]
    oid = ObjectId()
    if isinstance(document, MutableMapping):
        document["_id"] = oid
        return document, oid
    return {"_id": oid, **document}, oid


def _index_keys(keys: str | Sequence[tuple[str, Any]] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(keys, str):
        return {keys: 1}
    spec = _sort(keys)
    if not spec:
        raise ProgrammingError("an index needs at least one key")
    return spec


def _index_name(spec: Mapping[str, Any]) -> str:
    """MongoDB's default name of an index: "a_1_b_-1" for {"a": 1, "b": -1}."""
    return "_".join(f"{k}_{v}" for k, v in spec.items())


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, not {type(value).__name__}")
    return value


def _session_conn(session: object, database: str) -> Connection:
    """The connection an operation given session= runs on: the Connection of a transaction
    (db.transaction(), conn.transaction()) or of db.connection() on the same database."""
    conn = getattr(session, "_conn", None) if type(session).__name__ == "Transaction" else session
    if not isinstance(conn, _native.Connection):
        raise TypeError("session must be a keel.Connection (from db.transaction(), "
                        f"db.connection() or db.acquire()), not {type(session).__name__}")
    if conn.engine != "mongodb":
        raise _unsupported(conn.database, conn.engine)
    if conn.database != database:
        exc = ProgrammingError(f"session= is a connection of database '{conn.database}', the "
                               f"collection belongs to database '{database}'")
        exc.database = database
        exc.engine = "mongodb"
        raise exc
    return conn  # type: ignore[return-value]


def _renamed(exc: Error, message: str) -> Error:
    """exc's class and attributes with another message (raised from exc)."""
    new = type(exc)(message)
    for attr in ("database", "engine", "code", "sqlstate", "server_code", "detail", "hint",
                 "schema_name", "table_name", "column_name", "constraint_name", "datatype_name"):
        try:
            setattr(new, attr, getattr(exc, attr))
        except AttributeError:
            pass
    return new


def _deadline(timeout: float | None) -> float | None:
    """The monotonic time by which a call given timeout= must end (None: no timeout= given)."""
    seconds = check_timeout(timeout)
    return None if seconds is None else time.monotonic() + seconds


def _left(deadline: float | None, timeout: float | None, database: str) -> float | None:
    """The timeout= for the next command of a call that must end by deadline; QueryTimeout when
    none is left."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left > 0:
        return left
    exc = QueryTimeout(f"timeout: the operation did not finish within {timeout:g} s (timeout=) "
                       f"on database '{database}'")
    exc.database = database
    exc.engine = "mongodb"
    exc.code = "KEEL_ERR_TIMEOUT"
    exc.sqlstate = "57014"
    raise exc


def _write_result_counts(reply: Mapping[str, Any]) -> tuple[int, bool]:
    # An unacknowledged write (w: 0) gets no count back.
    return int(reply.get("n", 0)), "n" in reply


# ---- killing cursors on a connection the user holds ----

# Cursors abandoned on a connection that belongs to the user, by connection: (dbname,
# collection) → cursor ids. They cannot be killed from a background task, which could find the
# connection busy or make the user's next command fail as busy; keel kills them before its next
# command on that connection, or when the connection is given back.
_pending_kills: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, str], list[int]]] = (
    weakref.WeakKeyDictionary())

# Background kills of cursors on leased connections, kept referenced until they end.
_background: set[asyncio.Task[None]] = set()


def _defer_kill(conn: Connection, dbname: str | None, coll: str, cursor_id: int) -> None:
    _pending_kills.setdefault(conn, {}).setdefault((dbname, coll), []).append(cursor_id)


async def _kill(conn: Connection, dbname: str | None, coll: str, ids: list[int]) -> None:
    try:
        await conn._command(dbname, {"killCursors": coll, "cursors": ids})
    except Error:
        # Best effort: a cursor nobody reads again times out on the server (10 minutes).
        pass


async def flush_kills(conn: Connection) -> None:
    """Kills the cursors abandoned on conn (a no-op without any, or on SQL connections)."""
    if not _pending_kills:
        return
    pending = _pending_kills.pop(conn, None)
    if pending:
        for (dbname, coll), ids in pending.items():
            await _kill(conn, dbname, coll, ids)


async def _conn_command(conn: Connection, dbname: str | None, cmd: dict[str, Any],
                        timeout: float | None = None) -> Any:
    # Not inside a transaction: MongoDB aborts a transaction on any error in it, and a kill the
    # user did not ask for must not be what dooms theirs. They run after it, at the latest when
    # the connection is given back.
    if _pending_kills and conn in _pending_kills and not conn.in_transaction:
        await flush_kills(conn)
    return await conn._command(dbname, cmd, timeout)


async def _kill_and_release(db: Database, conn: Connection, dbname: str | None, coll: str,
                            cursor_id: int) -> None:
    try:
        await _kill(conn, dbname, coll, [cursor_id])
    finally:
        db._release(conn)


def _start_kill(db: Database, conn: Connection, dbname: str | None, coll: str,
                cursor_id: int) -> None:
    """Runs on the loop: kills a cursor on a leased connection, then gives it back."""
    task = asyncio.ensure_future(_kill_and_release(db, conn, dbname, coll, cursor_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


# ---- cursors ----

class Cursor:
    """The results of find() or aggregate(), fetched in batches as they are iterated.

        async for doc in cursor: ...
        docs = await cursor.to_list()          # or to_list(length) for at most length more
        async with coll.find(...) as cursor: ...   # killed on the server on exit
        await cursor.aclose()

    A cursor of a database-level collection holds a pooled connection from its first batch
    until it is exhausted or closed: close the cursors you stop reading (or use async with);
    Database.close() waits for their connections like for any leased one.
    """

    __slots__ = ("_coll", "_cmd", "_batch_size", "_timeout", "_batch", "_pos", "_id", "_ns_db",
                 "_ns_coll", "_conn", "_owned", "_loop", "_closed", "_handed", "_since",
                 "_session", "_await_ms", "_post_token", "_missing_ok", "_op_time",
                 "__weakref__")

    def __init__(self, collection: Collection, cmd: dict[str, Any],
                 batch_size: int | None, timeout: float | None = None,
                 session: Connection | None = None) -> None:
        self._session = session        # session=: the connection to run on (not leased)
        self._await_ms: int | None = None  # getMore's maxTimeMS (change streams)
        self._post_token: Any = None   # the last batch's postBatchResumeToken
        self._missing_ok = False       # a missing collection is an empty result (listIndexes)
        self._op_time: Any = None      # the operationTime of the first batch's reply
        self._coll = collection
        self._cmd = cmd
        self._batch_size = batch_size
        self._timeout = check_timeout(timeout)  # per batch
        self._batch: list[Any] = []
        self._pos = 0
        self._id: int | None = None    # None until the first batch; 0 once exhausted
        self._ns_db: str | None = collection._dbname
        self._ns_coll = collection.name
        self._conn: Connection | None = None
        self._owned = False            # the connection was leased for this cursor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._handed = 0               # documents handed over since the last look at the time
        self._since = 0.0              # when the loop last ran (as far as the cursor knows)

    @property
    def alive(self) -> bool:
        """True while documents may remain (buffered or on the server)."""
        return not self._closed and (self._id != 0 or self._pos < len(self._batch))

    @property
    def cursor_id(self) -> int | None:
        """The server-side cursor id: None before the first batch, 0 once the server is done."""
        return self._id

    def __aiter__(self) -> Cursor:
        return self

    def __await__(self) -> Generator[Any, None, Cursor]:
        """await cursor: sends its command (if not sent yet) and gives the cursor back, as
        pymongo's async aggregate does (`cursor = await coll.aggregate(p)`)."""
        return self._start().__await__()

    async def _start(self) -> Cursor:
        if self._id is None and not self._closed:
            await self._open()
        return self

    # -- options, set before the first batch (pymongo's chaining: find().sort().limit()) --

    def _settable(self, method: str, find_only: bool = True) -> None:
        if self._id is not None or self._closed:
            raise InterfaceError(f"Cursor.{method}(): the cursor has already been read; "
                                 "options are set before its first batch")
        if find_only and "find" not in self._cmd:
            raise InterfaceError(f"Cursor.{method}() applies to find() cursors; this one runs "
                                 f"{next(iter(self._cmd))!r}")

    def sort(self, key_or_list: SortSpec, direction: Any = None) -> Cursor:
        """Sorts by sort("field", -1), sort([("a", 1), ("b", -1)]) or sort({"a": 1})."""
        self._settable("sort")
        if direction is not None:
            if not isinstance(key_or_list, str):
                raise TypeError("sort(key, direction): key must be a field name (str)")
            key_or_list = [(key_or_list, direction)]
        spec = _sort(key_or_list)
        if spec:
            self._cmd["sort"] = spec
        else:
            self._cmd.pop("sort", None)
        return self

    def skip(self, skip: int) -> Cursor:
        """Skips the first skip matching documents."""
        self._settable("skip")
        if isinstance(skip, bool) or not isinstance(skip, int):
            raise TypeError(f"skip must be an int, not {type(skip).__name__}")
        if skip < 0:
            raise ValueError("skip must be >= 0")
        if skip:
            self._cmd["skip"] = skip
        else:
            self._cmd.pop("skip", None)
        return self

    def limit(self, limit: int) -> Cursor:
        """Returns at most limit documents (0: no limit; negative: at most -limit, one batch)."""
        self._settable("limit")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        self._cmd.pop("limit", None)
        self._cmd.pop("singleBatch", None)
        if limit:
            self._cmd["limit"] = abs(limit)
            if limit < 0:
                self._cmd["singleBatch"] = True
        return self

    def batch_size(self, batch_size: int) -> Cursor:
        """Fetches batch_size documents per batch (0: the server's default)."""
        self._settable("batch_size", find_only=False)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, not {type(batch_size).__name__}")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        self._batch_size = batch_size or None
        target = self._cmd if "find" in self._cmd else self._cmd.setdefault("cursor", {})
        if batch_size:
            target["batchSize"] = batch_size
        else:
            target.pop("batchSize", None)
        return self

    def hint(self, index: str | Sequence[tuple[str, Any]] | Mapping[str, Any]) -> Cursor:
        """Makes the server use index (its name, or its keys as create_index takes them)."""
        self._settable("hint")
        self._cmd["hint"] = index if isinstance(index, str) else _index_keys(index)
        return self

    def collation(self, collation: Mapping[str, Any]) -> Cursor:
        """Compares strings by collation ({"locale": "en", "strength": 2}: case-insensitive)."""
        self._settable("collation")
        self._cmd["collation"] = _collation(collation)
        return self

    async def __anext__(self) -> Any:
        # First, so that what another task does meanwhile (closing the cursor) is seen below.
        self._handed += 1
        if self._handed >= _HANDOVER_EVERY:
            self._handed = 0
            if time.monotonic() - self._since >= _HANDOVER_SECONDS:
                await asyncio.sleep(0)
                self._since = time.monotonic()
        while self._pos >= len(self._batch):
            if self._closed or self._id == 0:
                raise StopAsyncIteration
            await self._fetch()
            self._since = time.monotonic()
        batch = self._batch
        doc = batch[self._pos]
        # Handed over documents are let go of one by one: a batch the application did not keep
        # would otherwise be freed at once when the next replaces it (100,000 dicts: 10-20 ms).
        batch[self._pos] = None
        self._pos += 1
        return doc

    async def next(self) -> Any:
        """The next document (pymongo's name); StopAsyncIteration when there is none."""
        return await self.__anext__()

    async def to_list(self, length: int | None = None) -> list[Any]:
        """The remaining documents (at most length of them; the cursor stays open for more)."""
        if length is not None and length < 0:
            raise ValueError("to_list: length must be None or >= 0")
        out: list[Any] = []
        while length is None or len(out) < length:
            if self._pos >= len(self._batch):
                if self._closed or self._id == 0:
                    break
                await self._fetch()
                continue
            end = len(self._batch) if length is None else min(len(self._batch),
                                                              self._pos + length - len(out))
            out.extend(self._batch[self._pos:end])
            self._pos = end
            if end == len(self._batch):
                self._batch = []
                self._pos = 0
        return out

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kills the server-side cursor (if any) and gives back its leased connection."""
        if self._closed:
            return
        self._closed = True
        self._drop_batch()
        conn, owned, cursor_id = self._conn, self._owned, self._id
        self._conn = None
        self._id = 0
        if conn is None:
            return
        try:
            if cursor_id:
                await _kill(conn, self._ns_db, self._ns_coll, [cursor_id])
        finally:
            if owned:
                self._coll._db._release(conn)

    close = aclose  # pymongo's name

    def __del__(self) -> None:
        # Never blocks: a cursor still open on the server is killed from the loop later.
        try:
            conn, cursor_id = self._conn, self._id
        except AttributeError:  # __init__ did not finish
            return
        self._drop_batch()
        if self._closed or conn is None or not cursor_id:
            return
        self._conn = None
        self._id = 0
        if not self._owned:
            _defer_kill(conn, self._ns_db, self._ns_coll, cursor_id)
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the connection object gives itself back when it is freed
        try:
            loop.call_soon_threadsafe(_start_kill, self._coll._db, conn, self._ns_db,
                                      self._ns_coll, cursor_id)
        except RuntimeError:
            pass  # the loop closed meanwhile

    def __repr__(self) -> str:
        state = "closed" if self._closed else "new" if self._id is None else (
            "exhausted" if self._id == 0 else f"open id={self._id}")
        return f"<keel.Cursor {self._coll.name!r} {state}>"

    # -- fetching --

    async def _fetch(self) -> None:
        if self._id is None:
            await self._open()
        else:
            await self._get_more()

    async def _open(self) -> None:
        coll = self._coll
        timeout = self._timeout
        deadline = _deadline(timeout)
        if self._session is not None:
            conn = self._session
        elif coll._conn is not None:
            conn = coll._conn
        else:
            conn = await coll._db._acquire(coll._database, timeout)
            self._owned = True
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        try:
            left = _left(deadline, timeout, coll._database)
            reply = await _conn_command(conn, coll._dbname, self._cmd, left)
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
            cmd["maxTimeMS"] = self._await_ms
        try:
            reply = await _conn_command(conn, self._ns_db, cmd, self._timeout)
        except BaseException:
            # Failed or cancelled midway: the cursor's state on the server is unknown.
            self._abandon()
            raise
        self._take(reply, "nextBatch")

    def _take(self, reply: Mapping[str, Any], key: str) -> None:
        cursor = reply.get("cursor")
        if not isinstance(cursor, Mapping) or not isinstance(cursor.get(key), list):
            self._abandon()
            raise ProgrammingError(f"the server's reply holds no cursor: {reply!r:.200}")
        self._batch = cursor[key]
        self._pos = 0
        self._id = int(cursor.get("id", 0))
        self._post_token = cursor.get("postBatchResumeToken")
        ns = cursor.get("ns")
        if isinstance(ns, str) and "." in ns:
            # getMore and killCursors go to the database and collection the server named.
            self._ns_db, self._ns_coll = ns.split(".", 1)
        if self._id == 0:
            self._finish()

    def _finish(self) -> None:
        """The server closed the cursor: give back a leased connection right away."""
        conn, owned = self._conn, self._owned
        self._conn = None
        if owned and conn is not None:
            self._coll._db._release(conn)

    def _drop_batch(self) -> None:
        """Forgets the documents not handed over: a large batch is freed a slice at a time
        from later loop iterations (100,000 dicts at once take 10-20 ms)."""
        batch = self._batch
        self._batch = []
        self._pos = 0
        if len(batch) >= _HANDOVER_EVERY:
            _native._let_go(batch)

    def _abandon(self) -> None:
        """Stops using the cursor after an error: kill it (later) and release what it holds."""
        conn, owned, cursor_id = self._conn, self._owned, self._id
        self._closed = True
        self._conn = None
        self._id = 0
        self._drop_batch()
        if conn is None:
            return
        if not cursor_id:
            if owned:
                self._coll._db._release(conn)
        elif owned:
            _start_kill(self._coll._db, conn, self._ns_db, self._ns_coll, cursor_id)
        else:
            _defer_kill(conn, self._ns_db, self._ns_coll, cursor_id)


# ---- change streams ----

# Server errors after which a change stream resumes (the change streams specification): network
# and election errors, a cursor the server lost, and RetryChangeStream.
_RESUMABLE_CODES = frozenset({6, 7, 43, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600,
                              11602, 13388, 13435, 13436})


def _resumable(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionLost):
        return True
    if not isinstance(exc, Error) or isinstance(exc, QueryTimeout):
        return False
    text = str(exc)
    if "ResumableChangeStreamError" in text:
        return True
    marker = text.rfind("(code ")
    if marker < 0:
        return False
    digits = text[marker + 6:].split(")", 1)[0]
    return digits.isdigit() and int(digits) in _RESUMABLE_CODES


class ChangeStream:
    """The changes to a collection, from Collection.watch(); each one a dict (operationType,
    documentKey, fullDocument…) as the server reports it.

        async with coll.watch() as stream:        # or: stream = await coll.watch()
            async for change in stream: ...       # waits for the next change
            change = await stream.try_next()      # a change, or None when none came in one wait
        stream.resume_token                       # resume_after= of a later watch()

    The stream holds a connection (of the pool, or session=) until closed. After a network
    error or a server error that allows it (a lost cursor, an election), it resumes once, from
    its resume token, without losing or repeating a change.
    """

    __slots__ = ("_coll", "_pipeline", "_options", "_batch_size", "_await_ms", "_timeout",
                 "_session", "_cursor", "_token", "_closed", "_started", "_op_time", "_target")

    # The cursor class of its aggregate and getMore commands (keel.sync's: its own).
    _Cursor: type[Cursor] = Cursor

    def __init__(self, collection: Collection, pipeline: list[Any], options: dict[str, Any],
                 batch_size: int | None, max_await_time_ms: int | None,
                 timeout: float | None, session: Connection | None,
                 whole_database: bool = False) -> None:
        # aggregate: 1 watches every collection of the MongoDB database.
        self._target: str | int = 1 if whole_database else collection.name
        self._coll = collection
        self._pipeline = pipeline
        self._options = options
        self._batch_size = batch_size
        self._await_ms = max_await_time_ms
        self._timeout = timeout
        self._session = session
        self._cursor: Cursor | None = None
        self._token: Any = options.get("startAfter", options.get("resumeAfter"))
        self._closed = False
        self._started = False
        self._op_time: Any = None  # where the first opening started, for a resume without token

    @property
    def resume_token(self) -> Any:
        """The token to resume after the last change handed over (or the server's latest
        position when none was), for watch(resume_after=…); None before the stream opened."""
        return self._token

    @property
    def alive(self) -> bool:
        """True until the stream is closed or the server ended it (an invalidate event)."""
        return not self._closed and (self._cursor is None or self._cursor.alive)

    def __aiter__(self) -> ChangeStream:
        return self

    def __await__(self) -> Generator[Any, None, ChangeStream]:
        """await coll.watch(): opens the stream on the server and gives it back."""
        return self._opened().__await__()

    async def __aenter__(self) -> ChangeStream:
        return await self._opened()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kills the server-side cursor and gives back its connection."""
        self._closed = True
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            await cursor.aclose()

    close = aclose

    async def _opened(self) -> ChangeStream:
        if self._cursor is None and not self._closed:
            await self._open(resuming=False)
        return self

    async def _open(self, resuming: bool) -> None:
        options = dict(self._options)
        if resuming:
            # A resumed stream goes on after the last change seen (startAfter only counts for the
            # first opening), or, before any token, from the time the first one started.
            options.pop("startAfter", None)
            options.pop("resumeAfter", None)
            if self._token is not None:
                options.pop("startAtOperationTime", None)
                options["resumeAfter"] = self._token
            elif "startAtOperationTime" not in options and self._op_time is not None:
                options["startAtOperationTime"] = self._op_time
        cmd: dict[str, Any] = {"aggregate": self._target,
                               "pipeline": [{"$changeStream": options}, *self._pipeline],
                               "cursor": {"batchSize": self._batch_size}
                               if self._batch_size else {}}
        cursor = self._Cursor(self._coll, cmd, self._batch_size, self._timeout, self._session)
        cursor._await_ms = self._await_ms
        self._cursor = cursor
        await cursor._open()
        if not self._started:
            self._op_time = cursor._op_time
        self._started = True
        self._batch_taken(cursor)

    def _batch_taken(self, cursor: Cursor) -> None:
        if not cursor._batch and cursor._post_token is not None:
            self._token = cursor._post_token

    async def try_next(self) -> dict[str, Any] | None:
        """The next change, or None when the server had none within one wait (its
        max_await_time_ms) or the stream ended."""
        await self._opened()
        while True:
            cursor = self._cursor
            if cursor is None or self._closed:
                return None
            if cursor._pos < len(cursor._batch):
                return self._hand(cursor)
            if cursor._closed or cursor._id == 0:
                return None
            try:
                await cursor._get_more()
            except Exception as exc:
                if not _resumable(exc) or self._closed:
                    raise
                await cursor.aclose()
                await self._open(resuming=True)
                continue
            self._batch_taken(cursor)
            if cursor._pos < len(cursor._batch):
                return self._hand(cursor)
            return None

    async def next(self) -> dict[str, Any]:
        """The next change, waiting for it (pymongo's name); StopAsyncIteration once the stream
        has ended."""
        return await self.__anext__()

    def _hand(self, cursor: Cursor) -> dict[str, Any]:
        change = cursor._batch[cursor._pos]
        cursor._batch[cursor._pos] = None
        cursor._pos += 1
        if cursor._pos == len(cursor._batch) and cursor._post_token is not None:
            self._token = cursor._post_token
        elif isinstance(change, Mapping) and "_id" in change:
            self._token = change["_id"]
        else:
            raise ProgrammingError("a change stream document without its resume token (_id): "
                                   "a pipeline stage of watch() must not remove _id")
        return change  # type: ignore[no-any-return]

    async def __anext__(self) -> dict[str, Any]:
        cursor = self._cursor
        if cursor is not None:
            # Buffered changes are handed over without awaiting: let the loop run now and then,
            # as a Cursor does.
            cursor._handed += 1
            if cursor._handed >= _HANDOVER_EVERY:
                cursor._handed = 0
                if time.monotonic() - cursor._since >= _HANDOVER_SECONDS:
                    await asyncio.sleep(0)
                    cursor._since = time.monotonic()
        while True:
            change = await self.try_next()
            if change is not None:
                return change
            cursor = self._cursor
            if self._closed or cursor is None or not cursor.alive:
                raise StopAsyncIteration

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._started else "new"
        what = "database" if self._target == 1 else repr(self._coll.name)
        return f"<keel.ChangeStream {what} {state}>"


# ---- collections ----

class Collection:
    """A MongoDB collection of a keel database (db.collection(…)) or connection
    (conn.collection(…)). Methods mirror pymongo's; every one is a coroutine except find(),
    aggregate() and list_indexes(), which return a Cursor, and watch(), which returns a
    ChangeStream (both also awaitable).

    session= on every method: a Connection (of db.transaction(), conn.transaction(),
    db.connection() or db.acquire(), of the same keel database) to run the operation on, and so
    inside its transaction; None: the collection's own connection, or one leased per operation.
    """

    __slots__ = ("_db", "_conn", "_database", "_dbname", "name")

    # What watch() returns (keel.sync's collections: its own).
    _ChangeStream: type[ChangeStream] = ChangeStream

    def __init__(self, name: str, *, db: Database | None = None, database: str | None = None,
                 conn: Connection | None = None, dbname: str | None = None) -> None:
        self.name = _check_name(name)
        if dbname is not None and (not isinstance(dbname, str) or not dbname):
            raise TypeError("dbname must be a non-empty str or None")
        self._dbname = dbname
        if conn is not None:
            if conn.engine != "mongodb":
                raise _unsupported(conn.database, conn.engine)
            self._conn: Connection | None = conn
            self._db: Database | None = None
            self._database = conn.database
        else:
            assert db is not None
            name_ = database if database is not None else db.default_database
            engine = db.engine(name_)
            if engine != "mongodb":
                raise _unsupported(name_, engine)
            self._conn = None
            self._db = db
            self._database = name_

    @property
    def database(self) -> str:
        """The keel database (configuration name) the collection belongs to."""
        return self._database

    @property
    def dbname(self) -> str | None:
        """The MongoDB database name, or None for the one in the database's URL."""
        return self._dbname

    def __repr__(self) -> str:
        where = "connection" if self._conn is not None else "database"
        return f"<keel.Collection {self.name!r} {where}={self._database!r}>"

    def _sibling(self, name: str) -> Collection:
        """Another collection in the same place (database or connection, dbname)."""
        if self._conn is not None:
            return Collection(name, conn=self._conn, dbname=self._dbname)
        return Collection(name, db=self._db, database=self._database, dbname=self._dbname)

    def _session(self, session: object) -> Connection | None:
        return None if session is None else _session_conn(session, self._database)

    async def _run(self, cmd: dict[str, Any], timeout: float | None,
                   session: object = None) -> Any:
        conn = self._session(session) if session is not None else self._conn
        if conn is not None:
            return await _conn_command(conn, self._dbname, cmd, timeout)
        assert self._db is not None
        return await self._db._command(self._dbname, cmd, self._database, timeout)

    async def _run_one(self, cmd: dict[str, Any], timeout: float | None,
                       session: object) -> Any:
        """_run for a write command of one statement (insert_one, update_one…): its write
        error is the server's message, without the "index 0: " that names the statement."""
        try:
            return await self._run(cmd, timeout, session)
        except Error as exc:
            text = str(exc)
            if not text.startswith("index 0: "):
                raise
            raise _renamed(exc, text[len("index 0: "):]) from None

    # -- inserts --

    async def insert_one(self, document: MutableMapping[str, Any], *, session: Any = None,
                         timeout: float | None = None) -> InsertOneResult:
        """Inserts one document; adds _id = ObjectId() to it when it has none."""
        doc, oid = _with_id(document)
        reply = await self._run_one({"insert": self.name, "ordered": True,
                                     "documents": [doc]}, timeout, session)
        return InsertOneResult(oid, "n" in reply, reply)

    async def insert_many(self, documents: Iterable[MutableMapping[str, Any]], *,
                          ordered: bool = True, session: Any = None,
                          timeout: float | None = None) -> InsertManyResult:
        """Inserts documents in as few commands as MongoDB's size limits allow.

        ordered=True stops at the first failing document; ordered=False inserts all it can and
        then raises the first error. timeout= covers every command of the call; once it has
        passed no further batch is sent, ordered or not.
        """
        deadline = _deadline(timeout)
        conn = self._session(session)
        if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
            raise TypeError("insert_many takes an iterable of documents")
        ids: list[Any] = []
        batches: list[list[RawDocument]] = [[]]
        size = 0
        for document in documents:
            doc, oid = _with_id(document)
            ids.append(oid)
            raw = RawDocument(_native.bson_encode(dict(doc) if not isinstance(doc, dict)
                                                  else doc))
            cost = len(raw) + _ELEMENT_OVERHEAD
            batch = batches[-1]
            if batch and (len(batch) >= _MAX_WRITE_BATCH or size + cost > _MAX_BATCH_BYTES):
                batch = []
                batches.append(batch)
                size = 0
            batch.append(raw)
            size += cost
        if not ids:
            raise TypeError("insert_many needs at least one document")
        acknowledged = True
        first_error: Error | None = None
        replies: list[Any] = []
        offset = 0
        for batch in batches:
            start, offset = offset, offset + len(batch)
            try:
                left = _left(deadline, timeout, self._database)
                reply = await self._run({"insert": self.name, "ordered": ordered,
                                         "documents": batch}, left, conn)
            except Error as exc:
                if isinstance(exc, QueryTimeout):
                    raise
                # A write error names the document by its index in documents.
                named = _write_error(exc, range(start, offset), "insert_many document")
                if ordered:
                    if named is not None:
                        raise named from exc
                    raise
                if first_error is None:
                    first_error = named or exc
                continue
            replies.append(reply)
            acknowledged = acknowledged and "n" in reply
        if first_error is not None:
            raise first_error
        if len(replies) == 1:
            raw_result = replies[0]
        else:
            raw_result = {"n": sum(int(r.get("n", 0)) for r in replies), "ok": 1.0,
                          "replies": replies}
        return InsertManyResult(ids, acknowledged, raw_result)

    # -- reads --

    def find(self, filter: Mapping[str, Any] | None = None,
             projection: Mapping[str, Any] | Sequence[str] | None = None, *,
             sort: SortSpec = None, skip: int = 0, limit: int = 0,
             batch_size: int | None = None, hint: Any = None, collation: Any = None,
             session: Any = None, timeout: float | None = None) -> Cursor:
        """A Cursor over the matching documents (nothing runs until it is iterated or awaited).

        limit=0 means no limit; a negative limit returns at most -limit documents in a single
        batch, as in pymongo. timeout= bounds the fetch of each batch. The options can also be
        chained before the cursor is read: find(f).sort("a", -1).skip(10).limit(5).
        """
        cmd = self._find_command(filter, projection, sort, skip, limit, batch_size)
        _add_options(cmd, hint, collation)
        return Cursor(self, cmd, batch_size, timeout, self._session(session))

    def _find_command(self, filter: Mapping[str, Any] | None, projection: Any, sort: SortSpec,
                      skip: int, limit: int, batch_size: int | None) -> dict[str, Any]:
        cmd: dict[str, Any] = {"find": self.name, "filter": _filter(filter)}
        proj = _projection(projection)
        if proj is not None:
            cmd["projection"] = proj
        spec = _sort(sort)
        if spec:
            cmd["sort"] = spec
        if skip:
            if skip < 0:
                raise ValueError("skip must be >= 0")
            cmd["skip"] = skip
        if limit:
            cmd["limit"] = abs(limit)
            if limit < 0:
                cmd["singleBatch"] = True
        if batch_size is not None:
            if batch_size < 0:
                raise ValueError("batch_size must be >= 0")
            if batch_size:
                cmd["batchSize"] = batch_size
        return cmd

    async def find_one(self, filter: Any = None,
                       projection: Mapping[str, Any] | Sequence[str] | None = None, *,
                       sort: SortSpec = None, skip: int = 0, hint: Any = None,
                       collation: Any = None, session: Any = None,
                       timeout: float | None = None) -> dict[str, Any] | None:
        """The first matching document, or None. A filter that is not a dict matches _id."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        cmd = self._find_command(filter, projection, sort, skip, -1, None)
        _add_options(cmd, hint, collation)
        reply = await self._run(cmd, timeout, session)
        batch = reply["cursor"]["firstBatch"]
        return batch[0] if batch else None

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]], *,
                  batch_size: int | None = None, allow_disk_use: bool | None = None,
                  hint: Any = None, collation: Any = None, session: Any = None,
                  timeout: float | None = None) -> Cursor:
        """A Cursor over the results of an aggregation pipeline (timeout= bounds the fetch of
        each batch). Iterate it directly, or await it first as with pymongo's async API
        (`cursor = await coll.aggregate(p)`: the command has run, the first batch is in)."""
        if not isinstance(pipeline, (list, tuple)):
            raise TypeError("pipeline must be a list of stages")
        cursor_opts: dict[str, Any] = {}
        if batch_size:
            cursor_opts["batchSize"] = batch_size
        cmd: dict[str, Any] = {"aggregate": self.name, "pipeline": list(pipeline),
                               "cursor": cursor_opts}
        if allow_disk_use is not None:
            cmd["allowDiskUse"] = allow_disk_use
        _add_options(cmd, hint, collation)
        return Cursor(self, cmd, batch_size, timeout, self._session(session))

    async def count_documents(self, filter: Mapping[str, Any] | None = None, *,
                              skip: int = 0, limit: int = 0, hint: Any = None,
                              collation: Any = None, session: Any = None,
                              timeout: float | None = None) -> int:
        """The number of matching documents, counted by an aggregation (as pymongo does)."""
        pipeline: list[dict[str, Any]] = [{"$match": _filter(filter)}]
        if skip:
            pipeline.append({"$skip": skip})
        if limit:
            pipeline.append({"$limit": limit})
        pipeline.append({"$group": {"_id": 1, "n": {"$sum": 1}}})
        cmd = {"aggregate": self.name, "pipeline": pipeline, "cursor": {}}
        _add_options(cmd, hint, collation)
        reply = await self._run(cmd, timeout, session)
        batch = reply["cursor"]["firstBatch"]
        return int(batch[0]["n"]) if batch else 0

    async def estimated_document_count(self, *, session: Any = None,
                                       timeout: float | None = None) -> int:
        """The collection's document count from its metadata (fast, ignores transactions)."""
        reply = await self._run({"count": self.name}, timeout, session)
        return int(reply.get("n", 0))

    async def distinct(self, key: str, filter: Mapping[str, Any] | None = None, *,
                       collation: Any = None, session: Any = None,
                       timeout: float | None = None) -> list[Any]:
        """The distinct values of key (a field name, dotted for embedded fields; array
        elements count one by one) among the documents filter matches."""
        if not isinstance(key, str):
            raise TypeError(f"distinct: key must be a field name (str), not "
                            f"{type(key).__name__}")
        cmd = {"distinct": self.name, "key": key, "query": _filter(filter)}
        _add_options(cmd, None, collation)
        reply = await self._run(cmd, timeout, session)
        return list(reply.get("values", []))

    # -- updates and deletes --

    async def _update(self, filter: Mapping[str, Any] | None, update: Any, *, multi: bool,
                      upsert: bool, timeout: float | None, session: Any,
                      array_filters: Any = None, hint: Any = None,
                      collation: Any = None) -> UpdateResult:
        statement = {"q": _filter(filter), "u": update, "multi": multi,
                     "upsert": _check_bool(upsert, "upsert")}
        if array_filters is not None:
            statement["arrayFilters"] = _array_filters(array_filters)
        _add_options(statement, hint, collation)
        reply = await self._run_one({"update": self.name, "ordered": True,
                                     "updates": [statement]}, timeout, session)
        n, acknowledged = _write_result_counts(reply)
        upserted = reply.get("upserted") or []
        upserted_id = upserted[0].get("_id") if upserted else None
        if acknowledged:
            # pymongo's raw_result: updatedExisting added, upserted the _id itself.
            reply = dict(reply)
            reply["updatedExisting"] = bool(n) and not upserted
            if upserted:
                reply["upserted"] = upserted_id
        return UpdateResult(n - len(upserted), int(reply.get("nModified", 0)), upserted_id,
                            acknowledged, reply)

    @staticmethod
    def _check_update(update: Any, method: str) -> None:
        if isinstance(update, (list, tuple)):
            return  # an aggregation pipeline update
        if not isinstance(update, Mapping) or not update:
            raise TypeError(f"{method}: the update must be a non-empty dict or a pipeline")
        first = next(iter(update))
        if not (isinstance(first, str) and first.startswith("$")):
            raise ProgrammingError(f"{method}: the update must use $ operators (e.g. "
                                   "{'$set': {...}}); use replace_one to replace a document")

    @staticmethod
    def _check_replacement(replacement: Any, method: str) -> None:
        if not isinstance(replacement, Mapping):
            raise TypeError(f"{method}: the replacement must be a dict, not "
                            f"{type(replacement).__name__}")
        for key in replacement:
            if isinstance(key, str) and key.startswith("$"):
                raise ProgrammingError(f"{method}: a replacement document cannot hold $ "
                                       "operators; use update_one to apply them")

    async def update_one(self, filter: Mapping[str, Any] | None, update: Any, *,
                         upsert: bool = False, array_filters: Any = None, hint: Any = None,
                         collation: Any = None, session: Any = None,
                         timeout: float | None = None) -> UpdateResult:
        """Applies update ($ operators or a pipeline) to the first matching document."""
        self._check_update(update, "update_one")
        return await self._update(filter, update, multi=False, upsert=upsert, timeout=timeout,
                                  session=session, array_filters=array_filters, hint=hint,
                                  collation=collation)

    async def update_many(self, filter: Mapping[str, Any] | None, update: Any, *,
                          upsert: bool = False, array_filters: Any = None, hint: Any = None,
                          collation: Any = None, session: Any = None,
                          timeout: float | None = None) -> UpdateResult:
        """Applies update ($ operators or a pipeline) to every matching document."""
        self._check_update(update, "update_many")
        return await self._update(filter, update, multi=True, upsert=upsert, timeout=timeout,
                                  session=session, array_filters=array_filters, hint=hint,
                                  collation=collation)

    async def replace_one(self, filter: Mapping[str, Any] | None,
                          replacement: Mapping[str, Any], *, upsert: bool = False,
                          hint: Any = None, collation: Any = None, session: Any = None,
                          timeout: float | None = None) -> UpdateResult:
        """Replaces the first matching document (its _id is kept)."""
        self._check_replacement(replacement, "replace_one")
        return await self._update(filter, replacement, multi=False, upsert=upsert,
                                  timeout=timeout, session=session, hint=hint,
                                  collation=collation)

    async def _delete(self, filter: Mapping[str, Any] | None, limit: int,
                      timeout: float | None, session: Any, hint: Any,
                      collation: Any) -> DeleteResult:
        statement: dict[str, Any] = {"q": _filter(filter), "limit": limit}
        _add_options(statement, hint, collation)
        reply = await self._run_one({"delete": self.name, "ordered": True,
                                     "deletes": [statement]}, timeout, session)
        n, acknowledged = _write_result_counts(reply)
        return DeleteResult(n, acknowledged, reply)

    async def delete_one(self, filter: Mapping[str, Any] | None, *, hint: Any = None,
                         collation: Any = None, session: Any = None,
                         timeout: float | None = None) -> DeleteResult:
        """Deletes the first matching document."""
        return await self._delete(filter, 1, timeout, session, hint, collation)

    async def delete_many(self, filter: Mapping[str, Any] | None, *, hint: Any = None,
                          collation: Any = None, session: Any = None,
                          timeout: float | None = None) -> DeleteResult:
        """Deletes every matching document ({} deletes them all)."""
        return await self._delete(filter, 0, timeout, session, hint, collation)

    # -- find and modify --

    async def _find_and_modify(self, method: str, filter: Mapping[str, Any] | None,
                               change: dict[str, Any], projection: Any, sort: SortSpec, *,
                               upsert: object = False, return_document: object = None,
                               array_filters: Any = None, hint: Any, collation: Any,
                               session: Any, timeout: float | None) -> dict[str, Any] | None:
        """Runs findAndModify for the find_one_and_* method named method. change is the
        update, the replacement or the removal; return_document is None for a removal, which
        has neither a document to return after it nor an upsert."""
        cmd: dict[str, Any] = {"findAndModify": self.name, "query": _filter(filter)}
        spec = _sort(sort)
        if spec:
            cmd["sort"] = spec
        cmd.update(change)
        if return_document is not None:
            if not isinstance(return_document, bool):
                raise TypeError(f"{method}: return_document must be ReturnDocument.BEFORE or "
                                f"ReturnDocument.AFTER, not {return_document!r}")
            cmd["new"] = return_document
            if _check_bool(upsert, f"{method}: upsert"):
                cmd["upsert"] = True
        if array_filters is not None:
            cmd["arrayFilters"] = _array_filters(array_filters)
        _add_options(cmd, hint, collation)
        proj = _projection(projection)
        if proj is not None:
            cmd["fields"] = proj
        reply = await self._run(cmd, timeout, session)
        value = reply.get("value")
        return value if isinstance(value, dict) else None

    async def find_one_and_update(self, filter: Mapping[str, Any] | None, update: Any,
                                  projection: Mapping[str, Any] | Sequence[str] | None = None, *,
                                  sort: SortSpec = None, upsert: bool = False,
                                  return_document: bool = ReturnDocument.BEFORE,
                                  array_filters: Any = None, hint: Any = None,
                                  collation: Any = None, session: Any = None,
                                  timeout: float | None = None) -> dict[str, Any] | None:
        """Updates the first document filter matches (in sort order) and returns it as it was
        before (ReturnDocument.BEFORE) or after (AFTER) the update; None when none matched
        (and, BEFORE, when upsert inserted one)."""
        self._check_update(update, "find_one_and_update")
        return await self._find_and_modify(
            "find_one_and_update", filter, {"update": update}, projection, sort, upsert=upsert,
            return_document=return_document, array_filters=array_filters, hint=hint,
            collation=collation, session=session, timeout=timeout)

    async def find_one_and_replace(self, filter: Mapping[str, Any] | None,
                                   replacement: Mapping[str, Any],
                                   projection: Mapping[str, Any] | Sequence[str] | None = None,
                                   *, sort: SortSpec = None, upsert: bool = False,
                                   return_document: bool = ReturnDocument.BEFORE,
                                   hint: Any = None, collation: Any = None, session: Any = None,
                                   timeout: float | None = None) -> dict[str, Any] | None:
        """Replaces the first document filter matches (its _id is kept) and returns it as it
        was before or after, like find_one_and_update."""
        self._check_replacement(replacement, "find_one_and_replace")
        return await self._find_and_modify(
            "find_one_and_replace", filter, {"update": replacement}, projection, sort,
            upsert=upsert, return_document=return_document, hint=hint, collation=collation,
            session=session, timeout=timeout)

    async def find_one_and_delete(self, filter: Mapping[str, Any] | None,
                                  projection: Mapping[str, Any] | Sequence[str] | None = None, *,
                                  sort: SortSpec = None, hint: Any = None,
                                  collation: Any = None, session: Any = None,
                                  timeout: float | None = None) -> dict[str, Any] | None:
        """Deletes the first document filter matches (in sort order) and returns it, or None
        when none matched."""
        return await self._find_and_modify("find_one_and_delete", filter, {"remove": True},
                                           projection, sort, hint=hint, collation=collation,
                                           session=session, timeout=timeout)

    # -- bulk writes --

    async def bulk_write(self, requests: Iterable[Any], *, ordered: bool = True,
                         session: Any = None, timeout: float | None = None) -> BulkWriteResult:
        """Runs InsertOne, UpdateOne, UpdateMany, ReplaceOne, DeleteOne and DeleteMany
        requests (keel's or pymongo's) in as few insert / update / delete commands as their
        order and MongoDB's size limits allow.

        ordered=True runs them in order and stops at the first error; ordered=False runs every
        one it can (inserts, then updates, then deletes) and then raises the first error. An
        error names the request (its index in requests). timeout= covers every command.
        """
        deadline = _deadline(timeout)
        _check_bool(ordered, "bulk_write: ordered")
        conn = self._session(session)
        if isinstance(requests, Mapping) or not isinstance(requests, Iterable):
            raise TypeError("bulk_write takes a list of write operations (InsertOne, UpdateOne, "
                            "UpdateMany, ReplaceOne, DeleteOne, DeleteMany)")
        ops = [_bulk_op(i, request) for i, request in enumerate(requests)]
        if not ops:
            raise ProgrammingError("bulk_write needs at least one operation")
        if ordered:
            groups: list[tuple[str, list[tuple[int, RawDocument]]]] = []
            for index, kind, raw in ops:
                if not groups or groups[-1][0] != kind:
                    groups.append((kind, []))
                groups[-1][1].append((index, raw))
        else:
            by_kind: dict[str, list[tuple[int, RawDocument]]] = {
                "insert": [], "update": [], "delete": []}
            for index, kind, raw in ops:
                by_kind[kind].append((index, raw))
            groups = [(kind, items) for kind, items in by_kind.items() if items]

        totals = {"nInserted": 0, "nUpserted": 0, "nMatched": 0, "nModified": 0,
                  "nRemoved": 0}
        upserted: list[dict[str, Any]] = []
        acknowledged = True
        first_error: Error | None = None
        for kind, items in groups:
            for chunk in _chunks(items):
                key = {"insert": "documents", "update": "updates", "delete": "deletes"}[kind]
                cmd = {kind: self.name, "ordered": ordered, key: [raw for _, raw in chunk]}
                try:
                    left = _left(deadline, timeout, self._database)
                    reply = await self._run(cmd, left, conn)
                except Error as exc:
                    if isinstance(exc, QueryTimeout):
                        raise
                    named = _bulk_error(exc, kind, [index for index, _ in chunk])
                    if ordered:
                        raise named from exc
                    if first_error is None:
                        first_error = named
                    continue
                acknowledged = acknowledged and "n" in reply
                n = int(reply.get("n", 0))
                if kind == "insert":
                    totals["nInserted"] += n
                elif kind == "delete":
                    totals["nRemoved"] += n
                else:
                    ups = reply.get("upserted") or []
                    for up in ups:
                        at = int(up.get("index", 0))
                        upserted.append({"index": chunk[at][0], "_id": up.get("_id")})
                    totals["nUpserted"] += len(ups)
                    totals["nMatched"] += n - len(ups)
                    totals["nModified"] += int(reply.get("nModified", 0))
        if first_error is not None:
            raise first_error
        upserted.sort(key=lambda up: up["index"])
        raw_result = {"writeErrors": [], "writeConcernErrors": [], **totals,
                      "upserted": upserted}
        return BulkWriteResult(totals["nInserted"], totals["nMatched"], totals["nModified"],
                               totals["nRemoved"], totals["nUpserted"],
                               {up["index"]: up["_id"] for up in upserted}, acknowledged,
                               raw_result)

    # -- indexes and the collection itself --

    async def create_index(self, keys: str | Sequence[tuple[str, Any]] | Mapping[str, Any], *,
                           unique: bool = False, name: str | None = None, session: Any = None,
                           timeout: float | None = None, **options: Any) -> str:
        """Creates an index and returns its name ("email_1" for [("email", 1)]).

        Extra keyword options go into the index specification as they are (sparse=True,
        expireAfterSeconds=3600, partialFilterExpression={…}…).
        """
        if unique:
            options["unique"] = True
        model = IndexModel(keys, name=name, **options)
        await self._run({"createIndexes": self.name, "indexes": [model.document]}, timeout,
                        session)
        return model.document["name"]  # type: ignore[no-any-return]

    async def create_indexes(self, indexes: Sequence[Any], *, session: Any = None,
                             timeout: float | None = None) -> list[str]:
        """Creates several indexes in one command (keel.IndexModel, or anything with a
        document attribute as pymongo's IndexModel) and returns their names."""
        if isinstance(indexes, (Mapping, str)) or not isinstance(indexes, Iterable):
            raise TypeError("create_indexes takes a list of IndexModel")
        specs = []
        for i, index in enumerate(indexes):
            document = getattr(index, "document", None)
            if not isinstance(document, Mapping) or "key" not in document:
                raise TypeError(f"create_indexes: index {i} is not an IndexModel "
                                f"({type(index).__name__})")
            spec = dict(document)
            if "name" not in spec:
                spec["name"] = _index_name(_index_keys(spec["key"]))
            specs.append(spec)
        if not specs:
            raise ProgrammingError("create_indexes needs at least one index")
        await self._run({"createIndexes": self.name, "indexes": specs}, timeout, session)
        return [spec["name"] for spec in specs]

    def list_indexes(self, *, session: Any = None, timeout: float | None = None) -> Cursor:
        """A Cursor over the collection's index specifications (none for a collection that
        does not exist); also awaitable, as in pymongo's async API."""
        cursor = Cursor(self, {"listIndexes": self.name, "cursor": {}}, None, timeout,
                        self._session(session))
        cursor._missing_ok = True
        return cursor

    async def index_information(self, *, session: Any = None,
                                timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """{index name: its specification}, with "key" as a list of (field, direction) pairs,
        as pymongo gives it."""
        info: dict[str, dict[str, Any]] = {}
        async with self.list_indexes(session=session, timeout=timeout) as cursor:
            async for index in cursor:
                spec = dict(index)
                name = spec.pop("name")
                spec.pop("ns", None)
                spec["key"] = list(spec["key"].items())
                info[name] = spec
        return info

    async def drop_index(self, index_or_name: str | Sequence[tuple[str, Any]] | Mapping[str, Any],
                         *, session: Any = None, timeout: float | None = None) -> None:
        """Drops one index, by name or by the keys it was created with; an index that does not
        exist is an error (ProgrammingError, the server's IndexNotFound)."""
        if isinstance(index_or_name, str):
            name = index_or_name
            if name == "*":
                raise ProgrammingError("drop_index('*') would drop every index: use "
                                       "drop_indexes()")
        else:
            name = _index_name(_index_keys(index_or_name))
        await self._run({"dropIndexes": self.name, "index": name}, timeout, session)

    async def drop_indexes(self, *, session: Any = None, timeout: float | None = None) -> None:
        """Drops every index but _id's."""
        await self._run({"dropIndexes": self.name, "index": "*"}, timeout, session)

    async def drop(self, *, session: Any = None, timeout: float | None = None) -> None:
        """Drops the collection with its indexes; a collection that does not exist is fine."""
        try:
            await self._run({"drop": self.name}, timeout, session)
        except ProgrammingError as exc:
            # MongoDB before 7.0 answers NamespaceNotFound (code 26) for a missing collection.
            if "(code 26)" not in str(exc):
                raise

    # -- change streams --

    def watch(self, pipeline: Sequence[Mapping[str, Any]] | None = None, *,
              full_document: str | None = None, full_document_before_change: str | None = None,
              resume_after: Any = None, start_after: Any = None,
              start_at_operation_time: Any = None, max_await_time_ms: int | None = None,
              batch_size: int | None = None, show_expanded_events: bool | None = None,
              session: Any = None, timeout: float | None = None,
              _whole_database: bool = False) -> ChangeStream:
        """A ChangeStream of the collection's changes ($changeStream), with pipeline stages
        after it ($match, $project…). resume_after / start_after (a resume token) or
        start_at_operation_time (a keel.Timestamp) pick where it starts; full_document=
        "updateLookup" adds the document to update events. max_await_time_ms: how long each
        getMore waits for a change (the server's default: 1000)."""
        stages = [] if pipeline is None else pipeline
        if not isinstance(stages, (list, tuple)):
            raise TypeError("watch: pipeline must be a list of stages")
        if resume_after is not None and start_after is not None:
            raise ProgrammingError("watch: give resume_after or start_after, not both")
        options: dict[str, Any] = {}
        for key, value in (("fullDocument", full_document),
                           ("fullDocumentBeforeChange", full_document_before_change)):
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"watch: {key} must be a str, not {type(value).__name__}")
                options[key] = value
        if resume_after is not None:
            options["resumeAfter"] = resume_after
        if start_after is not None:
            options["startAfter"] = start_after
        if start_at_operation_time is not None:
            if not isinstance(start_at_operation_time, _native.Timestamp):
                raise TypeError("watch: start_at_operation_time must be a keel.Timestamp")
            options["startAtOperationTime"] = start_at_operation_time
        if show_expanded_events is not None:
            options["showExpandedEvents"] = _check_bool(show_expanded_events,
                                                        "watch: show_expanded_events")
        for key, value in (("max_await_time_ms", max_await_time_ms),
                           ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise TypeError(f"watch: {key} must be an int >= 0, not {value!r}")
        return self._ChangeStream(self, list(stages), options, batch_size or None,
                                  max_await_time_ms, check_timeout(timeout),
                                  self._session(session), _whole_database)


# ---- bulk_write's helpers ----

_PYMONGO_OPS = {"InsertOne", "UpdateOne", "UpdateMany", "ReplaceOne", "DeleteOne", "DeleteMany"}


def _array_filters(value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"array_filters must be a list of filters, not {type(value).__name__}")
    return list(value)


def _hint(value: Any) -> Any:
    return value if isinstance(value, str) else _index_keys(value)


def _add_options(target: dict[str, Any], hint: Any, collation: Any) -> None:
    """Adds hint= and collation= (when given) to a command or a write statement."""
    if hint is not None:
        target["hint"] = _hint(hint)
    if collation is not None:
        target["collation"] = _collation(collation)


def _collation(value: Any) -> Mapping[str, Any]:
    """A collation as a dict ({"locale": "en", "strength": 2}), or pymongo's Collation."""
    document = getattr(value, "document", value)
    if not isinstance(document, Mapping):
        raise TypeError(f"collation must be a dict such as {{'locale': 'en'}}, not "
                        f"{type(value).__name__}")
    return document


def _op_fields(request: Any) -> tuple[str, dict[str, Any]] | None:
    """The kind and fields of a keel or pymongo write operation, or None for anything else."""
    kind = type(request).__name__
    if isinstance(request, (InsertOne, UpdateOne, UpdateMany, ReplaceOne, DeleteOne,
                            DeleteMany)):
        return kind, dict(request.__dict__)
    if kind in _PYMONGO_OPS and type(request).__module__.startswith("pymongo"):
        def get(name: str) -> Any:
            return getattr(request, name, None)

        fields = {"filter": get("_filter"), "collation": get("_collation"),
                  "hint": get("_hint"), "upsert": bool(get("_upsert")),
                  "array_filters": get("_array_filters")}
        if kind == "InsertOne":
            fields = {"document": get("_doc")}
        elif kind == "ReplaceOne":
            fields["replacement"] = get("_doc")
        elif kind in ("UpdateOne", "UpdateMany"):
            fields["update"] = get("_doc")
        if get("_sort") is not None:
            raise NotSupportedError(f"{kind}(sort=…) is not supported by keel's bulk_write")
        return kind, fields
    return None


def _bulk_op(index: int, request: Any) -> tuple[int, str, RawDocument]:
    """(index, command kind, the encoded document or statement) of request number index."""
    found = _op_fields(request)
    where = f"bulk_write request {index}"
    if found is None:
        raise TypeError(f"{where} is not a write operation (InsertOne, UpdateOne, UpdateMany, "
                        f"ReplaceOne, DeleteOne, DeleteMany): {type(request).__name__}")
    kind, f = found
    try:
        if kind == "InsertOne":
            doc, _ = _with_id(f["document"])
            return index, "insert", RawDocument(_native.bson_encode(
                doc if isinstance(doc, dict) else dict(doc)))
        if not isinstance(f["filter"], Mapping):
            raise TypeError(f"the filter must be a dict, not {type(f['filter']).__name__}")
        statement: dict[str, Any]
        if kind in ("DeleteOne", "DeleteMany"):
            statement = {"q": f["filter"], "limit": 1 if kind == "DeleteOne" else 0}
            command = "delete"
        else:
            if kind == "ReplaceOne":
                Collection._check_replacement(f["replacement"], kind)
                u = f["replacement"]
            else:
                Collection._check_update(f["update"], kind)
                u = f["update"]
            statement = {"q": f["filter"], "u": u, "multi": kind == "UpdateMany",
                         "upsert": f["upsert"] is not None and _check_bool(f["upsert"],
                                                                            "upsert")}
            if f.get("array_filters") is not None:
                statement["arrayFilters"] = _array_filters(f["array_filters"])
            command = "update"
        if f.get("hint") is not None:
            statement["hint"] = _hint(f["hint"])
        if f.get("collation") is not None:
            statement["collation"] = _collation(f["collation"])
        return index, command, RawDocument(_native.bson_encode(statement))
    except (Error, TypeError, ValueError) as exc:
        if isinstance(exc, Error):
            raise _renamed(exc, f"{where} ({kind}): {exc}") from exc
        raise type(exc)(f"{where} ({kind}): {exc}") from exc


def _chunks(items: list[tuple[int, RawDocument]]) -> Iterable[list[tuple[int, RawDocument]]]:
    """items cut into commands within MongoDB's count and size limits."""
    chunk: list[tuple[int, RawDocument]] = []
    size = 0
    for item in items:
        cost = len(item[1]) + _ELEMENT_OVERHEAD
        if chunk and (len(chunk) >= _MAX_WRITE_BATCH or size + cost > _MAX_BATCH_BYTES):
            yield chunk
            chunk = []
            size = 0
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk


def _write_error(exc: Error, indexes: Sequence[int], what: str) -> Error | None:
    """exc naming what failed by the caller's index ("bulk_write request 7: …"): a write
    error's "index N" is the N-th statement of its command, which is the caller's indexes[N].
    None when exc is not a write error."""
    text = str(exc)
    if text.startswith("index "):
        number, sep, rest = text[6:].partition(": ")
        if sep and number.isdigit() and int(number) < len(indexes):
            return _renamed(exc, f"{what} {indexes[int(number)]}: {rest}")
    return None


def _bulk_error(exc: Error, kind: str, indexes: list[int]) -> Error:
    """exc, its message naming the request that failed (or the requests of its command)."""
    named = _write_error(exc, indexes, "bulk_write request")
    if named is not None:
        return named
    text = str(exc)
    first, last = indexes[0], indexes[-1]
    which = f"request {first}" if first == last else f"requests {first}-{last}"
    return _renamed(exc, f"bulk_write {kind} of {which}: {text}")


# ---- the collections of a MongoDB database ----

async def list_collection_names(place: Collection, filter: Mapping[str, Any] | None,
                                session: Any, timeout: float | None) -> list[str]:
    """The names of the collections of place's MongoDB database (place is any collection
    there), filter applying to listCollections' documents (e.g. {"name": {"$regex": "^a"}})."""
    cmd: dict[str, Any] = {"listCollections": 1, "nameOnly": True, "cursor": {}}
    if filter is not None:
        cmd["filter"] = _filter(filter)
    cursor = Cursor(place, cmd, None, timeout, place._session(session))
    async with cursor:
        return [entry["name"] async for entry in cursor]


async def create_collection(place: Collection, name: str, options: dict[str, Any],
                            check_exists: bool, session: Any,
                            timeout: float | None) -> Collection:
    """Creates collection name in place's MongoDB database; with check_exists, one that is
    already there is a ProgrammingError (pymongo's CollectionInvalid)."""
    coll = place._sibling(name)
    conn = place._session(session)
    deadline = _deadline(timeout)
    if _check_bool(check_exists, "create_collection: check_exists"):
        existing = await list_collection_names(place, {"name": name}, conn,
                                               _left(deadline, timeout, place._database))
        if existing:
            exc = ProgrammingError(f"collection {name!r} already exists")
            exc.database = place._database
            exc.engine = "mongodb"
            raise exc
    await coll._run({"create": name, **options}, _left(deadline, timeout, place._database),
                    conn)
    return coll
