"""GGUF file → cached Hugging Face folder (safetensors + tokenizer), done once.

transformers dequantizes GGUF tensors on load but refuses save_pretrained on a model it
loaded that way; the quantizer state is dropped first so the folder is a plain checkpoint."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch

from specialist.errors import ModelNotFound
from specialist.io import atomic_dir
from specialist.models.cache import models_dir


def gguf_cache_path(gguf_path: Path) -> Path:
    """Cache folder for an arbitrary local GGUF file: keyed by its name, size and mtime."""
    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return models_dir() / f"gguf-{gguf_path.stem}-{key}"


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Dequantize gguf_path into out_dir (atomic: a temporary folder renamed at the end)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").exists():
        return out_dir
    if importlib.util.find_spec("gguf") is None:  # transformers needs it to read GGUF
        raise ModelNotFound("reading GGUF files needs the package gguf: pip install gguf")
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # the first preparation is slow: show it
    try:
        # a stale empty out_dir (a half-finished attempt cannot exist) is replaced
        with atomic_dir(out_dir) as tmp:
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
                # bf16 storage: the source is 4-bit, so bf16 loses nothing that mattered and
                # halves the folder and its load time.
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf_path.parent), gguf_file=gguf_path.name, dtype=dtype
                )
            except (ValueError, OSError, KeyError, RuntimeError) as exc:
                raise ModelNotFound(f"{gguf_path}: not a GGUF model transformers can read ({exc})") from exc
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.config.dtype = dtype
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "SOURCE").write_text(f"converted from {gguf_path}\n")
    finally:
        if not bars_were_on:
            hf_logging.disable_progress_bar()
    return out_dir
