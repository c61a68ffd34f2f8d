# bench/workloads/w1_roundtrip.py - workload 1: the round trip of SELECT 1 on one connection, one task.
"""Workload 1: `SELECT 1`, one task, one connection held for the whole turn. This is the fixed
cost of a query through each driver: encoding, one round trip (PostgreSQL) or one step on a
worker thread (SQLite), decoding, and waking the awaiting task."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import data
from ..core import ROLE_KEEL, ROLE_PEER, AsyncContender, Case, Plan, Target
from ..drivers import aiosqlite_conn, asyncpg_conn, keel_conn, psycopg_conn
from ..env import Ctx
from ..floors import Pgbench, sqlite_c_floor, sqlite_sync
from . import Workload

SQL = "SELECT 1"
TARGET = Target(1.2)

Op = Callable[[int], Any]


def pg_case(ctx: Ctx) -> Case:
    url = ctx.pg_url

    @contextlib.asynccontextmanager
    async def keel_session(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            fetchval = conn.fetchval
            yield lambda i: fetchval(SQL)

    @contextlib.asynccontextmanager
    async def asyncpg_session(plan: Plan) -> AsyncIterator[Op]:
        async with asyncpg_conn(url) as conn:
            fetchval = conn.fetchval
            yield lambda i: fetchval(SQL)

    @contextlib.asynccontextmanager
    async def psycopg_session(plan: Plan) -> AsyncIterator[Op]:
        async with psycopg_conn(url) as conn:
            async def op(i: int) -> Any:
                cur = await conn.execute(SQL)
                return await cur.fetchone()
            yield op

    return Case(
        workload=1, key="w1.pg", title="round trip SELECT 1", engine="postgresql",
        params="1 task, 1 connection", concurrency=1, target=TARGET,
        contenders=[
            AsyncContender("keel", ROLE_KEEL, keel_session),
            AsyncContender("asyncpg", ROLE_PEER, asyncpg_session, requires=("asyncpg",)),
            AsyncContender("psycopg", ROLE_PEER, psycopg_session, requires=("psycopg",)),
            Pgbench("SELECT 1;\n"),
        ])


def sqlite_case(ctx: Ctx) -> Case:
    path = data.sqlite_points(ctx, ctx.settings.points_rows)
    url = ctx.sqlite_url(path)

    @contextlib.asynccontextmanager
    async def keel_session(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            fetchval = conn.fetchval
            yield lambda i: fetchval(SQL)

    @contextlib.asynccontextmanager
    async def aiosqlite_session(plan: Plan) -> AsyncIterator[Op]:
        # execute_fetchall is aiosqlite's one-hop path (execute + fetch in one worker call).
        async with aiosqlite_conn(path) as conn:
            fetchall = conn.execute_fetchall
            yield lambda i: fetchall(SQL)

    return Case(
        workload=1, key="w1.sqlite", title="round trip SELECT 1", engine="sqlite",
        params="1 task, 1 connection", concurrency=1, target=TARGET,
        contenders=[
            AsyncContender("keel", ROLE_KEEL, keel_session),
            AsyncContender("aiosqlite", ROLE_PEER, aiosqlite_session, requires=("aiosqlite",)),
            sqlite_sync(path, SQL, None),
            sqlite_c_floor(path, SQL, 1),
        ])


WORKLOAD = Workload(
    1, "round trip SELECT 1", lambda ctx: [pg_case(ctx), sqlite_case(ctx)],
    measures="`SELECT 1` on one connection held for the turn, one task: the fixed cost of a "
             "query (encode, round trip or worker hop, decode, wake the task). Peers asyncpg, "
             "psycopg (async, autocommit); aiosqlite (`execute_fetchall`). Floors: pgbench "
             "-M prepared, 1 client; stdlib sqlite3; a C loop over libsqlite3.")
