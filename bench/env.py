# bench/env.py - what a run knows about its surroundings: paths, servers, the machine and versions.
"""The run context handed to every workload, and the description of the machine and software."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sqlite3
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import Settings, ids_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/keel_test"

# The distributions whose versions a result is reported with.
VERSIONED = ["keeldb", "asyncpg", "psycopg", "psycopg-binary", "psycopg-pool", "aiosqlite",
             "SQLAlchemy", "uvloop", "fastapi", "uvicorn", "httptools"]


@dataclass
class Ctx:
    """Shared by every case of a run: settings, where data lives, the servers' addresses."""
    settings: Settings
    pg_url: str
    work: Path            # SQLite files and the compiled C floor
    log: Any
    _ids: dict[int, list[int]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def ids(self, n_rows: int) -> list[int]:
        """The fixed sequence of primary keys every contender of a case reads."""
        if n_rows not in self._ids:
            self._ids[n_rows] = ids_for(n_rows)
        return self._ids[n_rows]

    @property
    def pg(self) -> dict[str, Any]:
        """Host, port, user, password and database of pg_url, for pgbench and psql."""
        u = urllib.parse.urlsplit(self.pg_url)
        return {
            "host": u.hostname or "127.0.0.1",
            "port": u.port or 5432,
            "user": urllib.parse.unquote(u.username or "postgres"),
            "password": urllib.parse.unquote(u.password) if u.password else None,
            "database": urllib.parse.unquote(u.path.lstrip("/")) or "postgres",
        }

    def sqlite_url(self, path: Path) -> str:
        return "sqlite:///" + str(path.resolve())


def loopback_only(url: str) -> None:
    """Every target of the benchmark's traffic is on this machine."""
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise SystemExit(f"bench: the PostgreSQL server must be on loopback, not {host!r}")


def machine() -> dict[str, Any]:
    """nproc, CPU model and memory of this machine, and the software measured."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "tools": {t: shutil.which(t) is not None for t in ("pgbench", "wrk", "cc")},
        "versions": versions,
    }
