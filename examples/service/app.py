"""examples/service/app.py - the keeldb demo: a FastAPI CRUD service for "items" with health checks.

Run it with `make demo`, or `uvicorn --app-dir examples/service app:app`. It uses the default
database, SQLite ./keel.db, unless KEEL_… variables say otherwise, e.g.
KEEL_DATABASES__DEFAULT__URL=postgresql://postgres@127.0.0.1:5432/keel_test.
"""

from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

import keel
from keel.fastapi import Keel

db = keel.Database()
kf = Keel(db)

# The table's key column is the only part that differs between the engines.
_ID_COLUMN = {
    "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}

_COLUMNS = "id, name, description, price, quantity"


class ItemIn(BaseModel):
    """What a client sends to create or replace an item."""

    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    price: float = Field(ge=0)
    quantity: int = Field(default=0, ge=0, le=1_000_000)


class Item(ItemIn):
    """An item as stored, with the id the database gave it."""

    id: int


class ItemPage(BaseModel):
    """One page of the item list, with what is needed to ask for the next one."""

    items: list[Item]
    total: int
    limit: int
    offset: int


@asynccontextmanager
async def lifespan(app: FastAPI):
    # kf.lifespan starts the database (pools fill in the background) and closes it at shutdown;
    # the table is created once the database is up, before the first request is served.
    async with kf.lifespan(app):
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS items ({_ID_COLUMN[db.engine()]},"
            " name TEXT NOT NULL, description TEXT, price DOUBLE PRECISION NOT NULL,"
            " quantity INTEGER NOT NULL DEFAULT 0)"
        )
        yield


app = FastAPI(title="keeldb demo", lifespan=lifespan)
app.include_router(kf.health_router())

Connection = Annotated[keel.Connection, Depends(kf.connection())]
Transaction = Annotated[keel.Connection, Depends(kf.transaction())]


def _not_found(item_id: int) -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")


@app.post("/items", status_code=status.HTTP_201_CREATED, response_model=Item)
async def create_item(item: ItemIn, conn: Transaction) -> Item:
    row = await conn.fetchrow(
        f"INSERT INTO items (name, description, price, quantity) VALUES ($1, $2, $3, $4)"
        f" RETURNING {_COLUMNS}",
        item.name,
        item.description,
        item.price,
        item.quantity,
    )
    return Item(**dict(row))


@app.get("/items", response_model=ItemPage)
async def list_items(
    conn: Connection,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ItemPage:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM items ORDER BY id LIMIT $1 OFFSET $2", limit, offset
    )
    total = await conn.fetchval("SELECT count(*) FROM items")
    return ItemPage(items=[Item(**dict(r)) for r in rows], total=total, limit=limit, offset=offset)


@app.get("/items/{item_id}", response_model=Item)
async def get_item(item_id: int, conn: Connection) -> Item:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM items WHERE id = $1", item_id)
    if row is None:
        raise _not_found(item_id)
    return Item(**dict(row))


@app.put("/items/{item_id}", response_model=Item)
async def replace_item(item_id: int, item: ItemIn, conn: Transaction) -> Item:
    row = await conn.fetchrow(
        "UPDATE items SET name = $1, description = $2, price = $3, quantity = $4"
        f" WHERE id = $5 RETURNING {_COLUMNS}",
        item.name,
        item.description,
        item.price,
        item.quantity,
        item_id,
    )
    if row is None:
        raise _not_found(item_id)
    return Item(**dict(row))


@app.delete("/items/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(item_id: int, conn: Transaction) -> Response:
    if await conn.execute("DELETE FROM items WHERE id = $1", item_id) == 0:
        raise _not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
