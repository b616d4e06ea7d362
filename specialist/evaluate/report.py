"""The report: one JSON document (report.json), a rich table in the terminal and the inputs
of the HTML page (html.py).

report.json keeps a stable top level: `contenders` is a list of {"name", "metrics",
"answers"} in the order zero-shot, prompt-engineering, fine-tuned, with a knowledge base
prompt-engineering+knowledge and fine-tuned+knowledge, then an endpoint. `knowledge` is None
without a knowledge base, else where it came from, its retrieval settings, recall@k and every
prompt's retrieved passages; `retrieval_recall_at_k` repeats that one figure at the top level.

Every answer carries fact_ok (None: no facts to check), missing_facts (the regexes not
matched), wrong_found (the record's `wrong` regexes it matched), unsupported_numbers (None
without a knowledge base) and abstained (None for an answerable record); answers of the
+knowledge contenders also carry `passages` (the ids retrieved into their prompt)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from specialist.evaluate.contenders import FINE_TUNED, PROMPT_ENGINEERING, ZERO_SHOT

REPORT_VERSION = 1


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str
    better: str  # "higher", "lower" or "" (no direction)
    fmt: str     # "pct", "f1", "f2", "f3", "int"
    timing: bool = False  # varies from run to run (wall-clock)


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("chrf", "chrF (0-100)", "higher", "f1"),
    MetricInfo("rouge_l", "ROUGE-L F1", "higher", "f3"),
    MetricInfo("exact_match", "exact match", "higher", "pct"),
    MetricInfo("accuracy", "accuracy", "higher", "pct"),
    MetricInfo("macro_f1", "macro-F1", "higher", "f3"),
    MetricInfo("fact_accuracy", "fact accuracy", "higher", "pct"),
    MetricInfo("unsupported_number_rate", "answers with unsupported numbers", "lower", "pct"),
    MetricInfo("abstention_rate", "abstains when it cannot know", "higher", "pct"),
    MetricInfo("retrieval_recall_at_k", "retrieval recall@k", "higher", "pct"),
    MetricInfo("style_adherence", "style adherence", "higher", "pct"),
    MetricInfo("style_score_mean", "style score, mean", "higher", "f3"),
    MetricInfo("style_score_spread", "style score spread (std)", "lower", "f3"),
    MetricInfo("rule_pass_rate", "rule pass rate", "higher", "pct"),
    MetricInfo("rule_all_pass_rate", "answers passing every rule", "higher", "pct"),
    MetricInfo("length_words_mean", "answer length, words", "", "f1"),
    MetricInfo("length_spread", "length spread (std, words)", "lower", "f1"),
    MetricInfo("length_iqr", "length IQR, words", "lower", "f1"),
    MetricInfo("eval_loss", "held-out loss (nats/token)", "lower", "f3"),
    MetricInfo("perplexity", "held-out perplexity", "lower", "f2"),
    MetricInfo("prompt_tokens_mean", "prompt tokens / request", "lower", "f1"),
    MetricInfo("completion_tokens_mean", "generated tokens / request", "", "f1"),
    MetricInfo("latency_ms_p50", "latency p50 (ms)", "lower", "int", timing=True),
    MetricInfo("latency_ms_p95", "latency p95 (ms)", "lower", "int", timing=True),
    MetricInfo("throughput_tokens_per_s", "throughput (generated tok/s)", "higher", "f1", timing=True),
)
TIMING_KEYS = frozenset(m.key for m in METRICS if m.timing)


def fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.0f}%"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:,.{kind[1]}f}"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ------------------------------------------------------------------ building
def build_report(settings: Any, inputs: Any, results: Sequence[Any], metrics: dict[str, dict[str, Any]],
                 classifier: Any, break_even: Any, max_new_tokens: int,
                 knowledge: dict[str, Any] | None = None) -> dict[str, Any]:
    rules = inputs.rules
    contenders = []
    for r in results:
        m = dict(metrics[r.contender.name])
        scores = m.pop("_style_scores")
        passes = m.pop("_rule_passes")
        checked = m.pop("_facts", None)
        passages = getattr(r, "passages", None)
        answers = []
        for i, (example, reply) in enumerate(zip(inputs.eval_examples, r.replies)):
            answers.append({
                "prompt": example.prompt, "reference": example.completion, "answer": reply.text,
                "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                "latency_ms": reply.latency * 1000.0, "finish_reason": reply.finish_reason,
                "words": len(reply.text.split()), "style_score": scores[i],
                "failed_rules": [rule.name for rule, ok in zip(rules, passes[i]) if not ok] if passes else [],
                "loss": r.loss.per_example[i] if r.loss else None,
            })
            if checked is not None:
                answers[-1].update(checked[i])
            if passages is not None:
                answers[-1]["passages"] = passages[i]
        contenders.append({"name": r.contender.name, "prompt": r.contender.describe(), "metrics": m,
                           "answers": answers})
    run = inputs.run
    doc = {
        "version": REPORT_VERSION,
        "model": str(run.path),
        "base_model": run.base_model,
        "data": str(settings.data),
        "examples": len(inputs.eval_examples),
        "task": "classification" if "macro_f1" in next(iter(metrics.values())) else "generation",
        "settings": {"few_shot": settings.few_shot, "seed": settings.seed, "limit": settings.limit,
                     "max_new_tokens": max_new_tokens, "batch_size": settings.batch_size, "decoding": "greedy",
                     "system_prompt": str(inputs.system_prompt_path) if inputs.system_prompt_path else None,
                     "rules": str(inputs.rules_path) if inputs.rules_path else None,
                     "train_data": str(settings.train_data or run.train_data)},
        "run": {"train_seconds": run.summary.train_seconds, "examples": run.summary.examples,
                "method": run.summary.method, "tokens_per_second": run.summary.tokens_per_second,
                "steps": run.summary.steps,
                "training_system_prompt": run.system_prompt},
        "style_classifier": classifier.describe(),
        "rules": [{"name": rule.name, "check": rule.check, "value": getattr(rule, rule.check)} for rule in rules],
        "break_even": break_even.to_dict() if break_even else None,
        "knowledge": knowledge,
        "retrieval_recall_at_k": knowledge.get("retrieval_recall_at_k") if knowledge else None,
        "notes": [
            "latency = wall time of the batch a request was answered in (batch size "
            f"{settings.batch_size}); throughput = generated tokens / generation wall time",
            "style adherence = share of answers the style classifier scores >= 0.5; its generic class is the "
            "zero-shot base model's answers to training prompts, so zero-shot scores low by construction",
            "held-out loss = mean NLL per reference completion token under each contender's own prompt",
            *(FACT_NOTES if any(c["metrics"].get(k) is not None for c in contenders for k in FACT_KEYS) else []),
        ],
        "contenders": contenders,
    }
    doc["comparison"] = comparison_table(doc)
    doc["verdict"] = verdict(doc)
    return _clean(doc)


FACT_KEYS = ("fact_accuracy", "unsupported_number_rate", "abstention_rate")
FACT_NOTES = [
    "fact accuracy = share of answerable records with facts whose answer matches every facts regex and no wrong "
    "regex (case-insensitive)",
    "unsupported numbers = share of answers stating a number found neither in the question nor anywhere in the "
    "knowledge base",
    "abstention = share of unanswerable records whose answer offers to check / hand over or says it does not know "
    "(specialist.evaluate.facts.ABSTAIN_PATTERN), states no unsupported number and matches no wrong regex",
    "retrieval recall@k = share of answerable records with facts whose top-k passages match every facts regex",
]


def contender(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in doc["contenders"] if c["name"] == name), None)


def _pct(x: float | None) -> str:
    return fmt(x, "pct")


def comparison_table(doc: dict[str, Any]) -> list[dict[str, str]]:
    """The source's words-only comparison (complexity, upfront cost, consistency, data needed,
    flexibility, prompt length) with this evaluation's numbers in it."""
    pe, ft = contender(doc, PROMPT_ENGINEERING), contender(doc, FINE_TUNED)
    if pe is None or ft is None:
        return []
    pm, fm = pe["metrics"], ft["metrics"]
    run = doc["run"]
    train_s = run.get("train_seconds")
    train_txt = f"{train_s:,.0f} s of training" if train_s is not None else "training time not recorded"
    k = pe["prompt"]["few_shot"]
    sys_txt = "a system prompt" if pe["prompt"]["system_prompt"] else "no system prompt"
    ratio = pm["prompt_tokens_mean"] / fm["prompt_tokens_mean"] if fm["prompt_tokens_mean"] else None
    be = doc.get("break_even") or {}

    def consistency(m: dict[str, Any]) -> str:
        rules = f", rules passed {_pct(m['rule_pass_rate'])}" if m.get("rule_pass_rate") is not None else ""
        return (f"style adherence {_pct(m['style_adherence'])}, length spread ±{m['length_spread']:.1f} words, "
                f"style-score spread {m['style_score_spread']:.3f}{rules}")

    return [
        {"aspect": "complexity",
         "prompt_engineering": f"write {sys_txt} and pick {k} examples; nothing to train",
         "fine_tuning": f"a {run.get('method') or 'fine-tuning'} run on {run.get('examples') or '?'} examples"},
        {"aspect": "upfront cost", "prompt_engineering": "0 s of training", "fine_tuning": train_txt},
        {"aspect": "consistency", "prompt_engineering": consistency(pm), "fine_tuning": consistency(fm)},
        {"aspect": "data needed",
         "prompt_engineering": f"{k} examples" + (" + a system prompt" if pe["prompt"]["system_prompt"] else ""),
         "fine_tuning": f"{run.get('examples') or '?'} training examples"},
        {"aspect": "flexibility", "prompt_engineering": "edit the prompt: takes effect on the next request",
         "fine_tuning": f"change the data and retrain ({train_txt})"},
        {"aspect": "prompt length", "prompt_engineering": f"{pm['prompt_tokens_mean']:.0f} tokens per request",
         "fine_tuning": f"{fm['prompt_tokens_mean']:.0f} tokens per request"
                        + (f" ({ratio:.1f}× shorter)" if ratio and ratio > 1 else "")},
        {"aspect": "break-even", "prompt_engineering": "–",
         "fine_tuning": (f"repaid after {be['requests']:,} requests" if be.get("requests") is not None
                         else "never repaid by prompt length alone (no shorter prompt)") if be else "–"},
    ]


