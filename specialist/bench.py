"""`specialist bench`: the project's speed benchmarks, found in benchmarks/.

A benchmark is a file benchmarks/bench_<name>.py that defines

    NAME = "train_speed"                 # optional; default: the file name without bench_
    DESCRIPTION = "one line"
    def bench(quick: bool = False) -> dict:
        return {"rows": [...], "summary": {...}, "ok": True, "machine": {...}}

`rows` is a list of flat dicts (one per contender), `summary` the headline figures, `ok` whether
the benchmark's goal was met. A new stage adds a benchmark by adding such a file."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from specialist.errors import SpecialistError


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    path: Path
    run: Callable[..., dict[str, Any]]


def benchmarks_dir() -> Path:
    """SPECIALIST_BENCHMARKS, else benchmarks/ of the source checkout this package runs from."""
    env = os.environ.get("SPECIALIST_BENCHMARKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "benchmarks"


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"specialist_benchmarks.{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # benchmarks import their helpers (synthetic_data, …)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def discover(directory: Path | None = None) -> dict[str, Benchmark]:
    directory = directory or benchmarks_dir()
    if not directory.is_dir():
        raise SpecialistError(f"{directory}: no benchmarks folder (run from a source checkout, "
                              "or set SPECIALIST_BENCHMARKS)")
    found: dict[str, Benchmark] = {}
    for path in sorted(directory.glob("bench_*.py")):
        module = _import(path)
        run = getattr(module, "bench", None)
        if not callable(run):
            continue  # a script without the bench() entry point is not registered
        name = getattr(module, "NAME", path.stem.removeprefix("bench_"))
        doc = (module.__doc__ or "").strip().splitlines()
        found[name] = Benchmark(name, getattr(module, "DESCRIPTION", doc[0] if doc else ""), path, run)
    return found


def run_benchmarks(names: list[str] | None = None, quick: bool = False,
                   directory: Path | None = None) -> list[dict[str, Any]]:
    registry = discover(directory)
    wanted = names or list(registry)
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise SpecialistError(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(registry) or 'none'}")
    results = []
    for name in wanted:
        started = time.perf_counter()
        doc = registry[name].run(quick=quick)
        results.append({"name": name, "description": registry[name].description,
                        "seconds": round(time.perf_counter() - started, 1), **doc})
    return results


def machine_info() -> dict[str, Any]:
    """The CPU the figures come from, the features the precision choices read, and the
    generation path chosen here, so that a figure is never read without its machine."""
    from specialist.inference.precision import choose_path
    from specialist.models.device import CPU_FEATURES, available_cpus, cpu_features, cpu_name

    found = cpu_features()
    return {"cpu": cpu_name(), "cores": available_cpus(), "load_average": round(os.getloadavg()[0], 2),
            "cpu_features": {f: f in found for f in CPU_FEATURES}, "generation_path": choose_path().describe()}


def machine_line(machine: dict[str, Any]) -> str:
    found = [f for f, yes in machine["cpu_features"].items() if yes]
    missing = [f for f, yes in machine["cpu_features"].items() if not yes]
    path = machine["generation_path"]
    return (f"{machine['cpu'] or 'unknown CPU'}, {machine['cores']} cores, load {machine['load_average']}; "
            f"CPU features: {', '.join(found) or 'none'}" + (f" (no {', '.join(missing)})" if missing else "")
            + f"; generation path: {path['path']} ({path['reason']})")


def rich_tables(results: list[dict[str, Any]]) -> list[Any]:
    from rich.table import Table

    tables = []
    for res in results:
        ok = res.get("ok")
        mark = "[green]goal met[/green]" if ok else ("[red]goal missed[/red]" if ok is False else "")
        summary = ", ".join(f"{k} {v}" for k, v in (res.get("summary") or {}).items())
        table = Table(title=f"{res['name']}: {res.get('description', '')}", caption=f"{summary} {mark}".strip())
        rows = res.get("rows") or []
        columns = list(dict.fromkeys(k for row in rows for k in row))
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*(str(row.get(c, "")) for c in columns))
        tables.append(table)
    return tables
