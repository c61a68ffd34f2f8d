# tests/python/test_fastapi.py - keel.fastapi on every engine: dependencies, transactions, health, concurrency.
import asyncio
import contextlib
import socket
import threading

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import keel
from conftest import MONGO_URL, MYSQL_URL, PG_URL, unique_name, wait_until
from keel.fastapi import Keel

DEAD_SECRET = "HealthS3cretPw"
DEAD = {"url": f"postgresql://postgres:{DEAD_SECRET}@127.0.0.1:1/x", "connect_timeout": 2}
DEAD_MYSQL = {"url": f"mysql://root:{DEAD_SECRET}@127.0.0.1:1/x", "connect_timeout": 2}


def assert_tells_nothing_of_the_server(text):
    """A health answer open to anyone names no host, port, user or password of a database."""
    for secret in (DEAD_SECRET, "127.0.0.1", "port 1", "root", "postgres@", "user"):
        assert secret not in text, (secret, text)


class Item(BaseModel):
    id: int
    name: str


def build_app(db, table):
    kf = Keel(db)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with kf.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def get_item(item_id: int, conn=Depends(kf.connection())):
        row = await conn.fetchrow(f"SELECT id, name FROM {table} WHERE id = $1", item_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such item")
        return {"id": row["id"], "name": row["name"], "in_transaction": conn.in_transaction,
                "database": conn.database}

    @app.get("/count")
    async def count(conn=Depends(kf.connection("main"))):
        return {"count": await conn.fetchval(f"SELECT count(*) FROM {table}")}

    @app.post("/items")
    async def create(item: Item, conn=Depends(kf.transaction())):
        assert conn.in_transaction
        await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item.id, item.name)
        if item.name == "boom":
            raise RuntimeError("the handler failed after writing")
        if item.name == "conflict":
            raise HTTPException(status_code=409, detail="refused after writing")
        return {"created": item.id}

    @app.post("/items/unanswerable", response_model=Item)
    async def unanswerable(item: Item, conn=Depends(kf.transaction())):
        await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item.id, item.name)
        return {"id": "not a number"}  # fails the response model, after the write

    @app.get("/stream")
    async def stream(conn=Depends(kf.connection(scope="request"))):
        async def lines():
            for row in await conn.fetch(f"SELECT id, name FROM {table} ORDER BY id"):
                yield f"{row['id']} {row['name']}\n"
                await asyncio.sleep(0)
            # Still leased while the response streams, and usable.
            yield f"leased {db.pool_stats()['leased']} {await conn.fetchval('SELECT 1')}\n"

        return StreamingResponse(lines(), media_type="text/plain")

    @app.get("/slow/{n}")
    async def slow(n: int, conn=Depends(kf.connection())):
        leased = db.pool_stats()["leased"]
        value = await conn.fetchval("SELECT $1 + 0", n)
        await asyncio.sleep(0.005)
        return {"n": value, "leased": leased}

    app.include_router(kf.health_router())
    return app, kf


@contextlib.asynccontextmanager
async def serve(db, types):
    table = unique_name("items")
    app, kf = build_app(db, table)
    async with kf.lifespan(app):
        await db.execute(f"CREATE TABLE {table} (id {types['int']} PRIMARY KEY, name TEXT NOT NULL)")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client, table
        finally:
            await db.execute(f"DROP TABLE IF EXISTS {table}")


async def leased_back_to_zero(db, name=None):
    await wait_until(lambda: db.pool_stats(name)["leased"] == 0, timeout=5)


async def test_connection_dependency(make_db, types):
    db = make_db()
    async with serve(db, types) as (client, table):
        await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'first ü')")
        r = await client.get("/items/1")
        assert r.status_code == 200
        assert r.json() == {"id": 1, "name": "first ü", "in_transaction": False, "database": "main"}
        assert (await client.get("/items/2")).status_code == 404
        assert (await client.get("/count")).json() == {"count": 1}
        await leased_back_to_zero(db)


