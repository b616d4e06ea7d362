"""Decode with PyTorch: the model's own weights through transformers' `generate`.

`run_batch` hands a left-padded batch of prompts (KV cache on) to one `generate` call with a
stopping criterion that follows every row on its own (end-of-turn token, stop strings, its
own token budget, cancellation) and turns its tokens into text pieces as they arrive.

Log-probabilities (inference/logprobs.py): a row's completion tokens are scored from the
logits of the very step that picked them (a forward hook keeps them); a row's prompt tokens are scored by one forward
pass over the batch's prompts before decoding (left-padded like generate's, with the position
ids generate uses, so a row scores the same alone or in any batch).

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
from specialist.inference.contrast import ContrastRows
from specialist.inference.generator import Answer, Generator, finish_rows
from specialist.inference.logprobs import TokenLogprob, score_positions
from specialist.inference.sampling import GenerationSettings
from specialist.inference.stops import FollowRows, GuardRows, RowDecoder, StepLogits, wants_logprobs
from specialist.models.resolve import LoadedModel
from specialist.models.vocab_head import whole_vocabulary

# the most logits (rows x positions x vocabulary) one scoring forward pass materializes
SCORE_LOGITS_BUDGET = 64_000_000
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class TorchGenerator(Generator):
    """`adapter`: the adapter this generator's rows decode with, on a model that holds several
    (load_adapters), or BASE_ADAPTER for the base alone; None for a model that holds at most one."""

    scores_logprobs = True
    contrasts = True

    def __init__(self, loaded: LoadedModel, adapter: str | None = None) -> None:
        config = getattr(loaded.model, "config", None)
        super().__init__(loaded.tokenizer, int(getattr(config, "max_position_embeddings", 0) or 2048))
        self.model = loaded.model
        self.device = loaded.device
        self.path = loaded.path  # the generation path it was loaded on, if load_for_generation loaded it
        self.adapter = adapter

    @property
    def shared_model(self) -> object:
        return self.model

    def batch_inputs(self, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
        """`generate`'s inputs for a batch: left padding, so every row's last token is its prompt's last."""
        ids, mask = left_pad(prompts, self.pad_id)
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def _adapter_names(self, rows: int, adapters: Sequence[str | None] | None) -> dict[str, list[str]]:
        names = list(adapters) if adapters is not None else [self.adapter] * rows
        return {"adapter_names": [name or BASE_ADAPTER for name in names]} if any(names) else {}

    def _logits_module(self) -> torch.nn.Module:
        # a PeftModel's generate calls the wrapped transformers model, so the hook goes there
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    @torch.inference_mode()
    def prompt_logprobs(self, prompts: list[list[int]], top: int = 0,
                        adapters: Sequence[str | None] | None = None) -> list[list[TokenLogprob | None]]:
        """Every prompt token's log-probability given the tokens before it (the first: None),
        with the `top` most likely tokens at each position. Rows are scored in left-padded
        batches as large as SCORE_LOGITS_BUDGET allows; `adapters` as in run_batch."""
        out: list[list[TokenLogprob | None]] = [[] for _ in prompts]
        names = list(adapters) if adapters is not None else [self.adapter] * len(prompts)
        vocab = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end + 1 - start) * len(prompts[order[end]]) * vocab <= SCORE_LOGITS_BUDGET:
                end += 1
            group = order[start:end]
            batch = self.batch_inputs([prompts[i] for i in group])
            mask = batch["attention_mask"]
            # generate's position ids for a left-padded row: counted from its first real token
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            extra = self._adapter_names(len(group), [names[i] for i in group])
            # a prompt is scored over the whole vocabulary: a specialist-sized head is for what it writes
            with whole_vocabulary(self.model):
                logits = self.model(**batch, **extra, position_ids=positions, use_cache=False).logits
            width = mask.shape[1]
            for row, i in enumerate(group):
                n = len(prompts[i])
                # the logits at position p predict the token at p + 1
                scored = score_positions(logits[row, width - n:width - 1], batch["input_ids"][row, width - n + 1:], top)
                out[i] = [None, *scored]
            start = end
        return out

    @torch.inference_mode()
    def run_batch(self, prompts: list[list[int]], rows: Sequence[RowDecoder], settings: GenerationSettings,
                  adapters: Sequence[str | None] | None = None) -> list[Answer]:
        """Decode a batch in one `generate` call (after scoring the prompts of rows that ask);
        `adapters` names each row's adapter when the batch mixes the rows of several generators
        sharing this model (default: this one's)."""
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        scored = [i for i, row in enumerate(rows) if row.prompt_logprobs is not None and not row.cancelled.is_set()]
        if scored:
            top = max(rows[i].prompt_logprobs for i in scored)
            names = adapters if adapters is not None else [self.adapter] * len(prompts)
            lists = self.prompt_logprobs([prompts[i] for i in scored], top, [names[i] for i in scored])
            for i, lps in zip(scored, lists):
                k = rows[i].prompt_logprobs
                rows[i].prompt_scores = [lp if lp is None else TokenLogprob(lp.token, lp.logprob, lp.top[:k])
                                         for lp in lps]
        if not all(row.done for row in rows):
            step = StepLogits() if wants_logprobs(rows) else None
            hook = self._logits_module().register_forward_hook(step) if step is not None else None
            # every row ends on its own end-of-turn tokens (RowDecoder); generate stops a row on any of them
            eos = sorted({t for r in rows for t in r.eos_ids}) or self.eos_ids
            processors = []
            if any(r.contrast is not None for r in rows):
                names = self._adapter_names(len(prompts), adapters).get("adapter_names")
                processors.append(ContrastRows(
                    self.model, rows, self.pad_id, self.device, step=step,
                    forward_kwargs=lambda idx: {"adapter_names": [names[i] for i in idx]} if names else {}))
            if any(r.guard for r in rows):  # after the contrast: a number it prefers must still be grounded
                processors.append(GuardRows(rows))
            try:
                self.model.generate(
                    **self.batch_inputs(prompts), **self._adapter_names(len(prompts), adapters),
                    max_new_tokens=max(r.max_new_tokens for r in rows), eos_token_id=eos,
                    pad_token_id=self.pad_id, stopping_criteria=[FollowRows(rows, step)],
                    **({"logits_processor": processors} if processors else {}),
                    **settings.generate_kwargs(),
                )
            finally:
                if hook is not None:
                    hook.remove()
        return finish_rows(rows, time.perf_counter() - t0)
