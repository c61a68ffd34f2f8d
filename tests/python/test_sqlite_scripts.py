# tests/python/test_sqlite_scripts.py - SQLite text holding several statements, empty ones or none: run in turn, the last statement's result returned.
"""SQLite runs a parameterless text of several statements one after another, as sqlite3's
executescript does, and keel returns the result of the last one (as PostgreSQL's simple query
protocol does). Empty statements (stray semicolons) and comments are skipped; a text holding no
statement at all is an empty result, not an error.
"""
import pytest

import keel


@pytest.fixture
async def lite(sqlite_url):
    d = keel.Database(sqlite_url)
    await d.start()
    yield d
    await d.close()


async def test_empty_statements_and_comments_are_skipped(lite):
    assert await lite.fetch("SELECT 1;;; SELECT 2") == [(2,)]
    assert await lite.fetch("; ;") == []
    assert await lite.execute("; ;") == 0
    assert await lite.fetch("-- nothing but a comment\n;") == []
    assert await lite.execute("CREATE TABLE a (x INTEGER); ; /* done */ ;") == 0
    # The affected count is the last statement's.
    assert await lite.execute("INSERT INTO a VALUES (1); INSERT INTO a VALUES (2), (3);") == 2
    assert await lite.fetch("SELECT x FROM a ORDER BY x; ;") == [(1,), (2,), (3,)]


async def test_a_failing_statement_stops_the_script(lite):
    await lite.execute("CREATE TABLE b (x INTEGER PRIMARY KEY)")
    with pytest.raises(keel.IntegrityError):
        await lite.execute("INSERT INTO b VALUES (1); INSERT INTO b VALUES (1); "
                           "INSERT INTO b VALUES (2)")
    # Statements before the failure ran (there is no transaction around a script), those
    # after it did not.
    assert await lite.fetch("SELECT x FROM b") == [(1,)]
    with pytest.raises(keel.ProgrammingError, match="syntax error"):
        await lite.execute("INSERT INTO b VALUES (3); SELEC 1")
    assert await lite.fetchval("SELECT count(*) FROM b") == 2
