# tests/python/test_packaging.py - what the installed package contains and what it does not import.
import ast
import json
import pathlib
import subprocess
import sys

import keel

DRIVERS = ["asyncpg", "psycopg", "psycopg2", "aiosqlite", "sqlite3", "aiomysql", "asyncmy", "pymysql",
           "motor", "pymongo", "sqlalchemy"]


def test_keel_imports_no_python_database_driver():
    # A fresh interpreter: other test modules may have imported drivers into this one.
    code = (
        "import sys, json, keel, keel.fastapi, keel.sync\n"
        f"print(json.dumps([m for m in {DRIVERS!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_typing_files_are_installed_next_to_the_package():
    package = pathlib.Path(keel.__file__).parent
    assert (package / "py.typed").is_file()
    stub = package / "_native.pyi"
    assert stub.is_file()
    ast.parse(stub.read_text(encoding="utf-8"))


def test_native_extension_lives_in_the_package():
    import keel._native as native
    package = pathlib.Path(keel.__file__).parent
    assert pathlib.Path(native.__file__).parent == package
    assert pathlib.Path(native.__file__).suffix in (".so", ".pyd")


def test_the_synchronous_api_comes_with_keel():
    code = "import keel; print(keel.sync.Database.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "keel.sync"), out.stderr


def test_public_names():
    for name in ("Database", "Connection", "Record", "Error", "InterfaceError", "DatabaseError",
                 "OperationalError", "IntegrityError", "ProgrammingError", "DataError",
                 "InternalError", "NotSupportedError", "ConfigError", "UnknownDatabaseError",
                 "PoolTimeout", "ConnectionLost", "ConnectError", "QueryCanceledError",
                 "QueryTimeout"):
        assert hasattr(keel, name), name
