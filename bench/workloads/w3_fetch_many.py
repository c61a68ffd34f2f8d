# bench/workloads/w3_fetch_many.py - workload 3: fetching 1000 rows of ten mixed-type columns.
"""Workload 3: `SELECT` of 1000 rows × 10 columns (int4, int8, float8, numeric, text, bool,
timestamptz, uuid, bytea, jsonb) on one connection: the cost of decoding values into Python
objects. Every driver returns the same Python values: asyncpg is given json/jsonb codecs that
decode to dicts, as keel and psycopg do by default (asyncpg's own default returns the JSON text,
which would spare it the json.loads the others pay)."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .. import data
from ..core import ROLE_KEEL, ROLE_PEER, AsyncContender, Case, Plan, Target
from ..drivers import asyncpg_conn, keel_conn, psycopg_conn
from ..env import Ctx
from ..floors import pg_c_floor
from . import Workload

Op = Callable[[int], Any]


def pg_case(ctx: Ctx) -> Case:
    url = ctx.pg_url
    table = data.pg_mixed(ctx)
    sql = f"SELECT {data.MIXED_COLUMNS} FROM {table}"

    @contextlib.asynccontextmanager
    async def keel_session(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            fetch = conn.fetch
            yield lambda i: fetch(sql)

    @contextlib.asynccontextmanager
    async def asyncpg_session(plan: Plan) -> AsyncIterator[Op]:
        async with asyncpg_conn(url, json_codec=True) as conn:
            fetch = conn.fetch
            yield lambda i: fetch(sql)

    def psycopg_session(binary: bool) -> Callable[[Plan], Any]:
        @contextlib.asynccontextmanager
        async def session(plan: Plan) -> AsyncIterator[Op]:
            async with psycopg_conn(url) as conn:
                async def op(i: int) -> Any:
                    async with conn.cursor(binary=binary) as cur:
                        await cur.execute(sql)
                        return await cur.fetchall()
                yield op
        return session

    return Case(
        workload=3, key="w3.pg", title=f"fetch {ctx.settings.mixed_rows} rows × 10 mixed columns",
        engine="postgresql", params="1 task, 1 connection", concurrency=1,
        unit="rows/s", rows_per_op=ctx.settings.mixed_rows, target=Target(1.0),
        contenders=[
            AsyncContender("keel", ROLE_KEEL, keel_session),
            AsyncContender("asyncpg", ROLE_PEER, asyncpg_session, requires=("asyncpg",),
                           note="json/jsonb codecs decode to dicts"),
            AsyncContender("psycopg (binary)", ROLE_PEER, psycopg_session(True),
                           requires=("psycopg",)),
            AsyncContender("psycopg (text)", ROLE_PEER, psycopg_session(False),
                           requires=("psycopg",)),
            pg_c_floor(["fetch", sql]),
        ])


WORKLOAD = Workload(
    3, "fetch 1000 rows × 10 mixed columns", lambda ctx: [pg_case(ctx)],
    measures="1000 rows × (int4, int8, float8, numeric, text, bool, timestamptz, uuid, bytea, "
             "jsonb) on one connection, in rows/s: decoding into Python objects. Peers asyncpg "
             "(with json codecs so that every driver returns the same objects), psycopg binary "
             "and text cursors. Floor: the query in a C loop over libpq (binary results).")
