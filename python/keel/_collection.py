# python/keel/_collection.py - MongoDB collections over document commands: CRUD, streaming cursors and write results.
"""MongoDB collections, with pymongo's names.

    users = db.collection("users", database="docs")      # or conn.collection("users")
    await users.insert_one({"name": "ada"})
    async for doc in users.find({"age": {"$gt": 30}}, sort=[("age", -1)]):
        ...

Every operation is one MongoDB command (insert, find, getMore, killCursors, update, delete,
aggregate, createIndexes, drop) sent through Connection._command / Database._command, which
encode the command to BSON, run it and decode the reply in C.

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
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from . import _native
from ._native import (
    Error,
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
    "InsertOneResult",
    "InsertManyResult",
    "UpdateResult",
    "DeleteResult",
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

@dataclass(frozen=True)
class InsertOneResult:
    """Outcome of insert_one: the _id of the document (generated when it had none)."""
    inserted_id: Any
    acknowledged: bool = True


@dataclass(frozen=True)
class InsertManyResult:
    """Outcome of insert_many: the _id of every document, in order."""
    inserted_ids: list[Any] = field(default_factory=list)
    acknowledged: bool = True


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of update_one / update_many / replace_one.

    matched_count does not count an upserted document; upserted_id is its _id, or None.
    """
    matched_count: int
    modified_count: int
    upserted_id: Any = None
    acknowledged: bool = True


@dataclass(frozen=True)
class DeleteResult:
    """Outcome of delete_one / delete_many."""
    deleted_count: int
    acknowledged: bool = True


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
                 "__weakref__")

    def __init__(self, collection: Collection, cmd: dict[str, Any],
                 batch_size: int | None, timeout: float | None = None) -> None:
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
        if coll._conn is not None:
            conn = coll._conn
        else:
            conn = await coll._db._acquire(coll._database, timeout)
            self._owned = True
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        try:
            left = _left(deadline, timeout, coll._database)
            reply = await _conn_command(conn, coll._dbname, self._cmd, left)
        except BaseException:
            self._abandon()
            raise
        self._take(reply, "firstBatch")

    async def _get_more(self) -> None:
        conn = self._conn
        assert conn is not None and self._id
        cmd: dict[str, Any] = {"getMore": self._id, "collection": self._ns_coll}
        if self._batch_size:
            cmd["batchSize"] = self._batch_size
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


# ---- collections ----

