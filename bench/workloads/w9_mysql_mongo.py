# bench/workloads/w9_mysql_mongo.py - workload 9: workloads 1–4 on MariaDB, and MongoDB find-one / insert-many / find-many.
"""Workload 9 of issue 4, once the MySQL and MongoDB engines landed.

MariaDB (mysql://root@127.0.0.1:3306/keel_test, or KEEL_TEST_MYSQL_URL): workloads 1–4 with
aiomysql and asyncmy as the peers, both in autocommit like keel. The tables are made by the
mariadb command-line client, not by a driver under test.

MongoDB (mongodb://127.0.0.1:27017/keel_test, or KEEL_TEST_MONGO_URL): find_one by _id (1, 32
and 128 tasks on pools of 10, 10 and 32), insert_one and update_one by _id (32 tasks, pool 10),
insert_many of 10,000 documents, and find of 1000 documents to a list, with pymongo's
AsyncMongoClient (4.9+) as the peer. The collections are filled once by
keel, untimed, and reused while their document count is right."""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import data
from ..core import ROLE_KEEL, ROLE_PEER, AsyncContender, Case, Plan, Target
from ..drivers import (aiomysql_conn, aiomysql_pool, asyncmy_conn, asyncmy_pool, keel_conn,
                       keel_db, keel_mongo, pymongo_client, pyformat)
from ..env import Ctx
from ..floors import mariadb_c_floor, mongo_c_floor
from . import Workload
from .w4_insert import COLUMNS, VALUES_CHUNK, insert_sql, make_rows, values_batches

MYSQL_URL = os.environ.get("KEEL_TEST_MYSQL_URL", data.MYSQL_DEFAULT_URL)
MONGO_URL = os.environ.get("KEEL_TEST_MONGO_URL", data.MONGO_DEFAULT_URL)
MONGO_DB = MONGO_URL.rsplit("/", 1)[-1].split("?", 1)[0] or "keel_test"
PEERS_SQL = (("aiomysql", aiomysql_conn, aiomysql_pool), ("asyncmy", asyncmy_conn, asyncmy_pool))
# Pool cases of the MariaDB point select and the MongoDB find_one: (tasks, pool size), as in
# workload 2.
POOL_CASES = ((1, 10), (32, 10), (128, 32))
# The MongoDB single-document writes: tasks on a pool of 10.
MONGO_WRITE_TASKS = 32

Op = Callable[[int], Any]


# ---- MariaDB ----

def _sql_peers(session_for: Callable[[str, Any, Any], Any]) -> list[AsyncContender]:
    return [AsyncContender(name, ROLE_PEER, session_for(name, conn, pool), requires=(name,))
            for name, conn, pool in PEERS_SQL]


