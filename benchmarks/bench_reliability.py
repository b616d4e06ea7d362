"""Reliability: how the tool behaves when the world is hostile, in figures.

One benchmark in sections, each a file benchmarks/reliability/<name>.py that defines

    SECTION = "fuzz"                      # the section's name
    DESCRIPTION = "one line"
    GOAL = "what passing means"
    def run(quick: bool = False, work: Path | None = None, **options) -> dict:
        return {"rows": [...], "summary": {...}, "figures": [(figure, value, goal, met, note), ...],
                "ok": bool, "failures": [...]}

`rows` are the section's own table, `figures` its lines in the final table (met None: a count
shown without a goal of its own). The sections:

- `fuzz`: mutated real files through every loader (10,000; quick 300);
- `kill`: SIGKILL, Ctrl-C and SIGTERM at random moments of the seven writing commands (20 kills
  and 4 + 4 signals per command; quick 2 and 1 + 1);
- `disk`: ENOSPC on a small tmpfs during checkpoint save, report writing and export (3 trials of
  each kind; quick 1; needs root to mount);
- `server`: the server under 50 streaming clients (300 s; quick 20 s), clients that hang up or
  trickle, schema fuzzing of every route.

    python benchmarks/bench_reliability.py [--quick] [--section fuzz,kill,disk,server] [--json]
        [--files N] [--seed S] [--trials N] [--signal-trials N] [--commands C,C] [--rounds N]
        [--clients N] [--seconds S]
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
DESCRIPTION = "hostile inputs at scale: fuzzed files, killed commands, a full disk, the server under load and attack"
ORDER = ("fuzz", "kill", "disk", "server")
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


def bench(
    quick: bool = False, only: list[str] | None = None, options: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Every section (or `only` these). `rows`: every figure against its goal, the sections'
    own tables under `sections`. `options` holds keyword arguments for a section's run(), by
    section name."""
    found = sections()
    unknown = [n for n in only or [] if n not in found]
    if unknown:
        raise SystemExit(f"unknown section {', '.join(unknown)}; known: {', '.join(found)}")
    names = only or sorted(found, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    rows, per_section, failures, ok = [], {}, {}, True
    for name in names:
        started = time.perf_counter()
        opts = {"progress": _log, **(options or {}).get(name, {})}
        try:
            doc = found[name].run(quick=quick, **opts)
        except Exception as exc:  # noqa: BLE001 - one section's crash is its finding; the others still count
            problem = f"{type(exc).__name__}: {exc}"
            figure = ("section ran to its end", "crashed", "yes", False, problem[:200])
            doc = {"rows": [], "summary": {}, "figures": [figure], "ok": False, "failures": [{"problem": problem}]}
        for figure, value, goal, met, *note in doc["figures"]:
            mark = "" if met is None else ("yes" if met else "NO")
            rows.append(
                {
                    "section": name,
                    "figure": figure,
                    "value": value,
                    "goal": goal,
                    "met": mark,
                    "note": note[0] if note else "",
                }
            )
        per_section[name] = {
            **doc["summary"],
            "ok": doc["ok"],
            "goal": found[name].GOAL,
            "seconds": round(time.perf_counter() - started, 1),
            "rows": doc["rows"],
        }
        section_rows = rows[len(rows) - len(doc["figures"]) :]
        _log(f"{name}: done in {per_section[name]['seconds']} s\n{_table(section_rows)}")  # kept if a later one fails
        if doc.get("failures"):
            failures[name] = doc["failures"]
        ok = ok and doc["ok"]
    summary = {
        "figures": len(rows),
        "figures_met": sum(r["met"] == "yes" for r in rows),
        "figures_missed": sum(r["met"] == "NO" for r in rows),
    }
    return {
        "rows": rows,
        "summary": summary,
        "sections": per_section,
        "failures": failures,
        "ok": ok,
        "machine": machine(),
        "quick": quick,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(c for r in rows for c in r))
    text = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in text]
    return "\n".join(line.rstrip() for line in lines)


def _log(message: Any, outcome: Any = None) -> None:
    """Progress on stderr: the sections' lines; the fuzz section's failures as they happen and a
    count every 500 files."""
    if outcome is None:
        print(message, file=sys.stderr, flush=True)
        return
    if outcome.failed:
        problem = (outcome.traceback or outcome.unlocated or "modified input or bad exit code").strip()
        print(
            f"FAIL {outcome.target} [{outcome.case}] {outcome.command}: {problem.splitlines()[-1][:200]}",
            file=sys.stderr,
        )
    if (message + 1) % 500 == 0:
        print(f"fuzz: {message + 1} files", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the reduced form of every section")
    parser.add_argument("--section", action="append", help="only these sections (comma-separated or repeated)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--files", type=int, help="fuzz: generated files (default 10,000; --quick 300)")
    parser.add_argument("--seed", type=int, default=0, help="fuzz, kill, disk: random seed")
    parser.add_argument("--trials", type=int, help="kill: SIGKILL trials per command (default 20; --quick 2)")
    parser.add_argument("--signal-trials", type=int, help="kill: Ctrl-C and SIGTERM trials per command (4; --quick 1)")
    parser.add_argument("--commands", help="kill: a comma-separated subset of the commands")
    parser.add_argument("--rounds", type=int, help="disk: trials of each kind (default 3; --quick 1)")
    parser.add_argument("--clients", type=int, default=50, help="server: concurrent streaming clients")
    parser.add_argument("--seconds", type=float, help="server: length of the load phase (default 300; --quick 20)")
    args = parser.parse_args()
    only = [n.strip() for arg in args.section or [] for n in arg.split(",") if n.strip()] or None
    kill = {"trials": args.trials, "signal_trials": args.signal_trials, "seed": args.seed}
    if args.commands:
        kill["commands"] = tuple(c.strip() for c in args.commands.split(","))
    options = {
        "fuzz": {"files": args.files, "seed": args.seed},
        "kill": kill,
        "disk": {"rounds": args.rounds, "seed": args.seed},
        "server": {"clients": args.clients, "seconds": args.seconds},
    }
    doc = bench(args.quick, only, options)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
        sys.exit(0 if doc["ok"] else 1)
    for name, s in doc["sections"].items():
        print(f"\n{name}: {s['goal']} ({s['seconds']} s)")
        print(_table(s["rows"]))
    for name, fails in doc["failures"].items():
        for f in fails:
            print(f"\n[{name}] " + json.dumps(f, ensure_ascii=False)[:2000])
    m = doc["machine"]
    print(
        f"\nreliability{' (--quick)' if args.quick else ''}: every figure against its goal — {m['cpu']} "
        f"({m['cpu_flag']}), {m['cores']} cores, Python {m['python']}"
    )
    print(_table(doc["rows"]))
    print("all goals met" if doc["ok"] else "GOALS MISSED")
    sys.exit(0 if doc["ok"] else 1)


if __name__ == "__main__":
    main()
