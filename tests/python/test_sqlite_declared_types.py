# tests/python/test_sqlite_declared_types.py - how SQLite columns of any declared type come back: SQLite's affinity rules, as keel maps them to Python values.
"""SQLite keeps a value's storage class, not its column's type; keel reads the declared type of
the column with SQLite's own affinity rules (sqlite.org/datatype3.html, "Affinity Name Examples"):
a name holding INT is an integer column, CHAR, CLOB or TEXT a text one, BLOB a blob one, REAL,
FLOA or DOUB a float one, and DECIMAL or NUMERIC a decimal one. Applications written for
other databases declare VARCHAR(20) or DOUBLE, and expect their values back as str and float.
A value whose storage class the column's type does not describe (bytes in a text column) comes
back as it is stored.
"""
import decimal

import pytest

import keel

LONG_INT = "AN UNSIGNED INTEGER OF SOME KIND WHOSE NAME RUNS PAST FORTY SEVEN CHARACTERS"
LONG_TEXT = "A CHARACTER STRING TYPE WHOSE NAME RUNS LONGER THAN FORTY SEVEN LETTERS"

# declared type: what '12', 12, 1.5 and b'\x01' come back as.
CASES = {
    "VARCHAR(20)": ("12", "12", "1.5", b"\x01"),
    "NCHAR(5)": ("12", "12", "1.5", b"\x01"),
    "clob": ("12", "12", "1.5", b"\x01"),
    "MEDIUMBLOB": ("12", 12, 1.5, b"\x01"),
    "FLOAT": (12.0, 12.0, 1.5, b"\x01"),
    "DOUBLE": (12.0, 12.0, 1.5, b"\x01"),
    "float8": (12.0, 12.0, 1.5, b"\x01"),
    "BIGINT UNSIGNED": (12, 12, 1.5, b"\x01"),
    "tinyint": (12, 12, 1.5, b"\x01"),
    "DECIMAL(10,2)": (decimal.Decimal(12), decimal.Decimal(12), decimal.Decimal("1.5"), b"\x01"),
    LONG_INT: (12, 12, 1.5, b"\x01"),
    LONG_TEXT: ("12", "12", "1.5", b"\x01"),
}


@pytest.mark.parametrize("declared", list(CASES))
async def test_values_come_back_by_the_affinity_of_the_declared_type(declared, sqlite_url):
    db = keel.Database(sqlite_url)
    await db.start()
    try:
        await db.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {declared})")
        for i, value in enumerate(("12", 12, 1.5, b"\x01")):
            await db.execute("INSERT INTO t (id, v) VALUES ($1, $2)", i, value)
        got = [r["v"] for r in await db.fetch("SELECT v FROM t ORDER BY id")]
        want = list(CASES[declared])
        assert got == want
        assert [type(v) for v in got] == [type(v) for v in want]
    finally:
        await db.close()
