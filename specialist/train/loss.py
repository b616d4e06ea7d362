"""The training loss: cross-entropy on completion tokens only, with the LM head run only there.

A causal LM normally projects every position onto the vocabulary (262k entries for Gemma 3,
about 60% of a 270M model's FLOPs) and then masks most of them away. Here the positions whose
next token is a completion token are selected first (`logits_to_keep` with a boolean mask,
which every transformers causal LM honours before its lm_head), so the head and the softmax
run on those rows only. The result equals the reference loss (full logits, labels -100 on the
prompt) — tests/test_train_loss.py checks it. With a specialist-sized head
(models.vocab_head.KeptHead) the logits cover the kept vocabulary only and each target is
mapped to its place in it: the loss over the kept vocabulary."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

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
    loss_sum = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (targets != IGNORE_INDEX).sum(), outputs


def reference_loss(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers computes itself (full logits, masked labels): the yardstick."""
    return model(**inputs, labels=labels, use_cache=False).loss
