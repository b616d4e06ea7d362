"""General-ability data: the canary set shipped with the package, and general examples mixed
into a specialist's training (`specialist train --mix-general F`).

The canary set (specialist/data/canary/, CC0, written for this project) has three files, all
prompt/completion JSONL with an `id` and a `language` (ISO 639-1) per record:

    questions.jsonl  everyday questions with short reference answers: evaluation only
    heldout.jsonl    everyday requests answered by a short paragraph: held-out loss, evaluation only
    train.jsonl      other everyday questions and paragraphs: the part that may be trained on

`specialist eval` asks the questions and measures the loss of the paragraphs with and without
the specialist's adapter; `--mix-general canary` trains on train.jsonl. A general file given
to --mix-general never brings a canary evaluation item into training: such records are
dropped (and counted), so the canary keeps measuring what training did not see.

    canary = load_canary()
    mixed, report = mix_general(task_examples, read_general("canary"), share=0.1, seed=42)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialist.data.dedup import normalize
from specialist.data.example import Example
from specialist.errors import SpecialistError

CANARY_DIR = Path(__file__).parent / "canary"
CANARY_QUESTIONS = CANARY_DIR / "questions.jsonl"
CANARY_HELDOUT = CANARY_DIR / "heldout.jsonl"
CANARY_TRAINING = CANARY_DIR / "train.jsonl"
SHIPPED = "canary"  # --mix-general canary: the shipped training portion


@dataclass(frozen=True)
class CanarySet:
    questions: list[Example]  # evaluation only
    heldout: list[Example]  # evaluation only (loss)
    training: list[Example]  # may be mixed into training

    @property
    def eval_items(self) -> list[Example]:
        return [*self.questions, *self.heldout]


def language(example: Example) -> str | None:
    """The record's `language` field (ISO 639-1), as written."""
    value = (example.source or {}).get("language")
    return str(value) if isinstance(value, str) and value else None


def load_canary(root: Path = CANARY_DIR) -> CanarySet:
    from specialist.data import load_examples

    return CanarySet(
        load_examples(root / CANARY_QUESTIONS.name),
        load_examples(root / CANARY_HELDOUT.name),
        load_examples(root / CANARY_TRAINING.name),
    )


def general_path(source: str | Path) -> Path:
    """The file --mix-general names: `canary` is the shipped training portion."""
    return CANARY_TRAINING if str(source) == SHIPPED and not Path(SHIPPED).exists() else Path(source)


def read_general(source: str | Path) -> list[Example]:
    """General examples from a file any loader of specialist.data reads (prompt/completion or
    chat messages), or the shipped training portion (`canary`)."""
    from specialist.data import load_examples

    path = general_path(source)
    if not path.exists():
        raise SpecialistError(
            f"{path}: no such file (--mix-general takes a JSONL of prompt/completion or "
            f"chat messages, or `{SHIPPED}` for the shipped general examples)"
        )
    examples = load_examples(path)
    if not examples:
        raise SpecialistError(f"{path}: no examples")
    return examples


def _key(text: str) -> str:
    return normalize(text)


def canary_overlap(examples: Sequence[Example], canary: CanarySet | None = None) -> list[int]:
    """Indices of the examples that repeat a canary evaluation item (its prompt or its
    reference, ignoring case, punctuation and spacing)."""
    canary = canary or load_canary()
    held = {_key(e.prompt) for e in canary.eval_items} | {_key(e.completion) for e in canary.eval_items}
    return [i for i, e in enumerate(examples) if _key(e.prompt) in held or _key(e.completion) in held]


def general_count(task_examples: int, share: float) -> int:
    """General examples that make `share` of the mixed training set."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    return max(1, round(share * task_examples / (1.0 - share))) if task_examples else 0


def mix_general(
    task: Sequence[Example], general: Sequence[Example], share: float, seed: int, canary: CanarySet | None = None
) -> tuple[list[Example], dict[str, Any]]:
    """The task examples followed by general examples making `share` of the result. General
    examples are drawn in a seeded order, cycled when the file has fewer than needed (then
    some repeat, and the report says how many distinct ones there are). Canary evaluation
    items are never drawn."""
    overlap = set(canary_overlap(general, canary))
    pool = [e for i, e in enumerate(general) if i not in overlap]
    if not pool:
        raise SpecialistError("--mix-general: no usable general examples (every one repeats a canary evaluation item)")
    wanted = general_count(len(task), share)
    order = list(pool)
    random.Random(seed).shuffle(order)
    drawn = [order[i % len(order)] for i in range(wanted)]
    report = {
        "share": share,
        "examples": len(drawn),
        "distinct": min(wanted, len(order)),
        "available": len(general),
        "excluded_canary_items": len(overlap),
        "actual_share": len(drawn) / (len(task) + len(drawn)) if task or drawn else 0.0,
        "repeats": math.ceil(wanted / len(order)) > 1,
    }
    return [*task, *drawn], report
