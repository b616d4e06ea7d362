"""Answers of the base model that do not depend on the run, kept between evals.

zero-shot, prompt-engineering (and prompt-engineering+knowledge) answers, their held-out
losses and the style classifier's generic answers come from the base model alone: a second
`eval` of another run of the same base on the same prompts would compute them again. They are
kept in SPECIALIST_HOME/eval-cache, keyed by everything they depend on: the base weights (file
stamps), the exact conversations, the references, the generation settings, batch size, dtype
and the library versions. Any change gives a new key; a damaged entry is recomputed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from specialist.evaluate.contenders import Reply
from specialist.evaluate.loss import LossResult
from specialist.io import atomic_write_text

CACHE_VERSION = 1


def cache_dir() -> Path:
    from specialist.models.cache import specialist_home

    return specialist_home() / "eval-cache"


def cache_key(base_weights: str, what: str, conversations: Sequence[Any], references: Sequence[str],
              settings: Any, batch_size: int, dtype: Any) -> str:
    import torch
    import transformers

    from specialist.models.cache import weight_stamps

    fields = asdict(settings)
    # settings added later are left out while off, so the keys written before them still hold
    for name, off in (("grounded_numbers", False), ("context_contrast", 0.0)):
        if name in fields and fields[name] == off:
            del fields[name]
    doc = {"version": CACHE_VERSION, "what": what, "weights": [base_weights, *weight_stamps(base_weights)],
           "conversations": list(conversations), "references": list(references), "settings": fields,
           "batch_size": batch_size, "dtype": str(dtype), "torch": torch.__version__,
           "transformers": transformers.__version__}
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()


def cached(key: str | None, compute: Callable[[], tuple[list[Reply], LossResult | None]],
           on_hit: Callable[[int], None] | None = None,
           reuse: bool = True) -> tuple[list[Reply], LossResult | None, bool]:
    """(replies, loss, came from the cache). key None: no caching. reuse False (eval --no-cache):
    computed again, and what is computed replaces the cached copy, so the next eval reuses it."""
    path = cache_dir() / f"{key}.json" if key else None
    if reuse and path is not None and path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            replies = [Reply(**r) for r in doc["replies"]]
            loss = LossResult(**doc["loss"]) if doc.get("loss") else None
            if on_hit is not None:
                on_hit(len(replies))
            return replies, loss, True
        except (OSError, ValueError, TypeError, KeyError):
            pass  # damaged or from an older layout: computed again below
    replies, loss = compute()
    if path is not None:
        atomic_write_text(path, json.dumps({"replies": [asdict(r) for r in replies],
                                            "loss": asdict(loss) if loss else None}, ensure_ascii=False))
    return replies, loss, False
