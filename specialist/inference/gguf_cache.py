"""The GGUF llama.cpp runs for a model reference: a .gguf file as it is; anything else (a run,
a folder, a known model) is merged and written to a GGUF once, kept under
SPECIALIST_HOME/engine/ and reused, keyed by the weights it came from, so a retrained run gets
a fresh file."""

from __future__ import annotations

import hashlib
from pathlib import Path

from specialist.console import announce
from specialist.errors import SpecialistError
from specialist.io import atomic_dir
from specialist.models.cache import specialist_home, weight_stamps
from specialist.models.gguf_writer import load_merged, save_gguf
from specialist.models.resolve import gguf_file, resolve

DEFAULT_QUANT = "q8_0"
CACHE_VERSION = "1"  # bump when the GGUF writer changes what it writes: cached engine files are redone


def engine_gguf(model_ref: str, outtype: str = DEFAULT_QUANT) -> Path:
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
    key = hashlib.sha256("|".join(stamps).encode()).hexdigest()[:16]
    out = specialist_home() / "engine" / f"{key}-{outtype}"
    if not out.exists():
        announce(f"Exporting {model_ref} to a {outtype} GGUF for llama.cpp (once)…")
        loaded = load_merged(model_ref)
        name = Path(str(model_ref).rstrip("/")).name or "model"
        with atomic_dir(out) as tmp:
            save_gguf(loaded, tmp / f"{name}-{outtype}.gguf", outtype, name)
    files = sorted(out.glob("*.gguf"))
    if not files:
        raise SpecialistError(f"{out}: no GGUF inside; delete the folder and run again")
    return files[0]
