"""Benchmark: `specialist train` against the plain TRL recipe (reference_trl_sft.py).

Same data (examples/coffee/train.jsonl, or a generated Polish customer-service set when it is
absent), same base model (the embedded gemma-3-270m), same hyper-parameters: 1 epoch, batch 8,
max length 256, lr 2e-4 linear without warm-up, LoRA r=16 alpha=32 on all linear layers, seed
42 (so both see the same batches in the same order), the same torch thread count. Each recipe
runs in its own process. Reported: tokens/s (tokens the Trainer counted, non-padding, over its
train_runtime), final loss (mean step loss over the last 5 steps) and the speed ratio.

Goal: ratio >= 4 with final loss <= the reference's.

    python benchmarks/bench_train_speed.py [--quick | --examples N] [--threads T] [--json]
    specialist bench train_speed [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NAME = "train_speed"
DESCRIPTION = "specialist train vs plain TRL SFTTrainer + PEFT LoRA (fp32), same data/model/hparams"
GOAL_RATIO = 4.0
QUICK_EXAMPLES = 64  # 8 optimizer steps
LAST_STEPS = 5


def dataset_path(tmp: Path) -> Path:
    coffee = ROOT / "examples" / "coffee" / "train.jsonl"
    if coffee.exists():
        return coffee
    sys.path.insert(0, str(HERE))
    from synthetic_data import write_synthetic

    return write_synthetic(tmp / "synthetic.jsonl", 400)


def run_specialist(data: Path, model: str, limit: int | None, threads: int | None, seed: int = 42) -> dict:
    """`specialist train` with the benchmark's hyper-parameters (its defaults otherwise)."""
    from specialist.config import load_train_config
    from specialist.train import train
    from specialist.train.dataset import read_examples

    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "train.jsonl"
        rows = [{"messages": [*ex.messages, {"role": "assistant", "content": ex.completion}]}
                for ex in read_examples(data)[:limit]]
        subset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        config = load_train_config(overrides=dict(
            data=subset, model=model, out=Path(tmp) / "run", epochs=1, batch_size=8, max_length=256, lr=2e-4,
            lr_scheduler="linear", warmup_ratio=0.0, lora_r=16, lora_alpha=32, lora_dropout=0.0,
            logging_steps=1, save_steps=10**6, seed=seed, threads=threads))
        run = train(config, show_progress=False)
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
                  if "loss" in json.loads(line)]
    seconds = float(info["train_seconds"])
    return {"recipe": "specialist", "examples": info["examples"], "steps": info["steps"],
            "tokens": info["train_tokens"], "train_seconds": seconds,
            "tokens_per_second": round(info["train_tokens"] / seconds, 1), "train_loss": info["train_loss"],
            "losses": losses, "threads": info["threads_per_process"]}


def _subprocess(cmd: list[str]) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    from specialist.models.device import cpu_supports_bf16
    from specialist.train.setup import physical_cores

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpu": platform.processor() or platform.machine(), "cores": physical_cores(),
            "bf16_native": cpu_supports_bf16(), "load_average_1m_at_start": round(load[0], 2)}


def bench(quick: bool = False, model: str = "gemma-3-270m", threads: int | None = None,
          examples: int | None = None) -> dict:
    from specialist.train.setup import default_threads

    threads = threads or default_threads()
    limit = examples or (QUICK_EXAMPLES if quick else None)
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset_path(Path(tmp))
        common = ["--data", str(data), "--model", model, "--threads", str(threads)]
        if limit:
            common += ["--limit", str(limit)]
        ours = _subprocess([sys.executable, str(Path(__file__).resolve()), "--recipe", "specialist", *common])
        ref = _subprocess([sys.executable, str(HERE / "reference_trl_sft.py"), *common])
    info["load_average_1m_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    rows = []
    for r in (ref, ours):
        tail = r["losses"][-LAST_STEPS:]
        r["final_loss"] = round(sum(tail) / len(tail), 4) if tail else None
        rows.append({k: r[k] for k in ("recipe", "examples", "steps", "tokens", "train_seconds", "tokens_per_second",
                                       "train_loss", "final_loss", "threads")})
    ratio = ours["tokens_per_second"] / ref["tokens_per_second"] if ref["tokens_per_second"] else 0.0
    ok = ratio >= GOAL_RATIO and ours["final_loss"] <= ref["final_loss"]
    return {"name": NAME, "examples": rows[0]["examples"], "data": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else "generated",
            "model": model, "quick": quick, "machine": info, "rows": rows,
            "summary": {"speedup": round(ratio, 2), "goal": f">= {GOAL_RATIO}x tokens/s, final loss <= reference",
                        "final_loss_delta": round(ours["final_loss"] - ref["final_loss"], 4)},
            "ok": ok}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"first {QUICK_EXAMPLES} examples only")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: free cores)")
    parser.add_argument("--examples", type=int, default=None, help="first N examples only (1 epoch over them)")
    # internal: run one recipe in this process and print its JSON
    parser.add_argument("--recipe", choices=["specialist"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.recipe:
        sys.stdout.write(json.dumps(run_specialist(a.data, a.model, a.limit, a.threads)) + "\n")
        sys.exit(0)
    doc = bench(a.quick, a.model, a.threads, a.examples)
    if a.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        for row in doc["rows"]:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        print(f"speedup {doc['summary']['speedup']}x  ok={doc['ok']}  machine={doc['machine']}")
