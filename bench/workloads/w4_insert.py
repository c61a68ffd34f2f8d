# bench/workloads/w4_insert.py - workload 4: inserting 10k rows × 7 columns, by executemany and by each driver's bulk path.
"""Workload 4: one operation inserts 10,000 rows of seven columns (int8, int4, float8, text, bool,
timestamptz, nullable text) in one atomic batch, on one connection; the table is emptied when a
turn starts (untimed) and has no index, so every operation does the same work.

Two cases on PostgreSQL. executemany: keel's (one pipeline, one sync), asyncpg's (pipelined,
atomic) and psycopg's (pipeline mode) inside a transaction. bulk, each driver's fastest path,
all binary COPY … FROM STDIN: keel's and asyncpg's copy_records_to_table, psycopg's
cursor.copy with write_row in a transaction. On SQLite: executemany in one transaction."""
from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .. import data
from ..core import (ROLE_FLOOR, ROLE_KEEL, ROLE_PEER, AsyncContender, Case, Plan,
                    SyncContender, Target)
from ..drivers import aiosqlite_conn, asyncpg_conn, keel_conn, psycopg_conn, pyformat, qmark
from ..env import Ctx
from ..floors import pg_c_floor, sqlite_c_insert_floor
from . import Workload

TARGET = Target(1.0)
COLUMNS = ", ".join(data.INSERT_COLUMNS)
PG_TYPES = ["int8", "int4", "float8", "text", "bool", "timestamptz", "text"]
# Rows per multi-row INSERT in the MariaDB bulk path of workload 9 (7 parameters each).
VALUES_CHUNK = 1000

Op = Callable[[int], Any]


def make_rows(n: int) -> list[tuple[Any, ...]]:
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    return [(i, i % 1000, i * 0.5, f"name {i:08d}", i % 2 == 0,
             base + datetime.timedelta(seconds=i), None if i % 10 == 0 else f"note {i}")
            for i in range(1, n + 1)]


def insert_sql(table: str) -> str:
    return f"INSERT INTO {table} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"


def values_sql(table: str, nrows: int) -> str:
    groups = ", ".join(
        "(" + ", ".join(f"${r * 7 + c + 1}" for c in range(7)) + ")" for r in range(nrows))
    return f"INSERT INTO {table} ({COLUMNS}) VALUES {groups}"


def values_batches(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[str, list[list[Any]]]]:
    """(sql, parameter lists) pairs: the rows in multi-row INSERTs of VALUES_CHUNK rows, the
    remainder (if any) in one shorter statement."""
    full = len(rows) // VALUES_CHUNK * VALUES_CHUNK
    out = []
    if full:
        params = [[v for row in rows[i:i + VALUES_CHUNK] for v in row]
                  for i in range(0, full, VALUES_CHUNK)]
        out.append((values_sql(table, VALUES_CHUNK), params))
    if full < len(rows):
        rest = rows[full:]
        out.append((values_sql(table, len(rest)), [[v for row in rest for v in row]]))
    return out


