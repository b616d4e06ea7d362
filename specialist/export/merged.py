"""--format merged: the LoRA merged into the base, a normal Hugging Face folder (weights +
tokenizer with the chat template the run trained on) that transformers loads on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from specialist.io import atomic_write_json
from specialist.models.template import stop_token_ids
from specialist.models.tokenizer_files import save_tokenizer
from specialist.run_folder import MERGED_INFO


def _base_dtype(weights: str) -> torch.dtype:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(weights)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


MERGED_OUTTYPES = ("auto", "f32", "bf16", "f16")
_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def merged_dtype(loaded: Any, outtype: str = "auto") -> tuple[torch.dtype, str]:
    """The dtype the merged weights are written in, and why. "auto": the base model's, except
    that a LoRA merged into a half-precision base stays float32. A LoRA's change to a weight is
    small next to the weight (often under bf16's 1/256 step), so rounding the sum to bf16
    drops much of what training learnt: on the coffee run (3 epochs, Gemma 3 270M) the bf16
    merge answered 11 of 16 eval prompts as the run did (chrF 88.6 against its answers); float32
    keeps the merge exact, at twice the size (parity.json checks either)."""
    if outtype != "auto":
        if outtype not in _DTYPES:
            raise ValueError(f"unknown merged outtype {outtype!r}; use one of {', '.join(MERGED_OUTTYPES)}")
        return _DTYPES[outtype], f"asked for (--outtype {outtype})"
    base = _base_dtype(loaded.source.weights)
    if loaded.source.adapter is not None and base in (torch.bfloat16, torch.float16):
        return torch.float32, (f"a LoRA merged into a {str(base).removeprefix('torch.')} base: float32 keeps the "
                               "adapter's change exactly (--outtype bf16 for half the size)")
    return base, "the base model's dtype"


def save_merged(loaded: Any, folder: Path, outtype: str = "auto") -> None:
    """A plain Hugging Face folder (weights in merged_dtype); generation stops on the
    end-of-turn token without any of our code."""
    model, tokenizer = loaded.model, loaded.tokenizer
    dtype, reason = merged_dtype(loaded, outtype)
    model = model.to(dtype)
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    info = {"base_model": loaded.source.base_ref or loaded.source.ref, "source": loaded.source.ref,
            "adapter_merged": loaded.source.adapter is not None,
            "dtype": str(dtype).removeprefix("torch."), "dtype_reason": reason}
    atomic_write_json(folder / MERGED_INFO, info)
