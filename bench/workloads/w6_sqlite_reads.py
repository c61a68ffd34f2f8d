# bench/workloads/w6_sqlite_reads.py - workload 6: SQLite point reads on a 1M-row WAL database, 1 and 16 readers.
"""Workload 6: point reads by primary key on a one-million-row SQLite database in WAL mode, from
1 and 16 concurrent readers, each reader with its own connection (keel: a pool as large as the
readers; aiosqlite: one connection, hence one thread, per reader). The synchronous stdlib module
and the C loop are the floors, at one reader."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import data
from ..core import ROLE_KEEL, ROLE_PEER, AsyncContender, Case, Plan, Target
from ..drivers import aiosqlite_pool, keel_db, qmark
from ..env import Ctx
from ..floors import sqlite_c_floor, sqlite_sync
from . import Workload

Op = Callable[[int], Any]


def cases(ctx: Ctx) -> list[Case]:
    n = ctx.settings.sqlite_rows
    path = data.sqlite_points(ctx, n)
    url = ctx.sqlite_url(path)
    sql = f"SELECT {data.POINTS_COLUMNS} FROM points WHERE id = $1"
    q = qmark(sql)
    ids = ctx.ids(n)
    mask = len(ids) - 1
    out = []
    for readers in (1, 16):

        @contextlib.asynccontextmanager
        async def keel_session(plan: Plan, readers: int = readers) -> AsyncIterator[Op]:
            async with keel_db(url, readers) as db:
                fetchrow = db.fetchrow
                yield lambda i: fetchrow(sql, ids[i & mask])

        @contextlib.asynccontextmanager
        async def aiosqlite_session(plan: Plan, readers: int = readers) -> AsyncIterator[Op]:
            async with aiosqlite_pool(path, readers) as pool:
                async def op(i: int) -> Any:
                    async with pool.connection() as conn:
                        rows = await conn.execute_fetchall(q, (ids[i & mask],))
                        return rows[0] if rows else None
                yield op

        contenders = [
            AsyncContender("keel", ROLE_KEEL, keel_session),
            AsyncContender("aiosqlite", ROLE_PEER, aiosqlite_session, requires=("aiosqlite",)),
        ]
        if readers == 1:
            contenders.append(sqlite_sync(path, sql, ids))
        contenders.append(sqlite_c_floor(path, sql, n, connections=readers))
        out.append(Case(
            workload=6, key=f"w6.sqlite.r{readers}", title=f"point reads, {n:,}-row WAL file",
            engine="sqlite", params=f"{readers} reader{'s' if readers > 1 else ''}",
            concurrency=readers, target=Target(3.0, vs="aiosqlite"), contenders=contenders))
    return out


WORKLOAD = Workload(
    6, "SQLite point reads on a 1M-row WAL database", cases,
    measures="point reads by primary key on a 1M-row WAL file under build/bench/, 1 and 16 "
             "concurrent readers, each with its own connection. Peer aiosqlite (one "
             "connection, hence one thread, per reader); floors the C loop over libsqlite3 (a "
             "connection and a thread per reader) and stdlib sqlite3 (sync, one reader).")
