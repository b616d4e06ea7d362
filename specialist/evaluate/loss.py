"""Held-out loss of the reference completions under a contender's exact prompt.

Each reference is encoded with models.template.encode_example and the contender's own
messages (system prompt, few-shot turns or none), exactly as training encodes examples, and
the loss is the mean negative log-likelihood over completion tokens only (the end-of-turn
token included, as in training). Perplexity = exp(loss).

The forward passes are also the cleanest measure of prefill speed on this machine (a prompt
is processed exactly like this before the first answer token), so their timing is returned
for the cost model."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from specialist.inference.batching import left_pad
from specialist.models.template import Message, encode_example
from specialist.models.vocab_head import whole_vocabulary


@dataclass
class LossResult:
    loss: float                 # mean NLL per completion token (nats)
    perplexity: float
    completion_tokens: int
    total_tokens: int           # prompt + completion tokens processed
    seconds: float              # wall time of the forward passes
    per_example: list[float]    # mean NLL per completion token of each example

    @property
    def seconds_per_token(self) -> float:
        return self.seconds / self.total_tokens if self.total_tokens else 0.0


@torch.inference_mode()
def heldout_loss(model: Any, tokenizer: Any, conversations: Sequence[Sequence[Message]],
                 completions: Sequence[str], batch_size: int = 4) -> LossResult:
    if len(conversations) != len(completions):
        raise ValueError(f"{len(conversations)} prompts for {len(completions)} completions")
    encoded = [encode_example(tokenizer, msgs, comp) for msgs, comp in zip(conversations, completions)]
    # Similar lengths share a batch (less padding); results go back to the input order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    nll_sums = [0.0] * len(encoded)
    seconds = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t0 = time.perf_counter()
        sums = _batch_nll(model, [encoded[i] for i in idx], pad_id, device)
        seconds += time.perf_counter() - t0
        for i, s in zip(idx, sums):
            nll_sums[i] = s
    n_comp = [len(c) for _, c in encoded]
    total_comp = sum(n_comp)
    loss = sum(nll_sums) / total_comp if total_comp else float("nan")
    return LossResult(
        loss=loss, perplexity=math.exp(loss) if total_comp else float("nan"), completion_tokens=total_comp,
        total_tokens=sum(len(p) + len(c) for p, c in encoded), seconds=seconds,
        per_example=[s / n if n else float("nan") for s, n in zip(nll_sums, n_comp)],
    )


def _batch_nll(model: Any, examples: list[tuple[list[int], list[int]]], pad_id: int,
               device: torch.device) -> list[float]:
    """Summed NLL of each example's completion tokens. Rows are left padded so every
    completion ends at the last position: only the last K positions' logits are computed
    (logits_to_keep), which keeps a 262k-token vocabulary from costing gigabytes."""
    rows = [p + c for p, c in examples]
    ids, mask = left_pad(rows, pad_id)
    width = ids.shape[1]
    # Positions count from each row's first real token, as if it were unpadded.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(len(c) for _, c in examples) + 1  # the token before a completion predicts its first token
    keep = min(keep, width)
    # over the whole vocabulary: a specialist-sized head gives a reference token it left out no
    # probability at all, and every contender's loss is then measured on the same footing
    with whole_vocabulary(model):
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                    logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, -keep:, :].float()
    sums = []
    for i, (_, comp) in enumerate(examples):
        n = len(comp)
        # logits at positions [-n-1, -1) predict the n completion tokens
        pred = logits[i, keep - n - 1: keep - 1, :]
        target = torch.tensor(comp, dtype=torch.long, device=pred.device)
        sums.append(float(F.cross_entropy(pred, target, reduction="sum")))
    return sums
