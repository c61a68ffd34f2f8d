# bench/workloads/w7_fastapi.py - workload 7: FastAPI under uvicorn (one worker) driven by wrk on loopback, 64 connections.
"""Workload 7, end to end: the service in bench/apps/fastapi_app.py (one point select per
request, or ten) on keel, on SQLAlchemy 2.0 async + asyncpg and on plain asyncpg, each under
uvicorn with one worker on 127.0.0.1, driven by wrk (one thread, 64 keep-alive connections,
pseudo-random keys) for a bounded duration. The three services run side by side for a case and
are loaded in turn, A B C A B C; an idle service costs nothing.

Throughput is wrk's requests/s, latency its p50/p99; CPU per request is the service process's
user + system time (from /proc/PID/stat) over the requests it served. Without wrk (the smoke run
of `make test`), a small asyncio HTTP/1.1 client sends a bounded number of requests instead.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .. import data
from ..core import (ROLE_KEEL, ROLE_PEER, Case, Contender, Plan, Sample, Target,
                    latency_sample)
from ..env import ROOT, Ctx
from . import Workload

POOL_SIZE = 10
STARTUP_TIMEOUT = 30.0
WRK_SCRIPT = ROOT / "bench" / "apps" / "wrk_ids.lua"
SQLA = "SQLAlchemy + asyncpg"

# (contender name, BENCH_APP, role, Python modules it needs)
VARIANTS = [
    ("keel", "keel", ROLE_KEEL, ("fastapi", "uvicorn")),
    (SQLA, "sqlalchemy", ROLE_PEER, ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "greenlet")),
    ("asyncpg", "asyncpg", ROLE_PEER, ("fastapi", "uvicorn", "asyncpg")),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_parser() -> str:
    import importlib.util
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat (fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One uvicorn process serving one variant of the app on a free loopback port."""

    def __init__(self, ctx: Ctx, variant: str, loop: str, table: str) -> None:
        self.variant = variant
        self.port = free_port()
        self.log_path = ctx.work / f"w7-{variant}-{loop}.log"
        env = dict(os.environ, BENCH_APP=variant, BENCH_PG_URL=ctx.pg_url, BENCH_TABLE=table,
                   BENCH_ROWS=str(ctx.settings.points_rows), BENCH_POOL=str(POOL_SIZE))
        ctx.work.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.apps.fastapi_app:app",
             "--host", "127.0.0.1", "--port", str(self.port), "--loop", loop,
             "--http", http_parser(), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        """The last lines the service wrote (where its exception is), on one line."""
        try:
            lines = [ln.strip() for ln in self.log_path.read_text().splitlines() if ln.strip()]
        except OSError:
            return ""
        return " / ".join(lines[-3:])

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn ({self.variant}) exited {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            try:
                status, _ = await http_get("127.0.0.1", self.port, "/one/1")
                if status == 200:
                    return
                raise RuntimeError(f"GET /one/1 on the {self.variant} app answered {status}: "
                                   f"{self.log_tail()}")
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn ({self.variant}) not ready within "
                                   f"{STARTUP_TIMEOUT:g} s: {self.log_tail()}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def http_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


async def python_load(port: int, prefix: str, ids: list[int], connections: int,
                      max_requests: int, max_seconds: float) -> Sample:
    """A bounded keep-alive HTTP/1.1 load from `connections` asyncio connections (no wrk)."""
    latencies: list[int] = []
    counter = itertools.count()
    mask = len(ids) - 1
    deadline = time.perf_counter() + max_seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                if i >= max_requests or time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter_ns()
                writer.write(f"GET {prefix}{ids[i & mask]} HTTP/1.1\r\n"
                             "Host: 127.0.0.1\r\n\r\n".encode())
                status, body = await asyncio.wait_for(read_response(reader), 30)
                latencies.append(time.perf_counter_ns() - t0)
                if status != 200:
                    raise RuntimeError(f"GET {prefix}… answered {status}: {body[:200]!r}")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return latency_sample(latencies, time.perf_counter() - t0, None)


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def parse_wrk(out: str) -> Sample:
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)", out)
    if not rps or not total:
        raise RuntimeError(f"unexpected wrk output: {out.strip()[-400:]}")
    pct = {int(p): float(v) * _UNITS[u] for p, v, u in
           re.findall(r"^\s+(\d+)%\s+([0-9.]+)(us|ms|s)\s*$", out, re.MULTILINE)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx and int(non2xx.group(1)) > 0:
        raise RuntimeError(f"{non2xx.group(1)} requests failed (non-2xx answers)")
    ops = int(total.group(1))
    extra: dict[str, Any] = {"driver": "wrk"}
    sock = re.search(r"Socket errors: (.*)", out)
    if sock:
        extra["socket_errors"] = sock.group(1).strip()
    return Sample(ops=ops, seconds=ops / float(rps.group(1)), p50_us=pct.get(50),
                  p99_us=pct.get(99), extra=extra)


class HttpContender(Contender):
    """Loads the running service of one variant with wrk (or the asyncio client)."""

    def __init__(self, name: str, role: str, variant: str, requires: tuple[str, ...],
                 path: str) -> None:
        super().__init__(name, role, requires=requires)
        self.variant = variant
        self.path = path

    async def turn(self, plan: Plan) -> Sample:
        servers: dict[str, Server | Exception] = plan.fixture
        server = servers.get(self.variant)
        if isinstance(server, Exception):
            raise server
        if server is None:
            raise RuntimeError(f"no {self.variant} service is running")
        s = plan.settings
        ctx: Ctx = plan.ctx
        use_wrk = s.mode != "smoke" and shutil.which("wrk") is not None
        if use_wrk:
            if s.http_warmup_seconds > 0:
                await self._wrk(plan, server, s.http_warmup_seconds)
            cpu0 = process_cpu_seconds(server.proc.pid)
            sample = await self._wrk(plan, server, s.http_seconds)
        else:
            ids = ctx.ids(s.points_rows)
            conns = min(s.wrk_connections, max(1, s.http_requests_cap))
            if s.http_warmup_seconds > 0:
                await python_load(server.port, self.path, ids, conns, s.http_requests_cap,
                                  s.http_warmup_seconds)
            cpu0 = process_cpu_seconds(server.proc.pid)
            sample = await python_load(server.port, self.path, ids, conns,
                                       s.http_requests_cap, s.http_seconds)
            sample.extra = {"driver": "python asyncio client"}
        sample.cpu_seconds = process_cpu_seconds(server.proc.pid) - cpu0
        if server.proc.poll() is not None:
            raise RuntimeError(f"uvicorn ({self.variant}) died: {server.log_tail()}")
        return sample

    async def _wrk(self, plan: Plan, server: Server, seconds: float) -> Sample:
        s = plan.settings
        env = dict(os.environ, BENCH_ROWS=str(s.points_rows), BENCH_PATH=self.path)
        argv = ["wrk", "-t1", f"-c{s.wrk_connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "10s", "--latency", "-s", str(WRK_SCRIPT),
                f"http://127.0.0.1:{server.port}/"]
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"wrk exited {proc.returncode}: {text.strip()[-400:]}")
        return parse_wrk(text)


