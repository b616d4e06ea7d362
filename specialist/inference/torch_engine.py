"""Decode with PyTorch: the model's own weights through transformers' `generate`.

`run_batch` hands a left-padded batch of prompts (KV cache on) to one `generate` call with a
stopping criterion that follows every row on its own (end-of-turn token, stop strings, its
own token budget, cancellation) and turns its tokens into text pieces as they arrive."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from specialist.inference.batching import left_pad
from specialist.inference.generator import Answer, Generator, finish_rows
from specialist.inference.sampling import GenerationSettings
from specialist.inference.stops import FollowRows, RowDecoder
from specialist.models.resolve import LoadedModel


class TorchGenerator(Generator):
    def __init__(self, loaded: LoadedModel) -> None:
        config = getattr(loaded.model, "config", None)
        super().__init__(loaded.tokenizer, int(getattr(config, "max_position_embeddings", 0) or 2048))
        self.model = loaded.model
        self.device = loaded.device
        self.path = loaded.path  # the generation path it was loaded on, if load_for_generation loaded it

    def batch_inputs(self, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
        """`generate`'s inputs for a batch: left padding, so every row's last token is its prompt's last."""
        ids, mask = left_pad(prompts, self.pad_id)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    @torch.inference_mode()
    def run_batch(self, prompts: list[list[int]], rows: Sequence[RowDecoder],
                  settings: GenerationSettings) -> list[Answer]:
        """Decode a batch in one `generate` call."""
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        batch = self.batch_inputs(prompts)
        self.model.generate(
            **batch, max_new_tokens=max(r.max_new_tokens for r in rows), eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id, stopping_criteria=[FollowRows(rows)], **settings.generate_kwargs(),
        )
        return finish_rows(rows, time.perf_counter() - t0)
