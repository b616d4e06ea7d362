"""Benchmark: `specialist demo` from start to end, step by step, as `make demo` runs it.

The demo runs in a process of its own with a cold cache: a SPECIALIST_HOME that shares only the
prepared base model (models/, gguf/) with this machine's, so the engine's GGUF exports and the
eval's base-model answers are computed as on a first demo ("model already cached"). --warm keeps
this machine's cache as it is: a second demo, whose base-model answers come from the eval cache.
A step's time runs from its heading to the next one's; the eval's own lines (each contender's
answers) are kept as printed. `make demo` adds its set-up check (`make setup`) before this.

    python benchmarks/bench_demo.py [--warm] [--quick] [--json]
    specialist bench demo [--quick]         # --quick: 2 training steps, 2 + 1 eval prompts

Goal: the whole demo in ≤ 8 minutes (480 s) on a 2-core CPU."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "demo"
DESCRIPTION = "specialist demo from start to end, per step (cold cache: the model prepared, nothing else)"
GOAL_SECONDS = 480.0
SHARED = ("models", "gguf")  # the prepared base model: what "model already cached" means
HEADING = re.compile(r"^[─━-]+ (\d)\. (.+?) [─━-]+$")
EVAL_LINE = re.compile(r"^(.+?): (\d+)/(\d+) in (\d+):(\d\d)(?::(\d\d))?$")


def _home(warm: bool, tmp: Path) -> Path:
    from specialist.models.cache import specialist_home

    real = specialist_home()
    if warm:
        return real
    home = tmp / "home"
    home.mkdir()
    for name in SHARED:
        if (real / name).exists():
            (home / name).symlink_to(real / name)
    return home


def steps_of(timed: list[tuple[float, str]], total: float) -> tuple[list[dict], list[str]]:
    """The demo's steps with their seconds, and the eval's progress lines, from its output lines
    and the time each arrived (seconds from the start)."""
    steps: list[dict] = []
    eval_lines: list[str] = []
    for at, line in timed:
        heading = HEADING.match(line.strip())
        if heading:
            steps.append({"step": f"{heading.group(1)}. {heading.group(2)}", "started": at})
        elif EVAL_LINE.match(line.strip()):
            eval_lines.append(line.strip())
    ends = [s["started"] for s in steps[1:]] + [total]
    return [{"step": s["step"], "seconds": round(end - s["started"], 1)} for s, end in zip(steps, ends)], eval_lines


def run(quick: bool = False, warm: bool = False) -> dict:
    from specialist.run_folder import RunFolder, read_summary

    extra = ["--max-steps", "2", "--eval-limit", "2", "--fact-limit", "1"] if quick else []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out = tmp / "run"
        env = {**os.environ, "SPECIALIST_HOME": str(_home(warm, tmp)), "COLUMNS": "160", "PYTHONWARNINGS": "ignore",
               "PYTHONUNBUFFERED": "1"}  # each line as it is printed: its time is the step's
        cmd = [sys.executable, "-m", "specialist", "demo", "--out", str(out), *extra]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        timed = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stdout]
        code = proc.wait()
        total = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"specialist demo exited {code}:\n" + "\n".join(line for _, line in timed[-40:]))
        steps, eval_lines = steps_of(timed, total)
        folder = RunFolder(out)
        report = json.loads(folder.eval_json.read_text(encoding="utf-8")) if folder.eval_json.exists() else {}
        summary = read_summary(out)
    generation = (report.get("settings") or {}).get("generation") or {}
    return {"total_seconds": round(total, 1), "goal_seconds": GOAL_SECONDS, "ok": total <= GOAL_SECONDS,
            "steps": steps, "eval_lines": eval_lines,
            "cache": "warm (this machine's)" if warm else "cold (the prepared model only)",
            "eval_cached": report.get("cached"), "engine": generation.get("engine"), "quant": generation.get("quant"),
            "train_seconds": summary.train_seconds, "train_tokens_per_s": summary.tokens_per_second,
            "steps_trained": summary.steps, "quick": quick}


def bench(quick: bool = False) -> dict:
    """The registry's entry point (the demo runs in a fresh process of its own)."""
    from specialist.bench import machine_info

    res = run(quick=quick)
    return {"rows": res["steps"], "ok": None if quick else res["ok"],  # a quick demo trains 2 steps: nothing to judge
            "summary": {"total_s": res["total_seconds"], "goal": f"<= {GOAL_SECONDS:.0f} s", "cache": res["cache"],
                        "engine": res["engine"], "quant": res["quant"], "train_s": res["train_seconds"]},
            "machine": {**machine_info(), "load_average_1m": round(os.getloadavg()[0], 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", action="store_true", help="keep this machine's cache (a second demo)")
    parser.add_argument("--quick", action="store_true", help="2 training steps, 2 + 1 eval prompts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    res = run(quick=args.quick, warm=args.warm)
    if args.json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return
    for s in res["steps"]:
        print(f"{s['step'][:60]:60s} {s['seconds']:8.1f} s")
    for line in res["eval_lines"]:
        print(f"    {line}")
    print(f"total {res['total_seconds']:.1f} s (goal ≤ {GOAL_SECONDS:.0f} s: {'met' if res['ok'] else 'missed'}); "
          f"cache {res['cache']}; answers on {res['engine']} {res['quant'] or ''}")


if __name__ == "__main__":
    main()
