# bench/workloads/w5_pool.py - workload 5: acquiring and releasing a pooled connection with no query, 1 and 64 tasks.
"""Workload 5: acquire a connection from a pool of 10 and release it, no query, from 1 and 64
tasks (64 tasks queue for 10 connections: waiter hand-off is measured too). asyncpg's default
pool sends a reset query on every release, a round trip; the variant with a no-op reset hook
shows the pool alone."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..core import ROLE_KEEL, ROLE_PEER, AsyncContender, Case, Plan, Target
from ..drivers import asyncpg_pool, keel_db, psycopg_pool
from ..env import Ctx
from . import Workload

POOL_SIZE = 10

Op = Callable[[int], Any]


def cases(ctx: Ctx) -> list[Case]:
    url = ctx.pg_url

    @contextlib.asynccontextmanager
    async def keel_session(plan: Plan) -> AsyncIterator[Op]:
        async with keel_db(url, POOL_SIZE) as db:
            acquire, release = db.acquire, db.release

            async def op(i: int) -> None:
                await release(await acquire())
            yield op

    def asyncpg_session(reset: bool) -> Callable[[Plan], Any]:
        @contextlib.asynccontextmanager
        async def session(plan: Plan) -> AsyncIterator[Op]:
            async with asyncpg_pool(url, POOL_SIZE, reset=reset) as pool:
                acquire, release = pool.acquire, pool.release

                async def op(i: int) -> None:
                    await release(await acquire())
                yield op
        return session

    @contextlib.asynccontextmanager
    async def psycopg_session(plan: Plan) -> AsyncIterator[Op]:
        async with psycopg_pool(url, POOL_SIZE) as pool:
            getconn, putconn = pool.getconn, pool.putconn

            async def op(i: int) -> None:
                await putconn(await getconn())
            yield op

    out = []
    for tasks in (1, 64):
        out.append(Case(
            workload=5, key=f"w5.pg.c{tasks}", title="pool acquire + release, no query",
            engine="postgresql", params=f"{tasks} task{'s' if tasks > 1 else ''}, pool "
                                        f"{POOL_SIZE}",
            concurrency=tasks, target=Target(1.2), contenders=[
                AsyncContender("keel", ROLE_KEEL, keel_session),
                AsyncContender("asyncpg", ROLE_PEER, asyncpg_session(True),
                               requires=("asyncpg",),
                               note="default pool: a reset query on every release"),
                AsyncContender("asyncpg (no reset)", ROLE_PEER, asyncpg_session(False),
                               requires=("asyncpg",), note="pool reset= a no-op coroutine"),
                AsyncContender("psycopg_pool", ROLE_PEER, psycopg_session,
                               requires=("psycopg", "psycopg_pool")),
            ]))
    return out


WORKLOAD = Workload(
    5, "pool acquire + release", cases,
    measures="acquire + release with no query from a pool of 10, 1 and 64 tasks. Peers: asyncpg "
             "pool (default, whose release sends a reset query, and with a no-op reset), "
             "psycopg_pool (getconn/putconn).")