class Collection:
    """A MongoDB collection of a keel database (db.collection(…)) or connection
    (conn.collection(…)). Methods mirror pymongo's; every one is a coroutine except find() and
    aggregate(), which return a Cursor."""

    __slots__ = ("_db", "_conn", "_database", "_dbname", "name")

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

    async def _run(self, cmd: dict[str, Any], timeout: float | None) -> Any:
        if self._conn is not None:
            return await _conn_command(self._conn, self._dbname, cmd, timeout)
        assert self._db is not None
        return await self._db._command(self._dbname, cmd, self._database, timeout)

    # -- inserts --

    async def insert_one(self, document: MutableMapping[str, Any], *,
                         timeout: float | None = None) -> InsertOneResult:
        """Inserts one document; adds _id = ObjectId() to it when it has none."""
        doc, oid = _with_id(document)
        reply = await self._run({"insert": self.name, "ordered": True, "documents": [doc]},
                                timeout)
        return InsertOneResult(oid, "n" in reply)

    async def insert_many(self, documents: Iterable[MutableMapping[str, Any]], *,
                          ordered: bool = True,
                          timeout: float | None = None) -> InsertManyResult:
        """Inserts documents in as few commands as MongoDB's size limits allow.

        ordered=True stops at the first failing document; ordered=False inserts all it can and
        then raises the first error. timeout= covers every command of the call; once it has
        passed no further batch is sent, ordered or not.
        """
        deadline = _deadline(timeout)
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
        for batch in batches:
            try:
                left = _left(deadline, timeout, self._database)
                reply = await self._run({"insert": self.name, "ordered": ordered,
                                         "documents": batch}, left)
            except Error as exc:
                if ordered or isinstance(exc, QueryTimeout):
                    raise
                if first_error is None:
                    first_error = exc
                continue
            acknowledged = acknowledged and "n" in reply
        if first_error is not None:
            raise first_error
        return InsertManyResult(ids, acknowledged)

    # -- reads --

    def find(self, filter: Mapping[str, Any] | None = None,
             projection: Mapping[str, Any] | Sequence[str] | None = None, *,
             sort: SortSpec = None, skip: int = 0, limit: int = 0,
             batch_size: int | None = None, timeout: float | None = None) -> Cursor:
        """A Cursor over the matching documents (nothing runs until it is iterated).

        limit=0 means no limit; a negative limit returns at most -limit documents in a single
        batch, as in pymongo. timeout= bounds the fetch of each batch.
        """
        cmd = self._find_command(filter, projection, sort, skip, limit, batch_size)
        return Cursor(self, cmd, batch_size, timeout)

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
                       sort: SortSpec = None, skip: int = 0,
                       timeout: float | None = None) -> dict[str, Any] | None:
        """The first matching document, or None. A filter that is not a dict matches _id."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        reply = await self._run(self._find_command(filter, projection, sort, skip, -1, None),
                                timeout)
        batch = reply["cursor"]["firstBatch"]
        return batch[0] if batch else None

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]], *,
                  batch_size: int | None = None, allow_disk_use: bool | None = None,
                  timeout: float | None = None) -> Cursor:
        """A Cursor over the results of an aggregation pipeline (timeout= bounds the fetch of
        each batch)."""
        if not isinstance(pipeline, (list, tuple)):
            raise TypeError("pipeline must be a list of stages")
        cursor_opts: dict[str, Any] = {}
        if batch_size:
            cursor_opts["batchSize"] = batch_size
        cmd: dict[str, Any] = {"aggregate": self.name, "pipeline": list(pipeline),
                               "cursor": cursor_opts}
        if allow_disk_use is not None:
            cmd["allowDiskUse"] = allow_disk_use
        return Cursor(self, cmd, batch_size, timeout)

    async def count_documents(self, filter: Mapping[str, Any] | None = None, *,
                              skip: int = 0, limit: int = 0,
                              timeout: float | None = None) -> int:
        """The number of matching documents, counted by an aggregation (as pymongo does)."""
        pipeline: list[dict[str, Any]] = [{"$match": _filter(filter)}]
        if skip:
            pipeline.append({"$skip": skip})
        if limit:
            pipeline.append({"$limit": limit})
        pipeline.append({"$group": {"_id": 1, "n": {"$sum": 1}}})
        reply = await self._run({"aggregate": self.name, "pipeline": pipeline, "cursor": {}},
                                timeout)
        batch = reply["cursor"]["firstBatch"]
        return int(batch[0]["n"]) if batch else 0

    async def estimated_document_count(self, *, timeout: float | None = None) -> int:
        """The collection's document count from its metadata (fast, ignores transactions)."""
        reply = await self._run({"count": self.name}, timeout)
        return int(reply.get("n", 0))

    # -- updates and deletes --

    async def _update(self, filter: Mapping[str, Any] | None, update: Any, *, multi: bool,
                      upsert: bool, timeout: float | None) -> UpdateResult:
        statement = {"q": _filter(filter), "u": update, "multi": multi, "upsert": upsert}
        reply = await self._run({"update": self.name, "ordered": True, "updates": [statement]},
                                timeout)
        n, acknowledged = _write_result_counts(reply)
        upserted = reply.get("upserted") or []
        upserted_id = upserted[0].get("_id") if upserted else None
        return UpdateResult(n - len(upserted), int(reply.get("nModified", 0)), upserted_id,
                            acknowledged)

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

    async def update_one(self, filter: Mapping[str, Any] | None, update: Any, *,
                         upsert: bool = False, timeout: float | None = None) -> UpdateResult:
        """Applies update ($ operators or a pipeline) to the first matching document."""
        self._check_update(update, "update_one")
        return await self._update(filter, update, multi=False, upsert=upsert, timeout=timeout)

    async def update_many(self, filter: Mapping[str, Any] | None, update: Any, *,
                          upsert: bool = False, timeout: float | None = None) -> UpdateResult:
        """Applies update ($ operators or a pipeline) to every matching document."""
        self._check_update(update, "update_many")
        return await self._update(filter, update, multi=True, upsert=upsert, timeout=timeout)

    async def replace_one(self, filter: Mapping[str, Any] | None,
                          replacement: Mapping[str, Any], *, upsert: bool = False,
                          timeout: float | None = None) -> UpdateResult:
        """Replaces the first matching document (its _id is kept)."""
        if not isinstance(replacement, Mapping):
            raise TypeError("replace_one: the replacement must be a dict")
        for key in replacement:
            if isinstance(key, str) and key.startswith("$"):
                raise ProgrammingError("replace_one: a replacement document cannot hold $ "
                                       "operators; use update_one to apply them")
        return await self._update(filter, replacement, multi=False, upsert=upsert,
                                  timeout=timeout)

    async def _delete(self, filter: Mapping[str, Any] | None, limit: int,
                      timeout: float | None) -> DeleteResult:
        reply = await self._run({"delete": self.name, "ordered": True,
                                 "deletes": [{"q": _filter(filter), "limit": limit}]}, timeout)
        n, acknowledged = _write_result_counts(reply)
        return DeleteResult(n, acknowledged)

    async def delete_one(self, filter: Mapping[str, Any] | None, *,
                         timeout: float | None = None) -> DeleteResult:
        """Deletes the first matching document."""
        return await self._delete(filter, 1, timeout)

    async def delete_many(self, filter: Mapping[str, Any] | None, *,
                          timeout: float | None = None) -> DeleteResult:
        """Deletes every matching document ({} deletes them all)."""
        return await self._delete(filter, 0, timeout)

    # -- indexes and the collection itself --

    async def create_index(self, keys: str | Sequence[tuple[str, Any]] | Mapping[str, Any], *,
                           unique: bool = False, name: str | None = None,
                           timeout: float | None = None, **options: Any) -> str:
        """Creates an index and returns its name ("email_1" for [("email", 1)]).

        Extra keyword options go into the index specification as they are (sparse=True,
        expireAfterSeconds=3600, partialFilterExpression={…}…).
        """
        spec_keys = _index_keys(keys)
        if name is None:
            name = "_".join(f"{k}_{v}" for k, v in spec_keys.items())
        index: dict[str, Any] = {"key": spec_keys, "name": name}
        if unique:
            index["unique"] = True
        index.update(options)
        await self._run({"createIndexes": self.name, "indexes": [index]}, timeout)
        return name

    async def drop(self, *, timeout: float | None = None) -> None:
        """Drops the collection with its indexes; a collection that does not exist is fine."""
        try:
            await self._run({"drop": self.name}, timeout)
        except ProgrammingError as exc:
            # MongoDB before 7.0 answers NamespaceNotFound (code 26) for a missing collection.
            if "(code 26)" not in str(exc):
                raise
