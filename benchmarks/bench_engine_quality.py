"""Benchmark: do the faster engines still answer like the trained model?

`specialist generate --input … --output …` answers the same held-out prompts once per engine:
--engine torch (the trained weights in bf16, what `specialist eval` measured) and --engine
llama.cpp with each GGUF type. Each llama.cpp answer set is compared with the torch answers:
chrF (character n-gram F-score, 0–100; greedy decoding drifts apart after the first different
token, so even f16 scores well below 100), identical answers, the share of answers that end
on their own (end-of-turn) rather than running into the token limit, and decoding speed.

    python benchmarks/bench_engine_quality.py --model runs/coffee [--data examples/coffee/eval.jsonl]
        [--prompts 12] [--max-new-tokens 128] [--quant q8_0 --quant q4_0] [--json]

A quantized type is called faithful here when its chrF against torch is at least 60% of the
f16 export's (i.e. the drift is that of precision, not of broken weights) and at least as many
answers end on their own as with torch, minus one in ten.

With --paths, the torch engine's generation paths (models.device.generation_path: int8 weights,
bf16, fp32) are held to what `specialist eval` measures instead: each path runs the whole eval
of a trained run (its base-model answers, the style classifier's generic answers and the
fine-tuned answers all on that path) on the coffee facts + the first --style-prompts of the
coffee eval set, and a path has parity when style adherence, rule pass rate, chrF and fact
accuracy of every contender are each within 2 points of the reference path's (the first one):

    python benchmarks/bench_engine_quality.py --model RUN --paths bf16,int8 [--style-prompts 24]
        [--contenders fine-tuned] [--reference-report REPORT.json] [--json]

A path named llama.cpp is `eval --engine llama.cpp` (what `eval` and `demo` take by default
where llama.cpp is installed): the fine-tuned contenders answer from the run's GGUF (with the
run's kept head and context-aware decoding, as chat and serve run it), the base model's
contenders and the style classifier's generic answers from the base model's GGUF, in the GGUF
type this CPU gets by default (llama.cpp:q8_0 names one); the held-out losses stay on torch's
own path; held to the same 2 points. llama.cpp-chat asks the same one request at a time, as chat
does: a lone stream drafts tokens by prompt lookup, and llama.cpp's several-token calls round a
little differently from its one-token calls:

    python benchmarks/bench_engine_quality.py --model RUN --paths fp32,llama.cpp,llama.cpp-chat \
        --contenders fine-tuned,fine-tuned+knowledge

llama.cpp-cache is `eval --prompt-cache`: a contender's shared prompt start (system prompt and
examples) read once, as chat and serve read it, held to the same parity. Every path answers
afresh: the eval's answer cache is not used, so no path reuses another's answers.

--reference-report takes the reference path's report from an earlier eval with the same
settings instead of running it again; --reports DIR keeps each path's report there. The canary
(general ability) is left out: it measures the base against the specialist, not the answers
these paths give on the task.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "engine_quality"
DESCRIPTION = "Answers of --engine llama.cpp (per GGUF type) against --engine torch on held-out prompts"
ROOT = Path(__file__).resolve().parent.parent


def _answers(model: str, prompts: Path, out: Path, max_new_tokens: int, engine: str, quant: str | None) -> dict:
    cmd = [sys.executable, "-m", "specialist.cli", "generate", "--model", model, "--input", str(prompts),
           "--output", str(out), "--max-new-tokens", str(max_new_tokens), "--engine", engine, "--json"]
    if quant:
        cmd += ["--quant", quant]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    summary = json.loads(proc.stdout)
    rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    return {"summary": summary, "rows": rows}


def compare(reference: dict, candidate: dict) -> dict:
    from sacrebleu.metrics import CHRF

    ids = sorted(reference)
    hyp = [candidate[i]["answer"] for i in ids]
    ref = [reference[i]["answer"] for i in ids]
    return {
        "chrf_vs_torch": round(CHRF().corpus_score(hyp, [ref]).score, 1),
        "identical": sum(h == r for h, r in zip(hyp, ref)),
        "ended_on_their_own": sum(candidate[i]["finish_reason"] == "stop" for i in ids),
        "mean_answer_tokens": round(sum(candidate[i]["completion_tokens"] for i in ids) / len(ids), 1),
    }


def run(model: str, data: Path, prompts: int = 12, max_new_tokens: int = 128,
        quants: tuple[str, ...] = ("f16", "q8_0", "q4_0")) -> dict:
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()][:prompts]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompt_file = tmp / "prompts.jsonl"
        prompt_file.write_text("".join(json.dumps({"id": i, "prompt": r["prompt"]}, ensure_ascii=False) + "\n"
                                       for i, r in enumerate(records)), encoding="utf-8")
        torch_run = _answers(model, prompt_file, tmp / "torch.jsonl", max_new_tokens, "torch", None)
        rows = [{"engine": "torch", "weights": "bf16 (trained)", "chrf_vs_torch": 100.0, "identical": len(records),
                 "ended_on_their_own": sum(r["finish_reason"] == "stop" for r in torch_run["rows"].values()),
                 "mean_answer_tokens": round(sum(r["completion_tokens"] for r in torch_run["rows"].values())
                                             / len(records), 1),
                 "tokens_per_s": torch_run["summary"]["tokens_per_second"]}]
        for quant in quants:
            got = _answers(model, prompt_file, tmp / f"{quant}.jsonl", max_new_tokens, "llama.cpp", quant)
            rows.append({"engine": "llama.cpp", "weights": quant, **compare(torch_run["rows"], got["rows"]),
                         "tokens_per_s": got["summary"]["tokens_per_second"]})
    f16 = next((r["chrf_vs_torch"] for r in rows if r["weights"] == "f16"), None)
    for r in rows[1:] if f16 is not None else []:  # judged against the f16 export's drift
        r["faithful"] = bool(r["chrf_vs_torch"] >= 0.6 * f16
                             and r["ended_on_their_own"] >= rows[0]["ended_on_their_own"] - max(1, len(records) // 10))
    return {"model": model, "data": str(data), "prompts": len(records), "max_new_tokens": max_new_tokens,
            "load_average": os.getloadavg()[0], "rows": rows}


# ------------------------------------------------------------------ generation paths
PARITY_METRICS = ("style_adherence", "rule_pass_rate", "chrf", "fact_accuracy")  # as eval reports them
PARITY_POINTS = 2.0
EVAL_ON_PATH = r"""
import json, sys
from pathlib import Path
from specialist.evaluate.runner import EvalSettings, run_eval
run, data, path, out, contenders, coffee = sys.argv[1:7]
coffee = Path(coffee)
# llama.cpp-chat: one request at a time, as chat asks (a lone stream drafts by prompt lookup);
# llama.cpp-cache: eval --prompt-cache (a contender's shared prompt start read once);
# llama.cpp:bf16 = --quant bf16
name, _, quant = path.partition(":")
engine, dtype = ("llama.cpp", "auto") if name.startswith("llama.cpp") else ("torch", name)
doc = run_eval(EvalSettings(model=run, data=Path(data), system_prompt=coffee / "system_prompt.txt",
                            rules=coffee / "eval.yaml", knowledge=coffee / "knowledge",
                            knowledge_system_prompt=coffee / "system_prompt_knowledge.txt",
                            train_data=coffee / "train.jsonl", contenders=tuple(contenders.split(",")) or None,
                            dtype=dtype, engine=engine, canary=False, cache=False,
                            prompt_cache=name == "llama.cpp-cache",
                            quant=quant or None, batch_size=1 if name == "llama.cpp-chat" else 8))
