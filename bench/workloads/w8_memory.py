# bench/workloads/w8_memory.py - workload 8: resident memory with a pool of 32 connections, and peak memory fetching 1M rows.
"""Workload 8, memory, keel against asyncpg, each measurement in a fresh Python process
(bench/mem_probe.py) so that nothing else it did is counted:
- the resident set (VmRSS) of a process holding a pool of 32 open PostgreSQL connections;
- the peak resident set (VmHWM) of a process that fetched 1M rows (int8, int4, text, float8)
  into a list.
Figures are absolute MiB, as the OS accounts them; the increase over the same process just after
importing the driver is kept beside them ("+N" in the table). Lower is better."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from ..core import ROLE_KEEL, ROLE_PEER, Case, Contender, Plan, Sample, Target
from ..env import ROOT, Ctx
from . import Workload

PROBE_TIMEOUT = 300.0


class MemoryContender(Contender):
    def __init__(self, name: str, role: str, what: str, requires: tuple[str, ...] = ()) -> None:
        super().__init__(name, role, requires=requires)
        self.what = what

    async def turn(self, plan: Plan) -> Sample:
        s = plan.settings
        n = s.mem_pool if self.what == "pool" else s.mem_rows
        argv = [sys.executable, "-m", "bench.mem_probe", self.name, self.what, plan.loop,
                plan.ctx.pg_url, str(n)]
        out = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, capture_output=True,
                                      text=True, timeout=PROBE_TIMEOUT)
        if out.returncode != 0:
            tail = " / ".join(ln for ln in out.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"mem_probe {self.name} {self.what} exited {out.returncode}: "
                               f"{tail}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if r["count"] != n:
            raise RuntimeError(f"mem_probe {self.name} {self.what}: {r['count']} instead of {n}")
        value = r["rss"] if self.what == "pool" else r["hwm"]
        return Sample(ops=1, value=value,
                      extra={"baseline_mib": r["baseline_rss"], "delta_mib": value -
                             r["baseline_rss"], "rss_mib": r["rss"], "hwm_mib": r["hwm"]})


def cases(ctx: Ctx) -> list[Case]:
    s = ctx.settings
    out = []
    for what, title, params in (
            ("pool", f"RSS holding a pool of {s.mem_pool} connections", "VmRSS"),
            ("fetch", f"peak RSS fetching {s.mem_rows:,} rows × 4 columns", "VmHWM")):
        out.append(Case(
            workload=8, key=f"w8.pg.{what}", title=title, engine="postgresql",
            params=f"{params}, fresh process", concurrency=1, unit="MiB",
            lower_is_better=True, loop_in_subprocess=True,
            target=Target(1.0, vs="asyncpg", lower_is_better=True),
            contenders=[MemoryContender("keel", ROLE_KEEL, what),
                        MemoryContender("asyncpg", ROLE_PEER, what, requires=("asyncpg",))]))
    return out


WORKLOAD = Workload(
    8, "memory", cases,
    measures="keel vs asyncpg, each figure from a fresh process (bench/mem_probe.py): VmRSS "
             "while holding a pool of 32 PostgreSQL connections, and VmHWM (peak) after "
             "fetching 1M rows × 4 columns into a list; MiB, lower is better, with the increase "
             "over the process just after importing the driver.")
