# bench/run.py - the entry point of `make bench`: runs the workloads, writes latest.md and latest.json, prints the table.
"""python -m bench.run [--quick | --smoke] [--only 1,2] [--loops asyncio,uvloop] [--out DIR]

Modes: full (default; about a quarter of an hour on two cores), quick (BENCH_QUICK=1 or --quick:
every workload briefly, a few minutes), smoke (--smoke: one tiny iteration of every path on small
data, seconds; what `make test` runs). Peers that are not installed are skipped and listed; keel
always runs. The exit status is 1 when keel failed in any case, or a workload could not be set up.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .core import MODES, Case, Outcome, loop_factory, run_case
from .data import psql
from .env import DEFAULT_PG_URL, ROOT, Ctx, loopback_only, machine
from .report import case_json, markdown
from .workloads import all_workloads


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="every workload briefly")
    mode.add_argument("--smoke", action="store_true", help="one tiny iteration (make test)")
    p.add_argument("--only", default="", help="comma-separated workload numbers")
    p.add_argument("--loops", default="", help="comma-separated: asyncio, uvloop")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"),
                   help="where latest.md and latest.json go")
    p.add_argument("--work", default=str(ROOT / "build" / "bench"),
                   help="SQLite files and the compiled C floor")
    p.add_argument("--pg-url", default=os.environ.get("KEEL_TEST_PG_URL", DEFAULT_PG_URL))
    return p.parse_args(argv)


def choose_mode(args: argparse.Namespace) -> str:
    if args.smoke:
        return "smoke"
    if args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0"):
        return "quick"
    return "full"


def choose_loops(args: argparse.Namespace, mode: str,
                 skipped: list[dict[str, Any]]) -> list[str]:
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    if args.loops:
        loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    elif mode == "smoke":
        loops = ["asyncio"]
    else:
        loops = ["asyncio", "uvloop"]
    for lp in loops:
        if lp not in ("asyncio", "uvloop"):
            raise SystemExit(f"bench: unknown event loop {lp!r} (asyncio or uvloop)")
    if "uvloop" in loops and not have_uvloop:
        skipped.append({"contender": "event loop uvloop",
                        "reason": "the uvloop module is not installed", "cases": []})
        loops.remove("uvloop")
    return loops


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = choose_mode(args)
    settings = MODES[mode]
    loopback_only(args.pg_url)
    skipped: list[dict[str, Any]] = []
    notes: list[str] = []
    loops = choose_loops(args, mode, skipped)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    ctx = Ctx(settings=settings, pg_url=args.pg_url, work=Path(args.work).resolve(), log=log)
    started = time.monotonic()
    load_start = os.getloadavg()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    log(f"bench: mode {mode}, loops {', '.join(loops)}, data in {ctx.work}")

    failed = False
    cases_out: list[dict[str, Any]] = []
    workloads_out: list[dict[str, Any]] = []
    for w in all_workloads():
        if only and w.number not in only:
            continue
        log(f"workload {w.number}: {w.title}")
        workloads_out.append({"number": w.number, "title": w.title, "measures": w.measures})
        try:
            cases: list[Case] = w.cases(ctx)
        except Exception as exc:  # reported, and the run fails, but the other workloads run
            log(f"  setting up workload {w.number} failed: {type(exc).__name__}: {exc}")
            notes.append(f"workload {w.number} could not be set up: {type(exc).__name__}: {exc}")
            failed = True
            continue
        for case in cases:
            floors: dict[str, Outcome] = {}
            for n, lp in enumerate(loops):
                log(f"  {case.key} [{case.engine}] {case.title}, {case.params} — {lp}")
                factory = loop_factory("asyncio" if case.loop_in_subprocess else lp)
                with asyncio.Runner(loop_factory=factory) as runner:
                    outcomes = runner.run(run_case(case, lp, n == 0, settings, ctx, log))
                for o in outcomes.values():
                    log("    " + summary_line(case, o))
                    if o.skipped and not o.skipped.startswith("measured "):
                        note_skip(skipped, o.name, o.skipped, case.key)
                    if o.role == "keel" and (o.error or not o.samples):
                        failed = True
                if n == 0:
                    floors = {k: o for k, o in outcomes.items() if o.role == "floor"}
                cases_out.append(case_json(case, lp, outcomes, floors))

    pg_server = None
    try:
        pg_server = psql(ctx, "SHOW server_version")
    except Exception as exc:  # the version is decoration; its absence is reported in the file
        notes.append(f"PostgreSQL server version unknown: {exc}")
    doc = {
        "meta": {
            "mode": mode, "rounds": settings.rounds, "slow_rounds": settings.slow_rounds,
            "loops": loops, "started": started_at,
            "duration_s": time.monotonic() - started, "machine": machine(),
            # Other processes share the CPUs; the load averages tell how busy the machine was.
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
            "pg_server": pg_server, "settings": settings.__dict__,
        },
        "workloads": workloads_out,
        "cases": cases_out,
        "skipped": skipped,
        "notes": notes,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    text = markdown(doc)
    (out / "latest.md").write_text(text)
    log("")
    log(text)
    log(f"bench: wrote {out / 'latest.md'} and {out / 'latest.json'}")
    return 1 if failed else 0


def note_skip(skipped: list[dict[str, Any]], name: str, reason: str, key: str) -> None:
    """Records that a contender could not run, once per contender and reason, with its cases."""
    for entry in skipped:
        if entry["contender"] == name and entry["reason"] == reason:
            if key not in entry["cases"]:
                entry["cases"].append(key)
            return
    skipped.append({"contender": name, "reason": reason, "cases": [key]})


def summary_line(case: Case, o: Outcome) -> str:
    if o.skipped:
        return f"{o.name}: skipped ({o.skipped})"
    fig = o.figure(case)
    text = f"{o.name}: " + (f"{fig:,.1f} {case.unit}" if fig is not None else "no figure")
    if o.error:
        text += f" — FAILED: {o.error}"
    return text


if __name__ == "__main__":
    sys.exit(main())