def cases(ctx: Ctx) -> list[Case]:
    table = data.pg_points(ctx)

    @contextlib.asynccontextmanager
    async def services(plan: Plan) -> AsyncIterator[dict[str, Server | Exception]]:
        """Starts one uvicorn per installed variant on plan.loop; a variant that fails to start
        is handed to its contender as the error to report."""
        servers: dict[str, Server | Exception] = {}
        started: list[Server] = []
        try:
            for name, variant, role, requires in VARIANTS:
                probe = Contender(name, role, requires=requires)
                if probe.missing() is not None:
                    continue
                srv = Server(ctx, variant, plan.loop, table)
                started.append(srv)
                servers[variant] = srv
            for srv in started:
                try:
                    await srv.wait_ready()
                except Exception as exc:  # reported by that variant's contender
                    servers[srv.variant] = exc
            yield servers
        finally:
            for srv in started:
                srv.stop()

    out = []
    for endpoint, what in (("/one/", "1 point select"), ("/ten/", "10 point selects")):
        contenders: list[Contender] = [
            HttpContender(name, role, variant, requires, endpoint)
            for name, variant, role, requires in VARIANTS]
        out.append(Case(
            workload=7, key=f"w7.pg.{endpoint.strip('/')}",
            title=f"FastAPI endpoint, {what} per request",
            engine="postgresql",
            params=f"uvicorn 1 worker, {ctx.settings.wrk_connections} connections, "
                   f"pool {POOL_SIZE}",
            concurrency=ctx.settings.wrk_connections, unit="req/s",
            target=Target(1.3, vs=SQLA), fixture=services, loop_in_subprocess=True,
            contenders=contenders))
    return out


WORKLOAD = Workload(
    7, "FastAPI end to end", cases,
    measures="bench/apps/fastapi_app.py under uvicorn (one worker, httptools when installed) "
             "on keel, SQLAlchemy 2.0 async (AsyncSession, ORM select) + asyncpg, and plain "
             "asyncpg, pools of 10; wrk -t1 -c64 on loopback with random keys, one endpoint "
             "doing 1 point select and one doing 10. CPU per request is the server process's.")
