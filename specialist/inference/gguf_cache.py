"""The GGUF llama.cpp runs for a model reference: a .gguf file as it is; anything else (a run,
a folder, a known model) is merged and written to a GGUF once, kept under
SPECIALIST_HOME/engine/ and reused, keyed by the weights it came from, so a retrained run gets
a fresh file.

A run with a specialist-sized head (vocabulary.json) gets a GGUF of its kept tokens only
(gguf_writer `kept`): llama.cpp then projects each step onto those rows, not the whole
vocabulary, which on Gemma 3 is most of the bytes read per token. Beside it, INPUTS holds the
model's input embedding of every token (float16), through which the engine feeds the prompt,
so a customer can still type any token.

The folder is bounded (CACHE_BUDGET_ENV, default DEFAULT_BUDGET_GB): each entry is half a
gigabyte for Gemma 3 270M, one per run and GGUF type, so after a new export the entries used
least recently go until the rest fits. They are copies: the next use exports them again."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specialist.console import announce
from specialist.errors import SpecialistError
from specialist.io import atomic_dir
from specialist.models.cache import specialist_home, weight_stamps
from specialist.models.gguf_writer import load_merged, save_gguf
from specialist.models.resolve import gguf_file, resolve

DEFAULT_QUANT = "q8_0"
INPUTS = "inputs.npy"
CACHE_VERSION = "1"  # bump when the GGUF writer changes what it writes: cached engine files are redone
CACHE_BUDGET_ENV = "SPECIALIST_ENGINE_CACHE_GB"
DEFAULT_BUDGET_GB = 5.0


def engine_gguf(model_ref: str, outtype: str = DEFAULT_QUANT, kept: Sequence[int] | None = None) -> Path:
    """The GGUF file; with `kept`, the kept-vocabulary one, its INPUTS beside it."""
    path = gguf_file(model_ref)
    if path is not None:
        return path
    source = resolve(model_ref)
    stamps = [CACHE_VERSION, source.kind]
    if source.kind == "hub":  # the snapshot the hub cache holds for this id (none yet: the id)
        from huggingface_hub import snapshot_download

        try:
            stamps.append(str(Path(snapshot_download(source.weights, local_files_only=True)).resolve()))
        except Exception:  # noqa: BLE001 - not downloaded yet; loading the model downloads it
            stamps.append(source.weights)
    else:
        weights = Path(source.weights).resolve()
        stamps += [str(weights), *weight_stamps(weights)]
    if source.adapter is not None:
        stamps += weight_stamps(source.adapter)
    if kept is not None:
        stamps.append("kept:" + ",".join(map(str, sorted(set(kept)))))
    key = hashlib.sha256("|".join(stamps).encode()).hexdigest()[:16]
    out = specialist_home() / "engine" / f"{key}-{outtype}{'-kept' if kept is not None else ''}"
    if not out.exists():
        what = f"a {outtype} GGUF of its {len(set(kept))} kept tokens" if kept is not None else f"a {outtype} GGUF"
        budget = cache_budget()  # a bad setting says so before the export, not after
        announce(f"Exporting {model_ref} to {what} for llama.cpp (once)…")
        loaded = load_merged(model_ref)
        name = Path(str(model_ref).rstrip("/")).name or "model"
        with atomic_dir(out) as tmp:
            save_gguf(loaded, tmp / f"{name}-{outtype}.gguf", outtype, name, kept=kept)
            if kept is not None:
                np.save(tmp / INPUTS, input_embeddings(loaded.model))
        prune(out, budget)
    else:
        try:
            os.utime(out)  # used now: the least recently used entries are the first to go
        except OSError:  # a read-only cache still serves
            pass
    files = sorted(out.glob("*.gguf"))
    if not files or (kept is not None and not (out / INPUTS).is_file()):
        raise SpecialistError(f"{out}: no GGUF or {INPUTS} inside; delete the folder and run again")
    return files[0]


def cache_budget() -> float:
    """The engine folder's bound in GB (CACHE_BUDGET_ENV)."""
    raw = os.environ.get(CACHE_BUDGET_ENV, "").strip()
    try:
        budget = float(raw) if raw else DEFAULT_BUDGET_GB
    except ValueError:
        raise SpecialistError(f"{CACHE_BUDGET_ENV}={raw!r}: give a size in GB, e.g. 5", exit_code=2) from None
    if budget < 0:
        raise SpecialistError(f"{CACHE_BUDGET_ENV}={raw!r}: give a size in GB, e.g. 5", exit_code=2)
    return budget


def prune(keep: Path, budget_gb: float | None = None) -> list[Path]:
    """Remove the engine folder's least recently used entries (folder times: made or used) until
    the rest, `keep` always among them, fits the budget (GB; default cache_budget()); the
    removed ones, said on stderr."""
    budget = (cache_budget() if budget_gb is None else budget_gb) * 1e9
    entries = []
    for entry in keep.parent.iterdir():
        if entry.is_dir() and not entry.name.startswith("."):  # not another export's unfinished folder
            try:
                entries.append((entry, entry.stat().st_mtime, sum(f.stat().st_size for f in entry.rglob("*"))))
            except OSError:  # another process removed it meanwhile
                continue
    entries.sort(key=lambda e: (e[0] != keep, -e[1]))  # `keep` first, then the newest
    total, removed = 0, []
    for entry, _, size in entries:
        if entry != keep and total + size > budget:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append((entry, size))
            continue
        total += size
    if removed:
        from specialist.console import err_console

        err_console.print(f"[dim]engine cache: removed {len(removed)} GGUF(s) used least recently "
                          f"({sum(s for _, s in removed) / 1e9:.1f} GB) to stay within {budget / 1e9:g} GB "
                          f"({CACHE_BUDGET_ENV})[/dim]", highlight=False, soft_wrap=True)
    return [p for p, _ in removed]


def load_inputs(gguf: Path) -> np.ndarray:
    """The INPUTS beside a kept-vocabulary GGUF, memory-mapped (only the rows a prompt uses are read)."""
    try:
        return np.load(gguf.parent / INPUTS, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise SpecialistError(f"{gguf.parent / INPUTS}: unreadable ({exc}); delete {gguf.parent} and run "
                              "again") from exc


def input_embeddings(model: Any, chunk: int = 16384) -> np.ndarray:
    """What the model's input embedding gives for every token id (Gemma's scaling included),
    float16: half a float32 copy's size, and finer than the q8_0 rows llama.cpp would read."""
    layer = model.get_input_embeddings()
    size = int(layer.weight.shape[0])
    out = np.empty((size, int(layer.weight.shape[1])), dtype=np.float16)
    with torch.inference_mode():
        for start in range(0, size, chunk):
            ids = torch.arange(start, min(start + chunk, size))
            out[start:start + len(ids)] = layer(ids).float().numpy()
    return out