async def test_transaction_dependency_commits(make_db, types):
    db = make_db()
    async with serve(db, types) as (client, table):
        r = await client.post("/items", json={"id": 5, "name": "five"})
        assert r.status_code == 200 and r.json() == {"created": 5}
        await leased_back_to_zero(db)
        assert await db.fetchval(f"SELECT name FROM {table} WHERE id = 5") == "five"
        assert (await client.get("/items/5")).json()["name"] == "five"


async def test_transaction_dependency_rolls_back_when_the_handler_raises(make_db, types):
    db = make_db()
    async with serve(db, types) as (client, table):
        r = await client.post("/items", json={"id": 6, "name": "boom"})
        assert r.status_code == 500
        await leased_back_to_zero(db)
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
        r = await client.post("/items", json={"id": 7, "name": "conflict"})
        assert r.status_code == 409
        await leased_back_to_zero(db)
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
        # The connections that went back are clean: the next request works and commits.
        assert (await client.post("/items", json={"id": 8, "name": "ok"})).status_code == 200
        assert (await client.get("/count")).json() == {"count": 1}
        await leased_back_to_zero(db)


async def test_transaction_dependency_rolls_back_on_a_database_error(make_db, types):
    db = make_db()
    async with serve(db, types) as (client, table):
        assert (await client.post("/items", json={"id": 1, "name": "one"})).status_code == 200
        r = await client.post("/items", json={"id": 1, "name": "again"})
        assert r.status_code == 500
        await leased_back_to_zero(db)
        assert [tuple(x) for x in await db.fetch(f"SELECT id, name FROM {table}")] == [(1, "one")]


async def test_transaction_rolls_back_when_the_response_cannot_be_built(make_db, types):
    # The response is built (and validated) before the commit: one that fails is rolled back.
    db = make_db()
    async with serve(db, types) as (client, table):
        r = await client.post("/items/unanswerable", json={"id": 3, "name": "three"})
        assert r.status_code == 500
        await leased_back_to_zero(db)
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_connection_of_request_scope_serves_a_streaming_response(make_db, types):
    db = make_db()
    async with serve(db, types) as (client, table):
        await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b')")
        r = await client.get("/stream")
        assert r.status_code == 200
        assert r.text == "1 a\n2 b\nleased 1 1\n"
        await leased_back_to_zero(db)


def test_connection_scope_is_checked():
    kf = Keel(keel.Database("sqlite::memory:"))
    with pytest.raises(ValueError, match="scope is \"function\" or \"request\", not 'session'"):
        kf.connection(scope="session")


async def test_health_live_and_ready(make_db, types, engine):
    db = make_db()
    async with serve(db, types) as (client, _):
        r = await client.get("/health/live")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = await client.get("/health/ready")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok"
        assert set(body["databases"]) == {"main"}
        main = body["databases"]["main"]
        assert main["status"] == "ok" and main["engine"] == engine
        assert isinstance(main["latency_ms"], float) and main["latency_ms"] >= 0
        await leased_back_to_zero(db)


async def test_health_ready_names_a_failing_database(make_db, types, engine):
    db = make_db(extra={"broken": DEAD})
    async with serve(db, types) as (client, _):
        r = await asyncio.wait_for(client.get("/health/ready"), 15)
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable"
        assert body["databases"]["main"]["status"] == "ok"
        assert body["databases"]["main"]["engine"] == engine
        # The class of the error only: its message names the host, port and user.
        assert body["databases"]["broken"] == {
            "status": "error", "engine": "postgresql", "error": "ConnectError"}
        assert_tells_nothing_of_the_server(r.text)
        # Liveness does not depend on the databases.
        assert (await client.get("/health/live")).status_code == 200
        await leased_back_to_zero(db)


