"""How the next token is chosen: the settings every engine reads, and the sampler of the
engines that pick tokens themselves (llama.cpp); PyTorch samples inside transformers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # state only numbers the prompt holds (inference/numbers.py): on with a knowledge base
    grounded_numbers: bool = False
    # context-aware decoding (inference/contrast.py): how much more the answer follows its
    # retrieved context than the model's answer without it; 0 = off
    context_contrast: float = 0.0

    @property
    def greedy(self) -> bool:
        return not (self.temperature and self.temperature > 0)

    def generate_kwargs(self) -> dict:
        if not self.greedy:
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator,
           candidates: int = 256) -> int:
    """Temperature then nucleus (top-p) sampling, as transformers' warpers do: keep the
    smallest set of most likely tokens whose probability reaches top_p. Runs once per token
    per row over the whole vocabulary, so it avoids sorting 262k logits: the nucleus is looked
    for among the `candidates` most likely tokens and only if they do not reach top_p is the
    whole vocabulary sorted."""
    z = logits.astype(np.float32) / np.float32(max(temperature, 1e-6))
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p >= 1.0:
        cdf = np.cumsum(p)  # float32: a quarter of float64's time over 262k entries
        return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))
    k = min(candidates, len(p))
    top = np.argpartition(-p, k - 1)[:k]
    order = top[np.argsort(-p[top], kind="stable")]
    cum = np.cumsum(p[order], dtype=np.float64)
    if cum[-1] < top_p:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order], dtype=np.float64)
    keep = order[: int(np.searchsorted(cum, top_p)) + 1]
    cdf = np.cumsum(p[keep], dtype=np.float64)
    return int(keep[min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(keep) - 1)])
