# bench/floors.py - the physical limits reported beside the drivers: pgbench, the C loops of bench/c/ (libpq, libsqlite3, libmariadb, libmongoc), stdlib sqlite3.
"""Floors: what the server and the machine allow with no Python driver at all (pgbench, the C
loops of bench/c/ over libpq, libsqlite3, libmariadb and libmongoc) or with the thinnest
synchronous one (stdlib sqlite3). They are measured in the same run and table as the drivers,
once per run (they do not depend on the event loop); pgbench and the C loops run a case with
several tasks on as many connections as keel's pool uses (one per task, at most the pool's size)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .core import ROLE_FLOOR, Contender, Plan, Sample, SyncContender, percentile
from .data import mysql_parts
from .drivers import qmark
from .env import ROOT, Ctx

FLOOR_TIMEOUT = 120.0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """Runs a program to completion; returns its stdout and the CPU time it used."""
    cpu0 = _children_cpu()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=FLOOR_TIMEOUT, env=env)
    cpu = _children_cpu() - cpu0
    if out.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited {out.returncode}: "
                           f"{(out.stderr or out.stdout).strip()[-500:]}")
    return out.stdout, cpu


class Pgbench(Contender):
    """pgbench, prepared protocol, running a one-statement script on `clients` connections (as
    many threads as there are CPUs, at most one per client)."""

    def __init__(self, script: str, name: str = "pgbench -M prepared", clients: int = 1) -> None:
        super().__init__(name, ROLE_FLOOR, tools=("pgbench",), loop_independent=True,
                         concurrent=True, note="no Python: libpq and the server only"
                         + (f", {clients} clients" if clients > 1 else ""))
        self.script = script
        self.clients = clients

    def _argv(self, ctx: Ctx, script: Path, limit: list[str], log_prefix: str | None) -> list[str]:
        pg = ctx.pg
        threads = min(self.clients, os.cpu_count() or 1)
        argv = ["pgbench", "-n", "-M", "prepared", "-c", str(self.clients), "-j", str(threads),
                "-f", str(script), "-h", pg["host"], "-p", str(pg["port"]), "-U", pg["user"],
                *limit]
        if log_prefix:
            argv += ["-l", f"--log-prefix={log_prefix}"]
        return argv + [pg["database"]]

    async def turn(self, plan: Plan) -> Sample:
        return await asyncio.to_thread(self._turn, plan)

    def _turn(self, plan: Plan) -> Sample:
        ctx: Ctx = plan.ctx
        s = plan.settings
        env = dict(os.environ)
        if ctx.pg["password"]:
            env["PGPASSWORD"] = ctx.pg["password"]
        with tempfile.TemporaryDirectory(prefix="keel-bench-pgbench-") as tmp:
            script = Path(tmp) / "script.sql"
            script.write_text(self.script)
            if s.warmup_seconds > 0:
                _run_child(self._argv(ctx, script, ["-t", "500"], None), env)
            # pgbench counts in whole seconds; the smoke run asks for a few transactions instead
            # (-t counts per client).
            if s.mode == "smoke":
                limit = ["-t", str(-(-plan.max_ops // self.clients))]
            else:
                limit = ["-T", str(max(1, round(s.measure_seconds)))]
            prefix = str(Path(tmp) / "log")
            out, cpu = _run_child(self._argv(ctx, script, limit, prefix), env)
            latencies: list[float] = []
            for log in Path(tmp).glob("log.*"):
                for line in log.read_text().splitlines():
                    parts = line.split()
                    if len(parts) >= 3:
                        latencies.append(float(parts[2]))
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        n = re.search(r"number of transactions actually processed: (\d+)", out)
        if not m or not n:
            raise RuntimeError(f"unexpected pgbench output: {out.strip()[-300:]}")
        ops, tps = int(n.group(1)), float(m.group(1))
        latencies.sort()
        return Sample(ops=ops, seconds=ops / tps if tps > 0 else 0.0, cpu_seconds=cpu,
                      p50_us=percentile(latencies, 0.5), p99_us=percentile(latencies, 0.99))


# The C floor programs under bench/c/ and the pkg-config packages each links with. scripts/bootstrap
# installs every one of these -dev packages (libkeel links the same libraries), so `make test`
# builds and runs them too.
C_PROGRAMS = {
    "sqlite_floor": "sqlite3",
    "pg_floor": "libpq",
    "mariadb_floor": "libmariadb",
    "mongo_floor": "libmongoc-1.0",
}


def c_floor_binary(ctx: Ctx, program: str) -> Path:
    """Compiles bench/c/PROGRAM.c (once per run) into the work dir with cc, linking the library
    pkg-config names for it; returns the executable."""
    key = f"c_floor:{program}"
    if key not in ctx.data:
        ctx.work.mkdir(parents=True, exist_ok=True)
        exe = ctx.work / program
        src = ROOT / "bench" / "c" / f"{program}.c"
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", C_PROGRAMS[program]],
                               capture_output=True, text=True, timeout=30)
        if flags.returncode != 0:
            raise RuntimeError(f"pkg-config knows no {C_PROGRAMS[program]}: "
                               f"{flags.stderr.strip()}")
        out = subprocess.run(
            ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-pthread",
             "-o", str(exe), str(src), *flags.stdout.split()],
            capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"cc failed on {src.name}: {out.stderr.strip()[-800:]}")
        ctx.data[key] = exe
    return ctx.data[key]


class CFloor(Contender):
    """A program of bench/c/ (floor.h's loop): the case's operation in C over the engine's client
    library, on `connections` connections, each on a thread of its own. args are the program's
    mode and its arguments; env(ctx) gives the connection's environment variables."""

    def __init__(self, name: str, program: str, args: list[str], *, connections: int = 1,
                 env: Callable[[Ctx], dict[str, str]] | None = None, note: str = "") -> None:
        super().__init__(name, ROLE_FLOOR, tools=("cc", "pkg-config"), loop_independent=True,
                         concurrent=True, note=note or f"no Python: {C_PROGRAMS[program]} only"
                         + (f", {connections} connections" if connections > 1 else ""))
        self.program = program
        self.args = args
        self.connections = connections
        self.env = env

    async def turn(self, plan: Plan) -> Sample:
        return await asyncio.to_thread(self._turn, plan)

    def _turn(self, plan: Plan) -> Sample:
        s = plan.settings
        exe = c_floor_binary(plan.ctx, self.program)
        env = None
        if self.env is not None:
            env = dict(os.environ)
            env.update(self.env(plan.ctx))
        # Warmed up like the drivers: until the warm-up's operations or seconds.
        out, _ = _run_child([str(exe), str(self.connections), str(plan.warmup_ops),
                             repr(max(s.warmup_seconds, 0.0)), str(max(plan.max_ops, 1)),
                             repr(max(s.measure_seconds, 0.01)), *self.args], env)
        r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return Sample(ops=r["ops"], seconds=r["seconds"], cpu_seconds=r["cpu_seconds"],
                      p50_us=r["p50_us"], p99_us=r["p99_us"])


def sqlite_c_floor(path: Path, sql: str, nrows: int, connections: int = 1) -> CFloor:
    """bench/c/sqlite_floor.c: the statement in a C loop over libsqlite3, a connection (and a
    thread) per reader."""
    return CFloor("C loop over libsqlite3", "sqlite_floor",
                  [str(path), "read", qmark(sql), str(nrows)], connections=connections)


def sqlite_c_insert_floor(path: Path, table: str, columns: str, nrows: int) -> CFloor:
    """bench/c/sqlite_floor.c: workload 4's rows by one prepared INSERT in one transaction."""
    return CFloor("C loop over libsqlite3", "sqlite_floor",
                  [str(path), "insert", table, columns, str(nrows)],
                  note="no Python: sqlite3 only, synchronous=NORMAL as keel")


def pg_env(ctx: Ctx) -> dict[str, str]:
    """libpq's environment for the benchmark database (pgbench and pg_floor)."""
    pg = ctx.pg
    env = {"PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGUSER": pg["user"],
           "PGDATABASE": pg["database"]}
    if pg["password"]:
        env["PGPASSWORD"] = pg["password"]
    return env


def pg_c_floor(args: list[str], connections: int = 1) -> CFloor:
    """bench/c/pg_floor.c: fetch, pipelined executemany or binary COPY over libpq."""
    return CFloor("C loop over libpq", "pg_floor", args, connections=connections, env=pg_env)


def mariadb_c_floor(url: str, args: list[str], connections: int = 1) -> CFloor:
    """bench/c/mariadb_floor.c: the MariaDB operation over libmariadb."""
    def env(ctx: Ctx) -> dict[str, str]:
        m = mysql_parts(url)
        out = {"FLOOR_MYSQL_HOST": m["host"], "FLOOR_MYSQL_PORT": str(m["port"]),
               "FLOOR_MYSQL_USER": m["user"], "FLOOR_MYSQL_DATABASE": m["database"]}
        if m["password"]:
            out["MYSQL_PWD"] = m["password"]
        return out

    return CFloor("C loop over libmariadb", "mariadb_floor", args, connections=connections,
                  env=env)


def mongo_c_floor(url: str, args: list[str], connections: int = 1) -> CFloor:
    """bench/c/mongo_floor.c: the MongoDB operation over libmongoc, a client per connection."""
    return CFloor("C loop over libmongoc", "mongo_floor", args, connections=connections,
                  env=lambda ctx: {"FLOOR_MONGO_URL": url})


def sqlite_sync(path: Path, sql: str, ids: list[int] | None) -> SyncContender:
    """The stdlib sqlite3 module, synchronous: the floor of a Python SQLite driver. With ids, the
    statement takes one parameter, the i-th key of the case's sequence."""

    @contextlib.contextmanager
    def session(plan: Plan) -> Iterator[Callable[[int], Any]]:
        con = sqlite3.connect(str(path))
        try:
            q = qmark(sql)
            if ids is None:
                def op(i: int) -> Any:
                    return con.execute(q).fetchall()
            else:
                keys = ids
                mask = len(keys) - 1

                def op(i: int) -> Any:
                    return con.execute(q, (keys[i & mask],)).fetchall()
            yield op
        finally:
            con.close()

    return SyncContender("sqlite3 (stdlib, sync)", ROLE_FLOOR, session,
                         note="synchronous: blocks its thread; no event loop")
