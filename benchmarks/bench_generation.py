"""Benchmark: generation speed of the embedded model (Gemma 3 270M) on this machine.

Targets (issue "use the specialist"): one stream at >= 60 tokens/s, and 8 batched streams at
>= 4x the single-stream throughput.

Measured, each with fixed-length answers (min_new_tokens = max_new_tokens, so every
configuration generates the same number of tokens and early end-of-turn tokens do not flatter
anyone):
1. PyTorch (transformers generate, KV cache, the dtype `auto` picks: bf16 on AMX CPUs), one
   stream and a batch of 8, with 1 and with all torch threads — on a shared 2-core machine a
   second OpenMP thread that has to wait for a busy core costs more than it brings;
2. PyTorch with a static KV cache (cache_implementation="static");
3. llama.cpp (llama-cpp-python, if installed) on a GGUF exported by `specialist export`, one
   stream; pass --gguf FILE or let it export gemma-3-270m to f16 once (cached in --workdir).

    python benchmarks/bench_generation.py [--model gemma-3-270m] [--tokens 64] [--gguf FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

NAME = "generation"
DESCRIPTION = "Generation speed of the embedded model: one stream and 8 batched streams (PyTorch, llama.cpp)"
TARGET_SINGLE = 60.0
TARGET_BATCH_SPEEDUP = 4.0
PROMPTS = [f"Opowiedz mi o kawie numer {i} z naszej palarni." for i in range(8)]


def _pytorch(model: str, tokens: int, threads: int, static: bool) -> dict:
    import torch

    from specialist.models.resolve import load_model
    from specialist.models.template import build_messages

    torch.set_num_threads(threads)
    loaded = load_model(model)
    from specialist.serve.generation import Generator

    gen = Generator(loaded)
    extra = {"cache_implementation": "static"} if static else {}

    def run(prompts: list[str]) -> float:
        batch = gen._batch([gen.prompt_ids(build_messages(p)) for p in prompts])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                        pad_token_id=gen.pad_id, **extra)
        seconds = time.perf_counter() - t0
        assert out.shape[1] - batch["input_ids"].shape[1] == tokens
        return len(prompts) * tokens / seconds

    run(PROMPTS[:1])  # warm-up (weights paged in, kernels chosen)
    single = max(run(PROMPTS[:1]) for _ in range(2))
    batched = run(PROMPTS)
    return {"engine": "pytorch", "dtype": str(loaded.dtype).replace("torch.", ""), "threads": threads,
            "kv_cache": "static" if static else "dynamic", "single_tokens_per_s": round(single, 1),
            "batch8_tokens_per_s": round(batched, 1), "batch_speedup": round(batched / single, 2)}


LLAMA_CPP = r"""
import json, sys, time, contextlib, io
from llama_cpp import Llama
path, tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with contextlib.redirect_stderr(io.StringIO()):  # verbose=False crashes llama-cpp-python 0.3.x
    llm = Llama(model_path=path, n_ctx=512, n_threads=threads, verbose=True, seed=0)
    prompt = llm.tokenize("Opowiedz mi o kawie z naszej palarni.".encode())
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        n = 0
        for _tok in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            n += 1
            if n >= tokens:
                break
        best = max(best, n / (time.perf_counter() - t0))
    llm.close()
