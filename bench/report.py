# bench/report.py - turns a run's outcomes into bench/results/latest.json and the markdown table.
"""The results of a run: a JSON document (every figure, every round) and a markdown report (the
targets of issue 4 first, then one row per case, loop and contender)."""
from __future__ import annotations

import statistics
from typing import Any

from .core import Case, Outcome, floor_ratio, ratio


def case_json(case: Case, loop: str, outcomes: dict[str, Outcome],
              floors: dict[str, Outcome] | None = None) -> dict[str, Any]:
    """One case on one loop; floors are the first loop's outcomes of the case's floors, which
    are measured once, so that keel / floor is given on every loop."""
    r, best = ratio(case, outcomes)
    fr, floor = floor_ratio(case, outcomes, floors)
    out: dict[str, Any] = {
        "key": case.key, "workload": case.workload, "title": case.title, "engine": case.engine,
        "params": case.params, "concurrency": case.concurrency, "loop": loop, "unit": case.unit,
        "lower_is_better": case.lower_is_better,
        "results": {name: o.to_json(case) for name, o in outcomes.items()},
        "ratio": r, "best_peer": best, "floor_ratio": fr, "floor": floor,
    }
    if case.target is not None:
        t = case.target
        tr, vs = ratio(case, outcomes, t.vs) if t.vs else (r, best)
        met = None
        if tr is not None:
            met = tr <= t.value if t.lower_is_better else tr >= t.value
        out["target"] = {"describe": t.describe(), "value": t.value, "vs": vs,
                         "lower_is_better": t.lower_is_better, "ratio": tr, "met": met}
    return out


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    if v >= 100:
        text = f"{v:,.0f}"
    elif v >= 10:
        text = f"{v:.1f}"
    else:
        text = f"{v:.2f}"
    return f"{text} {unit}".strip()


def _cell(text: str, limit: int = 160) -> str:
    """Text made safe for one markdown table cell: one line, no pipes, bounded length."""
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _load(values: list[float] | None) -> str:
    return "?" if not values else " / ".join(f"{v:.2f}" for v in values)


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def targets_table(cases: list[dict[str, Any]]) -> list[str]:
    """One row per case that has a target, with the ratio on each loop and whether it is met."""
    rows: dict[str, dict[str, Any]] = {}
    loops: list[str] = []
    for c in cases:
        if "target" not in c:
            continue
        if c["loop"] not in loops:
            loops.append(c["loop"])
        row = rows.setdefault(c["key"], {"case": c, "by_loop": {}})
        row["by_loop"][c["loop"]] = c["target"]
    if not rows:
        return []
    head = "| # | engine | case | target | " + " | ".join(f"{lp}" for lp in loops) + " | met |"
    lines = [head, "|" + "---|" * (5 + len(loops))]
    for row in rows.values():
        c = row["case"]
        cells = []
        verdicts: list[tuple[str, bool]] = []
        for lp in loops:
            t = row["by_loop"].get(lp)
            if t is None or t["ratio"] is None:
                cells.append("–")
                continue
            cells.append(f"{t['ratio']:.2f} (vs {t['vs']})")
            verdicts.append((lp, bool(t["met"])))
        if not verdicts:
            met = "not measured"
        elif all(v for _, v in verdicts):
            met = "yes"
        elif any(v for _, v in verdicts):
            met = "on " + ", ".join(lp for lp, v in verdicts if v) + " only"
        else:
            met = "**no**"
        lines.append(f"| {c['workload']} | {c['engine']} | {c['title']}, {c['params']} | "
                     f"{c['target']['describe']} | " + " | ".join(cells) + f" | {met} |")
    return lines


def distance_table(cases: list[dict[str, Any]]) -> list[str]:
    """One row per case: on each loop, keel / best peer beside keel / floor (the distance left
    to what the server and the client library allow with no Python at all)."""
    rows: dict[str, dict[str, Any]] = {}
    loops: list[str] = []
    for c in cases:
        if c["loop"] not in loops:
            loops.append(c["loop"])
        rows.setdefault(c["key"], {"case": c, "by_loop": {}})["by_loop"][c["loop"]] = c
    head = "| # | engine | case | " + " | ".join(
        f"{lp}: keel / best peer | {lp}: keel / floor" for lp in loops) + " | floor |"
    lines = [head, "|" + "---|" * (4 + 2 * len(loops))]
    for row in rows.values():
        c = row["case"]
        cells = []
        floor = None
        for lp in loops:
            x = row["by_loop"].get(lp)
            if x is None:
                cells += ["–", "–"]
                continue
            vs = f" (vs {x['best_peer']})" if x["best_peer"] else ""
            cells.append(_ratio(x["ratio"]) + vs)
            cells.append(_ratio(x.get("floor_ratio")))
            floor = floor or x.get("floor")
        if floor:
            r = c["results"].get(floor, {})
            if r.get("note"):
                floor += f" ({r['note']})"
        lines.append(f"| {c['workload']} | {c['engine']} | {c['title']}, {c['params']} | "
                     + " | ".join(cells) + f" | {_cell(floor or 'none measured', 120)} |")
    return lines


