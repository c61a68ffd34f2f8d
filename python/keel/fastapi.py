# python/keel/fastapi.py - FastAPI integration: lifespan, connection/transaction dependencies, health router.
"""FastAPI integration of keel.

    kf = Keel(db)
    app = FastAPI(lifespan=kf.lifespan)
    @app.get("/items/{id}")
    async def get_item(id: int, conn=Depends(kf.connection())): ...
    app.include_router(kf.health_router())

The dependencies finish before the response is sent: kf.transaction() commits (or rolls back)
and both give their connection back to the pool once the handler has returned and its response
is built (kf.connection(scope="request") keeps it until the response is sent), so a client that
has its answer finds the write committed. A commit that fails is
answered with CommitFailed (409, 503 or 500) instead of the handler's response.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Literal

import fastapi
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from . import Connection, Database, Error, IntegrityError, OperationalError, _close_timeout

__all__ = ["Keel", "CommitFailed"]

# Depends(scope="function"), which ends a yield dependency before the response is sent, came
# with FastAPI 0.121. Between 0.118 and 0.121 a yield dependency can only end after the response
# went out, too late to commit: older releases are refused here rather than served wrongly.
if "scope" not in inspect.signature(Depends).parameters:
    raise ImportError("keel.fastapi needs FastAPI 0.121 or newer (Depends(scope=...)); "
                      f"found {fastapi.__version__}")

_log = logging.getLogger("keel.fastapi")


def _commit_status(error: Error) -> int:
    """The HTTP status of a request whose COMMIT raised error."""
    # Refused by the database: a constraint checked at COMMIT (deferred), or a conflict with a
    # concurrent transaction (SQLSTATE class 40: serialization failure, deadlock) that a retry
    # of the request may not meet again.
    if isinstance(error, IntegrityError) or (error.sqlstate or "").startswith("40"):
        return 409
    # The database could not be reached or answer in time; whether the COMMIT took effect is
    # unknown when the connection was lost during it.
    if isinstance(error, OperationalError):
        return 503
    return 500


class CommitFailed(HTTPException):
    """The answer to a request whose handler returned but whose transaction could not be
    committed: nothing of the handler's response is sent.

    status_code: 409 when the database refused the changes (keel.IntegrityError, e.g. a deferred
    constraint; SQLSTATE class 40, a serialization failure or deadlock), 503 when it could not be
    reached (keel.OperationalError: connection lost, timeout), 500 otherwise. detail is
    {"error": "commit failed", "class": the keel error's class name, "sqlstate": …,
    "database": …}: no server message (it may quote stored values); the full error is logged
    to the "keel.fastapi" logger and is `error` (and __cause__) here. Register an exception
    handler for CommitFailed to answer differently.
    """

    def __init__(self, error: Error) -> None:
        super().__init__(_commit_status(error), {
            "error": "commit failed",
            "class": type(error).__name__,
            "sqlstate": error.sqlstate,
            "database": error.database,
        })
        self.error = error


# How long shutdown waits, by default, for connections still leased before closing them.
DEFAULT_CLOSE_TIMEOUT = 10.0


class Keel:
    """Binds a keel.Database to a FastAPI application.

    close_timeout (seconds, default 10): how long shutdown waits for the connections still in
    use (requests finishing, a listener, cursor or change stream left open in a background task)
    before closing them anyway, as Database.close(timeout=) does; None waits as long as they
    take, which a task that never lets go of its connection makes for ever."""

    def __init__(self, db: Database, *,
                 close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT) -> None:
        _close_timeout(close_timeout)  # a bad value is refused here, not at shutdown
        self.db = db
        self.close_timeout = close_timeout

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Starts the database with the application and closes it on shutdown, waiting at most
        close_timeout for the connections still in use."""
        await self.db.start()
        try:
            yield
        finally:
            await self.db.close(timeout=self.close_timeout)

    def connection(self, name: str | None = None, *,
                   scope: Literal["function", "request"] = "function",
                   ) -> Callable[..., Coroutine[Any, Any, Connection]]:
        """A dependency giving the handler a connection of database `name` (None: the default).

        scope="function" (the default): the connection goes back to the pool when the handler
        has returned (or raised), before the response is sent. scope="request": after the
        response has been sent, for a StreamingResponse that reads from the connection while
        it streams.
        """
        if scope not in ("function", "request"):
            raise ValueError(f'scope is "function" or "request", not {scope!r}')
        db = self.db

        async def keel_lease() -> AsyncIterator[Connection]:
            async with db.connection(name) as conn:
                yield conn

        # The scope of a yield dependency is chosen where it is declared, so the lease is
        # declared here, with its scope, and the user's Depends() names this plain function.
        async def keel_connection(conn: Any = Depends(keel_lease, scope=scope)) -> Connection:
            return conn

        return keel_connection

    def transaction(self, name: str | None = None,
                    ) -> Callable[..., Coroutine[Any, Any, Connection]]:
        """A dependency giving the handler a connection inside a transaction of database `name`.

        When the handler returns, the transaction is committed before the response is sent;
        when it raises, rolled back and the handler's error answered as usual. A commit that
        fails raises CommitFailed (409/503/500, see there) instead of sending the response.
        The connection goes back to the pool before the response is sent.
        """
        db = self.db

        async def keel_transaction_scope() -> AsyncIterator[Connection]:
            returned = False
            try:
                async with db.transaction(name) as conn:
                    yield conn
                    returned = True
            except Error as exc:
                if not returned:
                    raise  # the handler's own error (rolled back): the application answers it
                _log.warning("the transaction of a request was not committed: %s: %s",
                             type(exc).__name__, exc)
                raise CommitFailed(exc) from exc

        async def keel_transaction(
                conn: Any = Depends(keel_transaction_scope, scope="function")) -> Connection:
            return conn

        return keel_transaction

    def health_router(self, prefix: str = "/health", timeout: float = 5.0, *,
                      detail: bool = False) -> APIRouter:
        """GET {prefix}/live and GET {prefix}/ready (every database pinged, 503 if one fails).

        A failing database is reported by the class of its error ("ConnectError",
        "TimeoutError" …): messages name hosts, ports and users, which a health route open to
        anyone must not give away. detail=True adds each error's message (with passwords
        redacted) as "message", for a router that only operators can reach.
        """
        db = self.db
        router = APIRouter(prefix=prefix)

        def failed(engine: str, error: str, message: str) -> dict[str, Any]:
            entry = {"status": "error", "engine": engine, "error": error}
            if detail:
                entry["message"] = message
            return entry

        async def check(name: str) -> dict[str, Any]:
            engine = db.engine(name)
            try:
                seconds = await asyncio.wait_for(db.ping(name), timeout)
            except asyncio.TimeoutError:
                return failed(engine, "TimeoutError", f"no answer within {timeout:g} s")
            except Exception as exc:  # every failure is reported, none is raised
                return failed(engine, type(exc).__name__, str(exc))
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
