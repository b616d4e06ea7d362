"""transformers.Trainer with the completion-only loss and the padding-free collator.

Everything else — optimizer, scheduler, gradient accumulation, accelerate/DDP/FSDP,
checkpoints and resume, eval, best model — is the Trainer's own."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer

from specialist.train.dataset import IGNORE_INDEX
from specialist.train.loss import completion_loss_sum


def make_collator(tokenizer: Any, padding_free: bool) -> Any:
    """Padding-free: a batch becomes one row with position_ids restarting per example; the
    attention mask is then block-diagonal (transformers derives it from position_ids), so no
    example attends to another and no FLOPs go to padding. Padded: classic right padding."""
    if padding_free:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


class CompletionTrainer(Trainer):
    """Loss = sum of completion-token cross-entropies / completion tokens in the (accumulated,
    all-process) batch, the same normalisation transformers uses for causal LMs."""

    def __init__(self, *args: Any, head_on_completion_only: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_on_completion_only = head_on_completion_only
        # Makes the Trainer count completion tokens over the accumulated batch (num_items_in_batch)
        # and treat our loss as already normalised for gradient accumulation.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        loss_sum, n_tokens, outputs = completion_loss_sum(model, inputs, labels, self.head_on_completion_only)
        if num_items_in_batch is None:
            return_loss = loss_sum / n_tokens.clamp(min=1)
        else:
            return_loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices:
                # num_items_in_batch counts every process's tokens; DDP averages the gradients.
                return_loss = return_loss * self.accelerator.num_processes
        return (return_loss, outputs) if return_outputs else return_loss
