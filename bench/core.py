# bench/core.py - the measuring instrument: contenders, cases, alternating rounds and their statistics.
"""The model every workload is written in.

A Case is one measured situation (workload 2, PostgreSQL, 32 tasks, pool of 10). It holds
Contenders: keel, the peers it is compared with, and the floors (the physical limits: pgbench, a C
loop over libsqlite3, the synchronous stdlib driver). For each event loop, the runner gives every
contender one turn per round, in the same order every round (A B C A B C …), so slow drifts of
the machine fall on all of them alike. A turn opens the contender's connections, warms up, then
measures a run bounded both in operations and in seconds, and closes what it opened.

Throughput is the median over rounds; p50 and p99 latency and the client CPU time per operation
are the medians of the per-round figures. CPU time is time.process_time(), which counts every
thread of the process (keel's SQLite workers, aiosqlite's threads) and nothing outside it.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import shutil
import statistics
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

ROLE_KEEL = "keel"
ROLE_PEER = "peer"
ROLE_FLOOR = "floor"

# No single turn may run longer than this, whatever a driver does: every loop is bounded in time.
TURN_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class Settings:
    """How long and how big a run is: "full" (make bench), "quick" (BENCH_QUICK=1) or "smoke"."""
    mode: str
    rounds: int
    warmup_seconds: float
    warmup_ops: int
    measure_seconds: float
    max_ops: int
    # Workload 7: seconds of load per turn and of warm-up before it.
    http_seconds: float
    http_warmup_seconds: float
    http_requests_cap: int
    # Rounds of the subprocess workloads (7, 8), which cost seconds per turn.
    slow_rounds: int
    # Data sizes. The sizes in full and quick runs; the smoke run shrinks them so that it
    # finishes in seconds (its figures mean nothing, only that every path runs).
    points_rows: int
    sqlite_rows: int
    mixed_rows: int
    insert_rows: int
    mem_rows: int
    mem_pool: int
    wrk_connections: int


FULL = Settings(mode="full", rounds=5, warmup_seconds=0.15, warmup_ops=100_000,
                measure_seconds=0.5, max_ops=2_000_000, http_seconds=3.0,
                http_warmup_seconds=1.0, http_requests_cap=10_000_000, slow_rounds=3,
                points_rows=100_000, sqlite_rows=1_000_000, mixed_rows=1000,
                insert_rows=10_000, mem_rows=1_000_000, mem_pool=32, wrk_connections=64)
QUICK = Settings(mode="quick", rounds=2, warmup_seconds=0.03, warmup_ops=20_000,
                 measure_seconds=0.12, max_ops=500_000, http_seconds=1.0,
                 http_warmup_seconds=0.3, http_requests_cap=1_000_000, slow_rounds=1,
                 points_rows=100_000, sqlite_rows=1_000_000, mixed_rows=1000,
                 insert_rows=10_000, mem_rows=1_000_000, mem_pool=32, wrk_connections=64)
SMOKE = Settings(mode="smoke", rounds=1, warmup_seconds=0.0, warmup_ops=1,
                 measure_seconds=0.05, max_ops=4, http_seconds=1.0,
                 http_warmup_seconds=0.0, http_requests_cap=20, slow_rounds=1,
                 points_rows=1000, sqlite_rows=2000, mixed_rows=50,
                 insert_rows=100, mem_rows=5000, mem_pool=4, wrk_connections=4)
MODES = {s.mode: s for s in (FULL, QUICK, SMOKE)}


@dataclass
class Plan:
    """What one turn is asked to do."""
    concurrency: int
    loop: str
    settings: Settings
    ctx: Any
    fixture: Any = None

    @property
    def warmup_ops(self) -> int:
        return self.settings.warmup_ops if self.settings.warmup_seconds > 0 else \
            min(self.settings.warmup_ops, self.concurrency)

    @property
    def max_ops(self) -> int:
        # The smoke run does one tiny iteration per task; the others are bounded by time.
        if self.settings.mode == "smoke":
            return max(self.settings.max_ops, self.concurrency)
        return self.settings.max_ops


@dataclass
class Sample:
    """What one measured turn produced: a rate (ops over seconds) or, for memory, a value."""
    ops: int = 0
    seconds: float = 0.0
    cpu_seconds: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def drive(op: Callable[[int], Awaitable[Any]], concurrency: int, max_ops: int,
                max_seconds: float) -> Sample:
    """Runs op(i) from `concurrency` tasks until max_ops operations were started or max_seconds
    passed, timing each one. Every task stops after its current operation once either bound is
    reached, so the run is bounded in count and in time."""
    latencies: list[int] = []
    counter = itertools.count()
    perf_ns = time.perf_counter_ns
    started_ns = perf_ns()
    deadline_ns = started_ns + int(max_seconds * 1e9)

    async def worker() -> None:
        append = latencies.append
        for i in counter:
            if i >= max_ops:
                return
            t0 = perf_ns()
            await op(i)
            t1 = perf_ns()
            append(t1 - t0)
            if t1 >= deadline_ns:
                return

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    if concurrency == 1:
        await worker()
    else:
        # A task group, so that one failing operation stops the other tasks at once.
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(concurrency):
                    tg.create_task(worker())
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return latency_sample(latencies, wall, cpu)


def drive_sync(op: Callable[[int], Any], max_ops: int, max_seconds: float) -> Sample:
    """drive() for a synchronous op, on the calling thread (the floors that are Python code)."""
    latencies: list[int] = []
    append = latencies.append
    perf_ns = time.perf_counter_ns
    deadline_ns = perf_ns() + int(max_seconds * 1e9)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for i in range(max_ops):
        t0 = perf_ns()
        op(i)
        t1 = perf_ns()
        append(t1 - t0)
        if t1 >= deadline_ns:
            break
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return latency_sample(latencies, wall, cpu)


def latency_sample(latencies_ns: list[int], wall: float, cpu: float | None) -> Sample:
    latencies_ns.sort()
    return Sample(ops=len(latencies_ns), seconds=wall, cpu_seconds=cpu,
                  p50_us=percentile(latencies_ns, 0.50) / 1000.0,
                  p99_us=percentile(latencies_ns, 0.99) / 1000.0)


class Contender:
    """One side of a comparison. Subclasses implement turn()."""

    def __init__(self, name: str, role: str, *, requires: tuple[str, ...] = (),
                 tools: tuple[str, ...] = (), loop_independent: bool = False,
                 concurrent: bool = False, note: str = "") -> None:
        self.name = name
        self.role = role
        self.requires = requires          # Python modules that must be importable
        self.tools = tools                # programs that must be on PATH
        self.loop_independent = loop_independent  # measured once, not per event loop
        # A loop-independent contender that measures a case with several tasks itself (on its
        # own connections); the others run only in cases of one task.
        self.concurrent = concurrent
        self.note = note

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"Python module {module} is not installed"
        for tool in self.tools:
            if shutil.which(tool) is None:
                return f"program {tool} is not on PATH"
        return None

    async def turn(self, plan: Plan) -> Sample:
        raise NotImplementedError


Session = Callable[[Plan], contextlib.AbstractAsyncContextManager]


class AsyncContender(Contender):
    """A contender whose operation is a coroutine: session(plan) is an async context manager that
    opens the connections and yields op(i); the turn warms up, then measures with drive()."""

    def __init__(self, name: str, role: str, session: Session, **kw: Any) -> None:
        super().__init__(name, role, **kw)
        self.session = session

    async def turn(self, plan: Plan) -> Sample:
        s = plan.settings
        async with self.session(plan) as op:
            await drive(op, plan.concurrency, plan.warmup_ops, s.warmup_seconds)
            return await drive(op, plan.concurrency, plan.max_ops, s.measure_seconds)


class SyncContender(Contender):
    """A synchronous contender (the stdlib sqlite3 floor): session(plan) is a plain context
    manager yielding op(i), run on the harness thread with nothing else scheduled."""

    def __init__(self, name: str, role: str,
                 session: Callable[[Plan], contextlib.AbstractContextManager], **kw: Any) -> None:
        kw.setdefault("loop_independent", True)
        super().__init__(name, role, **kw)
        self.session = session

    async def turn(self, plan: Plan) -> Sample:
        s = plan.settings
        with self.session(plan) as op:
            drive_sync(op, plan.warmup_ops, s.warmup_seconds)
            return drive_sync(op, plan.max_ops, s.measure_seconds)


@dataclass(frozen=True)
class Target:
    """An issue-4 target: keel / reference >= value (or <= value when lower is better). The
    reference is the named contender, or the best peer when vs is None."""
    value: float
    vs: str | None = None
    lower_is_better: bool = False

    def describe(self) -> str:
        op = "<=" if self.lower_is_better else ">="
        return f"keel / {self.vs or 'best peer'} {op} {self.value:g}"


@dataclass
class Case:
    """One measured situation of a workload, with its contenders."""
    workload: int
    key: str                 # unique, stable: "w2.pg.c32.p10"
    title: str               # "point select by primary key"
    engine: str              # "postgresql" | "sqlite"
    params: str              # "32 tasks, pool 10"
    concurrency: int
    contenders: list[Contender]
    unit: str = "ops/s"      # "ops/s" | "rows/s" | "req/s" | "MiB"
    rows_per_op: int = 1
    lower_is_better: bool = False
    target: Target | None = None
    fixture: Callable[[Plan], contextlib.AbstractAsyncContextManager] | None = None
    # Cases that measure a subprocess (7, 8) run their harness side on the default loop and pass
    # plan.loop to the subprocess instead.
    loop_in_subprocess: bool = False


@dataclass
class Outcome:
    """Every round of one contender in one case and loop."""
    name: str
    role: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    note: str = ""

    def figure(self, case: Case) -> float | None:
        """The headline figure: median throughput (ops or rows per second) or median value."""
        values = [self._value(case, s) for s in self.samples]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    @staticmethod
    def _value(case: Case, s: Sample) -> float | None:
        if s.value is not None:
            return s.value
        if s.ops <= 0 or s.seconds <= 0:
            return None
        return s.ops / s.seconds * case.rows_per_op

    def _median(self, attr: str, scale: float = 1.0) -> float | None:
        values = [getattr(s, attr) for s in self.samples]
        values = [v * scale for v in values if v is not None and v == v]
        return statistics.median(values) if values else None

    def cpu_us_per_op(self) -> float | None:
        values = [s.cpu_seconds / s.ops * 1e6 for s in self.samples
                  if s.cpu_seconds is not None and s.ops > 0]
        return statistics.median(values) if values else None

    def to_json(self, case: Case) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role}
        if self.skipped:
            out["skipped"] = self.skipped
            return out
        out.update({
            "value": self.figure(case),
            "unit": case.unit,
            "p50_us": self._median("p50_us"),
            "p99_us": self._median("p99_us"),
            "cpu_us_per_op": self.cpu_us_per_op(),
            "rounds": [self._value(case, s) for s in self.samples],
            "ops": sum(s.ops for s in self.samples),
        })
        extras = [s.extra for s in self.samples if s.extra]
        if extras:
            out["extra"] = extras
        if self.note:
            out["note"] = self.note
        if self.error:
            out["error"] = self.error
        return out


LOOPS = ("asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@contextlib.asynccontextmanager
async def no_fixture(plan: Plan) -> AsyncIterator[None]:
    yield None


async def run_case(case: Case, loop: str, first_loop: bool, settings: Settings, ctx: Any,
                   log: Callable[[str], None]) -> dict[str, Outcome]:
    """All rounds of one case on the running loop: every available contender once per round, in
    the same order. A contender that fails is reported with its error and dropped from the later
    rounds; the others go on."""
    outcomes: dict[str, Outcome] = {}
    active: list[Contender] = []
    for c in case.contenders:
        out = Outcome(c.name, c.role, note=c.note)
        outcomes[c.name] = out
        reason = c.missing()
        if reason is None and c.loop_independent and not first_loop:
            reason = "measured once, on the first event loop"
        if reason is None and c.loop_independent and case.concurrency != 1 and \
                not c.concurrent:
            reason = "measured at concurrency 1 only"
        if reason is not None:
            out.skipped = reason
        else:
            active.append(c)
    fixture = case.fixture or no_fixture
    plan = Plan(concurrency=case.concurrency, loop=loop, settings=settings, ctx=ctx)
    rounds = settings.slow_rounds if case.loop_in_subprocess or case.unit == "MiB" else \
        settings.rounds
    async with fixture(plan) as fx:
        plan.fixture = fx
        for r in range(rounds):
            for c in list(active):
                try:
                    sample = await asyncio.wait_for(c.turn(plan), TURN_TIMEOUT_SECONDS)
                except Exception as exc:  # reported in the results, the run goes on
                    outcomes[c.name].error = f"{type(exc).__name__}: {exc}"
                    log(f"    {c.name}: FAILED {type(exc).__name__}: {exc}")
                    if settings.mode == "smoke":
                        log(traceback.format_exc())
                    active.remove(c)
                    continue
                outcomes[c.name].samples.append(sample)
    return outcomes


def ratio(case: Case, outcomes: dict[str, Outcome],
          vs: str | None = None) -> tuple[float | None, str | None]:
    """keel's figure over the reference's: the named contender, or the best peer (the fastest;
    for lower-is-better figures the smallest). (None, None) when either side has no figure."""
    keel = outcomes.get("keel")
    kv = keel.figure(case) if keel else None
    if kv is None:
        return None, None
    candidates = []
    for o in outcomes.values():
        if o.role != ROLE_PEER or (vs is not None and o.name != vs):
            continue
        v = o.figure(case)
        if v is not None and v > 0:
            candidates.append((v, o.name))
    if not candidates:
        return None, None
    best = min(candidates) if case.lower_is_better else max(candidates)
    return kv / best[0], best[1]


def floor_ratio(case: Case, outcomes: dict[str, Outcome],
                floors: dict[str, Outcome] | None = None) -> tuple[float | None, str | None]:
    """keel's figure over the floor's: the fastest floor of the case (for lower-is-better figures
    the smallest), taken from `floors` (the first event loop's outcomes, where floors are
    measured once) when this loop did not measure it. (None, None) when there is none."""
    keel = outcomes.get("keel")
    kv = keel.figure(case) if keel else None
    if kv is None:
        return None, None
    candidates = []
    for name, o in outcomes.items():
        if o.role != ROLE_FLOOR:
            continue
        if not o.samples and floors is not None and name in floors:
            o = floors[name]
        v = o.figure(case)
        if v is not None and v > 0:
            candidates.append((v, name))
    if not candidates:
        return None, None
    best = min(candidates) if case.lower_is_better else max(candidates)
    return kv / best[0], best[1]


def ids_for(n_rows: int, count: int = 65536, seed: int = 4) -> list[int]:
    """A fixed pseudo-random sequence of primary keys in 1..n_rows, the same for every contender."""
    import random
    rng = random.Random(seed)
    return [rng.randint(1, n_rows) for _ in range(count)]
