"""`specialist train --dry-run`: the resolved settings and one example exactly as training sees
it (with its retrieved passages when the run has a knowledge base) — rendered through the
template, tokenized, each token marked trained or masked — and the size of the output head the
run will keep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specialist.config import TrainConfig
from specialist.data.example import Example
from specialist.train.dataset import IGNORE_INDEX, tokenize_example, tokenize_examples


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
    """Everything short of loading the weights: settings, device plan, the training set as the
    Trainer will see it, one tokenized example, the kept output head."""
    from specialist.models.device import pick_device
    from specialist.models.resolve import load_tokenizer, resolve
    from specialist.train.run import keeps_vocabulary, kept_vocabulary, training_set, trains_over_kept
    from specialist.train.setup import plan_model

    device = pick_device(config.device)
    plan = plan_model(config, device)
    tokenizer = load_tokenizer(resolve(config.model))
    training = training_set(config)
    example = training.train[min(index, len(training.train) - 1)]
    features = tokenize_example(tokenizer, example, config.max_length)
    info = {"device": device.type, "base_dtype": str(plan.precision.load_dtype).replace("torch.", ""),
            "mixed_precision": plan.precision.mixed, "attention": plan.load_kwargs.get("attn_implementation"),
            "run_dir": str(config.run_dir())}
    if training.knowledge is not None or training.general_mix is not None:
        info["training_examples"] = len(training.train)  # with abstention and general examples
    head = None
    if keeps_vocabulary(config):  # tokenize the whole set only when there is a kept set to count
        head = kept_vocabulary(config, tokenizer, tokenize_examples(tokenizer, training.train, config.max_length),
                               tokenize_examples(tokenizer, training.eval, config.max_length) if training.eval
                               else None, training.knowledge)
    info["kept_vocabulary"] = ("none: the full output head" if head is None else
                               f"{len(head):,} of {len(tokenizer):,} tokens; training loss over "
                               f"{'them' if trains_over_kept(config) else 'the full vocabulary'}")
    return DryRun(config, len(training.train), example, mark_tokens(tokenizer, features), info)


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
