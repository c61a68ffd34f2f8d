# python/keel/fastapi.py - FastAPI integration: lifespan, connection/transaction dependencies, health router.
"""FastAPI integration of keel.

    kf = Keel(db)
    app = FastAPI(lifespan=kf.lifespan)
    @app.get("/items/{id}")
    async def get_item(id: int, conn=Depends(kf.connection())): ...
    app.include_router(kf.health_router())
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from . import Connection, Database

__all__ = ["Keel"]


class Keel:
    """Binds a keel.Database to a FastAPI application."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Starts the database with the application and closes it on shutdown."""
        await self.db.start()
        try:
            yield
        finally:
            await self.db.close()

    def connection(self, name: str | None = None) -> Callable[[], AsyncIterator[Connection]]:
        """A dependency yielding a connection of database `name`, released after the response
        (also when the handler raises)."""
        db = self.db

        async def keel_connection() -> AsyncIterator[Connection]:
            async with db.connection(name) as conn:
                yield conn

        return keel_connection

    def transaction(self, name: str | None = None) -> Callable[[], AsyncIterator[Connection]]:
        """A dependency yielding a connection inside a transaction: committed when the handler
        succeeds, rolled back when it raises."""
        db = self.db

        async def keel_transaction() -> AsyncIterator[Connection]:
            async with db.transaction(name) as conn:
                yield conn

        return keel_transaction

    def health_router(self, prefix: str = "/health", timeout: float = 5.0) -> APIRouter:
        """GET {prefix}/live and GET {prefix}/ready (every database pinged, 503 if one fails)."""
        db = self.db
        router = APIRouter(prefix=prefix)

        async def check(name: str) -> dict[str, Any]:
            engine = db.engine(name)
            try:
                seconds = await asyncio.wait_for(db.ping(name), timeout)
            except asyncio.TimeoutError:
                return {"status": "error", "engine": engine,
                        "error": f"no answer within {timeout:g} s"}
            except Exception as exc:  # every failure is reported, none is raised
                return {"status": "error", "engine": engine, "error": str(exc)}
            return {"status": "ok", "engine": engine, "latency_ms": seconds * 1000.0}

        @router.get("/live")
        async def live() -> dict[str, str]:
            return {"status": "ok"}

        @router.get("/ready")
        async def ready() -> JSONResponse:
            names = db.databases
            results = await asyncio.gather(*(check(n) for n in names))
            databases = dict(zip(names, results))
            healthy = all(r["status"] == "ok" for r in results)
            return JSONResponse(
                status_code=200 if healthy else 503,
                content={"status": "ok" if healthy else "unavailable", "databases": databases})

        return router
