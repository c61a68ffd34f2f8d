# bench/apps/fastapi_app.py - the workload-7 service: the same two endpoints on keel, SQLAlchemy async + asyncpg, or asyncpg.
"""uvicorn bench.apps.fastapi_app:app, configured by the environment:

    BENCH_APP    keel | sqlalchemy | asyncpg
    BENCH_PG_URL the PostgreSQL URL;  BENCH_TABLE  the bench_points table
    BENCH_ROWS   its row count;       BENCH_POOL   the pool size (10)

GET /one/{id}  one point select, the row as a JSON object.
GET /ten/{id}  ten point selects (keys id … id+9, wrapping) on the request's connection.

Each variant is written the way its documentation shows: keel with keel.fastapi's connection
dependency; SQLAlchemy 2.0 with an AsyncSession per request and an ORM select of a mapped class;
asyncpg with a pool created in the lifespan and a dependency holding pool.acquire().

No `from __future__ import annotations` here: SQLAlchemy resolves the Mapped[...] annotations of
the class declared inside sqlalchemy_app() at class creation, which needs them as objects.
"""
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI

VARIANT = os.environ.get("BENCH_APP", "keel")
URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/keel_test")
TABLE = os.environ.get("BENCH_TABLE", "bench_points_100000")
ROWS = int(os.environ.get("BENCH_ROWS", "100000"))
POOL = int(os.environ.get("BENCH_POOL", "10"))
SQL = f"SELECT id, a, b, c FROM {TABLE} WHERE id = $1"


def ten_keys(key: int) -> list[int]:
    return [(key + k - 1) % ROWS + 1 for k in range(10)]


def keel_app() -> FastAPI:
    import keel
    from keel.fastapi import Keel

    db = keel.Database({"databases": {"main": {"url": URL, "pool": {
        "min_size": POOL, "max_size": POOL}}}, "default": "main"})
    kf = Keel(db)
    app = FastAPI(lifespan=kf.lifespan)
    connection = kf.connection()

    @app.get("/one/{key}")
    async def one(key: int, conn: Any = Depends(connection)) -> Any:
        row = await conn.fetchrow(SQL, key)
        return dict(row) if row is not None else None

    @app.get("/ten/{key}")
    async def ten(key: int, conn: Any = Depends(connection)) -> Any:
        return [dict(await conn.fetchrow(SQL, k)) for k in ten_keys(key)]

    return app


def asyncpg_app() -> FastAPI:
    import asyncpg

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(URL, min_size=POOL, max_size=POOL)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    async def connection() -> AsyncIterator[Any]:
        async with app.state.pool.acquire() as conn:
            yield conn

    @app.get("/one/{key}")
    async def one(key: int, conn: Any = Depends(connection)) -> Any:
        row = await conn.fetchrow(SQL, key)
        return dict(row) if row is not None else None

    @app.get("/ten/{key}")
    async def ten(key: int, conn: Any = Depends(connection)) -> Any:
        return [dict(await conn.fetchrow(SQL, k)) for k in ten_keys(key)]

    return app


def sqlalchemy_app() -> FastAPI:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Point(Base):
        __tablename__ = TABLE
        id: Mapped[int] = mapped_column(primary_key=True)
        a: Mapped[int]
        b: Mapped[str]
        c: Mapped[float]

    engine = create_async_engine(URL.replace("postgresql://", "postgresql+asyncpg://", 1),
                                 pool_size=POOL, max_overflow=0)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    def as_dict(p: Point) -> dict[str, Any]:
        return {"id": p.id, "a": p.a, "b": p.b, "c": p.c}

    async def get(s: AsyncSession, key: int) -> "Point | None":
        return (await s.execute(select(Point).where(Point.id == key))).scalar_one_or_none()

    @app.get("/one/{key}")
    async def one(key: int, s: AsyncSession = Depends(session)) -> Any:
        p = await get(s, key)
        return as_dict(p) if p is not None else None

    @app.get("/ten/{key}")
    async def ten(key: int, s: AsyncSession = Depends(session)) -> Any:
        return [as_dict(await get(s, k)) for k in ten_keys(key)]

    return app


APPS = {"keel": keel_app, "asyncpg": asyncpg_app, "sqlalchemy": sqlalchemy_app}
if VARIANT not in APPS:
    raise SystemExit(f"BENCH_APP must be one of {', '.join(APPS)}, not {VARIANT!r}")
app = APPS[VARIANT]()
