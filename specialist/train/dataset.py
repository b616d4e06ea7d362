"""Training examples → token ids and labels, through the same template generation uses.

Every example becomes encode_example(messages, completion): the prompt tokens (masked, label
-100) followed by the completion tokens ending with the end-of-turn/EOS token (trained on).
The labels are built here from the two id lists, never from pad-token positions, so a tokenizer
where pad = eos still trains the stop token."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specialist.data.example import Example
from specialist.errors import SpecialistError
from specialist.models.template import encode_example

if TYPE_CHECKING:
    from specialist.knowledge.augment import ContextExample

IGNORE_INDEX = -100  # the label of a token that is not trained (the prompt); the loss skips it


def read_examples(path: Path, system_prompt: str | None = None) -> list[Example]:
    """All examples of a dataset file (any format specialist.data reads); a located error
    (file:line:field) for bad records. system_prompt goes in front of examples without one."""
    from specialist.data import load_examples

    path = Path(path)
    if not path.exists():
        raise SpecialistError(f"{path}: no such file")
    examples = load_examples(path)
    if system_prompt:
        examples = [ex if ex.system is not None else
                    replace(ex, messages=[{"role": "system", "content": system_prompt}, *ex.messages])
                    for ex in examples]
    if not examples:
        raise SpecialistError(f"{path}: no examples")
    return examples


def with_knowledge(examples: Sequence[Example], context: Any, abstain_share: float, seed: int,
                   training: bool = True, abstain_related: float = 0.0) -> tuple[list[Example], dict[str, Any]]:
    """The examples with their retrieved passages in the prompt (knowledge.augment): training
    examples also get the answer's passage and abstention examples, eval examples retrieval only."""
    from specialist.knowledge.augment import AugmentSettings, augment_examples

    settings = AugmentSettings(top_k=context.settings.top_k, min_share=context.settings.min_share,
                               abstain_share=abstain_share, abstain_related=abstain_related, seed=seed)
    out, report = augment_examples([(e.messages, e.completion, e) for e in examples], context.retriever,
                                   settings, [e.answerable for e in examples], training=training)
    return [_augmented(a) for a in out], report.to_dict()


def _augmented(a: ContextExample) -> Example:
    example: Example = a.source  # with_knowledge passes the examples themselves as the sources
    if a.kind == "abstention":  # the same question without its answer's passages: an offer to check
        return replace(example, messages=a.messages, completion=a.completion, facts=(), wrong=(), answerable=False)
    return replace(example, messages=a.messages)


def tokenize_example(tokenizer: Any, ex: Example, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels (-100 on the prompt). Too long examples keep their prompt's end
    and as much of the answer as fits; the answer is what is trained."""
    prompt_ids, completion_ids = encode_example(tokenizer, ex.messages, ex.completion)
    if len(prompt_ids) + len(completion_ids) > max_length:
        keep_prompt = max(1, min(len(prompt_ids), max_length // 2))
        prompt_ids = prompt_ids[-keep_prompt:]
        completion_ids = completion_ids[: max_length - len(prompt_ids)]
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids)}


def tokenize_examples(tokenizer: Any, examples: Sequence[Example], max_length: int) -> list[dict[str, list[int]]]:
    return [tokenize_example(tokenizer, ex, max_length) for ex in examples]


def fingerprint(path: Path) -> str:
    """sha256 of the dataset bytes: a run records exactly which data trained it."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()
