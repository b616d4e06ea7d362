"""Benchmark: the specialist-sized output head (models.vocab_head) against the full head.

On the coffee specialist (examples/coffee/train.jsonl with its knowledge base, built exactly as
`specialist train` builds it) and the embedded Gemma 3 270M:

1. size: the kept tokens, their share of the vocabulary, and how much of held-out text the
   kept set covers (examples/coffee/eval.jsonl's reference answers: answers the specialist was
   never trained on, tokenized as they are);
2. generation: tokens/s with the full head and with the kept head on each generation path of
   this CPU (fp32, int8, and bf16 where it is native), one stream and 8 batched streams,
   fixed-length answers (64 tokens, prompt reading included), the same prompts;
3. training: `specialist train` with the kept head and with the full head on the same examples
   (one epoch, bench_train_speed's hyper-parameters, the same threads): tokens/s of each and the
   held-out loss of both adapters scored alike (over the full head, fp32 base,
   bench_train_speed.heldout).

Quality parity of the answers (eval's verdict with the kept head within 2 points of the
full head's) takes `specialist eval` runs of several minutes each: benchmarks/README.md
records them.

    python benchmarks/bench_output_head.py [--examples N] [--tokens 64] [--skip-train] [--json]
    specialist bench output_head [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NAME = "output_head"
DESCRIPTION = "Specialist-sized output head vs the full head: kept tokens, generation and training speed"
COFFEE = ROOT / "examples" / "coffee"
PROMPTS = [f"Opowiedz mi o kawie numer {i} z naszej palarni." for i in range(8)]


def coffee_kept(model: str, data: Path = COFFEE / "train.jsonl", knowledge: Path | None = COFFEE / "knowledge"
                ) -> tuple[list[int], int, object]:
    """(kept token ids, vocabulary size, tokenizer) as `specialist train` builds them for the
    coffee specialist with its knowledge base and default settings."""
    from specialist.config import load_train_config
    from specialist.models.resolve import load_tokenizer, resolve
    from specialist.train.dataset import tokenize_examples
    from specialist.train.run import kept_vocabulary, training_set

    config = load_train_config(overrides={"data": data, "model": model, "knowledge": knowledge,
                                          "out": Path(tempfile.gettempdir()) / "unused"})
    tokenizer = load_tokenizer(resolve(model))
    examples = training_set(config)
    features = tokenize_examples(tokenizer, examples.train, config.max_length)
    kept = kept_vocabulary(config, tokenizer, features, None, examples.knowledge)
    assert kept is not None
    return kept, len(tokenizer), tokenizer


def coverage(tokenizer, kept: list[int], texts: list[str]) -> float:
    ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    keep = set(kept)
    return sum(i in keep for i in ids) / len(ids) if ids else 1.0


def _tokens_per_s(gen, prompts: list[str], tokens: int) -> float:
    """Fixed-length answers (no end-of-turn ends a row early), prompt reading included."""
    import torch

    from specialist.models.template import build_messages

    batch = gen.batch_inputs([gen.prompt_ids(build_messages(p)) for p in prompts])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = gen.model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 pad_token_id=gen.pad_id)
    seconds = time.perf_counter() - t0
    assert out.shape[1] - batch["input_ids"].shape[1] == tokens
    return len(prompts) * tokens / seconds


def generation(model: str, kept: list[int], path_name: str, tokens: int, threads: int) -> list[dict]:
    """tokens/s of one stream and 8 streams, full head then kept head, on one generation path."""
    import torch

    from specialist.inference.precision import choose_path, quantize_int8
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import load_model
    from specialist.models.vocab_head import use_kept_head

    torch.set_num_threads(threads)
    path = choose_path(path_name)
    rows = []
    for head in ("full", "kept"):
        loaded = load_model(model, dtype=path.dtype)
        if head == "kept":
            use_kept_head(loaded.model, kept, vocab_logits=True, frozen=True)
        if path.int8:
            loaded.model = quantize_int8(loaded.model)
        gen = TorchGenerator(loaded)
        _tokens_per_s(gen, PROMPTS[:1], tokens)  # warm-up
        single = max(_tokens_per_s(gen, PROMPTS[:1], tokens) for _ in range(3))
        batched = max(_tokens_per_s(gen, PROMPTS, tokens) for _ in range(2))
        rows.append({"part": "generation", "path": path.name, "head": head, "threads": threads,
                     "single_tokens_per_s": round(single, 1), "batch8_tokens_per_s": round(batched, 1)})
    return rows


def heldout_kept(model: str, adapter: Path, eval_path: Path, kept: list[int]) -> dict:
    """Held-out loss of an adapter as the kept head reads it: each reference token's NLL under
    the softmax over the kept tokens, for the reference tokens the set holds (the others, which
    the kept head cannot write at all, are counted)."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from specialist.models.resolve import load_tokenizer, resolve
    from specialist.models.template import encode_example
    from specialist.models.vocab_head import use_kept_head
    from specialist.train.dataset import read_examples

    source = resolve(model)
    tokenizer = load_tokenizer(source)
    base = AutoModelForCausalLM.from_pretrained(source.weights, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    head = use_kept_head(peft_model, kept, vocab_logits=False)
    total, covered, outside = 0.0, 0, 0
    with torch.inference_mode():
        for ex in read_examples(eval_path):
            prompt, completion = encode_example(tokenizer, ex.messages, ex.completion)
            ids = torch.tensor([prompt + completion])
            logits = peft_model(input_ids=ids, logits_to_keep=len(completion) + 1, use_cache=False).logits[0, :-1]
            targets = head.position[torch.tensor(completion)]
            inside = targets >= 0
            outside += int((~inside).sum())
            covered += int(inside.sum())
            total += float(F.cross_entropy(logits[inside].float(), targets[inside], reduction="sum"))
    return {"heldout_loss_kept_vocab": round(total / covered, 4), "heldout_tokens_outside": outside}


def training(model: str, examples: int | None, threads: int) -> list[dict]:
    """bench_train_speed's specialist recipe with each head, then both adapters' held-out loss:
    over the full head (bench_train_speed.heldout, the common yardstick) and as the kept head
    reads it (heldout_kept, for both adapters over the same kept set)."""
    sys.path.insert(0, str(HERE))
    import bench_train_speed as speed

    from specialist.run_folder import read_kept_vocabulary

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data, eval_path = speed.dataset_paths(Path(tmp))
        kept: list[int] = []
        for head in ("kept", "full"):
            adapter = Path(tmp) / f"adapter-{head}"
            got = speed.run_specialist(data, model, examples, threads, adapter_out=adapter,
                                       overrides={"output_head": head})
            if head == "kept":
                kept = read_kept_vocabulary(adapter)[0]  # run_specialist copies it beside the adapter
            got.update(speed.heldout(model, adapter, eval_path, None))
            got.update(heldout_kept(model, adapter, eval_path, kept))
            rows.append({"part": "training", "head": head, "examples": got["examples"], "steps": got["steps"],
                         "threads": got["threads"], "tokens": got["tokens"], "train_seconds": got["train_seconds"],
                         "tokens_per_second": got["tokens_per_second"],
                         "tokens_per_cpu_second": got["tokens_per_cpu_second"],
                         "train_loss": round(got["train_loss"], 4), "heldout_loss": got["heldout_loss"],
                         "heldout_loss_kept_vocab": got["heldout_loss_kept_vocab"],
                         "heldout_tokens_outside": got["heldout_tokens_outside"], "kept_tokens": len(kept)})
    return rows


def run(model: str = "gemma-3-270m", tokens: int = 64, examples: int | None = 160, train: bool = True,
        threads: int | None = None) -> dict:
    from specialist.inference.precision import int8_available
    from specialist.models.device import cpu_features, cpu_supports_bf16
    from specialist.train.dataset import read_examples
    from specialist.train.setup import default_threads

    sys.path.insert(0, str(HERE))
    import bench_train_speed as speed  # its machine(): the CPU model, cores, native bf16, torch, load

    threads = threads or default_threads()
    kept, vocab, tokenizer = coffee_kept(model)
    heldout = [ex.completion for ex in read_examples(COFFEE / "eval.jsonl")]
    size = {"part": "size", "kept_tokens": len(kept), "vocabulary": vocab,
            "kept_share": round(len(kept) / vocab, 4),
            "heldout_coverage": round(coverage(tokenizer, kept, heldout), 4)}
    rows: list[dict] = [size]
    paths = ["fp32", *(["int8"] if int8_available() else []), *(["bf16"] if cpu_supports_bf16() else [])]
    for path in paths:
        rows.extend(generation(model, kept, path, tokens, threads))
    if train:
        rows.extend(training(model, examples, threads))
    summary: dict = {"kept_tokens": len(kept), "kept_share": size["kept_share"],
                     "heldout_coverage": size["heldout_coverage"]}
    for path in paths:
        full, kept_row = [r for r in rows if r["part"] == "generation" and r["path"] == path]
        summary[f"{path}_single_speedup"] = round(kept_row["single_tokens_per_s"] / full["single_tokens_per_s"], 2)
        summary[f"{path}_batch8_speedup"] = round(kept_row["batch8_tokens_per_s"] / full["batch8_tokens_per_s"], 2)
    trained = {r["head"]: r for r in rows if r["part"] == "training"}
    if trained:
        summary["train_speedup"] = round(trained["kept"]["tokens_per_second"] / trained["full"]["tokens_per_second"], 2)
        summary["heldout_loss_full_head"] = trained["full"]["heldout_loss"]
        summary["heldout_loss_kept_head"] = trained["kept"]["heldout_loss"]
        summary["heldout_loss_change"] = round(trained["kept"]["heldout_loss"] / trained["full"]["heldout_loss"] - 1, 4)
    return {"model": model, "tokens_per_answer": tokens, "rows": rows, "summary": summary,
            "machine": {**speed.machine(), "cpu_features": sorted(cpu_features()), "threads": threads}}


def bench(quick: bool = False) -> dict:
    """The `specialist bench` entry point; quick = a few tokens, no training (checks it runs)."""
    doc = run(tokens=4 if quick else 64, train=not quick)
    change = doc["summary"].get("heldout_loss_change")
    doc["ok"] = change is not None and change <= 0.01
    doc["summary"]["goal"] = ("held-out loss within 1% of the full head's" if not quick
                              else "quick run: sizes and speed only")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--examples", type=int, default=160, help="training examples (one epoch over them)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    doc = run(args.model, args.tokens, args.examples, not args.skip_train, args.threads)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    for row in doc["rows"]:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print("  ".join(f"{k}={v}" for k, v in doc["summary"].items()))
    print(f"machine: {doc['machine']}")


if __name__ == "__main__":
    main()
