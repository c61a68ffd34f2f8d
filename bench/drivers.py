# bench/drivers.py - opening and closing keel and the peer drivers the way their users do.
"""Connections and pools of every driver measured, as async context managers.

Each peer is configured as its documentation recommends for speed where that changes no
semantics: psycopg runs in autocommit (keel and asyncpg do not wrap single statements in a
transaction either) and prepares repeated statements (its default prepare_threshold). asyncpg's
pool keeps its default reset on release unless a workload asks for the variant without it.
Peers are imported inside the functions, so a run without them installed still runs keel.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

POOL_FILL_TIMEOUT = 30.0

_PG_PARAM = re.compile(r"\$\d+")


def pyformat(sql: str) -> str:
    """$1 … $n → %s (psycopg). Only for the harness's own statements, which hold no literal $."""
    return _PG_PARAM.sub("%s", sql)


def qmark(sql: str) -> str:
    """$1 … $n → ? (sqlite3, aiosqlite)."""
    return _PG_PARAM.sub("?", sql)


async def _wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + POOL_FILL_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {POOL_FILL_TIMEOUT:g} s")
        await asyncio.sleep(0.005)


# ---- keel ----

@contextlib.asynccontextmanager
async def keel_db(url: str, pool_size: int) -> AsyncIterator[Any]:
    """A started keel.Database with one database whose pool holds pool_size open connections."""
    import keel
    db = keel.Database({
        "default": "main",
        "databases": {"main": {"url": url, "pool": {
            "min_size": pool_size, "max_size": pool_size, "acquire_timeout": 30}}},
    })
    await db.start()
    try:
        # A query first: start() opens connections in the background and does not report a dead
        # server, so this is where a wrong URL is reported.
        await db.execute("SELECT 1")
        await _wait_until(lambda: db.pool_stats()["size"] >= pool_size,
                          f"keel pool of {pool_size}")
        yield db
    finally:
        await asyncio.wait_for(db.close(), 60)


@contextlib.asynccontextmanager
async def keel_conn(url: str) -> AsyncIterator[Any]:
    """One leased keel connection (pool of one)."""
    async with keel_db(url, 1) as db:
        async with db.connection() as conn:
            yield conn


# ---- asyncpg ----

async def _no_reset(conn: Any) -> None:
    """asyncpg pool reset hook that skips the reset query (its release then costs no round trip)."""


@contextlib.asynccontextmanager
async def asyncpg_conn(url: str, json_codec: bool = False) -> AsyncIterator[Any]:
    import asyncpg
    conn = await asyncpg.connect(url)
    try:
        if json_codec:
            await _asyncpg_json(conn)
        yield conn
    finally:
        await conn.close()


async def _asyncpg_json(conn: Any) -> None:
    """Decodes json/jsonb to Python objects, as keel and psycopg do (asyncpg's default is str)."""
    import json
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads,
                                  schema="pg_catalog")


@contextlib.asynccontextmanager
async def asyncpg_pool(url: str, size: int, reset: bool = True) -> AsyncIterator[Any]:
    import asyncpg
    kw: dict[str, Any] = {} if reset else {"reset": _no_reset}
    pool = await asyncpg.create_pool(url, min_size=size, max_size=size, **kw)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), 60)


# ---- psycopg ----

@contextlib.asynccontextmanager
async def psycopg_conn(url: str) -> AsyncIterator[Any]:
    import psycopg
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def psycopg_pool(url: str, size: int) -> AsyncIterator[Any]:
    import psycopg_pool
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=size, max_size=size,
                                            kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True, timeout=POOL_FILL_TIMEOUT)
    try:
        yield pool
    finally:
        await pool.close(timeout=60)


# ---- aiosqlite ----

@contextlib.asynccontextmanager
async def aiosqlite_conn(path: Path) -> AsyncIterator[Any]:
    import aiosqlite
    conn = await aiosqlite.connect(str(path))
    try:
        yield conn
    finally:
        await conn.close()


class QueuePool:
    """The pool an aiosqlite user writes (aiosqlite has none): open connections in a queue."""

    def __init__(self, conns: list[Any]) -> None:
        self.conns = conns
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        for c in conns:
            self.queue.put_nowait(c)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        conn = await self.queue.get()
        try:
            yield conn
        finally:
            self.queue.put_nowait(conn)


@contextlib.asynccontextmanager
async def aiosqlite_pool(path: Path, size: int) -> AsyncIterator[QueuePool]:
    import aiosqlite
    conns: list[Any] = []
    try:
        for _ in range(size):
            conns.append(await aiosqlite.connect(str(path)))
        yield QueuePool(conns)
    finally:
        for c in conns:
            await c.close()


# ---- MariaDB: aiomysql, asyncmy (workload 9) ----

def _mysql_kwargs(url: str) -> dict[str, Any]:
    from .data import mysql_parts
    m = mysql_parts(url)
    # autocommit: keel runs a single statement on its own, not in an open transaction.
    return {"host": m["host"], "port": m["port"], "user": m["user"], "password": m["password"],
            "db": m["database"], "autocommit": True}


@contextlib.asynccontextmanager
async def aiomysql_conn(url: str) -> AsyncIterator[Any]:
    import aiomysql
    conn = await aiomysql.connect(**_mysql_kwargs(url))
    try:
        yield conn
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def aiomysql_pool(url: str, size: int) -> AsyncIterator[Any]:
    import aiomysql
    pool = await aiomysql.create_pool(minsize=size, maxsize=size, **_mysql_kwargs(url))
    try:
        yield pool
    finally:
        pool.close()
        await asyncio.wait_for(pool.wait_closed(), 60)


@contextlib.asynccontextmanager
async def asyncmy_conn(url: str) -> AsyncIterator[Any]:
    import asyncmy
    conn = await asyncmy.connect(**_mysql_kwargs(url))
    try:
        yield conn
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def asyncmy_pool(url: str, size: int) -> AsyncIterator[Any]:
    import asyncmy
    pool = await asyncmy.create_pool(minsize=size, maxsize=size, **_mysql_kwargs(url))
    try:
        yield pool
    finally:
        pool.close()
        await asyncio.wait_for(pool.wait_closed(), 60)


# ---- MongoDB: keel, pymongo's AsyncMongoClient (workload 9) ----

@contextlib.asynccontextmanager
async def keel_mongo(url: str, pool_size: int) -> AsyncIterator[Any]:
    """A started keel.Database on MongoDB with pool_size open connections (ping, not SELECT 1,
    reports a dead server)."""
    import keel
    db = keel.Database({
        "default": "main",
        "databases": {"main": {"url": url, "pool": {
            "min_size": pool_size, "max_size": pool_size, "acquire_timeout": 30}}},
    })
    await db.start()
    try:
        await db.ping()
        await _wait_until(lambda: db.pool_stats()["size"] >= pool_size,
                          f"keel pool of {pool_size}")
        yield db
    finally:
        await asyncio.wait_for(db.close(), 60)


@contextlib.asynccontextmanager
async def pymongo_client(url: str, pool_size: int) -> AsyncIterator[Any]:
    """pymongo's native asyncio client (4.9+), its pool opened before the turn is measured."""
    from pymongo import AsyncMongoClient
    client: Any = AsyncMongoClient(url, minPoolSize=pool_size, maxPoolSize=pool_size)
    try:
        await client.admin.command("ping")
        yield client
    finally:
        await asyncio.wait_for(client.close(), 60)