def verdict(doc: dict[str, Any]) -> str:
    """One sentence from the numbers: how fine-tuning did against prompt engineering."""
    pe, ft, zs = (contender(doc, n) for n in (PROMPT_ENGINEERING, FINE_TUNED, ZERO_SHOT))
    if pe is None or ft is None:
        return "prompt-engineering or fine-tuned was not evaluated (--contenders): no comparison."
    pm, fm = pe["metrics"], ft["metrics"]
    zs_txt = f", zero-shot {_pct(zs['metrics']['style_adherence'])}" if zs else ""
    fs, ps = fm["style_adherence"], pm["style_adherence"]
    word = "higher style adherence than" if fs > ps else "lower style adherence than" if fs < ps else \
        "the same style adherence as"
    parts = [f"For this task fine-tuning gave {word} prompt engineering ({_pct(fs)} vs {_pct(ps)}{zs_txt})"]
    parts.append(f"chrF {fm['chrf']:.1f} vs {pm['chrf']:.1f}")
    if "macro_f1" in fm:
        parts.append(f"macro-F1 {fm['macro_f1']:.2f} vs {pm['macro_f1']:.2f}")
    if fm.get("eval_loss") is not None and pm.get("eval_loss") is not None:
        parts.append(f"held-out loss {fm['eval_loss']:.2f} vs {pm['eval_loss']:.2f}")
    sentence = ", ".join(parts)
    fp, pp = fm["prompt_tokens_mean"], pm["prompt_tokens_mean"]
    if fp and pp > fp:
        sentence += f", with a prompt {pp / fp:.1f}× shorter ({fp:.0f} vs {pp:.0f} tokens per request)"
    else:
        sentence += f", with prompts of {fp:.0f} vs {pp:.0f} tokens per request"
    be = doc.get("break_even")
    if be and be.get("requests") is not None and doc["run"].get("train_seconds") is not None:
        sentence += (f"; its {doc['run']['train_seconds']:,.0f} s of training are repaid after "
                     f"{be['requests']:,} requests")
    facts = facts_verdict(doc)
    return sentence + "." + (f" {facts}" if facts else "")


