# bench/mem_probe.py - workload 8's subprocess: one driver, one memory measurement, read from /proc/self/status.
"""python -m bench.mem_probe DRIVER WHAT LOOP URL N

DRIVER keel | asyncpg; WHAT pool (hold a pool of N open connections) | fetch (fetch N rows of
four columns into a list); LOOP asyncio | uvloop. Prints one JSON object, in MiB:
baseline_rss (after importing the driver, before connecting), rss (VmRSS while holding the
pool or the rows) and hwm (VmHWM, the peak resident set since the process started).
Each measurement is a fresh process, so no other measurement's memory is counted.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

FETCH_SQL = ("SELECT g::int8 AS id, (g % 1000)::int4 AS a, 'row ' || g AS b, g * 0.25::float8 AS c "
             "FROM generate_series(1, {n}) g")


def status_mib() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MiB (the kernel's accounting, in kB)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024.0
    return {"rss": out["VmRSS"], "hwm": out["VmHWM"]}


async def keel_probe(what: str, url: str, n: int) -> dict[str, Any]:
    import keel
    size = n if what == "pool" else 1
    db = keel.Database({"default": "main", "databases": {"main": {
        "url": url, "pool": {"min_size": size, "max_size": size}}}})
    base = status_mib()["rss"]
    await db.start()
    try:
        if what == "pool":
            await db.execute("SELECT 1")
            deadline = time.monotonic() + 30
            while db.pool_stats()["size"] < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"keel pool did not reach {n} connections in 30 s")
                await asyncio.sleep(0.01)
            m = status_mib()
            count = db.pool_stats()["size"]
        else:
            rows = await db.fetch(FETCH_SQL.format(n=n))
            m = status_mib()
            count = len(rows)
            del rows
    finally:
        await db.close()
    return {"baseline_rss": base, **m, "count": count}


async def asyncpg_probe(what: str, url: str, n: int) -> dict[str, Any]:
    import asyncpg
    base = status_mib()["rss"]
    if what == "pool":
        pool = await asyncpg.create_pool(url, min_size=n, max_size=n)
        try:
            m = status_mib()
            count = pool.get_size()
        finally:
            await pool.close()
    else:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(FETCH_SQL.format(n=n))
            m = status_mib()
            count = len(rows)
            del rows
        finally:
            await conn.close()
    return {"baseline_rss": base, **m, "count": count}


PROBES = {"keel": keel_probe, "asyncpg": asyncpg_probe}


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[0] not in PROBES or argv[1] not in ("pool", "fetch") or \
            argv[2] not in ("asyncio", "uvloop"):
        print(__doc__, file=sys.stderr)
        return 2
    driver, what, loop, url, n = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    if loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(PROBES[driver](what, url, n))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