print(json.dumps(best))
"""


def _llama_cpp(gguf: Path, tokens: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", LLAMA_CPP, str(gguf), str(tokens), str(threads)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"engine": "llama.cpp", "gguf": gguf.name, "threads": threads,
                "error": f"exit {proc.returncode} (a native crash; see docs: AMX kernels and quantized GGUFs)"}
    tps = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"engine": "llama.cpp", "gguf": gguf.name, "threads": threads, "single_tokens_per_s": round(tps, 1)}


def _exported_gguf(model: str, workdir: Path) -> Path:
    from specialist.serve.export import export

    out = workdir / f"{model.replace('/', '_')}-gguf-f16"
    if not out.exists():
        export(model, "gguf", out, "f16")
    return next(out.glob("*.gguf"))


def run(model: str = "gemma-3-270m", tokens: int = 64, gguf: str | None = None,
        workdir: Path = Path(".bench-cache"), llama_cpp: bool = True) -> dict:
    import importlib.util

    import torch

    cores = os.cpu_count() or 1
    configs = []
    for threads in sorted({1, torch.get_num_threads()}):
        configs.append(_pytorch(model, tokens, threads, static=False))
    best_threads = max(configs, key=lambda c: c["single_tokens_per_s"])["threads"]
    configs.append(_pytorch(model, tokens, best_threads, static=True))
    if llama_cpp and importlib.util.find_spec("llama_cpp") is not None:
        path = Path(gguf) if gguf else _exported_gguf(model, workdir)
        for threads in sorted({1, cores}):
            configs.append(_llama_cpp(path, tokens, threads))
    torch_rows = [c for c in configs if c["engine"] == "pytorch"]
    single = max((c.get("single_tokens_per_s", 0.0) for c in configs), default=0.0)
    batch = max(torch_rows, key=lambda c: c["batch8_tokens_per_s"])
    return {
        "model": model, "tokens_per_answer": tokens, "cores": cores, "load_average": os.getloadavg()[0],
        "configs": configs,
        "best_single_tokens_per_s": single,
        "best_batch8_tokens_per_s": batch["batch8_tokens_per_s"],
        "batch_speedup": batch["batch_speedup"],
        "target_single_tokens_per_s": TARGET_SINGLE, "target_batch_speedup": TARGET_BATCH_SPEEDUP,
        "single_ok": single >= TARGET_SINGLE, "batch_ok": batch["batch_speedup"] >= TARGET_BATCH_SPEEDUP,
    }


def bench(quick: bool = False) -> dict:
    """The `specialist bench` entry point; quick = a few tokens, PyTorch only (checks it runs)."""
    result = run(tokens=4 if quick else 64, llama_cpp=not quick, workdir=Path.home() / ".cache" / "specialist" / "bench")
    return {
        "rows": result["configs"],
        "summary": {k: result[k] for k in ("best_single_tokens_per_s", "best_batch8_tokens_per_s", "batch_speedup",
                                           "target_single_tokens_per_s", "target_batch_speedup", "single_ok", "batch_ok")},
        "ok": result["single_ok"] and result["batch_ok"],
        "machine": {"cores": result["cores"], "load_average": result["load_average"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--gguf", default=None, help="GGUF for the llama.cpp row (default: export the model to f16)")
    parser.add_argument("--workdir", type=Path, default=Path(".bench-cache"))
    parser.add_argument("--no-llama-cpp", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    result = run(args.model, args.tokens, args.gguf, args.workdir, not args.no_llama_cpp)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"generation speed, {args.model}, {args.tokens} tokens per answer, load average {result['load_average']:.1f}")
    for c in result["configs"]:
        label = f"{c['engine']:9s} threads={c['threads']}"
        if c["engine"] == "pytorch":
            print(f"  {label} {c['dtype']} {c['kv_cache']:7s} cache: single {c['single_tokens_per_s']:6.1f} tok/s, "
                  f"batch of 8 {c['batch8_tokens_per_s']:6.1f} tok/s ({c['batch_speedup']}x)")
        else:
            print(f"  {label} {c['gguf']}: " + (f"single {c['single_tokens_per_s']:6.1f} tok/s" if "error" not in c else c["error"]))
    print(f"single stream {result['best_single_tokens_per_s']} tok/s (target {TARGET_SINGLE}): "
          f"{'ok' if result['single_ok'] else 'MISSED'}; batch speedup {result['batch_speedup']}x "
          f"(target {TARGET_BATCH_SPEEDUP}x): {'ok' if result['batch_ok'] else 'MISSED'}")


if __name__ == "__main__":
    main()
