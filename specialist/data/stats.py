"""Statistics of a dataset: counts, lengths, token counts with the model's tokenizer,
training tokens per epoch, estimated training time and API fine-tuning cost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from specialist.data.example import Example
from specialist.data.findings import DataWarning

# Training throughput assumed for the time estimate when none is given (tokens seen per
# second, prompt + answer): `specialist train`'s defaults (LoRA r=16, batch 8, max length 256)
# on the embedded 270M model, measured by benchmarks/bench_train_speed.py on a 2-core Xeon with
# AMX bf16, one torch thread on a shared machine (168.5 tokens/s). Pass the figure your
# machine measures with --tokens-per-second.
DEFAULT_TOKENS_PER_SECOND = 170.0
# API fine-tuning price per million training tokens (OpenAI's gpt-4.1-mini list price at the
# time of writing); billed tokens = tokens per epoch × epochs.
DEFAULT_PRICE_PER_MILLION = 5.0
CHARS_PER_TOKEN = 4.0  # the usual rule of thumb when no tokenizer is given


def train_defaults() -> tuple[int, float]:
    """(max_length, epochs) of `specialist train`'s defaults, so estimates describe a default run."""
    from specialist.config import TrainConfig

    fields = TrainConfig.model_fields
    return int(fields["max_length"].default), float(fields["epochs"].default)


def describe(values: Sequence[float]) -> dict[str, float]:
    """min, median, p95, max, mean and total of a list of lengths."""
    if not values:
        return {"min": 0, "median": 0, "p95": 0, "max": 0, "mean": 0, "total": 0}
    arr = np.asarray(values, dtype=float)
    return {"min": int(arr.min()), "median": float(np.median(arr)), "p95": float(np.percentile(arr, 95)),
            "max": int(arr.max()), "mean": round(float(arr.mean()), 1), "total": int(arr.sum())}


@dataclass
class TokenCounts:
    """Token lengths per example, exactly as training encodes them."""

    system: list[int]
    prompt: list[int]  # the whole rendered prompt: template, system, history, question
    completion: list[int]  # the answer with its end-of-turn token


def count_tokens(examples: Sequence[Example], tokenizer: Any, batch_size: int = 1024) -> TokenCounts:
    """What encode_example(tokenizer, messages, completion) gives for every example, batched:
    the prompt rendered by the chat template and the answer with the template's end-of-turn
    suffix (looked up once: it walks the whole vocabulary), tokenized in batches."""
    from specialist.models.template import completion_suffix, render_prompt

    suffix = completion_suffix(tokenizer)
    system, prompt, completion = [], [], []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        prompts = [render_prompt(tokenizer, e.messages) for e in batch]
        answers = [e.completion + suffix for e in batch]
        prompt += [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        completion += [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
        systems = [e.system for e in batch if e.system]
        if systems:
            system += [len(ids) for ids in tokenizer(systems, add_special_tokens=False)["input_ids"]]
    return TokenCounts(system, prompt, completion)


def truncation_warnings(examples: Sequence[Example], tokens: TokenCounts, max_length: int) -> list[DataWarning]:
    """Mirror of the training truncation: an example over max_length keeps the last
    max_length // 2 prompt tokens (at most) and as much of the answer as fits."""
    cut_answers, cut_prompts = [], []
    for i, (p, c) in enumerate(zip(tokens.prompt, tokens.completion)):
        if p + c <= max_length:
            continue
        kept_prompt = max(1, min(p, max_length // 2))
        if c > max_length - kept_prompt:
            cut_answers.append((i, c - (max_length - kept_prompt)))
        if p > kept_prompt:
            cut_prompts.append((i, p))
    out = []
    if cut_answers:
        idx = [i for i, _ in cut_answers]
        worst = max(cut_answers, key=lambda t: t[1])
        out.append(DataWarning("W104", sorted(examples[i].line for i in idx),
                               f"{len(idx)} answers do not fit in --max-length {max_length} tokens and are cut "
                               f"(worst: line {examples[worst[0]].line} loses {worst[1]} tokens)",
                               file=examples[0].file))
    if cut_prompts:
        idx = [i for i, _ in cut_prompts]
        worst = max(cut_prompts, key=lambda t: t[1])
        out.append(DataWarning("W105", sorted(examples[i].line for i in idx),
                               f"{len(idx)} prompts take more than half of --max-length {max_length} tokens, "
                               f"so their start (system prompt, earlier turns) is cut "
                               f"(longest: line {examples[worst[0]].line}, {worst[1]} tokens)",
                               file=examples[0].file))
    return out


def build_stats(examples: Sequence[Example], *, schemas: Counter, records: int, tokens: TokenCounts | None,
                max_length: int, epochs: float, tokens_per_second: float, price_per_million: float,
                languages: dict[int, str], refusals: Sequence[int], labels: dict | None, topics: dict | None,
                knowledge: dict[str, float], model: str | None) -> dict[str, Any]:
    n = len(examples)
    roles: Counter = Counter()
    for e in examples:
        roles.update(m["role"] for m in e.conversation)
    stats: dict[str, Any] = {
        "examples": n,
        "formats": dict(schemas),
        "roles": dict(roles),
        "with_system_prompt": sum(e.system is not None for e in examples),
        "multi_turn": sum(len(e.history) > 0 for e in examples),
        "characters": {
            "prompt": describe([len(e.user_text) for e in examples]),
            "completion": describe([len(e.completion) for e in examples]),
        },
    }
    if any(e.system for e in examples):
        stats["characters"]["system"] = describe([len(e.system) for e in examples if e.system])
    if tokens is not None:
        totals = [min(p + c, max_length) for p, c in zip(tokens.prompt, tokens.completion)]
        stats["tokens"] = {"model": model, "prompt": describe(tokens.prompt), "completion": describe(tokens.completion),
                           "example": describe([p + c for p, c in zip(tokens.prompt, tokens.completion)])}
        if tokens.system:
            stats["tokens"]["system"] = describe(tokens.system)
        per_epoch, estimated = int(sum(totals)), False
    else:
        chars = [len(e.user_text) + len(e.completion) + len(e.system or "") for e in examples]
        per_epoch, estimated = int(sum(min(c / CHARS_PER_TOKEN, max_length) for c in chars)), True
    billed = per_epoch * epochs
    stats["training"] = {
        "max_length": max_length, "epochs": epochs,
        "tokens_per_epoch": per_epoch,
        "tokens_estimated": estimated,  # True: ~4 characters per token (give --model for exact counts)
        "assumed_tokens_per_second": tokens_per_second,
        "estimated_seconds": round(billed / tokens_per_second, 1) if tokens_per_second > 0 else None,
        "price_per_million_tokens": price_per_million,
        "estimated_api_cost": round(billed / 1e6 * price_per_million, 2),
    }
    lang_counts = Counter(languages.values())
    stats["languages"] = dict(lang_counts.most_common())
    stats["refusal_share"] = round(len(refusals) / n, 4) if n else 0.0
    if labels:
        stats["labels"] = {k: len(v) for k, v in sorted(labels.items(), key=lambda kv: -len(kv[1]))}
    if topics:
        stats["topics"] = {k: len(v) for k, v in sorted(topics.items(), key=lambda kv: -len(kv[1]))}
    stats["knowledge"] = {k: round(v, 3) for k, v in knowledge.items()}
    stats["records"] = records
    return stats
