# bench/workloads/w2_point_select.py - workload 2: point select by primary key through the pool, 1/32/128 tasks.
"""Workload 2: `SELECT id, a, b, c FROM points WHERE id = $1` on a 100k-row table, each operation
acquiring a pooled connection, running the query and releasing the connection, from 1, 32 and 128
concurrent tasks with pools of 10 and 32. Keys follow one fixed pseudo-random sequence."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import data
from ..core import ROLE_KEEL, ROLE_PEER, AsyncContender, Case, Plan, Target
from ..drivers import (aiosqlite_pool, asyncpg_pool, keel_db, psycopg_pool, pyformat, qmark)
from ..env import Ctx
from ..floors import Pgbench, sqlite_c_floor, sqlite_sync
from . import Workload

TARGET = Target(1.2)
# (tasks, pool size): 1 task needs no second pool size; 32 and 128 tasks run on both.
SHAPES = [(1, 10), (32, 10), (32, 32), (128, 10), (128, 32)]

Op = Callable[[int], Any]


def pg_cases(ctx: Ctx) -> list[Case]:
    url = ctx.pg_url
    table = data.pg_points(ctx)
    sql = f"SELECT {data.POINTS_COLUMNS} FROM {table} WHERE id = $1"
    psql_sql = pyformat(sql)
    ids = ctx.ids(ctx.settings.points_rows)
    mask = len(ids) - 1
    cases = []
    for tasks, size in SHAPES:

        @contextlib.asynccontextmanager
        async def keel_session(plan: Plan, size: int = size) -> AsyncIterator[Op]:
            async with keel_db(url, size) as db:
                fetchrow = db.fetchrow
                yield lambda i: fetchrow(sql, ids[i & mask])

        def asyncpg_session(reset: bool, size: int = size) -> Callable[[Plan], Any]:
            @contextlib.asynccontextmanager
            async def session(plan: Plan) -> AsyncIterator[Op]:
                async with asyncpg_pool(url, size, reset=reset) as pool:
                    fetchrow = pool.fetchrow
                    yield lambda i: fetchrow(sql, ids[i & mask])
            return session

        @contextlib.asynccontextmanager
        async def psycopg_session(plan: Plan, size: int = size) -> AsyncIterator[Op]:
            async with psycopg_pool(url, size) as pool:
                async def op(i: int) -> Any:
                    async with pool.connection() as conn:
                        cur = await conn.execute(psql_sql, (ids[i & mask],))
                        return await cur.fetchone()
                yield op

        contenders = [
            AsyncContender("keel", ROLE_KEEL, keel_session),
            AsyncContender("asyncpg", ROLE_PEER, asyncpg_session(True), requires=("asyncpg",),
                           note="default pool: a reset query on every release"),
            AsyncContender("asyncpg (no reset)", ROLE_PEER, asyncpg_session(False),
                           requires=("asyncpg",), note="pool reset= a no-op coroutine"),
            AsyncContender("psycopg_pool", ROLE_PEER, psycopg_session,
                           requires=("psycopg", "psycopg_pool")),
        ]
        # The floor runs on as many connections as keel's pool keeps busy.
        n = ctx.settings.points_rows
        contenders.append(Pgbench(
            f"\\set id random(1, {n})\nSELECT {data.POINTS_COLUMNS} FROM {table} "
            "WHERE id = :id;\n", clients=min(tasks, size)))
        cases.append(Case(
            workload=2, key=f"w2.pg.c{tasks}.p{size}", title="point select by primary key",
            engine="postgresql", params=f"{tasks} task{'s' if tasks > 1 else ''}, pool {size}",
            concurrency=tasks, target=TARGET, contenders=contenders))
    return cases


def sqlite_cases(ctx: Ctx) -> list[Case]:
    n = ctx.settings.points_rows
    path = data.sqlite_points(ctx, n)
    url = ctx.sqlite_url(path)
    sql = f"SELECT {data.POINTS_COLUMNS} FROM points WHERE id = $1"
    qsql = qmark(sql)
    ids = ctx.ids(n)
    mask = len(ids) - 1
    cases = []
    for tasks, size in SHAPES:

        @contextlib.asynccontextmanager
        async def keel_session(plan: Plan, size: int = size) -> AsyncIterator[Op]:
            async with keel_db(url, size) as db:
                fetchrow = db.fetchrow
                yield lambda i: fetchrow(sql, ids[i & mask])

        @contextlib.asynccontextmanager
        async def aiosqlite_session(plan: Plan, size: int = size) -> AsyncIterator[Op]:
            async with aiosqlite_pool(path, size) as pool:
                async def op(i: int) -> Any:
                    async with pool.connection() as conn:
                        rows = await conn.execute_fetchall(qsql, (ids[i & mask],))
                        return rows[0] if rows else None
                yield op

        contenders = [
            AsyncContender("keel", ROLE_KEEL, keel_session),
            AsyncContender("aiosqlite", ROLE_PEER, aiosqlite_session, requires=("aiosqlite",),
                           note="a queue of connections (aiosqlite has no pool)"),
        ]
        if tasks == 1:
            contenders.append(sqlite_sync(path, sql, ids))
        contenders.append(sqlite_c_floor(path, sql, n, connections=min(tasks, size)))
        cases.append(Case(
            workload=2, key=f"w2.sqlite.c{tasks}.p{size}", title="point select by primary key",
            engine="sqlite", params=f"{tasks} task{'s' if tasks > 1 else ''}, pool {size}",
            concurrency=tasks, target=TARGET, contenders=contenders))
    return cases


WORKLOAD = Workload(
    2, "point select by primary key", lambda ctx: pg_cases(ctx) + sqlite_cases(ctx),
    measures="`SELECT id, a, b, c … WHERE id = $1` on a 100k-row table, every operation "
             "acquiring a pooled connection and releasing it, 1/32/128 tasks, pools of 10 and "
             "32. Peers: asyncpg pool (default, and with its release-time reset query turned "
             "off), psycopg_pool; aiosqlite behind a queue of connections. Floors: pgbench "
             "with a random key and the C loop over libsqlite3, on as many connections as the "
             "pool keeps busy; stdlib sqlite3 at 1 task.")
