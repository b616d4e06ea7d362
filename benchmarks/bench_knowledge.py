"""Benchmark: a specialist that is also right — facts from its knowledge base, voice from fine-tuning.

1. Retrieval (no model, seconds): recall@1/3/5 of `specialist knowledge` on
   examples/coffee/facts.jsonl: a question counts when its top-k passages contain every one of
   its "facts" regexes. Also on the training prompts whose answers state a number with a unit:
   there a hit is a top-k passage stating all those numbers (a proxy written by nobody for it).
2. Facts and voice (the embedded Gemma 3 270M, default training settings, examples/coffee): a run
   trained with --knowledge and a run trained without, both evaluated by `specialist eval` on
   facts.jsonl (fact questions and unanswerable ones) plus the first N prompts of eval.jsonl
   (style): fact accuracy, answers with unsupported numbers, abstention on unanswerable
   questions, style adherence, chrF, rule pass rate, for every contender.

Goals (issue "a specialist that is also right"): fine-tuned+knowledge fact accuracy ≥ 80% and
≥ 30 points above the fine-tuned specialist without knowledge; unsupported-number rate ≤ 5%;
≥ 70% of unanswerable questions get an offer to check; style adherence within 5 points of the
fine-tuned specialist's; retrieval recall@3 ≥ 90%.

    python benchmarks/bench_knowledge.py [--run RUN --baseline RUN] [--style-prompts 24] [--json]
    specialist bench knowledge [--quick]     # --quick: retrieval only
    python benchmarks/bench_knowledge.py --by-practice REPORT.json …   # fact accuracy by practice
    python benchmarks/bench_knowledge.py --rescore REPORT.json …       # as facts.jsonl scores today

--by-practice reads eval reports (report.json of `specialist eval … --data facts.jsonl` with the
fine-tuned+knowledge contender) and splits its fact accuracy by how many answers of
examples/coffee/train.jsonl match all of a question's fact regexes: a proxy, with no retrieval,
for what the data check's W122 counts (figures by value, unit and retrieved passage).
--rescore scores the saved answers of such reports again against today's facts.jsonl (its
`facts` and `wrong` regexes; the unsupported numbers the report found), next to the figures the
report has: a report written before a fact question was corrected reads as it would today.
Both score every answer as facts.jsonl does today.

Without --run/--baseline both runs are trained first (default settings: 3 epochs; about an
hour for the knowledge run on a 2-core CPU) into runs/bench-knowledge-*, and reused when they
exist and are complete."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COFFEE = ROOT / "examples" / "coffee"
NAME = "knowledge"
DESCRIPTION = "knowledge base: retrieval recall@k, and facts vs voice of a specialist trained with it"
GOALS = {"fact_accuracy": 0.80, "fact_gain": 0.30, "unsupported_number_rate": 0.05, "abstention_rate": 0.70,
         "style_gap": 0.05, "recall_at_3": 0.90}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def retrieval(knowledge: Path = COFFEE / "knowledge") -> dict[str, Any]:
    from specialist.knowledge.grounding import numbers
    from specialist.knowledge.passages import load_knowledge
    from specialist.knowledge.retrieve import Retriever, passage_text

    kb = load_knowledge(knowledge)
    retriever = Retriever(kb)
    facts = [r for r in _jsonl(COFFEE / "facts.jsonl") if r.get("answerable", True) and r.get("facts")]
    stated = {p.id: {f.value for f in numbers(p.text) if f.unit} for p in kb.passages}
    proxy = []
    for r in _jsonl(COFFEE / "train.jsonl"):
        wanted = {f.value for f in numbers(r["completion"]) if f.unit}
        relevant = {pid for pid, values in stated.items() if wanted and wanted <= values}
        if relevant:
            proxy.append((r["prompt"], relevant))
    out: dict[str, Any] = {"passages": len(kb), "language": retriever.language, "fact_questions": len(facts),
                           "train_questions": len(proxy)}
    t0 = time.perf_counter()
    for k in (1, 3, 5):
        hits = [retriever.search(r["prompt"], k) for r in facts]
        out[f"recall_at_{k}"] = sum(
            all(re.search(f, "\n".join(passage_text(h.passage) for h in hs), re.I) for f in r["facts"])
            for r, hs in zip(facts, hits)) / len(facts)
        out[f"train_recall_at_{k}"] = sum(bool({h.passage.id for h in retriever.search(q, k)} & rel)
                                          for q, rel in proxy) / max(1, len(proxy))
    out["ms_per_query"] = round(1000 * (time.perf_counter() - t0) / (3 * len(facts) + 3 * len(proxy)), 2)
    return out


def _train(out: Path, knowledge: bool) -> Path:
    """A run with the default settings, reused when complete."""
    from specialist.run_folder import is_run_dir, read_summary

    if is_run_dir(out) and read_summary(out).status == "completed":
        return out
    cmd = [sys.executable, "-m", "specialist", "train", "--data", str(COFFEE / "train.jsonl"), "--out", str(out),
           "--overwrite"]
    if knowledge:
        cmd += ["--knowledge", str(COFFEE / "knowledge")]
    subprocess.run(cmd, check=True)
    return out


def _eval(run: Path, data: Path, knowledge: Path, contenders: tuple[str, ...] | None = None,
          context_contrast: float | None = None) -> dict[str, Any]:
    from specialist.evaluate.runner import EvalSettings, run_eval

    return run_eval(EvalSettings(model=str(run), data=data, system_prompt=COFFEE / "system_prompt.txt",
                                 rules=COFFEE / "eval.yaml", knowledge=knowledge,
                                 knowledge_system_prompt=COFFEE / "system_prompt_knowledge.txt",
                                 train_data=COFFEE / "train.jsonl", contenders=contenders,
                                 context_contrast=context_contrast,
                                 canary=False))  # facts and voice only: forgetting is measured apart (canary)


def _facts_and_style(tmp: str, style_prompts: int) -> Path:
    data = Path(tmp) / "facts_and_style.jsonl"
    records = _jsonl(COFFEE / "facts.jsonl") + _jsonl(COFFEE / "eval.jsonl")[:style_prompts]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return data


ENDS_RULE = "ends with a question or an offer to help"


def contrast_sweep(run: Path, alphas: list[float], style_prompts: int,
                   knowledge: Path = COFFEE / "knowledge") -> list[dict[str, Any]]:
    """fine-tuned+knowledge of one run at each strength of context-aware decoding (0: off), on
    the same prompts: what the contrast buys in facts and what it costs in voice and time."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = _facts_and_style(tmp, style_prompts)
        for alpha in alphas:
            doc = _eval(run, data, knowledge, ("fine-tuned+knowledge",), context_contrast=alpha)
            m = doc["contenders"][0]["metrics"]
            rows.append({"context_contrast": alpha, **{k: round(m[k], 4) for k in KEYS if k != "prompt_tokens_mean"},
                         "ends_with_question_or_offer": round(m["rules"].get(ENDS_RULE, float("nan")), 4),
                         "latency_ms_p50": round(m["latency_ms_p50"])})
    return rows


