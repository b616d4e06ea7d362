"""`specialist train --dry-run`: the resolved settings and one example exactly as training sees
it — rendered through the template, tokenized, each token marked trained or masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specialist.config import TrainConfig
from specialist.data.example import Example
from specialist.train.dataset import IGNORE_INDEX, read_examples, tokenize_example


@dataclass
class MarkedToken:
    text: str
    trained: bool


@dataclass
class DryRun:
    config: TrainConfig
    examples: int
    example: Example
    tokens: list[MarkedToken]
    plan: dict[str, Any]

    @property
    def trained_text(self) -> str:
        return "".join(t.text for t in self.tokens if t.trained)

    @property
    def masked_text(self) -> str:
        return "".join(t.text for t in self.tokens if not t.trained)


def mark_tokens(tokenizer: Any, features: dict[str, list[int]]) -> list[MarkedToken]:
    return [MarkedToken(tokenizer.decode([tid]), label != IGNORE_INDEX)
            for tid, label in zip(features["input_ids"], features["labels"])]


def dry_run(config: TrainConfig, index: int = 0) -> DryRun:
    """Everything short of loading the weights: settings, device plan, tokenized example."""
    from specialist.models.device import pick_device
    from specialist.models.resolve import load_tokenizer, resolve
    from specialist.train.setup import plan_model

    device = pick_device(config.device)
    plan = plan_model(config, device)
    tokenizer = load_tokenizer(resolve(config.model))
    examples = read_examples(config.data, config.system_prompt)
    example = examples[min(index, len(examples) - 1)]
    features = tokenize_example(tokenizer, example, config.max_length)
    info = {"device": device.type, "base_dtype": str(plan.precision.load_dtype).replace("torch.", ""),
            "mixed_precision": plan.precision.mixed, "attention": plan.load_kwargs.get("attn_implementation"),
            "run_dir": str(config.run_dir())}
    return DryRun(config, len(examples), example, mark_tokens(tokenizer, features), info)


def render_dry_run(result: DryRun) -> str:
    """Rich markup; masked and trained tokens listed apart (readable without colours too)."""
    import yaml
    from rich.markup import escape

    lines = ["[bold]settings[/bold]", escape(yaml.safe_dump(result.config.to_yaml_dict(), sort_keys=False,
                                                             allow_unicode=True).rstrip())]
    lines.append("[bold]plan[/bold]")
    lines.extend(f"{k}: {v}" for k, v in result.plan.items())
    trained = [t for t in result.tokens if t.trained]
    masked = [t for t in result.tokens if not t.trained]
    lines.append(f"[bold]example 1 of {result.examples}[/bold] ({result.example.location}): "
                 f"{len(result.tokens)} tokens, token borders shown as |, newlines as ⏎")
    def joined(tokens: list[MarkedToken], style: str) -> str:
        return "|".join(f"[{style}]{escape(t.text.replace(chr(10), '⏎'))}[/{style}]" for t in tokens)
    lines.append(f"[bold]masked[/bold] ({len(masked)} tokens, no loss): {joined(masked, 'dim')}")
    lines.append(f"[bold]trained[/bold] ({len(trained)} tokens, loss): {joined(trained, 'bold green')}")
    return "\n".join(lines)
