"""Decode with PyTorch: the model's own weights through transformers' `generate`.

`run_batch` hands a left-padded batch of prompts (KV cache on) to one `generate` call with a
stopping criterion that follows every row on its own (end-of-turn token, stop strings, its
own token budget, cancellation) and turns its tokens into text pieces as they arrive.

Several runs of one base share one model in memory (engines.make_generators): the base with
each run's LoRA adapter attached under its own name. Each run gets its own TorchGenerator (its
tokenizer and chat template) over that shared model, naming its adapter; a batch may mix rows
of different adapters, which PEFT's mixed-adapter batches decode in one `generate` call
(`adapter_names`, one per row; "__base__" for the base alone)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from specialist.inference.batching import left_pad
from specialist.inference.generator import Answer, Generator, finish_rows
from specialist.inference.sampling import GenerationSettings
from specialist.inference.stops import FollowRows, RowDecoder
from specialist.models.resolve import LoadedModel

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class TorchGenerator(Generator):
    """`adapter`: the adapter this generator's rows decode with, on a model that holds several
    (load_adapters), or BASE_ADAPTER for the base alone; None for a model that holds at most one."""

    def __init__(self, loaded: LoadedModel, adapter: str | None = None) -> None:
        config = getattr(loaded.model, "config", None)
        super().__init__(loaded.tokenizer, int(getattr(config, "max_position_embeddings", 0) or 2048))
        self.model = loaded.model
        self.device = loaded.device
        self.adapter = adapter

    @property
    def shared_model(self) -> object:
        return self.model

    def batch_inputs(self, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
        """`generate`'s inputs for a batch: left padding, so every row's last token is its prompt's last."""
        ids, mask = left_pad(prompts, self.pad_id)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    @torch.inference_mode()
    def run_batch(self, prompts: list[list[int]], rows: Sequence[RowDecoder], settings: GenerationSettings,
                  adapters: Sequence[str | None] | None = None) -> list[Answer]:
        """Decode a batch in one `generate` call; `adapters` names each row's adapter when the
        batch mixes the rows of several generators sharing this model (default: this one's)."""
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        batch = self.batch_inputs(prompts)
        names = list(adapters) if adapters is not None else [self.adapter] * len(prompts)
        if any(names):
            batch["adapter_names"] = [name or BASE_ADAPTER for name in names]
        # every row ends on its own end-of-turn tokens (RowDecoder); generate stops a row on any of them
        eos = sorted({t for r in rows for t in r.eos_ids}) or self.eos_ids
        self.model.generate(
            **batch, max_new_tokens=max(r.max_new_tokens for r in rows), eos_token_id=eos,
            pad_token_id=self.pad_id, stopping_criteria=[FollowRows(rows)], **settings.generate_kwargs(),
        )
        return finish_rows(rows, time.perf_counter() - t0)
