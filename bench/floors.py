# bench/floors.py - the physical limits reported beside the drivers: pgbench, a C loop over libsqlite3, stdlib sqlite3.
"""Floors: what the server and the machine allow with no Python driver at all (pgbench, the C
loop) or with the thinnest synchronous one (stdlib sqlite3). They are measured in the same run and
table as the drivers, at concurrency 1, once per run (they do not depend on the event loop)."""
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
    """pgbench, prepared protocol, one client, running a one-statement script."""

    def __init__(self, script: str, name: str = "pgbench -M prepared") -> None:
        super().__init__(name, ROLE_FLOOR, tools=("pgbench",), loop_independent=True,
                         note="no Python: libpq and the server only")
        self.script = script

    def _argv(self, ctx: Ctx, script: Path, limit: list[str], log_prefix: str | None) -> list[str]:
        pg = ctx.pg
        argv = ["pgbench", "-n", "-M", "prepared", "-c", "1", "-j", "1", "-f", str(script),
                "-h", pg["host"], "-p", str(pg["port"]), "-U", pg["user"], *limit]
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
            # pgbench counts in whole seconds; the smoke run asks for a few transactions instead.
            if s.mode == "smoke":
                limit = ["-t", str(plan.max_ops)]
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


def sqlite_floor_binary(ctx: Ctx) -> Path:
    """Compiles bench/c/sqlite_floor.c with cc and -lsqlite3 (once per run) into the work dir."""
    exe = ctx.work / "sqlite_floor"
    src = ROOT / "bench" / "c" / "sqlite_floor.c"
    if "sqlite_floor" not in ctx.data:
        ctx.work.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
             "-o", str(exe), str(src), "-lsqlite3"],
            capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"cc failed on {src.name}: {out.stderr.strip()[-800:]}")
        ctx.data["sqlite_floor"] = exe
    return exe


class SqliteC(Contender):
    """bench/c/sqlite_floor.c: the same statement in a C loop over libsqlite3."""

    def __init__(self, path: Path, sql: str, nrows: int) -> None:
        super().__init__("C loop over libsqlite3", ROLE_FLOOR, tools=("cc",),
                         loop_independent=True, note="no Python: libsqlite3 only")
        self.path = path
        self.sql = sql
        self.nrows = nrows

    async def turn(self, plan: Plan) -> Sample:
        return await asyncio.to_thread(self._turn, plan)

    def _turn(self, plan: Plan) -> Sample:
        s = plan.settings
        exe = sqlite_floor_binary(plan.ctx)
        warmup = 0 if s.warmup_seconds <= 0 else 20_000
        out, _ = _run_child([str(exe), str(self.path), qmark(self.sql), str(self.nrows),
                             str(warmup), str(max(plan.max_ops, 1)),
                             repr(max(s.measure_seconds, 0.01))])
        r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return Sample(ops=r["ops"], seconds=r["seconds"], cpu_seconds=r["cpu_seconds"],
                      p50_us=r["p50_us"], p99_us=r["p99_us"])


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
