# tests/python/test_bench_smoke.py - the benchmark harness runs one tiny iteration of every workload and reports keel's figures.
"""A smoke run of bench/ (python -m bench.run --smoke) in a subprocess, on small data in a
temporary directory: every workload must run and report keel's figures in latest.json and a
table in latest.md. Peers that are not installed are skipped by the harness (the normal `make test`
environment has none); keel must always run. Nothing here asserts on a timing."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKLOADS = range(1, 10)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    work = tmp_path_factory.mktemp("bench-work")
    # The harness is the repository's bench/ package (found from cwd); keel is the installed one.
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), "--work", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    doc = None
    if (out / "latest.json").exists():
        doc = json.loads((out / "latest.json").read_text())
    return proc, doc, out


def test_smoke_run_succeeds(smoke):
    proc, doc, _ = smoke
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert doc is not None


def test_every_workload_reports_keel(smoke):
    proc, doc, _ = smoke
    assert doc is not None, proc.stdout[-4000:] + proc.stderr[-4000:]
    by_workload = {}
    for case in doc["cases"]:
        by_workload.setdefault(case["workload"], []).append(case)
    assert sorted(by_workload) == list(WORKLOADS), sorted(by_workload)
    for number, cases in by_workload.items():
        for case in cases:
            keel = case["results"]["keel"]
            assert "error" not in keel, (case["key"], keel.get("error"))
            assert keel.get("value") is not None and keel["value"] > 0, (case["key"], keel)
            assert keel["unit"] == case["unit"]
            if case["unit"] != "MiB":
                assert keel["ops"] > 0 and keel["p50_us"] is not None, (case["key"], keel)


C_FLOORS = {"C loop over libsqlite3", "C loop over libpq", "C loop over libmariadb",
            "C loop over libmongoc"}


def test_both_engines_and_floors_are_covered(smoke):
    _, doc, _ = smoke
    engines = {c["engine"] for c in doc["cases"]}
    assert {"postgresql", "sqlite", "mysql", "mongodb"} <= engines
    # The C floors are compiled and run by the harness whenever cc is there: bootstrap installs
    # it and the -dev packages of every engine's client library.
    floors = {name for c in doc["cases"] for name, r in c["results"].items()
              if r["role"] == "floor" and "value" in r}
    assert C_FLOORS <= floors, floors
    for case in doc["cases"]:
        for name, r in case["results"].items():
            if r["role"] == "floor" and "value" in r:
                assert "error" not in r, (case["key"], name, r["error"])


def test_every_case_of_a_database_operation_has_a_floor(smoke):
    # Workloads 5 (a pool with no query), 7 (HTTP end to end) and 8 (memory) have none; every
    # other case reports keel / floor on every loop, the floors being measured on the first.
    _, doc, _ = smoke
    for case in doc["cases"]:
        if case["workload"] in (5, 7, 8):
            assert case["floor_ratio"] is None, case["key"]
            continue
        floors = {n: r for n, r in case["results"].items() if r["role"] == "floor"}
        assert floors, case["key"]
        if case["floor"] is None:
            # Only a floor whose program is missing here (pgbench) may leave a case without one.
            assert all("skipped" in r for r in floors.values()), (case["key"], floors)
            continue
        assert case["floor"] in floors and case["floor_ratio"] > 0, (case["key"], case)


def test_peers_are_measured_or_listed_as_skipped(smoke):
    _, doc, _ = smoke
    for case in doc["cases"]:
        for name, r in case["results"].items():
            if r["role"] != "peer":
                continue
            assert ("value" in r) != ("skipped" in r), (case["key"], name, r)
            if "skipped" in r:
                assert any(s["contender"] == name and case["key"] in s["cases"]
                           for s in doc["skipped"]), (case["key"], name)
            else:
                assert "error" not in r, (case["key"], name, r["error"])


def test_markdown_table_is_written(smoke):
    _, doc, out = smoke
    text = (out / "latest.md").read_text()
    assert "| # | engine | case | loop | contender |" in text
    assert "| asyncio: keel / best peer | asyncio: keel / floor |" in text
    assert doc["meta"]["machine"]["nproc"] >= 1
    assert doc["meta"]["mode"] == "smoke"