KEYS = ("fact_accuracy", "unsupported_number_rate", "abstention_rate", "style_adherence", "chrf", "rule_pass_rate",
        "prompt_tokens_mean")


def quality(run: Path, baseline: Path, style_prompts: int, knowledge: Path = COFFEE / "knowledge",
            contenders: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Both runs on the same prompts. The run without knowledge answers as plain fine-tuned only
    (its base-model contenders would be the same answers again)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = _facts_and_style(tmp, style_prompts)
        docs = {"with knowledge": _eval(run, data, knowledge, contenders),
                "without knowledge": _eval(baseline, data, knowledge, ("fine-tuned",))}
    rows = []
    for label, doc in docs.items():
        for c in doc["contenders"]:
            if label == "without knowledge" and not c["name"].startswith("fine-tuned"):
                continue  # the base contenders are the same in both evaluations
            m = c["metrics"]
            rows.append({"run": f"trained {label}", "contender": c["name"],
                         **{k: round(m[k], 4) if isinstance(m.get(k), float) else m.get(k) for k in KEYS}})

    def get(label: str, name: str) -> dict:
        return next(c["metrics"] for c in docs[label]["contenders"] if c["name"] == name)

    ftk, ft = get("with knowledge", "fine-tuned+knowledge"), get("without knowledge", "fine-tuned")
    summary = {
        "examples": docs["with knowledge"]["examples"],
        "fact_accuracy": ftk["fact_accuracy"], "fact_accuracy_without_knowledge": ft["fact_accuracy"],
        "fact_gain": ftk["fact_accuracy"] - ft["fact_accuracy"],
        "unsupported_number_rate": ftk["unsupported_number_rate"], "abstention_rate": ftk["abstention_rate"],
        "style_adherence": ftk["style_adherence"], "style_adherence_without_knowledge": ft["style_adherence"],
        "style_gap": ft["style_adherence"] - ftk["style_adherence"],
        "verdict": docs["with knowledge"]["verdict"],
        "train_seconds": {"with knowledge": docs["with knowledge"]["run"]["train_seconds"],
                          "without knowledge": docs["without knowledge"]["run"]["train_seconds"]},
    }
    return {"rows": rows, "summary": summary}


PRACTICE_BUCKETS = ((0, 0), (1, 2), (3, 5), (6, 10), (11, None))


def _report(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: not an eval report ({exc})") from None
    contenders = doc.get("contenders") if isinstance(doc, dict) else None
    if not isinstance(contenders, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("answers"), list)
            and all(isinstance(a, dict) and isinstance(a.get("prompt"), str) and isinstance(a.get("answer"), str)
                    for a in c["answers"]) for c in contenders):
        raise SystemExit(f"{path}: not an eval report (contenders with named answers to prompts expected)")
    return doc


def fact_questions(facts: Path) -> dict[str, Any]:
    from specialist.evaluate.examples import load_eval_examples

    return {e.prompt: e for e in load_eval_examples(facts)}


def rescored(contender: dict[str, Any], facts: Path = COFFEE / "facts.jsonl",
             questions: dict[str, Any] | None = None) -> dict[str, Any]:
    """One contender's saved answers scored against `facts` as it is now: per answer
    (prompt → fact_ok, abstained) and the two shares, beside the ones the report holds.
    `questions` (fact_questions(facts)) spares a caller with many contenders re-reading it."""
    from specialist.evaluate.facts import abstained, fact_ok, share

    questions = fact_questions(facts) if questions is None else questions
    verdicts: dict[str, tuple[bool | None, bool | None]] = {}
    for a in contender["answers"]:
        q = questions.get(a["prompt"])
        if q is not None:
            verdicts[a["prompt"]] = (fact_ok(a["answer"], q.facts, q.answerable, q.wrong),
                                     None if q.answerable else abstained(a["answer"], a.get("unsupported_numbers")
                                                                         or (), q.wrong))
    metrics = contender.get("metrics", {})
    return {"verdicts": verdicts,
            "fact_accuracy": share([f for f, _ in verdicts.values() if f is not None]),
            "abstention_rate": share([b for _, b in verdicts.values() if b is not None]),
            "reported_fact_accuracy": metrics.get("fact_accuracy"),
            "reported_abstention_rate": metrics.get("abstention_rate")}


def rescore(reports: list[Path], facts: Path = COFFEE / "facts.jsonl") -> list[dict[str, Any]]:
    rows = []
    questions = fact_questions(facts)
    for path in reports:
        for c in _report(path)["contenders"]:
            if not any(a.get("fact_ok") is not None or a.get("abstained") is not None for a in c["answers"]):
                continue  # a contender without fact questions (a style-only eval)
            r = rescored(c, facts, questions)
            rows.append({"report": str(path), "contender": c["name"],
                         **{k: None if r[k] is None else round(r[k], 3)
                            for k in ("reported_fact_accuracy", "fact_accuracy", "reported_abstention_rate",
                                      "abstention_rate")}})
    if not rows:
        raise SystemExit("no contender in these reports answered fact questions")
    return rows


def by_practice(reports: list[Path], train: Path = COFFEE / "train.jsonl",
                facts: Path = COFFEE / "facts.jsonl") -> list[dict[str, Any]]:
    """Fact accuracy of fine-tuned+knowledge over the given eval reports, per bucket of training
    answers that state the question's facts."""
    answers = [r["completion"] for r in _jsonl(train)]
    stated = {}
    for q in _jsonl(facts):
        if q.get("answerable", True) and q.get("facts"):
            patterns = [re.compile(x, re.IGNORECASE) for x in q["facts"]]
            stated[q["prompt"]] = sum(all(p.search(a) for p in patterns) for a in answers)
    right: dict[tuple, list[bool]] = {b: [] for b in PRACTICE_BUCKETS}
    questions = fact_questions(facts)
    for path in reports:
        ftk = next((c for c in _report(path)["contenders"] if c["name"] == "fine-tuned+knowledge"), None)
        if ftk is None:
            raise SystemExit(f"{path}: no fine-tuned+knowledge contender in this eval report")
        for prompt, (ok, _) in rescored(ftk, facts, questions)["verdicts"].items():
            if prompt in stated and ok is not None:
                n = stated[prompt]
                bucket = next(b for b in PRACTICE_BUCKETS if n >= b[0] and (b[1] is None or n <= b[1]))
                right[bucket].append(ok)
    if not any(right.values()):
        raise SystemExit(f"no answer in these reports is to a question of {facts}")
    return [{"training answers stating the facts": f"{lo}" if lo == hi else f"{lo}–{hi or ''}",
             "questions": len(v) // max(len(reports), 1), "answers": len(v),
             "fact accuracy": round(sum(v) / len(v), 3) if v else None}
            for (lo, hi), v in right.items()]


def goals_met(summary: dict[str, Any]) -> bool:
    return (summary["recall_at_3"] >= GOALS["recall_at_3"]
            and (summary.get("fact_accuracy") is None or (
                summary["fact_accuracy"] >= GOALS["fact_accuracy"] and summary["fact_gain"] >= GOALS["fact_gain"]
                and summary["unsupported_number_rate"] <= GOALS["unsupported_number_rate"]
                and summary["abstention_rate"] >= GOALS["abstention_rate"]
                and summary["style_gap"] <= GOALS["style_gap"])))


def machine() -> dict[str, Any]:
    import platform

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = [f for f in ("amx_bf16", "avx512_bf16", "avx2") if f in flags]
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "")
    return {"cpu": model or platform.processor(), "cpu_features": found, "python": platform.python_version()}