def facts_verdict(doc: dict[str, Any]) -> str:
    """When facts were measured: who is right most often, and who keeps the voice."""
    measured = [c for c in doc["contenders"] if c["metrics"].get("fact_accuracy") is not None]
    if not measured:
        return ""
    if len({c["metrics"]["fact_accuracy"] for c in measured}) == 1 and len(measured) > 1:
        same = _pct(measured[0]["metrics"]["fact_accuracy"])
        return f"Facts: no contender is right more often than another (all {same})."
    top = max(c["metrics"]["fact_accuracy"] for c in measured)
    tied = [c for c in measured if c["metrics"]["fact_accuracy"] == top]

    def safer(c: dict[str, Any]) -> tuple[float, float]:
        m = c["metrics"]
        return (m.get("abstention_rate") or 0.0, m.get("style_adherence") or 0.0)

    # a tie goes to the one that abstains more when it cannot know, then keeps the voice better,
    # then to the one listed first (the simpler setup); the sentence says it was a tie
    best = max(tied, key=safer)
    others = [c for c in measured if c is not best and c["metrics"]["fact_accuracy"] is not None]
    vs = ", ".join(f"{_pct(c['metrics']['fact_accuracy'])} {c['name']}" for c in others)
    tie = " (tied with " + ", ".join(c["name"] for c in tied if c is not best) + ")" if len(tied) > 1 else ""
    sentence = (f"Facts: {best['name']} is right most often{tie} ({_pct(best['metrics']['fact_accuracy'])}"
                + (f" vs {vs}" if vs else "") + ")")
    unsupported = best["metrics"].get("unsupported_number_rate")
    if unsupported is not None:
        sentence += f", {_pct(unsupported)} of its answers state an unsupported number"
    abstain = best["metrics"].get("abstention_rate")
    if abstain is not None:
        sentence += f", it abstains on {_pct(abstain)} of unanswerable questions"
    voice = _voice(doc, best)
    return sentence + (f"; the voice: {voice}" if voice else "") + "."


