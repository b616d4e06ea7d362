"""GGUF file → cached Hugging Face folder (safetensors + tokenizer), done once.

transformers dequantizes GGUF tensors on load but refuses save_pretrained on a model it
loaded that way; the quantizer state is dropped first so the folder is a plain checkpoint."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import torch

from specialist.errors import ModelNotFound, SpecialistError
from specialist.io import atomic_dir, remove_abandoned_temporaries
from specialist.models.cache import models_dir
from specialist.models.tokenizer_files import record_added_tokens, save_tokenizer


def gguf_cache_path(gguf_path: Path) -> Path:
    """Cache folder for an arbitrary local GGUF file: keyed by its name, size and mtime."""
    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return models_dir() / f"gguf-{gguf_path.stem}-{key}"


GGUF_MAX_COUNT = 1 << 24  # tensors or metadata entries; real models have hundreds to thousands


def check_gguf_header(path: Path) -> None:
    """Refuse a file that is not GGUF v2/v3 or whose header announces absurd counts, before a
    reader trusts them. The reader itself is guarded too (see read_gguf_errors)."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise ModelNotFound(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if head[:4] != b"GGUF":
        raise ModelNotFound(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    if len(head) < 24:
        raise ModelNotFound(f"{path}: a truncated GGUF file ({len(head)} bytes, the header alone needs 24)")
    version, tensors, entries = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise ModelNotFound(f"{path}: GGUF version {version} (readable: 2 and 3)")
    if tensors > GGUF_MAX_COUNT or entries > GGUF_MAX_COUNT:
        raise ModelNotFound(f"{path}: a malformed GGUF header ({tensors} tensors, {entries} metadata entries)")


# Reading an untrusted GGUF: the readers fail on a malformed file in whatever way their
# parsing hits it (struct.error, IndexError, OverflowError, ValueError …). Any of them means
# the file is malformed; none may reach the user as a traceback.
READ_GGUF_ERRORS = (Exception,)


@functools.cache  # resolve calls it every time: the folder is checked once per process
def upgrade_cached(out_dir: Path) -> None:
    """Bring a folder converted by an earlier version up to date: its tokenizer config gains
    the added tokens (models.tokenizer_files), once."""
    try:
        record_added_tokens(out_dir)
    except (OSError, ValueError, SpecialistError):
        pass  # a read-only or damaged cache is left as it is: loading it says what is wrong


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Dequantize gguf_path into out_dir (atomic: a temporary folder renamed at the end)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").exists():
        remove_abandoned_temporaries(out_dir)  # of an earlier attempt that was killed
        upgrade_cached(out_dir)
        return out_dir
    check_gguf_header(gguf_path)
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
            except READ_GGUF_ERRORS as exc:
                raise ModelNotFound(f"{gguf_path}: not a GGUF model transformers can read "
                                    f"({type(exc).__name__}: {exc})") from exc
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.config.dtype = dtype
            model.save_pretrained(tmp)
            save_tokenizer(tokenizer, tmp)
            (tmp / "SOURCE").write_text(f"converted from {gguf_path}\n")
    finally:
        if not bars_were_on:
            hf_logging.disable_progress_bar()
    return out_dir