async def test_two_hundred_concurrent_requests_on_a_pool_of_five(make_db, types):
    db = make_db(pool={"min_size": 1, "max_size": 5, "acquire_timeout": 30})
    async with serve(db, types) as (client, _):
        responses = await asyncio.wait_for(
            asyncio.gather(*(client.get(f"/slow/{i}") for i in range(200))), 60)
        assert [r.status_code for r in responses] == [200] * 200
        assert [r.json()["n"] for r in responses] == list(range(200))
        assert max(r.json()["leased"] for r in responses) <= 5
        stats = db.pool_stats()
        assert stats["size"] <= 5
        await leased_back_to_zero(db)


async def test_lifespan_starts_and_closes_the_database(make_db):
    db = make_db()
    table = unique_name("items")
    app, kf = build_app(db, table)
    async with kf.lifespan(app):
        # Entering the lifespan starts the database: its pool opens min_size connections.
        await wait_until(lambda: db.pool_stats()["idle"] >= 1)
        assert await db.fetchval("SELECT 1") == 1
        assert db.pool_stats()["leased"] == 0
    # Leaving it closes the database; closing again is harmless.
    await db.close()


async def test_shutdown_closes_a_listener_left_open_after_close_timeout():
    # A background task started in the application's lifespan listens for ever: shutdown still
    # ends (the server stops), after close_timeout, and the task's iteration ends with
    # InterfaceError.
    db = keel.Database({"default": "main", "databases": {"main": {"url": PG_URL}}})
    kf = Keel(db, close_timeout=0.3)
    ended = {}

    async def consume():
        try:
            async for _ in db.listen(unique_name("jobs")):
                pass
        except keel.InterfaceError as exc:
            ended["error"] = exc

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with kf.lifespan(app):
            task = asyncio.create_task(consume())
            yield
        await asyncio.wait_for(task, 10)

    app = FastAPI(lifespan=lifespan)

    @app.get("/leased")
    async def leased():
        return db.pool_stats()["leased"]

    async with served(app) as client:
        await wait_until_async(lambda: leased_of(client), 1)
    assert db.closed
    assert "database 'main' was closed while this connection listened" in str(ended["error"])


async def leased_of(client):
    return (await client.get("/leased")).json()


def test_close_timeout_is_checked():
    db = keel.Database("sqlite::memory:")
    assert Keel(db).close_timeout == 10.0 and Keel(db, close_timeout=None).close_timeout is None
    with pytest.raises(ValueError, match=r"close\(timeout=\) must be 0 or more seconds"):
        Keel(db, close_timeout=-1)


def health_app(db, **options):
    kf = Keel(db)
    app = FastAPI(lifespan=kf.lifespan)
    app.include_router(kf.health_router(**options))
    return app, kf