def bench(quick: bool = False, run: Path | None = None, baseline: Path | None = None,
          style_prompts: int = 24, contenders: tuple[str, ...] | None = None,
          contrast: list[float] | None = None) -> dict[str, Any]:
    recall = retrieval()
    rows = [{"what": f"retrieval recall@{k}", "facts.jsonl": round(recall[f"recall_at_{k}"], 3),
             "train prompts (proxy)": round(recall[f"train_recall_at_{k}"], 3)} for k in (1, 3, 5)]
    summary: dict[str, Any] = {"recall_at_3": recall["recall_at_3"], "passages": recall["passages"]}
    doc: dict[str, Any] = {"retrieval": recall, "machine": machine(), "goals": GOALS}
    if not quick:
        runs = ROOT / "runs"
        run = run or _train(runs / "bench-knowledge-with", knowledge=True)
        baseline = baseline or _train(runs / "bench-knowledge-without", knowledge=False)
        q = quality(Path(run), Path(baseline), style_prompts, contenders=contenders)
        rows += q["rows"]
        summary.update(q["summary"])
        if contrast:
            doc["contrast_sweep"] = contrast_sweep(Path(run), contrast, style_prompts)
            rows += [{"what": "fine-tuned+knowledge, context-aware decoding", **r} for r in doc["contrast_sweep"]]
    doc.update({"rows": rows, "summary": summary, "ok": goals_met(summary)})
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run trained with --knowledge examples/coffee/knowledge")
    parser.add_argument("--baseline", type=Path, help="a run trained without a knowledge base")
    parser.add_argument("--style-prompts", type=int, default=24, help="eval.jsonl prompts added for the voice")
    parser.add_argument("--quick", action="store_true", help="retrieval only")
    parser.add_argument("--contenders", help="contenders of the knowledge run's eval, comma-separated (default: all)")
    parser.add_argument("--contrast", help="also the knowledge run at these strengths of context-aware decoding, "
                                           "comma-separated (e.g. 0,1,2)")
    parser.add_argument("--by-practice", nargs="+", type=Path, metavar="REPORT",
                        help="only: fact accuracy in these eval reports by training answers stating the facts")
    parser.add_argument("--train", type=Path, default=COFFEE / "train.jsonl",
                        help="with --by-practice: the training answers to count in")
    parser.add_argument("--rescore", nargs="+", type=Path, metavar="REPORT",
                        help="only: these eval reports' answers scored against today's facts.jsonl")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.by_practice or args.rescore:
        from specialist.errors import SpecialistError

        try:
            rows = by_practice(args.by_practice, args.train) if args.by_practice else rescore(args.rescore)
        except SpecialistError as exc:  # a bad facts.jsonl: its located error, one line
            raise SystemExit(str(exc)) from None
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        else:
            for row in rows:
                print("  ".join(f"{k}: {v}" for k, v in row.items()))
        return
    only = tuple(n.strip() for n in args.contenders.split(",")) if args.contenders else None
    alphas = [float(a) for a in args.contrast.split(",")] if args.contrast else None
    doc = bench(args.quick, args.run, args.baseline, args.style_prompts, only, alphas)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    from rich.console import Console

    from specialist.bench import rich_tables

    for table in rich_tables([{"name": NAME, "description": DESCRIPTION, **doc}]):
        Console().print(table)


if __name__ == "__main__":
    main()
