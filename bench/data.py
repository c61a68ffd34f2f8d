# bench/data.py - creates and fills the benchmark's tables (PostgreSQL bench_*) and SQLite files.
"""The data every workload reads, made by the harness itself and reused between runs.

PostgreSQL tables live in the test database and are named bench_<what>_<rows>, so the smoke
run's small tables never collide with the full run's. They are filled server-side with
generate_series through psql (not through a driver under test) and rebuilt only when their row
count is wrong. SQLite files live under the work directory (build/bench/ by default) in WAL mode;
PRAGMA user_version records that a file was filled completely.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from .env import Ctx

POINTS_COLUMNS = "id, a, b, c"
MIXED_COLUMNS = "i4, i8, f8, num, t, flag, ts, u, data, doc"
INSERT_COLUMNS = ("id", "qty", "price", "name", "active", "created", "note")
PG_INSERT_TABLE = "bench_insert"


def psql(ctx: Ctx, sql: str, timeout: float = 300.0) -> str:
    """Runs SQL with psql against the benchmark database; returns its unaligned output."""
    pg = ctx.pg
    env = dict(os.environ)
    if pg["password"]:
        env["PGPASSWORD"] = pg["password"]
    out = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", pg["host"],
         "-p", str(pg["port"]), "-U", pg["user"], "-d", pg["database"], "-c", sql],
        capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def _pg_count(ctx: Ctx, table: str) -> int | None:
    exists = psql(ctx, f"SELECT to_regclass('public.{table}') IS NOT NULL")
    if exists != "t":
        return None
    return int(psql(ctx, f"SELECT count(*) FROM {table}"))


def pg_points(ctx: Ctx) -> str:
    """bench_points_N: N rows (id int4 primary key, a int4, b text, c float8)."""
    n = ctx.settings.points_rows
    table = f"bench_points_{n}"
    if _pg_count(ctx, table) != n:
        ctx.log(f"  data: creating {table} ({n} rows)")
        psql(ctx, f"""
            DROP TABLE IF EXISTS {table};
            CREATE TABLE {table} (id int4 PRIMARY KEY, a int4 NOT NULL, b text NOT NULL,
                                  c float8 NOT NULL);
            INSERT INTO {table}
                SELECT g, g % 1000, md5(g::text), g * 0.25 FROM generate_series(1, {n}) g;
            ANALYZE {table};""")
    return table


def pg_mixed(ctx: Ctx) -> str:
    """bench_mixed_N: N rows of ten columns of mixed types (workload 3)."""
    n = ctx.settings.mixed_rows
    table = f"bench_mixed_{n}"
    if _pg_count(ctx, table) != n:
        ctx.log(f"  data: creating {table} ({n} rows)")
        psql(ctx, f"""
            DROP TABLE IF EXISTS {table};
            CREATE TABLE {table} (i4 int4, i8 int8, f8 float8, num numeric(14,4), t text,
                                  flag bool, ts timestamptz, u uuid, data bytea, doc jsonb);
            INSERT INTO {table}
                SELECT g, g::int8 * 1000003, g / 7.0, (g * 12.3456)::numeric(14,4),
                       'row ' || md5(g::text), g % 2 = 0,
                       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
                       md5(g::text)::uuid, decode(md5(g::text), 'hex'),
                       jsonb_build_object('id', g, 'name', md5(g::text), 'tags', jsonb_build_array(g % 3, g % 5))
                FROM generate_series(1, {n}) g;
            ANALYZE {table};""")
    return table


def pg_insert(ctx: Ctx) -> str:
    """bench_insert: the seven-column table workload 4 inserts into (emptied at every turn)."""
    psql(ctx, f"""
        CREATE TABLE IF NOT EXISTS {PG_INSERT_TABLE} (
            id int8 NOT NULL, qty int4 NOT NULL, price float8 NOT NULL, name text NOT NULL,
            active bool NOT NULL, created timestamptz NOT NULL, note text)""")
    return PG_INSERT_TABLE


def sqlite_points(ctx: Ctx, n: int) -> Path:
    """points_N.db: a WAL database with table points(id INTEGER PRIMARY KEY, a, b, c) of N rows."""
    ctx.work.mkdir(parents=True, exist_ok=True)
    path = ctx.work / f"points_{n}.db"
    if path.exists():
        with sqlite3.connect(path) as con:
            if con.execute("PRAGMA user_version").fetchone()[0] == n:
                return path
    ctx.log(f"  data: creating {path} ({n} rows, WAL)")
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("CREATE TABLE points (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, "
                    "b TEXT NOT NULL, c REAL NOT NULL)")
        con.execute(f"""
            WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n})
            INSERT INTO points SELECT x, x % 1000, printf('row %08d', x), x * 0.25 FROM g""")
        con.commit()
        con.execute(f"PRAGMA user_version = {n}")
        con.commit()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return path


def sqlite_insert(ctx: Ctx) -> Path:
    """insert.db: a WAL database with the seven-column table ins, emptied at every turn."""
    ctx.work.mkdir(parents=True, exist_ok=True)
    path = ctx.work / "insert.db"
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE IF NOT EXISTS ins (id INTEGER NOT NULL, qty INTEGER NOT NULL, "
                    "price REAL NOT NULL, name TEXT NOT NULL, active BOOLEAN NOT NULL, "
                    "created TIMESTAMPTZ NOT NULL, note TEXT)")
        con.commit()
    finally:
        con.close()
    return path


# ---- MariaDB and MongoDB (workload 9) ----

MYSQL_DEFAULT_URL = "mysql://root@127.0.0.1:3306/keel_test"
MONGO_DEFAULT_URL = "mongodb://127.0.0.1:27017/keel_test"


def mysql_parts(url: str) -> dict[str, Any]:
    """Host, port, user, password and database of a mysql:// URL, for the mariadb client and
    the peers' connect() keywords."""
    u = urllib.parse.urlsplit(url)
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 3306,
        "user": urllib.parse.unquote(u.username or "root"),
        "password": urllib.parse.unquote(u.password) if u.password else "",
        "database": urllib.parse.unquote(u.path.lstrip("/")) or "keel_test",
    }