@contextlib.asynccontextmanager
async def health_client(db, **options):
    app, kf = health_app(db, **options)
    async with kf.lifespan(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def every_engine(tmp_path):
    """One database per engine: name → (config entry, engine name). MongoDB unless disabled."""
    databases = {
        "pg": ({"url": PG_URL}, "postgresql"),
        "mysql": ({"url": MYSQL_URL}, "mysql"),
        "local": ({"url": "sqlite:///" + str(tmp_path / "local.db")}, "sqlite"),
    }
    if MONGO_URL:
        databases["docs"] = ({"url": MONGO_URL}, "mongodb")
    return databases


async def test_health_ready_covers_every_engine(tmp_path):
    # Like `keel check`: one status per configured database, whatever its engine.
    databases = every_engine(tmp_path)
    db = keel.Database({"default": "pg", "databases": {n: e for n, (e, _) in databases.items()}})
    try:
        async with health_client(db) as client:
            r = await asyncio.wait_for(client.get("/health/ready"), 30)
            body = r.json()
            assert r.status_code == 200, body
            assert body["status"] == "ok"
            assert set(body["databases"]) == set(databases)
            for name, (_, engine) in databases.items():
                entry = body["databases"][name]
                assert entry["status"] == "ok" and entry["engine"] == engine, (name, entry)
                assert isinstance(entry["latency_ms"], float) and entry["latency_ms"] >= 0
            for name in databases:
                await leased_back_to_zero(db, name)
    finally:
        await asyncio.wait_for(db.close(), 30)


async def test_health_ready_names_failing_databases_of_each_engine(tmp_path):
    healthy = every_engine(tmp_path)
    config = {n: e for n, (e, _) in healthy.items()}
    config.update({"broken_pg": DEAD, "broken_mysql": DEAD_MYSQL})
    db = keel.Database({"default": "mysql", "databases": config})
    try:
        async with health_client(db) as client:
            r = await asyncio.wait_for(client.get("/health/ready"), 30)
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "unavailable"
            for name, (_, engine) in healthy.items():
                assert body["databases"][name]["status"] == "ok", (name, body["databases"][name])
                assert body["databases"][name]["engine"] == engine
            for name, engine in (("broken_pg", "postgresql"), ("broken_mysql", "mysql")):
                assert body["databases"][name] == {
                    "status": "error", "engine": engine, "error": "ConnectError"}
            assert_tells_nothing_of_the_server(r.text)
            assert (await client.get("/health/live")).status_code == 200
            for name in healthy:
                await leased_back_to_zero(db, name)
    finally:
        await asyncio.wait_for(db.close(), 30)


# ---- against a real server: uvicorn on a loopback port, requests over TCP ----
#
# httpx's ASGITransport waits for the whole ASGI call, clean-ups included, before it hands over
# the response, so it cannot show what a client sees when a dependency's clean-up runs after
# the response went out. These tests serve the application with uvicorn in a thread of its own
# (its own event loop and Database, as in production) and talk to it over a socket.


@contextlib.asynccontextmanager
async def served(app):
    """Serves app with uvicorn on a free loopback port; yields an httpx client of it."""
    # Port 0: the system picks a free port; uvicorn's own socket gets TCP_NODELAY from asyncio.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, loop="asyncio",
                                           lifespan="on", log_level="warning", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="uvicorn",
                              daemon=True)
    thread.start()
    try:
        await wait_until(lambda: server.started or not thread.is_alive(), timeout=30)
        assert server.started, "uvicorn did not start (see the log above)"
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 60)
    assert not thread.is_alive(), "uvicorn did not stop"


# The session id of the connection a statement runs on, and how another session ends it.
OWN_SESSION = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
END_SESSION = {
    # Waits (up to 30 s) until the backend has exited.
    "postgresql": "SELECT pg_terminate_backend({id}, 30000)",
    "mysql": "KILL CONNECTION {id}",
}
SESSION_GONE = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE pid = {id}",
    "mysql": "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = {id}",
}


