# tests/python/test_transactions.py - transactions on every engine: commit, rollback, savepoints, pool reset.
import uuid

import pytest

import keel


class Boom(Exception):
    pass


async def make_table(db, new_table, types):
    t = new_table()
    await db.execute(f"CREATE TABLE {t} (id {types['int']} PRIMARY KEY, note TEXT)")
    return t


async def ids(db, t):
    return [r["id"] for r in await db.fetch(f"SELECT id FROM {t} ORDER BY id")]


async def test_db_transaction_commits(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.transaction() as conn:
        assert isinstance(conn, keel.Connection)
        assert conn.in_transaction is True
        await conn.execute(f"INSERT INTO {t} (id) VALUES ($1)", 1)
        await conn.execute(f"INSERT INTO {t} (id) VALUES ($1)", 2)
        assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 2
    assert await ids(db, t) == [1, 2]
    assert db.pool_stats()["leased"] == 0


async def test_db_transaction_rolls_back_on_exception(db, new_table, types):
    t = await make_table(db, new_table, types)
    with pytest.raises(Boom):
        async with db.transaction() as conn:
            await conn.execute(f"INSERT INTO {t} (id) VALUES ($1)", 1)
            raise Boom()
    assert await ids(db, t) == []
    assert db.pool_stats()["leased"] == 0


async def test_db_transaction_rolls_back_on_database_error(db, new_table, types):
    t = await make_table(db, new_table, types)
    with pytest.raises(keel.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute(f"INSERT INTO {t} (id) VALUES ($1)", 1)
            await conn.execute(f"INSERT INTO {t} (id) VALUES ($1)", 1)
    assert await ids(db, t) == []
    async with db.connection() as conn:
        assert conn.in_transaction is False
    assert await db.fetchval("SELECT 1") == 1


async def test_db_transaction_on_a_named_database(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.transaction(database="default") as conn:
        assert conn.database == "default"
        await conn.execute(f"INSERT INTO {t} (id) VALUES (7)")
    assert await ids(db, t) == [7]


async def test_connection_transaction_commit_and_rollback(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.connection() as conn:
        assert conn.in_transaction is False
        async with conn.transaction():
            assert conn.in_transaction is True
            await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        assert conn.in_transaction is False
        with pytest.raises(Boom):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
                raise Boom()
        assert conn.in_transaction is False
        assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 1
    assert await ids(db, t) == [1]


async def test_work_is_invisible_to_other_connections_until_commit(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.transaction() as conn:
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        # A read on another pooled connection does not see uncommitted work.
        async with db.connection() as other:
            assert await other.fetchval(f"SELECT count(*) FROM {t}") == 0
    assert await ids(db, t) == [1]


async def test_nested_transaction_rollback_keeps_outer_work(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.transaction() as conn:
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        with pytest.raises(Boom):
            async with conn.transaction():
                assert conn.in_transaction is True
                await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
                raise Boom()
        assert conn.in_transaction is True
        await conn.execute(f"INSERT INTO {t} (id) VALUES (3)")
        assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 2
    assert await ids(db, t) == [1, 3]


async def test_nested_transaction_recovers_from_a_database_error(db, new_table, types):
    # On PostgreSQL an error aborts the whole transaction unless a savepoint is rolled back to.
    t = await make_table(db, new_table, types)
    async with db.transaction() as conn:
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        with pytest.raises(keel.IntegrityError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
                await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        await conn.execute(f"INSERT INTO {t} (id) VALUES (4)")
    assert await ids(db, t) == [1, 4]


async def test_nested_commit_is_undone_by_outer_rollback(db, new_table, types):
    t = await make_table(db, new_table, types)
    with pytest.raises(Boom):
        async with db.transaction() as conn:
            await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
            assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 2
            raise Boom()
    assert await ids(db, t) == []


async def test_three_levels_of_nesting(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.connection() as conn:
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
                with pytest.raises(Boom):
                    async with conn.transaction():
                        await conn.execute(f"INSERT INTO {t} (id) VALUES (3)")
                        raise Boom()
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} (id) VALUES (4)")
            with pytest.raises(Boom):
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} (id) VALUES (5)")
                    async with conn.transaction():
                        await conn.execute(f"INSERT INTO {t} (id) VALUES (6)")
                    raise Boom()
        assert conn.in_transaction is False
    assert await ids(db, t) == [1, 2, 4]


async def test_sequential_transactions_on_one_connection(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.connection() as conn:
        for i in range(5):
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} (id) VALUES ($1)", i)
                    if i % 2:
                        raise Boom()
            except Boom:
                pass
    assert await ids(db, t) == [0, 2, 4]


async def test_connection_released_inside_a_transaction_is_rolled_back(make_db, types):
    d = make_db(pool={"min_size": 1, "max_size": 1, "acquire_timeout": 5})
    t = "t_released_" + uuid.uuid4().hex[:10]
    await d.execute(f"CREATE TABLE {t} (id {types['int']})")
    try:
        conn = await d.acquire()
        await conn.execute("BEGIN")
        assert conn.in_transaction is True
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        await d.release(conn)
        # The pool holds one connection: this is the same one, reset before it was lent again.
        async with d.connection() as again:
            assert again.in_transaction is False
            assert await again.fetchval(f"SELECT count(*) FROM {t}") == 0
        assert d.pool_stats()["leased"] == 0
    finally:
        await d.execute(f"DROP TABLE IF EXISTS {t}")


async def test_a_caught_error_in_a_block_is_reported_by_the_commit_on_postgresql(
        db, engine, new_table, types):
    # PostgreSQL aborts the whole block on an error and answers its COMMIT with ROLLBACK: the
    # block's exit raises instead of pretending the writes are kept (trial finding T20). MySQL
    # and SQLite undo only the failed statement: the rest commits.
    t = await make_table(db, new_table, types)

    async def block():
        async with db.transaction() as conn:
            await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
            with pytest.raises(keel.IntegrityError):
                await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")

    if engine == "postgresql":
        with pytest.raises(keel.InternalError, match="the transaction was rolled back: an "
                           "earlier statement in it failed") as info:
            await block()
        assert info.value.sqlstate == "25P02"
        assert await ids(db, t) == []
    else:
        await block()
        assert await ids(db, t) == [1]
    # The connection went back to the pool clean.
    async with db.connection() as conn:
        assert conn.in_transaction is False
        assert await conn.fetchval("SELECT 1") == 1
    assert db.pool_stats()["leased"] == 0


async def test_a_caught_error_in_a_savepoint_rolls_it_back_on_postgresql(
        db, engine, new_table, types):
    # The nested block's exit rolls back to its savepoint and raises (PostgreSQL refuses to
    # release a savepoint in an aborted block); the enclosing block goes on and commits.
    t = await make_table(db, new_table, types)
    async with db.transaction() as conn:
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")

        async def inner():
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
                with pytest.raises(keel.IntegrityError):
                    await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")

        if engine == "postgresql":
            with pytest.raises(keel.InternalError, match="the savepoint was rolled back") as info:
                await inner()
            assert info.value.sqlstate == "25P02"
        else:
            await inner()
        assert conn.in_transaction is True
        await conn.execute(f"INSERT INTO {t} (id) VALUES (3)")
    assert await ids(db, t) == ([1, 3] if engine == "postgresql" else [1, 2, 3])


async def test_a_transaction_started_and_ended_by_hand(db, new_table, types):
    # asyncpg's and databases' form: tr = conn.transaction(); await tr.start(); … commit/rollback
    # (trial finding T30).
    t = await make_table(db, new_table, types)
    async with db.connection() as conn:
        tr = conn.transaction()
        assert isinstance(tr, keel.Transaction)
        await tr.start()
        assert conn.in_transaction is True
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        await tr.commit()
        assert conn.in_transaction is False

        tr = conn.transaction()
        await tr.start()
        await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
        # Nested by hand: a savepoint, rolled back alone.
        inner = conn.transaction()
        await inner.start()
        await conn.execute(f"INSERT INTO {t} (id) VALUES (3)")
        await inner.rollback()
        assert conn.in_transaction is True
        inner = conn.transaction()
        await inner.start()
        await conn.execute(f"INSERT INTO {t} (id) VALUES (4)")
        await inner.commit()
        await tr.commit()

        tr = conn.transaction()
        await tr.start()
        await conn.execute(f"INSERT INTO {t} (id) VALUES (5)")
        await tr.rollback()
        assert conn.in_transaction is False
        # A by-hand transaction mixes with async with blocks.
        tr = conn.transaction()
        await tr.start()
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {t} (id) VALUES (6)")
        await tr.commit()
    assert await ids(db, t) == [1, 2, 4, 6]
    assert db.pool_stats()["leased"] == 0


async def test_a_transaction_by_hand_refuses_misuse(db, new_table, types):
    t = await make_table(db, new_table, types)
    async with db.connection() as conn:
        tr = conn.transaction()
        with pytest.raises(keel.InterfaceError, match="cannot commit the transaction: it was "
                           r"not started \(await start\(\) first"):
            await tr.commit()
        with pytest.raises(keel.InterfaceError, match="cannot roll back the transaction: it was "
                           "not started"):
            await tr.rollback()
        assert conn.in_transaction is False
        await tr.start()
        with pytest.raises(keel.InterfaceError, match="cannot start the transaction: it was "
                           "already started"):
            await tr.start()
        inner = conn.transaction()
        await inner.start()
        with pytest.raises(keel.InterfaceError, match="a transaction nested in it is still open"):
            await tr.commit()
        await inner.commit()
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        await tr.rollback()
        with pytest.raises(keel.InterfaceError, match="cannot commit the transaction: it was "
                           "already rolled back"):
            await tr.commit()
        with pytest.raises(keel.InterfaceError, match="it was already rolled back"):
            await tr.rollback()
        with pytest.raises(keel.InterfaceError, match="cannot start the transaction: it was "
                           "already rolled back"):
            await tr.start()
        tr = conn.transaction()
        await tr.start()
        await tr.commit()
        with pytest.raises(keel.InterfaceError, match="it was already committed"):
            await tr.rollback()
        with pytest.raises(keel.InterfaceError, match="a Transaction can only be entered once"):
            async with tr:
                pass
        # Inside async with, the block ends the transaction: not commit()/rollback().
        block = conn.transaction()
        async with block:
            with pytest.raises(keel.InterfaceError, match="cannot commit a transaction used as "
                               "a with block by hand"):
                await block.commit()
            await conn.execute(f"INSERT INTO {t} (id) VALUES (2)")
        assert conn.in_transaction is False
        assert await conn.fetchval("SELECT 1") == 1
    assert await ids(db, t) == [2]


async def test_a_commit_by_hand_of_a_failed_block_raises_and_rollback_then_works(
        db, engine, new_table, types):
    # The pattern try: commit() except: rollback() works after the PostgreSQL case of T20.
    t = await make_table(db, new_table, types)
    async with db.connection() as conn:
        tr = conn.transaction()
        await tr.start()
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        with pytest.raises(keel.IntegrityError):
            await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        if engine == "postgresql":
            with pytest.raises(keel.InternalError, match="the transaction was rolled back"):
                await tr.commit()
            await tr.rollback()
            with pytest.raises(keel.InterfaceError, match="it was already rolled back"):
                await tr.rollback()
        else:
            await tr.commit()
        assert conn.in_transaction is False
    assert await ids(db, t) == ([] if engine == "postgresql" else [1])


async def test_a_commit_statement_of_a_failed_block_raises_on_postgresql(
        db, engine, new_table, types):
    # execute("COMMIT") is told the same as the block's exit: PostgreSQL rolled it back.
    t = await make_table(db, new_table, types)
    async with db.connection() as conn:
        await conn.execute("BEGIN")
        await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        with pytest.raises(keel.IntegrityError):
            await conn.execute(f"INSERT INTO {t} (id) VALUES (1)")
        if engine == "postgresql":
            with pytest.raises(keel.InternalError, match="the transaction was rolled back") as info:
                await conn.execute("COMMIT")
            assert info.value.sqlstate == "25P02"
        else:
            await conn.execute("COMMIT")
        assert conn.in_transaction is False
        assert await conn.fetchval("SELECT 1") == 1
    assert await ids(db, t) == ([] if engine == "postgresql" else [1])
