"""Train/eval split that keeps near-duplicates together: records whose prompts are the same
or nearly the same form one cluster, and a cluster goes wholly to one side, so evaluation
never measures memory of a training record."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from specialist.data import dedup
from specialist.data.example import Example
from specialist.data.quality import Similarity, prompt_key
from specialist.data.validate import load_examples
from specialist.errors import SpecialistError
from specialist.io import atomic_write_jsonl, refuse_overwrite


@dataclass
class SplitResult:
    train: list[Example]
    eval: list[Example]
    clusters: int  # clusters of more than one record kept on one side
    train_path: Path
    eval_path: Path


def clusters_of(examples: list[Example]) -> list[list[int]]:
    """Every example's cluster (singletons included): same or near-same prompts together."""
    uf = dedup.UnionFind(len(examples))
    first: dict[str, int] = {}
    for i, e in enumerate(examples):
        key = dedup.normalize(prompt_key(e))
        if key in first:
            uf.union(first[key], i)
        else:
            first[key] = i
    if len(examples) > 1:
        for i, j, _sim, _ans in Similarity(examples).prompt_pairs():
            uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(len(examples)):
        groups.setdefault(uf.find(i), []).append(i)
    return list(groups.values())


def assign(clusters: list[list[int]], n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, eval indices): shuffled clusters fill the eval side up to its share."""
    order = list(clusters)
    random.Random(seed).shuffle(order)
    target = max(1, round(n * eval_fraction))
    train, eval_ = [], []
    for cluster in order:
        (eval_ if len(eval_) + len(cluster) <= target else train).extend(cluster)
    return sorted(train), sorted(eval_)


def split_dataset(path: str | Path, eval_fraction: float, out_dir: str | Path, seed: int = 0,
                  format: str | None = None, overwrite: bool = False) -> SplitResult:
    if not 0 < eval_fraction < 1:
        raise SpecialistError(f"--eval-fraction must be between 0 and 1 (got {eval_fraction})")
    out_dir = Path(out_dir)
    train_path, eval_path = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    refuse_overwrite([train_path, eval_path], overwrite)
    examples = load_examples(path, format)
    if len(examples) < 2:
        raise SpecialistError(f"{path}: {len(examples)} example(s); a split needs at least 2", exit_code=1)
    clusters = clusters_of(examples)
    train_idx, eval_idx = assign(clusters, len(examples), eval_fraction, seed)
    if not eval_idx or not train_idx:
        raise SpecialistError(f"{path}: cannot split: near-duplicate clusters leave one side empty", exit_code=1)
    train, eval_ = [examples[i] for i in train_idx], [examples[i] for i in eval_idx]
    atomic_write_jsonl(train_path, (record_of(e) for e in train))
    atomic_write_jsonl(eval_path, (record_of(e) for e in eval_))
    return SplitResult(train, eval_, sum(len(c) > 1 for c in clusters), train_path, eval_path)


def record_of(e: Example) -> dict:
    """The record as the user wrote it (JSON sources), else its canonical JSON form."""
    if isinstance(e.source, dict) and all(isinstance(k, str) for k in e.source):
        try:
            json.dumps(e.source)
            return e.source
        except (TypeError, ValueError):
            pass  # Parquet/saved-dataset values that JSON cannot hold: fall back
    from specialist.data.convert import to_chat, to_prompt_completion

    return to_prompt_completion(e) if not e.history else to_chat(e)
