"""Benchmark: `specialist data check` over 100k records (every check that needs no
tokenizer), run as a subprocess; reports wall-clock seconds and peak memory (RSS).

Target: under 60 s and under 2 GB on a 2-core machine.

    python benchmarks/bench_data_check.py [--records 100000] [--json]
    specialist bench data_check [--quick] [--json]      # --quick: 10k records
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_data import write_synthetic

NAME = "data_check"
DESCRIPTION = "specialist data check on 100k synthetic records: wall time and peak memory"
TARGET_SECONDS = 60.0
TARGET_PEAK_MB = 2048.0
RECORDS = 100_000
QUICK_RECORDS = 10_000


def run(records: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic(Path(tmp) / "synthetic.jsonl", records)
        cmd = [sys.executable, "-m", "specialist.cli", "data", "check", str(data), "--json"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        # ru_maxrss of waited-for children, in KiB on Linux: the check is the only child.
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb = usage.ru_maxrss / 1024
        # CPU time tells a busy machine apart from a slow check: wall ≫ cpu means waiting.
        cpu_seconds = usage.ru_utime + usage.ru_stime
    if proc.returncode not in (0, 1):
        raise SystemExit(f"data check failed ({proc.returncode}): {proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout)
    return {"records": doc["records"], "valid": doc["valid"], "warnings": len(doc["warnings"]),
            "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "peak_rss_mb": round(peak_mb),
            "exit_code": proc.returncode,
            "target_seconds": TARGET_SECONDS, "target_peak_mb": TARGET_PEAK_MB,
            "ok": seconds < TARGET_SECONDS and peak_mb < TARGET_PEAK_MB}


def bench(quick: bool = False) -> dict:
    """The registry's entry point. Measured in a fresh process: ru_maxrss of children is the
    peak over every child ever waited for, so a parent that ran other benchmarks would report
    their memory."""
    records = QUICK_RECORDS if quick else RECORDS
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--records", str(records), "--json"],
                          capture_output=True, text=True, env=env)
    if not proc.stdout.strip():
        raise RuntimeError(f"bench_data_check failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    row = {k: res[k] for k in ("records", "warnings", "seconds", "cpu_seconds", "peak_rss_mb", "exit_code")}
    return {"rows": [row], "ok": res["ok"],
            "summary": {"goal": f"< {TARGET_SECONDS:.0f} s and < {TARGET_PEAK_MB:.0f} MB" +
                        (f" (for {RECORDS} records; this is the {records}-record quick run)" if quick else "")},
            "machine": {"load_average_1m": round(os.getloadavg()[0], 2)}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.records)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"data check: {result['records']} records, {result['warnings']} warnings, "
              f"{result['seconds']} s wall ({result['cpu_seconds']} s CPU), peak RSS {result['peak_rss_mb']} MB "
              f"(target < {TARGET_SECONDS:.0f} s, < {TARGET_PEAK_MB:.0f} MB): {'OK' if result['ok'] else 'MISSED'}")
    sys.exit(0 if result["ok"] else 1)
