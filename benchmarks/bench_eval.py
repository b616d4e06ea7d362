"""Benchmark: what `specialist eval` spends its time on, with the embedded model.

1. Answering: the same prompt-engineering prompts (system prompt + 3 few-shot turns) answered
   one at a time versus in batches of 8 (left padding, KV cache) — generated tokens per second.
   Target: batching at least doubles throughput on a 2-core CPU.
2. Held-out loss: forward passes with logits only for the completion positions
   (logits_to_keep) — tokens per second, i.e. the prefill speed the break-even uses.

    python benchmarks/bench_eval.py [--model gemma-3-270m] [--prompts 16] [--max-new-tokens 32] [--json]
    specialist bench eval [--quick] [--json]            # --quick: 8 prompts, 16 new tokens
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "eval"
DESCRIPTION = "specialist eval: answering one at a time vs batched, and the held-out loss pass"
TARGET_SPEEDUP = 2.0


def run(model: str, prompts: int, max_new_tokens: int) -> dict:
    from specialist.evaluate.contenders import Contender, pick_shots
    from specialist.evaluate.examples import load_eval_examples
    from specialist.evaluate.loss import heldout_loss
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import load_model

    data = ROOT / "examples" / "coffee"
    eval_examples = load_eval_examples(data / "eval.jsonl")[:prompts]
    shots = pick_shots(load_eval_examples(data / "train.jsonl"), 3, seed=0, exclude=eval_examples)
    system = (data / "system_prompt.txt").read_text(encoding="utf-8") if (data / "system_prompt.txt").exists() else None
    convs = [Contender("prompt-engineering", "base", system, shots).messages(p) for p in eval_examples]
    loaded = load_model(model)
    gen = TorchGenerator(loaded)
    # greedy decoding stops at the end-of-turn token: count what was really generated
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    gen.generate(convs[:2], settings, batch_size=2)  # warm-up

    result = {"model": model, "prompts": len(convs), "max_new_tokens": max_new_tokens}
    for label, batch in (("sequential", 1), ("batched", 8)):
        t0 = time.perf_counter()
        answers = gen.generate(convs, settings, batch_size=batch)
        seconds = time.perf_counter() - t0
        tokens = sum(a.completion_tokens for a in answers)
        result[label] = {"seconds": round(seconds, 2), "generated_tokens": tokens,
                         "tokens_per_s": round(tokens / seconds, 1)}
    result["speedup"] = round(result["batched"]["tokens_per_s"] / result["sequential"]["tokens_per_s"], 2)
    loss = heldout_loss(loaded.model, loaded.tokenizer, convs, [p.completion for p in eval_examples])
    result["heldout_loss"] = {"seconds": round(loss.seconds, 2), "tokens": loss.total_tokens,
                              "prefill_tokens_per_s": round(loss.total_tokens / loss.seconds, 1),
                              "loss": round(loss.loss, 4)}
    result["target_speedup"] = TARGET_SPEEDUP
    result["ok"] = result["speedup"] >= TARGET_SPEEDUP
    return result


def bench(quick: bool = False, model: str = "gemma-3-270m") -> dict:
    """The registry's entry point, in a fresh process (its own threads and memory)."""
    prompts, new_tokens = (8, 16) if quick else (16, 32)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--model", model, "--prompts", str(prompts),
                           "--max-new-tokens", str(new_tokens), "--json"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_eval failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout[proc.stdout.index("{"):])
    rows = [{"pass": label, "prompts": res["prompts"], "tokens": res[label]["generated_tokens"],
             "seconds": res[label]["seconds"], "tokens_per_s": res[label]["tokens_per_s"]}
            for label in ("sequential", "batched")]
    h = res["heldout_loss"]
    rows.append({"pass": "held-out loss (prefill)", "prompts": res["prompts"], "tokens": h["tokens"],
                 "seconds": h["seconds"], "tokens_per_s": h["prefill_tokens_per_s"]})
    return {"rows": rows, "ok": res["ok"], "model": model,
            "summary": {"batching_speedup": res["speedup"], "goal": f"batched >= {TARGET_SPEEDUP}x sequential"},
            "machine": {"load_average_1m": round(os.getloadavg()[0], 2)}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    res = run(args.model, args.prompts, args.max_new_tokens)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"answering {res['prompts']} prompt-engineering prompts with {res['model']}:")
        for label in ("sequential", "batched"):
            r = res[label]
            print(f"  {label:10s} {r['tokens_per_s']:7.1f} generated tok/s "
                  f"({r['generated_tokens']} tokens, {r['seconds']} s)")
        print(f"  speed-up {res['speedup']}× (target ≥ {TARGET_SPEEDUP}×) {'OK' if res['ok'] else 'BELOW TARGET'}")
        h = res["heldout_loss"]
        print(f"held-out loss pass: {h['prefill_tokens_per_s']} tok/s ({h['tokens']} tokens, {h['seconds']} s)")
