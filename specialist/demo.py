"""`specialist demo`: the whole road on the embedded default model and the coffee-shop data.

check the data → a short LoRA run → answers before and after → fine-tuning vs prompt
engineering, measured on held-out prompts. Every step is the same code the commands run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from specialist.console import console, err_console
from specialist.errors import SpecialistError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "coffee"


@dataclass
class DemoSettings:
    data: Path = EXAMPLES / "train.jsonl"
    eval_data: Path = EXAMPLES / "eval.jsonl"
    system_prompt: Path = EXAMPLES / "system_prompt.txt"
    rules: Path = EXAMPLES / "eval.yaml"
    model: str = "gemma-3-270m"
    out: Path | None = None  # default: runs/demo-<timestamp>
    epochs: float = 1.0
    max_steps: int = -1
    eval_limit: int = 16
    show: int = 3  # prompts shown before/after


def _step(n: int, title: str) -> None:
    console.rule(f"[bold]{n}. {title}")


def run_demo(s: DemoSettings) -> Path:
    from specialist.config import load_train_config
    from specialist.data.check import CheckSettings, run_check
    from specialist.data.report import print_report
    from specialist.evaluate.html import write_reports
    from specialist.evaluate.report import rich_table
    from specialist.evaluate.runner import EvalSettings, run_eval
    from specialist.models.resolve import load_model, resolve
    from specialist.models.template import build_messages
    from specialist.serve.generation import GenerationSettings, Generator
    from specialist.train import train

    for path in (s.data, s.eval_data, s.system_prompt):
        if not path.exists():
            raise SpecialistError(f"{path}: the demo needs the coffee-shop example (run it from a clone of the repository)")
    out = s.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")

    _step(1, f"Base model: {s.model}")
    source = resolve(s.model)
    console.print(f"{s.model} → {source.weights}")

    _step(2, "Training data: check")
    report = run_check(s.data, CheckSettings(model=s.model, eval_data=s.eval_data))
    print_report(report, console)
    if report.errors:
        raise SpecialistError(f"{s.data}: the data has errors; fix them first", exit_code=1)

    _step(3, "Training: LoRA")
    config = load_train_config(overrides={"data": s.data, "eval_data": s.eval_data, "model": s.model,
                                          "epochs": s.epochs, "max_steps": s.max_steps, "out": out})
    run_dir = train(config)
    console.print(f"run folder: {run_dir}")

    _step(4, "Answers before and after fine-tuning")
    loaded = load_model(str(run_dir))
    generator = Generator(loaded)
    prompts = _eval_prompts(s.eval_data)[: s.show]
    convs = [build_messages(p) for p in prompts]
    settings = GenerationSettings(max_new_tokens=96)
    with loaded.model.disable_adapter():
        before = generator.generate(convs, settings)
    after = generator.generate(convs, settings)
    table = Table(show_lines=True)
    table.add_column("prompt", ratio=1)
    table.add_column("base model (before)", ratio=2)
    table.add_column("specialist (after)", ratio=2)
    for p, b, a in zip(prompts, before, after):
        table.add_row(p, b.text, a.text)
    console.print(table)
    del loaded, generator

    _step(5, "Proof: fine-tuning vs prompt engineering, measured")
    doc = run_eval(EvalSettings(model=str(run_dir), data=s.eval_data, system_prompt=s.system_prompt,
                                rules=s.rules if s.rules.exists() else None, limit=s.eval_limit))
    json_path, html_path = run_dir / "eval" / "report.json", run_dir / "eval" / "report.html"
    write_reports(doc, json_path, html_path)
    console.print(rich_table(doc))
    console.print(doc["verdict"], markup=False, highlight=False)
    console.print(f"reports: {json_path}, {html_path}")
    err_console.print(f"[green]done[/green]: chat with it: specialist chat --model {run_dir}  "
                      "(add --engine llama.cpp after `make llama-cpp` for faster answers on a CPU)")
    return run_dir


def _eval_prompts(path: Path) -> list[str]:
    from specialist.data import load_examples

    return [ex.prompt for ex in load_examples(path)]