Path(out).write_text(json.dumps(doc, ensure_ascii=False))
"""


def points(metric: str, value: float | None) -> float | None:
    """A metric on a 0-100 scale (chrF already is; shares are scaled)."""
    if value is None:
        return None
    return float(value) if metric == "chrf" else 100.0 * float(value)


def parity(reference: dict, candidate: dict) -> list[dict]:
    """One row per contender of two eval reports: each PARITY_METRICS figure in points, its
    difference from the reference, identical answers, and whether all are within 2 points."""
    rows = []
    ref = {c["name"]: c for c in reference["contenders"]}
    for c in candidate["contenders"]:
        if c["name"] not in ref:
            continue
        row: dict = {"contender": c["name"]}
        ok = True
        for m in PARITY_METRICS:
            a, b = points(m, ref[c["name"]]["metrics"].get(m)), points(m, c["metrics"].get(m))
            row[m] = None if b is None else round(b, 1)
            delta = None if a is None or b is None else round(b - a, 1)
            row[f"{m}_delta"] = delta
            ok = ok and (delta is None or abs(delta) <= PARITY_POINTS)
        pairs = list(zip(ref[c["name"]]["answers"], c["answers"]))
        row["identical_answers"] = f"{sum(x['answer'] == y['answer'] for x, y in pairs)}/{len(pairs)}"
        row["parity"] = ok
        rows.append(row)
    return rows


def path_parity(model: str, paths: tuple[str, ...], style_prompts: int = 24,
                contenders: tuple[str, ...] = ("zero-shot", "fine-tuned"), reference_report: Path | None = None,
                coffee: Path = ROOT / "examples" / "coffee", reports_dir: Path | None = None) -> dict:
    """Eval of `model` on each path (the first is the reference) and the parity rows."""
    records = [json.loads(x) for x in (coffee / "facts.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    records += [json.loads(x) for x in (coffee / "eval.jsonl").read_text(encoding="utf-8").splitlines()
                if x.strip()][:style_prompts]
    reports: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "facts_and_style.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        for i, path in enumerate(paths):
            if i == 0 and reference_report is not None:
                reports[path] = json.loads(reference_report.read_text(encoding="utf-8"))
                continue
            out = Path(tmp) / f"{path}.json"
            proc = subprocess.run([sys.executable, "-c", EVAL_ON_PATH, model, str(data), path, str(out),
                                   ",".join(contenders), str(coffee)], capture_output=True, text=True, timeout=14400)
            if proc.returncode != 0:
                raise RuntimeError(f"eval on {path}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
            reports[path] = json.loads(out.read_text(encoding="utf-8"))
            if reports_dir is not None:
                reports_dir.mkdir(parents=True, exist_ok=True)
                (reports_dir / f"{path}.json").write_text(out.read_text(encoding="utf-8"), encoding="utf-8")
    reference = reports[paths[0]]
    rows = [{"path": p, **row} for p in paths[1:] for row in parity(reference, reports[p])]
    chosen = [r["path"] for r in rows]
    return {"model": model, "prompts": len(records), "reference_path": paths[0], "paths": list(paths),
            "reference": [{"path": paths[0], **row} for row in parity(reference, reference)],
            "rows": rows, "parity": {p: all(r["parity"] for r in rows if r["path"] == p) for p in set(chosen)},
            "generation": {p: reports[p]["settings"].get("generation") for p in paths},
            "load_average": os.getloadavg()[0]}


def bench(quick: bool = False) -> dict:
    """The `specialist bench` entry point, on the embedded base model and the coffee prompts
    (quick: 2 prompts, 8 tokens, q8_0 only). Without llama-cpp-python there is nothing to compare."""
    if importlib.util.find_spec("llama_cpp") is None:
        return {"rows": [], "summary": {"skipped": "llama-cpp-python is not installed (make llama-cpp)"}, "ok": True}
    data = ROOT / "examples" / "coffee" / "eval.jsonl"
    result = run("gemma-3-270m", data, *((2, 8, ("q8_0",)) if quick else (12, 128, ("f16", "q8_0", "q4_0"))))
    faithful = [r["weights"] for r in result["rows"][1:] if r.get("faithful")]
    return {"rows": result["rows"], "summary": {"faithful_gguf_types": ", ".join(faithful) or "none"},
            "ok": "q8_0" in faithful or quick, "machine": {"load_average": result["load_average"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", help="a run folder (the specialist) or any model reference")
    parser.add_argument("--data", type=Path, default=ROOT / "examples" / "coffee" / "eval.jsonl")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--quant", action="append", help="GGUF types to compare (default: f16, q8_0, q4_0)")
    parser.add_argument("--paths", help="torch generation paths (or llama.cpp, llama.cpp-chat) to hold to eval "
                                        "parity, reference first (e.g. bf16,int8 or fp32,llama.cpp); --model must be "
                                        "a trained run")
    parser.add_argument("--style-prompts", type=int, default=24,
                        help="coffee eval prompts added to the facts (--paths)")
    parser.add_argument("--contenders", default="zero-shot,fine-tuned", help="eval contenders (--paths)")
    parser.add_argument("--reference-report", type=Path, help="the reference path's eval report, if already made")
    parser.add_argument("--reports", type=Path, help="keep each path's eval report in this folder (--paths)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.paths:
        doc = path_parity(args.model, tuple(args.paths.split(",")), args.style_prompts,
                          tuple(args.contenders.split(",")), args.reference_report, reports_dir=args.reports)
        if args.json:
            print(json.dumps(doc, indent=2, ensure_ascii=False))
            return
        print(f"{args.model}: {doc['prompts']} prompts, reference path {doc['reference_path']}, "
              f"load average {doc['load_average']:.1f}")
        for r in doc["reference"] + doc["rows"]:
            ref = r["path"] == doc["reference_path"]
            figures = "  ".join(f"{m} {r[m]}" + ("" if ref else f" ({r[m + '_delta']:+})")
                                for m in PARITY_METRICS if r[m] is not None)
            print(f"  {r['path']:5s} {r['contender']:12s} {figures}  identical {r['identical_answers']}"
                  + ("" if ref else ("  parity" if r["parity"] else "  NO PARITY")))
        return
    result = run(args.model, args.data, args.prompts, args.max_new_tokens, tuple(args.quant or ("f16", "q8_0", "q4_0")))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(f"{args.model}: {result['prompts']} prompts of {args.data}, up to {args.max_new_tokens} tokens, "
          f"load average {result['load_average']:.1f}")
    for r in result["rows"]:
        print(f"  {r['engine']:9s} {r['weights']:15s} chrF vs torch {r['chrf_vs_torch']:5.1f}  identical "
              f"{r['identical']:2d}  ended on their own {r['ended_on_their_own']:2d}/{result['prompts']}  "
              f"mean tokens {r['mean_answer_tokens']:5.1f}  {r['tokens_per_s']:6.1f} tok/s"
              + ("" if "faithful" not in r else ("  faithful" if r["faithful"] else "  NOT faithful")))


if __name__ == "__main__":
    main()