def results_table(cases: list[dict[str, Any]]) -> list[str]:
    lines = ["| # | engine | case | loop | contender | throughput / value | p50 µs | p99 µs "
             "| CPU µs/op | keel / best peer | keel / floor |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        first = True
        for name, r in c["results"].items():
            if "skipped" in r:
                continue
            label = name if r["role"] != "floor" else f"*{name}* (floor)"
            fig = _num(r.get("value"), c["unit"])
            deltas = [e["delta_mib"] for e in r.get("extra", []) if "delta_mib" in e]
            if deltas:
                fig += f" (+{statistics.median(deltas):.1f})"
            if r.get("error"):
                fig = f"FAILED: {_cell(r['error'])}" if r.get("value") is None else \
                    fig + " (then failed)"
            rat = frat = ""
            if r["role"] == "keel":
                rat = _ratio(c["ratio"])
                if c["best_peer"]:
                    rat += f" (vs {c['best_peer']})"
                frat = _ratio(c.get("floor_ratio"))
                if c.get("floor"):
                    frat += f" (vs {c['floor']})"
            head = f"| {c['workload']} | {c['engine']} | {c['title']}, {c['params']} | " \
                f"{c['loop']} |" if first else "| | | | |"
            lines.append(f"{head} {label} | {fig} | {_num(r.get('p50_us'))} | "
                         f"{_num(r.get('p99_us'))} | {_num(r.get('cpu_us_per_op'))} | {rat} | "
                         f"{frat} |")
            first = False
    return lines


def markdown(doc: dict[str, Any]) -> str:
    m = doc["meta"]
    mach = m["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    out = [
        "# keeldb benchmark results",
        "",
        f"Mode **{m['mode']}** ({m['rounds']} round(s) per case, {m['slow_rounds']} for the "
        "subprocess workloads 7 and 8; contenders alternate within each round), "
        f"started {m['started']}, {m['duration_s']:.0f} s, event loops: "
        f"{', '.join(m['loops'])}.",
        f"Machine: {mach['nproc']} CPUs ({mach['cpu_model']}), {mach['memory_gib']} GiB, "
        f"Linux {mach['kernel']}, Python {mach['python']}, SQLite {mach['sqlite']}, "
        f"PostgreSQL {m.get('pg_server', '?')}.",
        f"Versions: {versions}.",
        f"Load average (1, 5, 15 min) at the start {_load(m.get('loadavg_start'))}, at the end "
        f"{_load(m.get('loadavg_end'))}: the machine's other processes share its CPUs.",
        "",
        "Throughput is the median over rounds (ops/s, rows/s or requests/s; MiB for memory, "
        "lower is better); p50/p99 latency and client CPU per operation are medians of the "
        "per-round figures. keel / best peer compares keel with the fastest peer driver of the "
        "same case and loop (floors are not peers); keel / floor compares it with the case's "
        "fastest floor (pgbench or a C loop over the engine's client library, measured once, on "
        "the first loop): below 1, the distance left.",
        "",
    ]
    targets = targets_table(doc["cases"])
    if targets:
        out += ["## Issue 4 targets", ""] + targets + [""]
    out += ["## keel against its best peer and its floor", ""] + distance_table(doc["cases"]) \
        + [""]
    out += ["## All results", ""] + results_table(doc["cases"]) + [""]
    workloads = doc.get("workloads", [])
    if workloads:
        out += ["## What each workload measures", ""]
        out += [f"{w['number']}. **{w['title']}**: {w['measures']}" for w in workloads]
        out.append("")
    skipped = doc.get("skipped", [])
    if skipped:
        out += ["## Not measured", ""]
        for s in skipped:
            n = len(s["cases"])
            where = f" ({n} case{'s' if n != 1 else ''})" if n else ""
            out.append(f"- {s['contender']}: {s['reason']}{where}")
        out.append("")
    notes = doc.get("notes", [])
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