def mysql_roundtrip(ctx: Ctx) -> Case:
    url = MYSQL_URL

    @contextlib.asynccontextmanager
    async def keel_session(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            fetchval = conn.fetchval
            yield lambda i: fetchval("SELECT 1")

    def peer(name: str, conn_cm: Any, pool_cm: Any) -> Any:
        @contextlib.asynccontextmanager
        async def session(plan: Plan) -> AsyncIterator[Op]:
            async with conn_cm(url) as conn:
                async with conn.cursor() as cur:
                    async def op(i: int) -> Any:
                        await cur.execute("SELECT 1")
                        return await cur.fetchone()
                    yield op
        return session

    return Case(workload=9, key="w9.mysql.roundtrip", title="round trip SELECT 1",
                engine="mysql", params="1 task, 1 connection", concurrency=1,
                target=Target(1.2),
                contenders=[AsyncContender("keel", ROLE_KEEL, keel_session), *_sql_peers(peer),
                            mariadb_c_floor(url, ["query", "SELECT 1"])])


def mysql_point(ctx: Ctx) -> list[Case]:
    url = MYSQL_URL
    table = data.mysql_points(ctx, url)
    sql = f"SELECT id, a, b, c FROM {table} WHERE id = $1"
    psql = pyformat(sql)
    ids = ctx.ids(ctx.settings.points_rows)
    mask = len(ids) - 1
    cases = []
    for tasks, size in POOL_CASES:
        def keel_session_for(size: int) -> Any:
            @contextlib.asynccontextmanager
            async def session(plan: Plan) -> AsyncIterator[Op]:
                async with keel_db(url, size) as db:
                    fetchrow = db.fetchrow
                    yield lambda i: fetchrow(sql, ids[i & mask])
            return session

        def peer_for(size: int) -> Any:
            def peer(name: str, conn_cm: Any, pool_cm: Any) -> Any:
                @contextlib.asynccontextmanager
                async def session(plan: Plan) -> AsyncIterator[Op]:
                    async with pool_cm(url, size) as pool:
                        async def op(i: int) -> Any:
                            async with pool.acquire() as conn:
                                async with conn.cursor() as cur:
                                    await cur.execute(psql, (ids[i & mask],))
                                    return await cur.fetchone()
                        yield op
                return session
            return peer

        cases.append(Case(
            workload=9, key=f"w9.mysql.point.c{tasks}.p{size}",
            title="point select by primary key", engine="mysql",
            params=f"{tasks} tasks, pool {size}", concurrency=tasks, target=Target(1.2),
            contenders=[AsyncContender("keel", ROLE_KEEL, keel_session_for(size)),
                        *_sql_peers(peer_for(size)),
                        mariadb_c_floor(url, ["point", sql.replace("$1", "?"),
                                              str(ctx.settings.points_rows)],
                                        connections=min(tasks, size))]))
    return cases


def mysql_fetch(ctx: Ctx) -> Case:
    url = MYSQL_URL
    table = data.mysql_mixed(ctx, url)
    sql = f"SELECT {data.MIXED_COLUMNS} FROM {table}"
    n = ctx.settings.mixed_rows

    @contextlib.asynccontextmanager
    async def keel_session(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            fetch = conn.fetch
            yield lambda i: fetch(sql)

    # MariaDB sends JSON as LONGTEXT, which the peers return as str and keel decodes, as it does
    # on PostgreSQL. As asyncpg gets json codecs in workload 3, the peers decode the last column
    # (doc) with json.loads, so that every driver builds the same objects; they have no codec
    # hook for a column of MariaDB's JSON, so it is done on the rows fetchall returns.
    loads = json.loads

    def peer(name: str, conn_cm: Any, pool_cm: Any) -> Any:
        @contextlib.asynccontextmanager
        async def session(plan: Plan) -> AsyncIterator[Op]:
            async with conn_cm(url) as conn:
                async with conn.cursor() as cur:
                    async def op(i: int) -> Any:
                        await cur.execute(sql)
                        return [(*r[:-1], loads(r[-1])) for r in await cur.fetchall()]
                    yield op
        return session

    peers = [AsyncContender(name, ROLE_PEER, peer(name, conn, pool), requires=(name,),
                            note="doc decoded with json.loads")
             for name, conn, pool in PEERS_SQL]
    return Case(workload=9, key="w9.mysql.fetch", title=f"fetch {n} rows × 10 columns",
                engine="mysql", params="1 connection", concurrency=1, unit="rows/s",
                rows_per_op=n, target=Target(1.0),
                contenders=[AsyncContender("keel", ROLE_KEEL, keel_session), *peers,
                            mariadb_c_floor(url, ["query", sql])])


def mysql_insert(ctx: Ctx) -> list[Case]:
    url = MYSQL_URL
    table = data.mysql_insert(ctx, url)
    # MariaDB's DATETIME has no zone: every driver is given the same naive UTC timestamps.
    rows = [r[:5] + (r[5].replace(tzinfo=None),) + r[6:]
            for r in make_rows(ctx.settings.insert_rows)]
    sql = insert_sql(table)
    psql = pyformat(sql)
    truncate = f"TRUNCATE TABLE {table}"
    n = len(rows)

    @contextlib.asynccontextmanager
    async def keel_many(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            await conn.execute(truncate)

            async def op(i: int) -> None:
                async with conn.transaction():
                    await conn.executemany(sql, rows)
            yield op

    @contextlib.asynccontextmanager
    async def keel_values(plan: Plan) -> AsyncIterator[Op]:
        batches = values_batches(table, rows)
        async with keel_conn(url) as conn:
            await conn.execute(truncate)

            async def op(i: int) -> None:
                async with conn.transaction():
                    for stmt, params in batches:
                        await conn.executemany(stmt, params)
            yield op

    def peer(name: str, conn_cm: Any, pool_cm: Any) -> Any:
        # Both peers' executemany rewrites an INSERT … VALUES into multi-row statements: it is
        # their executemany and their fastest bulk path at once.
        @contextlib.asynccontextmanager
        async def session(plan: Plan) -> AsyncIterator[Op]:
            async with conn_cm(url) as conn:
                async with conn.cursor() as cur:
                    await cur.execute(truncate)

                    async def op(i: int) -> None:
                        await conn.begin()
                        await cur.executemany(psql, rows)
                        await conn.commit()
                    yield op
        return session

    common = dict(workload=9, engine="mysql", concurrency=1, unit="rows/s", rows_per_op=n,
                  target=Target(1.0), params="1 connection, one transaction")
    return [
        Case(key="w9.mysql.executemany", title=f"insert {n} rows × 7 columns: executemany",
             **common, contenders=[
                 AsyncContender("keel", ROLE_KEEL, keel_many),
                 *_sql_peers(peer),
                 mariadb_c_floor(url, ["many", table, COLUMNS, str(n)])]),
        Case(key="w9.mysql.bulk", title=f"insert {n} rows × 7 columns: fastest bulk path",
             **common, contenders=[
                 AsyncContender("keel", ROLE_KEEL, keel_values,
                                note="multi-row INSERT of 1000 rows per statement"),
                 *[AsyncContender(c.name, c.role, c.session, requires=c.requires,
                                  note="executemany (rewritten to multi-row INSERTs)")
                   for c in _sql_peers(peer)],
                 mariadb_c_floor(url, ["values", table, COLUMNS, str(n), str(VALUES_CHUNK)])]),
    ]


# ---- MongoDB ----

def point_doc(i: int) -> dict[str, Any]:
    return {"_id": i, "a": i % 1000, "b": f"row {i:08d}", "c": i * 0.25}


def mixed_doc(i: int) -> dict[str, Any]:
    base = datetime.datetime(2024, 1, 1)
    return {"_id": i, "i8": i * 1000003, "f8": i / 7.0, "t": f"row {i:08d}", "flag": i % 2 == 0,
            "ts": base + datetime.timedelta(minutes=i), "data": bytes(range(16)),
            "doc": {"id": i, "name": f"n{i}", "tags": [i % 3, i % 5]}}


async def _mongo_fill(name: str, n: int, make: Callable[[int], dict[str, Any]],
                      log: Any) -> None:
    import keel
    db = keel.Database(MONGO_URL)
    await db.start()
    try:
        coll = db.collection(name)
        if await coll.count_documents({}) == n:
            return
        log(f"  data: creating MongoDB collection {name} ({n} documents)")
        await coll.drop()
        for start in range(1, n + 1, 10_000):
            await coll.insert_many([make(i) for i in range(start, min(n, start + 9_999) + 1)])
    finally:
        await db.close()


def mongo_cases(ctx: Ctx) -> list[Case]:
    url = MONGO_URL
    n_points = ctx.settings.points_rows
    n_docs = ctx.settings.mixed_rows
    points = f"bench_points_{n_points}"
    mixed = f"bench_mixed_{n_docs}"
    asyncio.run(_mongo_fill(points, n_points, point_doc, ctx.log))
    asyncio.run(_mongo_fill(mixed, n_docs, mixed_doc, ctx.log))
    ids = ctx.ids(n_points)
    mask = len(ids) - 1
    cases = []

    for tasks, size in POOL_CASES:
        def sessions(size: int) -> tuple[Any, Any]:
            @contextlib.asynccontextmanager
            async def keel_session(plan: Plan) -> AsyncIterator[Op]:
                async with keel_mongo(url, size) as db:
                    find_one = db.collection(points).find_one
                    yield lambda i: find_one({"_id": ids[i & mask]})

            @contextlib.asynccontextmanager
            async def pymongo_session(plan: Plan) -> AsyncIterator[Op]:
                async with pymongo_client(url, size) as client:
                    find_one = client[MONGO_DB][points].find_one
                    yield lambda i: find_one({"_id": ids[i & mask]})
            return keel_session, pymongo_session

        k, p = sessions(size)
        cases.append(Case(
            workload=9, key=f"w9.mongo.find_one.c{tasks}.p{size}", title="find_one by _id",
            engine="mongodb", params=f"{tasks} tasks, pool {size}", concurrency=tasks,
            target=Target(1.2), contenders=[
                AsyncContender("keel", ROLE_KEEL, k),
                AsyncContender("pymongo", ROLE_PEER, p, requires=("pymongo",),
                               note="AsyncMongoClient"),
                mongo_c_floor(url, ["find_one", points, str(n_points)],
                              connections=min(tasks, size))]))

    # Single-document writes from many tasks: insert_one of a small fresh document (each driver
    # adds its _id), and update_one by _id of the find_one collection ($inc of a counter field
    # the other cases never read).
    one_coll = "bench_insert_one"

    @contextlib.asynccontextmanager
    async def keel_insert_one(plan: Plan) -> AsyncIterator[Op]:
        async with keel_mongo(url, 10) as db:
            coll = db.collection(one_coll)
            await coll.drop()
            insert_one = coll.insert_one
            yield lambda i: insert_one({"i": i, "b": f"row {i:08d}", "c": i * 0.25})
            await coll.drop()

    @contextlib.asynccontextmanager
    async def pymongo_insert_one(plan: Plan) -> AsyncIterator[Op]:
        async with pymongo_client(url, 10) as client:
            coll = client[MONGO_DB][one_coll]
            await coll.drop()
            insert_one = coll.insert_one
            yield lambda i: insert_one({"i": i, "b": f"row {i:08d}", "c": i * 0.25})
            await coll.drop()

    @contextlib.asynccontextmanager
    async def keel_update_one(plan: Plan) -> AsyncIterator[Op]:
        async with keel_mongo(url, 10) as db:
            update_one = db.collection(points).update_one
            yield lambda i: update_one({"_id": ids[i & mask]}, {"$inc": {"hits": 1}})

    @contextlib.asynccontextmanager
    async def pymongo_update_one(plan: Plan) -> AsyncIterator[Op]:
        async with pymongo_client(url, 10) as client:
            update_one = client[MONGO_DB][points].update_one
            yield lambda i: update_one({"_id": ids[i & mask]}, {"$inc": {"hits": 1}})

    for verb, k, p, floor_args in (
            ("insert_one", keel_insert_one, pymongo_insert_one, ["insert_one", one_coll]),
            ("update_one", keel_update_one, pymongo_update_one,
             ["update_one", points, str(n_points)])):
        cases.append(Case(
            workload=9, key=f"w9.mongo.{verb}.c{MONGO_WRITE_TASKS}.p10",
            title=f"{verb} {'a small document' if verb == 'insert_one' else 'by _id ($inc)'}",
            engine="mongodb", params=f"{MONGO_WRITE_TASKS} tasks, pool 10",
            concurrency=MONGO_WRITE_TASKS, target=Target(1.2), contenders=[
                AsyncContender("keel", ROLE_KEEL, k),
                AsyncContender("pymongo", ROLE_PEER, p, requires=("pymongo",),
                               note="AsyncMongoClient"),
                mongo_c_floor(url, floor_args, connections=min(MONGO_WRITE_TASKS, 10))]))

    n_ins = ctx.settings.insert_rows
    # Both drivers add an _id to each document they insert, so every operation inserts fresh
    # copies of the same documents (the copy is the same work on both sides).
    template = [{k: v for k, v in mixed_doc(i).items() if k != "_id"} for i in range(n_ins)]
    target_coll = "bench_insert"

    @contextlib.asynccontextmanager
    async def keel_insert(plan: Plan) -> AsyncIterator[Op]:
        async with keel_mongo(url, 1) as db:
            coll = db.collection(target_coll)
            await coll.drop()
            yield lambda i: coll.insert_many([dict(d) for d in template])
            await coll.drop()

    @contextlib.asynccontextmanager
    async def pymongo_insert(plan: Plan) -> AsyncIterator[Op]:
        async with pymongo_client(url, 1) as client:
            coll = client[MONGO_DB][target_coll]
            await coll.drop()
            yield lambda i: coll.insert_many([dict(d) for d in template])
            await coll.drop()

    cases.append(Case(
        workload=9, key="w9.mongo.insert_many", title=f"insert_many {n_ins} documents",
        engine="mongodb", params="1 connection, ordered", concurrency=1, unit="rows/s",
        rows_per_op=n_ins, target=Target(1.2), contenders=[
            AsyncContender("keel", ROLE_KEEL, keel_insert),
            AsyncContender("pymongo", ROLE_PEER, pymongo_insert, requires=("pymongo",),
                           note="AsyncMongoClient"),
            mongo_c_floor(url, ["insert_many", target_coll, str(n_ins)])]))

    @contextlib.asynccontextmanager
    async def keel_find(plan: Plan) -> AsyncIterator[Op]:
        async with keel_mongo(url, 1) as db:
            find = db.collection(mixed).find
            yield lambda i: find({}).to_list()

    @contextlib.asynccontextmanager
    async def pymongo_find(plan: Plan) -> AsyncIterator[Op]:
        async with pymongo_client(url, 1) as client:
            find = client[MONGO_DB][mixed].find
            yield lambda i: find({}).to_list()

    cases.append(Case(
        workload=9, key="w9.mongo.find_many", title=f"find {n_docs} documents to a list",
        engine="mongodb", params="1 task", concurrency=1, unit="rows/s", rows_per_op=n_docs,
        target=Target(1.2), contenders=[
            AsyncContender("keel", ROLE_KEEL, keel_find),
            AsyncContender("pymongo", ROLE_PEER, pymongo_find, requires=("pymongo",),
                           note="AsyncMongoClient"),
            mongo_c_floor(url, ["find", mixed])]))
    return cases


def cases(ctx: Ctx) -> list[Case]:
    return ([mysql_roundtrip(ctx)] + mysql_point(ctx) + [mysql_fetch(ctx)] + mysql_insert(ctx)
            + mongo_cases(ctx))


WORKLOAD = Workload(
    9, "MariaDB workloads 1–4; MongoDB find_one / insert_many / find", cases,
    measures="Workloads 1–4 on MariaDB (SELECT 1; point select through a pool at 1, 32 and 128 "
             "tasks; 1000 rows × 10 columns; 10,000-row inserts by executemany and multi-row "
             "INSERT), peers aiomysql and asyncmy in autocommit. MongoDB: find_one by _id at 1, "
             "32 and 128 tasks, insert_one and update_one at 32 tasks, insert_many of 10,000 "
             "documents, find of 1000 documents to a list, peer pymongo AsyncMongoClient. "
             "Floors: each operation in a C loop over libmariadb or libmongoc, on as many "
             "connections as keel's pool keeps busy.")
