"""`specialist demo`: the whole road on the embedded default model and the coffee-shop data.

check the data → a short LoRA run → answers before and after → fine-tuning vs prompt
engineering, measured on held-out prompts. Every step is the same code the commands run.

By default the specialist is trained with the shop's knowledge base (examples/coffee/knowledge):
its answers read the passages retrieved for each question. The before/after table then asks
fact questions from facts.jsonl (two answerable, one the knowledge base cannot answer) next to
a style question, and marks whether each answer holds the expected facts; the measured
comparison mixes style prompts (eval.jsonl) with fact questions. --no-knowledge runs the
style-only demo."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from specialist.console import console, err_console
from specialist.errors import SpecialistError
from specialist.evaluate.canary import spread
from specialist.io import read_text
from specialist.models.registry import DEFAULT_MODEL
from specialist.run_folder import RunFolder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "coffee"


@dataclass
class DemoSettings:
    data: Path = EXAMPLES / "train.jsonl"
    eval_data: Path = EXAMPLES / "eval.jsonl"
    system_prompt: Path = EXAMPLES / "system_prompt.txt"
    rules: Path = EXAMPLES / "eval.yaml"
    knowledge: Path | None = EXAMPLES / "knowledge"  # None: the style-only demo
    facts: Path = EXAMPLES / "facts.jsonl"
    knowledge_system_prompt: Path = EXAMPLES / "system_prompt_knowledge.txt"  # used when it exists
    model: str = DEFAULT_MODEL
    out: Path | None = None  # default: runs/demo-<timestamp>
    epochs: float = 1.0
    max_steps: int = -1
    eval_limit: int = 8  # style prompts from eval.jsonl in the measured comparison
    fact_limit: int = 12  # fact questions from facts.jsonl there (with a knowledge base)
    show: int = 3  # prompts shown before/after (style-only demo)
    canary: bool = True  # general ability on the canary set in the measured comparison
    # a sample of it, as the comparison itself is a sample: the whole set (40 answers and 32
    # paragraphs, twice) took longer than the contest on a 2-core CPU
    canary_limit: int | None = 8


def _step(n: int, title: str) -> None:
    console.rule(f"[bold]{n}. {title}")


def run_demo(s: DemoSettings) -> Path:
    from specialist.config import load_train_config
    from specialist.data.check import CheckSettings, run_check
    from specialist.data.report import print_report
    from specialist.evaluate.contenders import adapter_enabled
    from specialist.evaluate.html import write_reports
    from specialist.evaluate.report import rich_table
    from specialist.evaluate.runner import EvalSettings, run_eval
    from specialist.inference.precision import load_for_generation
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import resolve
    from specialist.models.template import build_messages
    from specialist.train import train

    needed = (s.data, s.eval_data, s.system_prompt) + ((s.knowledge, s.facts) if s.knowledge else ())
    for path in needed:
        if not path.exists():
            raise SpecialistError(
                f"{path}: the demo needs the coffee-shop example (run it from a clone of the repository)")
    out = s.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")

    _step(1, f"Base model: {s.model}")
    source = resolve(s.model)
    console.print(f"{s.model} → {source.weights}")

    _step(2, "Training data: check")
    report = run_check(s.data, CheckSettings(model=s.model, eval_data=s.eval_data, knowledge=s.knowledge))
    print_report(report, console)
    if report.errors:
        raise SpecialistError(f"{s.data}: the data has errors; fix them first", exit_code=1)

    with_kb = " with the knowledge base (retrieved passages in every prompt)" if s.knowledge else ""
    _step(3, "Training: LoRA" + with_kb)
    config = load_train_config(overrides={"data": s.data, "eval_data": s.eval_data, "model": s.model,
                                          "epochs": s.epochs, "max_steps": s.max_steps, "out": out,
                                          "knowledge": s.knowledge})
    run_dir = train(config)
    console.print(f"run folder: {run_dir}")

    _step(4, "Answers before and after fine-tuning")
    from specialist.knowledge.runtime import open_knowledge

    context = open_knowledge(None, str(run_dir))  # the run's own snapshot, as generate/chat/serve use it
    loaded = load_for_generation(str(run_dir))
    console.print(f"generation path: {loaded.path.name} ({loaded.path.reason})", style="dim", highlight=False)
    generator = TorchGenerator(loaded)
    shown = shown_questions(s) if s.knowledge else [{"prompt": p} for p in _eval_prompts(s.eval_data)[: s.show]]
    prompts = [q["prompt"] for q in shown]
    settings = GenerationSettings(max_new_tokens=96)
    with adapter_enabled(loaded.model, False):  # the base model alone, over its whole vocabulary
        before = generator.generate([build_messages(p) for p in prompts], settings)
    after = generator.generate([context.messages(p)[0] if context else build_messages(p) for p in prompts],
                               context.generation(settings) if context else settings)
    table = Table(show_lines=True)
    table.add_column("prompt", ratio=1)
    table.add_column("base model (before)", ratio=2)
    table.add_column("specialist (after" + (", with knowledge)" if context else ")"), ratio=2)
    if s.knowledge:
        table.add_column("facts (before → after)", ratio=1)
    for q, b, a in zip(shown, before, after):
        table.add_row(q["prompt"], b.text, a.text, *([facts_mark(q, b.text, a.text)] if s.knowledge else []))
    console.print(table)
    del loaded, generator

    _step(5, "Proof: fine-tuning vs prompt engineering, measured")
    data, limit = s.eval_data, s.eval_limit
    if s.knowledge:
        data, limit = _eval_mix(s, run_dir / "demo_eval.jsonl"), None
        console.print(f"{data}: {s.eval_limit} style prompts (eval.jsonl) + {s.fact_limit} fact questions "
                      "(facts.jsonl)", highlight=False)
    knowledge_prompt = s.knowledge_system_prompt if s.knowledge and s.knowledge_system_prompt.exists() else None
    doc = run_eval(EvalSettings(model=str(run_dir), data=data, system_prompt=s.system_prompt,
                                rules=s.rules if s.rules.exists() else None, limit=limit,
                                knowledge=s.knowledge, knowledge_system_prompt=knowledge_prompt,
                                canary=s.canary, canary_limit=s.canary_limit))
    json_path, html_path = RunFolder(run_dir).eval_json, RunFolder(run_dir).eval_html
    write_reports(doc, json_path, html_path)
    console.print(rich_table(doc))
    console.print(doc["verdict"], markup=False, highlight=False)
    console.print(f"reports: {json_path}, {html_path}")
    uses = " (it retrieves from its knowledge base on its own; /sources shows the passages)" if s.knowledge else ""
    err_console.print(f"[green]done[/green]: chat with it: specialist chat --model {run_dir}{uses}")
    return run_dir


def _eval_prompts(path: Path) -> list[str]:
    from specialist.data import load_examples

    return [ex.prompt for ex in load_examples(path)]


def _records(path: Path) -> list[dict[str, Any]]:
    text = read_text(path)
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise SpecialistError(f"{path}: cannot read ({exc})") from exc


def _fact_questions(facts: Path) -> tuple[list[dict], list[dict]]:
    from specialist.evaluate.examples import load_eval_examples

    records = [ex.source for ex in load_eval_examples(facts)]  # located errors for a bad facts/wrong field
    answerable = [r for r in records if r.get("answerable", True) and r.get("facts")]
    return answerable, [r for r in records if r.get("answerable") is False]


def shown_questions(s: DemoSettings) -> list[dict]:
    """Two fact questions, one the knowledge base cannot answer, one style question."""
    answerable, unanswerable = _fact_questions(s.facts)
    return [*spread(answerable, 2), *spread(unanswerable, 1),
            *[{"prompt": p} for p in _eval_prompts(s.eval_data)[:1]]]


def facts_mark(question: dict, before: str, after: str) -> str:
    from specialist.evaluate.facts import abstained, fact_ok

    wrong = question.get("wrong") or ()
    if question.get("facts") and question.get("answerable", True):
        return " → ".join("✓" if fact_ok(t, question["facts"], True, wrong) else "✗" for t in (before, after))
    if question.get("answerable") is False:
        return "offers to check: " + " → ".join("✓" if abstained(t, (), wrong) else "✗" for t in (before, after))
    return "— (style)"


def _eval_mix(s: DemoSettings, path: Path) -> Path:
    """The measured comparison's prompts: eval_limit style prompts, then fact_limit fact
    questions (about three in four answerable), written as one JSONL file in the run folder."""
    from specialist.io import atomic_write_jsonl

    answerable, unanswerable = _fact_questions(s.facts)
    n_unanswerable = min(len(unanswerable), s.fact_limit // 4)
    facts = spread(answerable, s.fact_limit - n_unanswerable) + spread(unanswerable, n_unanswerable)
    atomic_write_jsonl(path, [*_records(s.eval_data)[: s.eval_limit], *facts])
    return path
