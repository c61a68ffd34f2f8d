# bench/workloads/__init__.py - the registry of workloads: every module wN_*.py here that defines WORKLOAD.
"""Workloads, one module each. A module defines WORKLOAD = Workload(number, title, cases) where
cases(ctx) creates the data it needs and returns its Cases. Adding an engine's workloads (MySQL,
MongoDB) is adding a module here: the harness finds it by name, runs it and reports it."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from ..core import Case
from ..env import Ctx


@dataclass(frozen=True)
class Workload:
    number: int
    title: str
    cases: Callable[[Ctx], list[Case]]
    # Lines of bench/README.md's "what each workload measures", kept beside the code.
    measures: str = ""


def all_workloads() -> list[Workload]:
    """Every workload of this package, by number then module name."""
    found: list[tuple[int, str, Workload]] = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("w"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        w = getattr(module, "WORKLOAD", None)
        if isinstance(w, Workload):
            found.append((w.number, info.name, w))
    found.sort(key=lambda t: (t[0], t[1]))
    return [w for _, _, w in found]
