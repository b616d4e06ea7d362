"""Held-out loss of the reference completions under a contender's exact prompt.

Each reference is encoded with models.template.encode_example and the contender's own
messages (system prompt, few-shot turns or none), exactly as training encodes examples, and
the loss is the mean negative log-likelihood over completion tokens only (the end-of-turn
token included, as in training). Perplexity = exp(loss).

The forward passes are also the cleanest measure of prefill speed on this machine (a prompt
is processed exactly like this before the first answer token), so their timing is returned
for the cost model.

Prompt engineering's prompts share a long start (the system prompt and the few-shot turns, most
of each prompt). When they do, that start is read once and every example continues from a copy
of its cache (what a server's prefix cache does), which gives the same losses; the prefill speed
is then that one pass's (a whole prompt start read at once)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from specialist.inference.batching import common_start, left_pad
from specialist.models.template import Message, encode_example
from specialist.models.vocab_head import whole_vocabulary

# a shared start shorter than this is read with each example: copying its cache costs more
SHARED_PREFIX_MIN = 32


@dataclass
class LossResult:
    loss: float                 # mean NLL per completion token (nats)
    perplexity: float
    completion_tokens: int
    total_tokens: int           # prompt + completion tokens processed
    seconds: float              # wall time of the forward passes
    per_example: list[float]    # mean NLL per completion token of each example
    shared_tokens: int = 0      # the prompts' common start, read once (0: each example read whole)
    shared_seconds: float = 0.0  # wall time of reading it

    @property
    def seconds_per_token(self) -> float:
        """Prefill time per token: the shared start's pass when there is one (each example's rest
        continues a cache, one at a time, which is not a prefill), else all the passes'."""
        if self.shared_tokens:
            return self.shared_seconds / self.shared_tokens
        return self.seconds / self.total_tokens if self.total_tokens else 0.0


@torch.inference_mode()
def heldout_loss(model: Any, tokenizer: Any, conversations: Sequence[Sequence[Message]],
                 completions: Sequence[str], batch_size: int = 4) -> LossResult:
    if len(conversations) != len(completions):
        raise ValueError(f"{len(conversations)} prompts for {len(completions)} completions")
    encoded = [encode_example(tokenizer, msgs, comp) for msgs, comp in zip(conversations, completions)]
    shared = shared_prefix([p for p, _ in encoded]) if len(encoded) > 1 else 0
    if shared >= SHARED_PREFIX_MIN:
        return _loss_from_shared_prefix(model, encoded, shared)
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
    return _result(encoded, nll_sums, seconds)


def _result(encoded: list[tuple[list[int], list[int]]], nll_sums: list[float], seconds: float,
            shared_tokens: int = 0, shared_seconds: float = 0.0) -> LossResult:
    """The LossResult of per-example summed NLLs over the completion tokens."""
    n_comp = [len(c) for _, c in encoded]
    total_comp = sum(n_comp)
    loss = sum(nll_sums) / total_comp if total_comp else float("nan")
    return LossResult(
        loss=loss, perplexity=math.exp(loss) if total_comp else float("nan"), completion_tokens=total_comp,
        total_tokens=sum(len(p) + len(c) for p, c in encoded), seconds=seconds,
        per_example=[s / n if n else float("nan") for s, n in zip(nll_sums, n_comp)],
        shared_tokens=shared_tokens, shared_seconds=shared_seconds,
    )


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt has in common, leaving each at least its last token
    (whose logits predict the completion's first)."""
    return common_start(prompts, cap=min(len(p) for p in prompts) - 1)


def _loss_from_shared_prefix(model: Any, encoded: list[tuple[list[int], list[int]]], shared: int) -> LossResult:
    """heldout_loss when the prompts' first `shared` tokens are the same: they are read once,
    then each example's rest continues from a copy of their cache (one example per pass: rows
    of different lengths after a common cache would need padding inside the sequence)."""
    device = next(model.parameters()).device
    nll_sums = []
    t0 = time.perf_counter()
    with whole_vocabulary(model):
        start = torch.tensor([encoded[0][0][:shared]], device=device)
        prefix = model(input_ids=start, use_cache=True, logits_to_keep=1).past_key_values
        shared_seconds = time.perf_counter() - t0
        for prompt, comp in encoded:
            rest = torch.tensor([prompt[shared:] + comp], device=device)
            positions = torch.arange(shared, shared + rest.shape[1], device=device)[None]
            out = model(input_ids=rest, past_key_values=copy.deepcopy(prefix), position_ids=positions,
                        cache_position=positions[0], logits_to_keep=len(comp) + 1, use_cache=True)
            pred = out.logits[0, :len(comp), :].float()
            target = torch.tensor(comp, dtype=torch.long, device=pred.device)
            nll_sums.append(float(F.cross_entropy(pred, target, reduction="sum")))
    return _result(encoded, nll_sums, time.perf_counter() - t0, shared, shared_seconds)


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