def mariadb(ctx: Ctx, url: str, sql: str, timeout: float = 300.0) -> str:
    """Runs SQL with the mariadb command-line client (not a driver under test); returns its
    tab-separated output without headers."""
    m = mysql_parts(url)
    env = dict(os.environ)
    if m["password"]:
        # MYSQL_PWD keeps the password off the command line, where ps would show it.
        env["MYSQL_PWD"] = m["password"]
    out = subprocess.run(
        ["mariadb", "--batch", "--skip-column-names", "-h", m["host"], "-P", str(m["port"]),
         "-u", m["user"], m["database"], "-e", sql],
        capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"mariadb client failed: {out.stderr.strip()}")
    return out.stdout.strip()


def _mysql_count(ctx: Ctx, url: str, table: str) -> int | None:
    exists = mariadb(ctx, url, "SELECT count(*) FROM information_schema.tables WHERE "
                               f"table_schema = DATABASE() AND table_name = '{table}'")
    if exists != "1":
        return None
    return int(mariadb(ctx, url, f"SELECT count(*) FROM {table}"))


def mysql_points(ctx: Ctx, url: str) -> str:
    """bench_points_N on MariaDB: N rows (id int primary key, a int, b text, c double), filled
    server-side by a recursive CTE."""
    n = ctx.settings.points_rows
    table = f"bench_points_{n}"
    if _mysql_count(ctx, url, table) != n:
        ctx.log(f"  data: creating {table} on MariaDB ({n} rows)")
        mariadb(ctx, url, f"""
            DROP TABLE IF EXISTS {table};
            CREATE TABLE {table} (id INT PRIMARY KEY, a INT NOT NULL, b TEXT NOT NULL,
                                  c DOUBLE NOT NULL) ENGINE=InnoDB;
            SET SESSION max_recursive_iterations = {n + 1};
            INSERT INTO {table}
                WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n})
                SELECT x, x % 1000, md5(x), x * 0.25 FROM g;
            ANALYZE TABLE {table};""")
    return table


def mysql_mixed(ctx: Ctx, url: str) -> str:
    """bench_mixed_N on MariaDB: workload 3's ten columns in MariaDB's nearest types (no uuid
    or jsonb type of its own in every version: uuid as CHAR(36), json as JSON, i.e. LONGTEXT)."""
    n = ctx.settings.mixed_rows
    table = f"bench_mixed_{n}"
    if _mysql_count(ctx, url, table) != n:
        ctx.log(f"  data: creating {table} on MariaDB ({n} rows)")
        mariadb(ctx, url, f"""
            DROP TABLE IF EXISTS {table};
            CREATE TABLE {table} (i4 INT, i8 BIGINT, f8 DOUBLE, num DECIMAL(14,4), t TEXT,
                                  flag BOOLEAN, ts DATETIME(6), u CHAR(36), data BLOB,
                                  doc JSON) ENGINE=InnoDB;
            SET SESSION max_recursive_iterations = {n + 1};
            INSERT INTO {table}
                WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n})
                SELECT x, x * 1000003, x / 7.0, x * 12.3456, concat('row ', md5(x)), x % 2 = 0,
                       TIMESTAMP '2024-01-01 00:00:00' + INTERVAL x MINUTE, uuid(),
                       unhex(md5(x)),
                       json_object('id', x, 'name', md5(x), 'tags', json_array(x % 3, x % 5))
                FROM g;""")
    return table


def mysql_insert(ctx: Ctx, url: str) -> str:
    """bench_insert on MariaDB: the seven-column table workload 9 inserts into."""
    mariadb(ctx, url, f"""
        CREATE TABLE IF NOT EXISTS {PG_INSERT_TABLE} (
            id BIGINT NOT NULL, qty INT NOT NULL, price DOUBLE NOT NULL, name TEXT NOT NULL,
            active BOOLEAN NOT NULL, created DATETIME(6) NOT NULL, note TEXT) ENGINE=InnoDB""")
    return PG_INSERT_TABLE