async def wait_until_async(query, expect, timeout=30.0):
    """Awaits query() until it returns expect (fails after timeout seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await query()) != expect:
        assert asyncio.get_running_loop().time() < deadline, f"still {value!r}, not {expect!r}"
        await asyncio.sleep(0.01)


class AtResponseStart:
    """ASGI middleware: when a response starts going out, its headers get what another session
    sees at that moment: x-rows, the number of rows of table, and x-leased, the number of
    connections leased from the pool."""

    def __init__(self, app, db, table):
        self.app, self.db, self.table = app, db, table

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_state(message):
            if message["type"] == "http.response.start":
                leased = self.db.pool_stats()["leased"]
                rows = await self.db.fetchval(f"SELECT count(*) FROM {self.table}")
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-rows", str(rows).encode()),
                                                  (b"x-leased", str(leased).encode())]}
            await send(message)

        await self.app(scope, receive, send_with_state)


def service(url, table, *, engine=None, links=None, pool=None, probe=True):
    """A small service on its own Database: POST /items (kf.transaction()), GET /items/{id}
    (kf.connection()), POST /links (a row whose foreign key is checked at COMMIT), POST /doomed
    (the transaction's session is ended by another one before the commit), GET /stats; with
    probe, the AtResponseStart headers (which take a second connection at each response)."""
    entry = {"url": url}
    if pool is not None:
        entry["pool"] = pool
    db = keel.Database({"default": "main", "databases": {"main": entry}})
    kf = Keel(db)
    app = FastAPI(lifespan=kf.lifespan)
    if probe:
        app.add_middleware(AtResponseStart, db=db, table=table)

    @app.post("/items", status_code=201)
    async def create(item: Item, conn=Depends(kf.transaction())):
        await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item.id, item.name)
        return {"created": item.id}

    @app.get("/items/{item_id}")
    async def read(item_id: int, conn=Depends(kf.connection())):
        row = await conn.fetchrow(f"SELECT id, name FROM {table} WHERE id = $1", item_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such item")
        return dict(row)

    @app.post("/links", status_code=201)
    async def link(item: Item, conn=Depends(kf.transaction())):
        # links.item_id references items.id, checked at COMMIT (deferred).
        await conn.execute(f"INSERT INTO {links} (id, item_id) VALUES ($1, $2)",
                           item.id, int(item.name))
        return {"created": item.id}

    @app.post("/doomed", status_code=201)
    async def doomed(item: Item, conn=Depends(kf.transaction())):
        await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item.id, item.name)
        session = int(await conn.fetchval(OWN_SESSION[engine]))
        await db.execute(END_SESSION[engine].format(id=session))
        await wait_until_async(
            lambda: db.fetchval(SESSION_GONE[engine].format(id=session)), expect=0)
        return {"created": item.id}

    @app.post("/caught", status_code=201)
    async def caught(item: Item, conn=Depends(kf.transaction())):
        # A statement fails and its error is caught: PostgreSQL has aborted the transaction.
        await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item.id, item.name)
        try:
            await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item.id, "dup")
        except keel.IntegrityError:
            pass
        return {"created": item.id}

    @app.get("/stats")
    async def stats():
        return db.pool_stats()

    app.include_router(kf.health_router())
    return app


async def test_transaction_commits_before_the_response_is_sent(make_db, types, db_url):
    # A client that reads right after its write was answered must see the write, every time:
    # the transaction is committed, and its connection back in the pool, before the response
    # starts going out (x-rows and x-leased are read by another session at that moment).
    db = make_db()
    await db.start()
    table = unique_name("items")
    await db.execute(f"CREATE TABLE {table} (id {types['int']} PRIMARY KEY, name TEXT NOT NULL)")
    try:
        async with served(service(db_url, table)) as client:
            missed, posted, read = [], [], []
            for i in range(300):
                r = await client.post("/items", json={"id": i, "name": f"n{i}"})
                assert r.status_code == 201, r.text
                posted.append((int(r.headers["x-rows"]), int(r.headers["x-leased"])))
                r = await client.get(f"/items/{i}")
                if r.status_code != 200:
                    missed.append(i)
                read.append(int(r.headers["x-leased"]))
            assert missed == [], f"{len(missed)} of 300 reads missed the committed row"
            assert posted == [(i + 1, 0) for i in range(300)]
            # kf.connection() too gives its connection back before the response.
            assert read == [0] * 300
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 300
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {table}")


# A foreign key checked at COMMIT. MySQL/MariaDB checks every constraint at once: it has no
# deferred constraint, and its commit failure is shown by the ended session below.
DEFERRED_FK = {
    "postgresql": "REFERENCES {items} (id) DEFERRABLE INITIALLY DEFERRED",
    "sqlite": "REFERENCES {items} (id) DEFERRABLE INITIALLY DEFERRED",
}


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
async def test_a_commit_refused_by_a_deferred_constraint_is_answered_409(make_db, types,
                                                                        db_url, engine, caplog):
    db = make_db()
    await db.start()
    items, links = unique_name("items"), unique_name("links")
    await db.execute(f"CREATE TABLE {items} (id {types['int']} PRIMARY KEY, name TEXT NOT NULL)")
    await db.execute(f"CREATE TABLE {links} (id {types['int']} PRIMARY KEY,"
                     f" item_id {types['int']} NOT NULL {DEFERRED_FK[engine].format(items=items)})")
    try:
        # One connection: the one whose commit failed is the one the next requests get.
        app = service(db_url, items, links=links, pool={"min_size": 1, "max_size": 1},
                      probe=False)
        async with served(app) as client:
            # The INSERT succeeds (the check is deferred); the COMMIT does not.
            r = await client.post("/links", json={"id": 1, "name": "404"})
            assert r.status_code == 409, r.text
            assert r.json() == {"detail": {"error": "commit failed",
                                           "class": "ForeignKeyViolationError",
                                           "sqlstate": "23503", "database": "main"}}
            assert await db.fetchval(f"SELECT count(*) FROM {links}") == 0
            # The server's message goes to the log, not to the client.
            logged = [r for r in caplog.records if r.name == "keel.fastapi"]
            assert len(logged) == 1 and logged[0].levelname == "WARNING"
            assert "ForeignKeyViolationError" in logged[0].getMessage()
            # The pool is healthy: the connection is back, clean, and serves the next requests.
            assert (await client.get("/stats")).json()["leased"] == 0
            assert (await client.get("/health/ready")).status_code == 200
            assert (await client.post("/items", json={"id": 7, "name": "seven"})).status_code == 201
            assert (await client.post("/links", json={"id": 2, "name": "7"})).status_code == 201
            assert (await client.get("/items/7")).json() == {"id": 7, "name": "seven"}
            stats = (await client.get("/stats")).json()
            assert stats["leased"] == 0 and stats["size"] == 1
        assert [tuple(r) for r in await db.fetch(f"SELECT id, item_id FROM {links}")] == [(2, 7)]
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {links}")
        await db.execute(f"DROP TABLE IF EXISTS {items}")


async def test_a_transaction_with_a_caught_error_is_not_answered_as_committed(make_db, types,
                                                                              db_url, engine):
    # PostgreSQL rolls back a block in which a statement failed, even when the handler caught
    # the error: the request is answered 500 (CommitFailed), not with the handler's 201 (trial
    # finding T20). MySQL and SQLite undo only the failed statement and commit the rest.
    db = make_db()
    await db.start()
    table = unique_name("items")
    await db.execute(f"CREATE TABLE {table} (id {types['int']} PRIMARY KEY, name TEXT NOT NULL)")
    try:
        app = service(db_url, table, pool={"min_size": 1, "max_size": 1}, probe=False)
        async with served(app) as client:
            r = await client.post("/caught", json={"id": 1, "name": "one"})
            if engine == "postgresql":
                assert r.status_code == 500, r.text
                assert r.json() == {"detail": {"error": "commit failed", "class": "InternalError",
                                               "sqlstate": "25P02", "database": "main"}}
                assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
            else:
                assert r.status_code == 201, r.text
                assert await db.fetchval(f"SELECT count(*) FROM {table}") == 1
            # The connection is back in the pool, clean, and serves the next request.
            assert (await client.post("/items", json={"id": 2, "name": "two"})).status_code == 201
            assert (await client.get("/stats")).json()["leased"] == 0
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
async def test_a_commit_on_a_lost_connection_is_answered_503(make_db, types, db_url, engine):
    db = make_db()
    await db.start()
    table = unique_name("items")
    await db.execute(f"CREATE TABLE {table} (id {types['int']} PRIMARY KEY, name TEXT NOT NULL)")
    try:
        app = service(db_url, table, engine=engine, pool={"min_size": 1, "max_size": 2},
                      probe=False)
        async with served(app) as client:
            # The handler writes, then its session is ended by another one: COMMIT fails.
            r = await client.post("/doomed", json={"id": 1, "name": "lost"})
            assert r.status_code == 503, r.text
            detail = r.json()["detail"]
            assert detail["error"] == "commit failed" and detail["database"] == "main"
            # Lost, or told why first (57P01 "terminating connection"): either is unavailable.
            assert detail["class"] in ("ConnectionLost", "OperationalError"), detail
            assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
            # The broken connection was dropped; the pool opens another and serves on.
            assert (await client.post("/items", json={"id": 2, "name": "ok"})).status_code == 201
            assert (await client.get("/items/2")).status_code == 200
            assert (await client.get("/stats")).json()["leased"] == 0
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 1
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {table}")


async def test_a_commit_refused_as_a_serialization_failure_is_answered_409(pg_db):
    # Two SERIALIZABLE transactions that each read what the other writes: PostgreSQL lets the
    # first COMMIT through and refuses the second (SQLSTATE 40001), after both handlers returned.
    table = unique_name("items")
    await pg_db.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
    db = keel.Database(PG_URL)
    kf = Keel(db)
    app = FastAPI(lifespan=kf.lifespan)
    both_read, both_wrote = asyncio.Barrier(2), asyncio.Barrier(2)

    @app.post("/items", status_code=201)
    async def create(item: Item, conn=Depends(kf.transaction())):
        await conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        count = await conn.fetchval(f"SELECT count(*) FROM {table}")
        await asyncio.wait_for(both_read.wait(), 30)
        await conn.execute(f"INSERT INTO {table} (id, name) VALUES ($1, $2)", item.id, str(count))
        await asyncio.wait_for(both_wrote.wait(), 30)
        return {"created": item.id}

    try:
        async with served(app) as client:
            answers = await asyncio.gather(*(client.post("/items", json={"id": i, "name": "x"})
                                             for i in (1, 2)))
            assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
            refused = next(r for r in answers if r.status_code == 409)
            assert refused.json() == {"detail": {"error": "commit failed", "class": "InternalError",
                                                 "sqlstate": "40001", "database": "default"}}
        assert await pg_db.fetchval(f"SELECT count(*) FROM {table}") == 1
    finally:
        await pg_db.execute(f"DROP TABLE IF EXISTS {table}")


async def test_health_ready_with_detail_gives_the_redacted_messages(tmp_path):
    healthy = every_engine(tmp_path)
    config = {n: e for n, (e, _) in healthy.items()}
    config.update({"broken_pg": DEAD, "broken_mysql": DEAD_MYSQL})
    db = keel.Database({"default": "local", "databases": config})
    try:
        async with health_client(db, detail=True) as client:
            r = await asyncio.wait_for(client.get("/health/ready"), 30)
            assert r.status_code == 503
            body = r.json()
            for name in healthy:
                assert body["databases"][name]["status"] == "ok"
                assert "message" not in body["databases"][name]
            for name, engine in (("broken_pg", "postgresql"), ("broken_mysql", "mysql")):
                broken = body["databases"][name]
                assert set(broken) == {"status", "engine", "error", "message"}, broken
                assert broken["error"] == "ConnectError" and broken["engine"] == engine
                # The operator's view: where it tried to connect, never the password.
                assert "127.0.0.1" in broken["message"], broken
            assert DEAD_SECRET not in r.text
            for name in healthy:
                await leased_back_to_zero(db, name)
    finally:
        await asyncio.wait_for(db.close(), 30)


@pytest.mark.parametrize("detail", [False, True])
async def test_health_ready_reports_a_silent_database_as_a_timeout(tmp_path, detail):
    # A server that accepts connections and never answers: the ping runs out of time.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        db = keel.Database({"default": "local", "databases": {
            "local": {"url": "sqlite:///" + str(tmp_path / "local.db")},
            "silent": {"url": f"postgresql://postgres:{DEAD_SECRET}@127.0.0.1:{port}/x",
                       "connect_timeout": 2}}})
        try:
            async with health_client(db, timeout=0.5, detail=detail) as client:
                r = await asyncio.wait_for(client.get("/health/ready"), 30)
                assert r.status_code == 503
                expected = {"status": "error", "engine": "postgresql", "error": "TimeoutError"}
                if detail:
                    expected["message"] = "no answer within 0.5 s"
                assert r.json()["databases"]["silent"] == expected
                assert r.json()["databases"]["local"]["status"] == "ok"
                assert DEAD_SECRET not in r.text and str(port) not in r.text
        finally:
            await asyncio.wait_for(db.close(), 30)
    finally:
        silent.close()