def pg_cases(ctx: Ctx) -> list[Case]:
    url = ctx.pg_url
    table = data.pg_insert(ctx)
    rows = make_rows(ctx.settings.insert_rows)
    sql = insert_sql(table)
    truncate = f"TRUNCATE {table}"

    @contextlib.asynccontextmanager
    async def keel_many(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            await conn.execute(truncate)
            executemany = conn.executemany
            yield lambda i: executemany(sql, rows)

    @contextlib.asynccontextmanager
    async def keel_copy(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            await conn.execute(truncate)
            copy = conn.copy_records_to_table
            yield lambda i: copy(table, records=rows, columns=list(data.INSERT_COLUMNS))

    @contextlib.asynccontextmanager
    async def asyncpg_many(plan: Plan) -> AsyncIterator[Op]:
        async with asyncpg_conn(url) as conn:
            await conn.execute(truncate)
            executemany = conn.executemany
            yield lambda i: executemany(sql, rows)

    @contextlib.asynccontextmanager
    async def asyncpg_copy(plan: Plan) -> AsyncIterator[Op]:
        async with asyncpg_conn(url) as conn:
            await conn.execute(truncate)
            copy = conn.copy_records_to_table
            yield lambda i: copy(table, records=rows, columns=list(data.INSERT_COLUMNS))

    @contextlib.asynccontextmanager
    async def psycopg_many(plan: Plan) -> AsyncIterator[Op]:
        q = pyformat(sql)
        async with psycopg_conn(url) as conn:
            await conn.execute(truncate)

            async def op(i: int) -> None:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        await cur.executemany(q, rows)
            yield op

    @contextlib.asynccontextmanager
    async def psycopg_copy(plan: Plan) -> AsyncIterator[Op]:
        stmt = f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
        async with psycopg_conn(url) as conn:
            await conn.execute(truncate)

            async def op(i: int) -> None:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        async with cur.copy(stmt) as copy:
                            copy.set_types(PG_TYPES)
                            for row in rows:
                                await copy.write_row(row)
            yield op

    n = len(rows)
    common = dict(workload=4, engine="postgresql", concurrency=1, unit="rows/s",
                  rows_per_op=n, target=TARGET)
    return [
        Case(key="w4.pg.executemany", title=f"insert {n} rows × 7 columns: executemany",
             params="1 connection", **common, contenders=[
                 AsyncContender("keel", ROLE_KEEL, keel_many),
                 AsyncContender("asyncpg", ROLE_PEER, asyncpg_many, requires=("asyncpg",)),
                 AsyncContender("psycopg", ROLE_PEER, psycopg_many, requires=("psycopg",),
                                note="executemany in a transaction (pipeline mode)"),
                 pg_c_floor(["many", table, COLUMNS, str(n)]),
             ]),
        Case(key="w4.pg.bulk", title=f"insert {n} rows × 7 columns: fastest bulk path",
             params="1 connection", **common, contenders=[
                 AsyncContender("keel", ROLE_KEEL, keel_copy,
                                note="copy_records_to_table (binary COPY)"),
                 AsyncContender("asyncpg", ROLE_PEER, asyncpg_copy, requires=("asyncpg",),
                                note="copy_records_to_table (binary COPY)"),
                 AsyncContender("psycopg", ROLE_PEER, psycopg_copy, requires=("psycopg",),
                                note="COPY FROM STDIN (FORMAT BINARY), write_row"),
                 pg_c_floor(["copy", table, COLUMNS, str(n)]),
             ]),
    ]


def sqlite_case(ctx: Ctx) -> Case:
    path = data.sqlite_insert(ctx)
    url = ctx.sqlite_url(path)
    rows = make_rows(ctx.settings.insert_rows)
    sql = insert_sql("ins")
    q = qmark(sql)

    @contextlib.asynccontextmanager
    async def keel_session(plan: Plan) -> AsyncIterator[Op]:
        async with keel_conn(url) as conn:
            await conn.execute("DELETE FROM ins")
            executemany = conn.executemany
            yield lambda i: executemany(sql, rows)

    @contextlib.asynccontextmanager
    async def aiosqlite_session(plan: Plan) -> AsyncIterator[Op]:
        async with aiosqlite_conn(path) as conn:
            await conn.execute("DELETE FROM ins")
            await conn.commit()

            async def op(i: int) -> None:
                await conn.executemany(q, rows)
                await conn.commit()
            yield op

    @contextlib.contextmanager
    def sync_session(plan: Plan) -> Iterator[Op]:
        import sqlite3
        con = sqlite3.connect(str(path))
        try:
            with con:
                con.execute("DELETE FROM ins")

            def op(i: int) -> None:
                with con:
                    con.executemany(q, rows)
            yield op
        finally:
            con.close()

    n = len(rows)
    return Case(
        workload=4, key="w4.sqlite.executemany", title=f"insert {n} rows × 7 columns: executemany",
        engine="sqlite", params="1 connection, one transaction", concurrency=1, unit="rows/s",
        rows_per_op=n, target=TARGET, contenders=[
            AsyncContender("keel", ROLE_KEEL, keel_session),
            AsyncContender("aiosqlite", ROLE_PEER, aiosqlite_session, requires=("aiosqlite",)),
            SyncContender("sqlite3 (stdlib, sync)", ROLE_FLOOR, sync_session,
                          note="synchronous: blocks its thread; no event loop"),
            sqlite_c_insert_floor(path, "ins", COLUMNS, n),
        ])


WORKLOAD = Workload(
    4, "insert 10k rows × 7 columns", lambda ctx: pg_cases(ctx) + [sqlite_case(ctx)],
    measures="10,000 rows × 7 columns per operation in one atomic batch, rows/s. PostgreSQL: "
             "executemany of every driver, and each driver's fastest bulk path (binary COPY: "
             "keel's and asyncpg's copy_records_to_table, psycopg's cursor.copy). Floors: the "
             "same rows in a C loop over libpq (prepared INSERTs in one pipeline; binary COPY). "
             "SQLite: executemany in one transaction, aiosqlite as the peer; floors stdlib "
             "sqlite3 and a C loop over libsqlite3.")
