# tests/python/test_fastapi.py - keel.fastapi on every engine: dependencies, transactions, health, concurrency.
import asyncio
import contextlib

import httpx
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

import keel
from conftest import MONGO_URL, MYSQL_URL, PG_URL, unique_name, wait_until
from keel.fastapi import Keel

DEAD_SECRET = "HealthS3cretPw"
DEAD = {"url": f"postgresql://postgres:{DEAD_SECRET}@127.0.0.1:1/x", "connect_timeout": 2}
DEAD_MYSQL = {"url": f"mysql://root:{DEAD_SECRET}@127.0.0.1:1/x", "connect_timeout": 2}


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
        broken = body["databases"]["broken"]
        assert broken["status"] == "error"
        assert broken["engine"] == "postgresql"
        assert isinstance(broken["error"], str) and broken["error"]
        assert DEAD_SECRET not in r.text
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


def health_app(db):
    kf = Keel(db)
    app = FastAPI(lifespan=kf.lifespan)
    app.include_router(kf.health_router())
    return app, kf


@contextlib.asynccontextmanager
async def health_client(db):
    app, kf = health_app(db)
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
                broken = body["databases"][name]
                assert broken["status"] == "error" and broken["engine"] == engine, broken
                assert isinstance(broken["error"], str) and broken["error"]
            assert DEAD_SECRET not in r.text
            assert (await client.get("/health/live")).status_code == 200
            for name in healthy:
                await leased_back_to_zero(db, name)
    finally:
        await asyncio.wait_for(db.close(), 30)
