"""Training examples → token ids and labels, through the same template generation uses.

Every example becomes encode_example(messages, completion): the prompt tokens (masked, label
-100) followed by the completion tokens ending with the end-of-turn/EOS token (trained on).
The labels are built here from the two id lists, never from pad-token positions, so a tokenizer
where pad = eos still trains the stop token."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError
from specialist.models.template import Message, encode_example

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainExample:
    """What training needs of a record: the conversation up to the answer and the answer."""

    messages: list[Message]
    completion: str
    source: str  # file:line
    answerable: bool = True  # False: the record is the dataset's own "I'll check" answer


def read_examples(path: Path, system_prompt: str | None = None) -> list[TrainExample]:
    """All examples of a dataset file (any format specialist.data reads); a located error
    (file:line:field) for bad records. system_prompt goes in front of examples without one."""
    from specialist.data import load_examples

    path = Path(path)
    if not path.exists():
        raise SpecialistError(f"{path}: no such file")
    examples = []
    for ex in load_examples(path):
        messages = [dict(m) for m in ex.messages]
        if system_prompt and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": system_prompt})
        answerable = not (isinstance(ex.source, dict) and ex.source.get("answerable") is False)
        examples.append(TrainExample(messages, ex.completion, ex.location, answerable))
    if not examples:
        raise SpecialistError(f"{path}: no examples")
    return examples


def with_knowledge(examples: Sequence[TrainExample], context: Any, abstain_share: float, seed: int,
                   training: bool = True) -> tuple[list[TrainExample], dict[str, Any]]:
    """The examples with their retrieved passages in the prompt (knowledge.augment): training
    examples also get the answer's passage and abstention examples, eval examples retrieval only."""
    from specialist.knowledge.augment import AugmentSettings, augment_examples

    settings = AugmentSettings(top_k=context.settings.top_k, abstain_share=abstain_share, seed=seed)
    out, report = augment_examples([(e.messages, e.completion, e.source) for e in examples], context.retriever,
                                   settings, [e.answerable for e in examples], training=training)
    return [TrainExample(a.messages, a.completion, a.source) for a in out], report.to_dict()


def tokenize_example(tokenizer: Any, ex: TrainExample, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels (-100 on the prompt). Too long examples keep their prompt's end
    and as much of the answer as fits; the answer is what is trained."""
    prompt_ids, completion_ids = encode_example(tokenizer, ex.messages, ex.completion)
    if len(prompt_ids) + len(completion_ids) > max_length:
        keep_prompt = max(1, min(len(prompt_ids), max_length // 2))
        prompt_ids = prompt_ids[-keep_prompt:]
        completion_ids = completion_ids[: max_length - len(prompt_ids)]
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids)}


def tokenize_examples(tokenizer: Any, examples: Sequence[TrainExample], max_length: int) -> list[dict[str, list[int]]]:
    return [tokenize_example(tokenizer, ex, max_length) for ex in examples]


def fingerprint(path: Path) -> str:
    """sha256 of the dataset bytes: a run records exactly which data trained it."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()
