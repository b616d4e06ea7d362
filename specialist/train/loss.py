"""The training loss: cross-entropy on completion tokens only, with the LM head run only there.

A causal LM normally projects every position onto the vocabulary (262k entries for Gemma 3,
about 60% of a 270M model's FLOPs) and then masks most of them away. Here the positions whose
next token is a completion token are selected first (`logits_to_keep` with a boolean mask,
which every transformers causal LM honours before its lm_head), so the head and the softmax
run on those rows only. The result equals the reference loss (full logits, labels -100 on the
prompt) — tests/test_train_loss.py checks it. With a specialist-sized head
(models.vocab_head.KeptHead) the logits cover the kept vocabulary only and each target is
mapped to its place in it: the loss over the kept vocabulary.

The cross-entropy itself (`cross_entropy_sum`) reads the head's bf16 logits in row chunks and
keeps one fp32 log-sum-exp per row, instead of upcasting all of them: `F.cross_entropy(logits.float())`
writes the (positions × 262k) logits again in fp32, then their log-softmax, then an fp32
gradient to cast back, which was a fifth of a training step on a CPU. The values are the same
(fp32 arithmetic on the same bf16 logits); tests/test_train_loss.py compares both."""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from specialist.models.vocab_head import kept_targets
from specialist.train.dataset import IGNORE_INDEX


def predicted_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq) mask of positions whose *next* token is trained: position t predicts
    labels[t + 1]. Works for padded batches and for flattened (padding-free) ones, where the
    collator marks each sequence's first label -100 so no position predicts across examples."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def completion_loss_sum(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                        head_on_completion_only: bool = True) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(sum of token losses in fp32, number of trained tokens, model outputs)."""
    if head_on_completion_only:
        keep = predicted_positions(labels)
        outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
        targets = labels[:, 1:][keep[:, :-1]]
        logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
    else:
        outputs = model(**inputs, use_cache=False)
        targets = labels[:, 1:].reshape(-1)
        logits = outputs.logits[:, :-1].reshape(-1, outputs.logits.shape[-1])
    targets = kept_targets(model, targets, IGNORE_INDEX)
    loss_sum = cross_entropy_sum(logits, targets, IGNORE_INDEX)
    return loss_sum, (targets != IGNORE_INDEX).sum(), outputs


# fp32 elements of one chunk's working copy: 8 rows of a 262k vocabulary (8 MB), small enough
# to stay in cache between the upcast, the exp and the write-back
CHUNK_ELEMENTS = 2**21


class _CrossEntropySum(torch.autograd.Function):
    """Sum over rows of logsumexp(logits) - logits[target], rows whose target is ignore_index
    left out; the gradient is (softmax - one-hot) per row, in the logits' own dtype."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            rows = max(1, CHUNK_ELEMENTS // max(1, logits.shape[-1]))
            lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
            for start in range(0, logits.shape[0], rows):
                lse[start:start + rows] = torch.logsumexp(logits[start:start + rows].float(), dim=-1)
            valid = targets != ignore_index
            safe = torch.where(valid, targets, 0)
            picked = logits.gather(1, safe[:, None]).squeeze(1).float()
            ctx.save_for_backward(logits, safe, valid, lse)
            ctx.rows = rows
            return torch.where(valid, lse - picked, 0.0).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, safe, valid, lse = ctx.saved_tensors
        with torch.autocast(logits.device.type, enabled=False):
            scale = grad.float() * valid.float()
            out = torch.empty_like(logits)
            for start in range(0, logits.shape[0], ctx.rows):
                end = min(start + ctx.rows, logits.shape[0])
                # a copy even of fp32 logits: they are the model's output, not ours to overwrite
                p = logits[start:end].to(torch.float32, copy=True).sub_(lse[start:end, None]).exp_()
                p[torch.arange(end - start, device=p.device), safe[start:end]] -= 1.0
                out[start:end] = p.mul_(scale[start:end, None])
        return out, None, None


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """`F.cross_entropy(logits.float(), targets, ignore_index=..., reduction="sum")` without an
    fp32 copy of `logits` (rows × vocabulary) or of its log-softmax."""
    return _CrossEntropySum.apply(logits, targets, ignore_index)


def reference_loss(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers computes itself (full logits, masked labels): the yardstick."""
    return model(**inputs, labels=labels, use_cache=False).loss
