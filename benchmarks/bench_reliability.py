"""Reliability: how the tool behaves when the world is hostile, in figures.

Sections live in benchmarks/reliability/<name>.py; each defines

    SECTION = "fuzz"                      # the section's name
    DESCRIPTION = "one line"
    GOAL = "what passing means"
    def run(quick: bool = False, work: Path | None = None) -> dict:
        return {"rows": [...], "summary": {...}, "ok": bool, "failures": [...]}

so further sections (kill trials, full disk, the server under load) are added as files next to
fuzz.py, without touching this one. Today: `fuzz` (mutated real files through every loader).

    python benchmarks/bench_reliability.py [--quick] [--section fuzz] [--files N] [--seed S] [--json]
    specialist bench reliability [--quick] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

NAME = "reliability"
DESCRIPTION = "hostile inputs at scale: fuzzed files through every loader (more sections to come)"
SECTIONS_DIR = Path(__file__).resolve().parent / "reliability"


def sections() -> dict[str, ModuleType]:
    found = {}
    for path in sorted(SECTIONS_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"specialist_reliability.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        if callable(getattr(module, "run", None)) and hasattr(module, "SECTION"):
            found[module.SECTION] = module
    return found


def machine() -> dict[str, Any]:
    cpu, flags = platform.processor() or "", ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
        found = [f for f in ("amx_bf16", "avx512_bf16", "avx2") if re.search(rf"\b{f}\b", text)]
        flags = found[0] if found else ""
    except (OSError, AttributeError):
        pass
    import os

    return {"cpu": cpu, "cpu_flag": flags, "cores": os.cpu_count(), "python": platform.python_version()}


def bench(quick: bool = False, only: list[str] | None = None,
          options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every section (or `only` these): their rows together, one summary entry per section.
    `options` holds keyword arguments for a section's run(), by section name."""
    found = sections()
    unknown = [n for n in only or [] if n not in found]
    if unknown:
        raise SystemExit(f"unknown section {', '.join(unknown)}; known: {', '.join(found)}")
    rows, per_section, failures, ok = [], {}, {}, True
    for name in only or list(found):
        started = time.perf_counter()
        doc = found[name].run(quick=quick, **(options or {}).get(name, {}))
        rows.extend(doc["rows"])
        per_section[name] = {**doc["summary"], "ok": doc["ok"], "goal": found[name].GOAL,
                             "seconds": round(time.perf_counter() - started, 1)}
        if doc.get("failures"):
            failures[name] = doc["failures"]
        ok = ok and doc["ok"]
    # `specialist bench` shows a flat summary: the headline figures of every section
    summary = {f"{name} {key}": value for name, figures in per_section.items() for key, value in figures.items()
               if isinstance(value, (int, float)) and key != "seconds"}
    return {"rows": rows, "summary": summary, "sections": per_section, "failures": failures, "ok": ok,
            "machine": machine(), "quick": quick}


def _table(doc: dict[str, Any]) -> str:
    rows = doc["rows"]
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).rjust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _progress(i: int, outcome: Any) -> None:
    """Failures as they happen and a count every 500 files, on stderr."""
    if outcome.failed:
        problem = (outcome.traceback or outcome.unlocated or "modified input or bad exit code").strip()
        print(f"FAIL {outcome.target} [{outcome.case}] {outcome.command}: {problem.splitlines()[-1][:200]}",
              file=sys.stderr)
    if (i + 1) % 500 == 0:
        print(f"{i + 1} files", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run (the fuzz section: 300 files)")
    parser.add_argument("--section", action="append", help="run only this section (repeatable)")
    parser.add_argument("--files", type=int, help="fuzz: generated files (default 10,000; --quick 300)")
    parser.add_argument("--seed", type=int, default=0, help="fuzz: random seed")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if (args.files or args.seed) and args.section not in (None, ["fuzz"]):
        parser.error("--files and --seed belong to the fuzz section")
    fuzz = {"files": args.files, "seed": args.seed, "progress": _progress}
    doc = bench(args.quick, args.section, {"fuzz": fuzz})
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        sys.exit(0 if doc["ok"] else 1)
    print(_table(doc))
    for name, s in doc["sections"].items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    for name, fails in doc["failures"].items():
        for f in fails:
            print(f"\n[{name}] {f['format']} ({f['case']}) via {f['command']}, exit {f['exit_code']}:\n{f['problem']}")
    m = doc["machine"]
    print(f"\nmachine: {m['cpu']} ({m['cpu_flag']}), {m['cores']} cores, Python {m['python']}")
    sys.exit(0 if doc["ok"] else 1)


if __name__ == "__main__":
    main()