def _voice(doc: dict[str, Any], best: dict[str, Any]) -> str:
    """The most accurate contender's style adherence against the plain fine-tuned run (the voice
    it should keep), and who keeps the voice best when that is a third contender."""
    styled = [c for c in doc["contenders"] if c["metrics"].get("style_adherence") is not None]
    if best not in styled:
        return ""
    ref = contender(doc, FINE_TUNED)
    if ref is best or ref not in styled:
        ref = max((c for c in styled if c is not best), key=lambda c: c["metrics"]["style_adherence"], default=None)
    keeper = max(styled, key=lambda c: c["metrics"]["style_adherence"])
    text = f"{best['name']} keeps {_pct(best['metrics']['style_adherence'])} style adherence"
    if ref is not None:
        text += f" vs {_pct(ref['metrics']['style_adherence'])} {ref['name']}"
    if keeper is not best and keeper is not ref:
        text += f", {keeper['name']} keeps it best ({_pct(keeper['metrics']['style_adherence'])})"
    return text


# ------------------------------------------------------------------ output
def rich_table(doc: dict[str, Any]) -> Any:
    from rich.table import Table

    names = [c["name"] for c in doc["contenders"]]
    table = Table(title=f"specialist eval: {doc['model']} on {doc['data']} ({doc['examples']} prompts)")
    table.add_column("metric")
    for n in names:
        table.add_column(n, justify="right")
    for row in metric_rows(doc):
        table.add_row(row.label, *(f"[bold green]{c.text}[/bold green]" if c.best else c.text for c in row.cells))
    return table


@dataclass(frozen=True)
class Cell:
    text: str
    best: bool


@dataclass(frozen=True)
class MetricRow:
    label: str
    better: str
    cells: tuple[Cell, ...]  # one per contender, in the report's order


def metric_rows(doc: dict[str, Any]) -> list[MetricRow]:
    """The comparison table of a report: one row per metric some contender has, each value
    formatted and the best one marked. The terminal, the HTML report and the studio show it."""
    rows = []
    for info in METRICS:
        values = [c["metrics"].get(info.key) for c in doc["contenders"]]
        if all(v is None for v in values):
            continue
        best = best_index(values, info.better)
        rows.append(MetricRow(info.label, info.better,
                              tuple(Cell(fmt(v, info.fmt), i == best) for i, v in enumerate(values))))
    return rows


def best_index(values: Sequence[Any], better: str) -> int | None:
    known = [(v, i) for i, v in enumerate(values) if isinstance(v, (int, float))]
    if not better or len(known) < 2 or len({v for v, _ in known}) == 1:
        return None
    return (max if better == "higher" else min)(known)[1]
