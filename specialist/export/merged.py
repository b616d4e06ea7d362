"""--format merged: the LoRA merged into the base, a normal Hugging Face folder (weights +
tokenizer with the chat template the run trained on) that transformers loads on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from specialist.io import atomic_write_json
from specialist.models.template import stop_token_ids
from specialist.run_folder import MERGED_INFO


def _base_dtype(weights: str) -> torch.dtype:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(weights)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def save_merged(loaded: Any, folder: Path) -> None:
    """A plain Hugging Face folder in the base model's dtype; generation stops on the
    end-of-turn token without any of our code."""
    model, tokenizer = loaded.model, loaded.tokenizer
    model = model.to(_base_dtype(loaded.source.weights))
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    info = {"base_model": loaded.source.base_ref or loaded.source.ref, "source": loaded.source.ref,
            "adapter_merged": loaded.source.adapter is not None}
    atomic_write_json(folder / MERGED_INFO, info)
