"""A model reference → model + tokenizer.

A reference is one of: a short name of a known model (models/registry.py), a run folder
(written by `specialist train`), a local Hugging Face folder, a local .gguf file, or a
Hugging Face id (org/name)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from specialist.console import announce
from specialist.errors import ModelNotFound
from specialist.models.convert import convert_gguf, gguf_cache_path, upgrade_cached
from specialist.models.device import GenerationPath, pick_device, pick_dtype
from specialist.models.registry import KNOWN_MODELS
from specialist.models.template import ensure_chat_template
from specialist.run_folder import RunFolder, is_run_dir, read_kept_vocabulary, read_summary

Kind = Literal["known", "run", "folder", "gguf", "hub"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a reference points. `weights` is a local folder or a hub id that
    from_pretrained takes; `adapter` is set for LoRA/DoRA runs."""

    ref: str
    kind: Kind
    weights: str
    adapter: Path | None = None
    run_dir: Path | None = None
    base_ref: str | None = None

    @property
    def tokenizer_source(self) -> str:
        # A run saves its tokenizer (with the chat template it trained on) next to the adapter.
        if self.adapter is not None and (self.adapter / "tokenizer_config.json").exists():
            return str(self.adapter)
        return self.weights


def gguf_file(ref: str) -> Path | None:
    """The path when `ref` is a local .gguf file, else None."""
    path = Path(str(ref)).expanduser()
    return path if path.is_file() and path.suffix.lower() == ".gguf" else None


def _known_names() -> str:
    return ", ".join(KNOWN_MODELS)


def resolve(ref: str, prepare: bool = True) -> ModelSource:
    """Find what `ref` points at; with prepare=True known models and GGUF files are
    converted to their cached folder first (once)."""
    ref = str(ref).strip()
    if ref in KNOWN_MODELS:
        known = KNOWN_MODELS[ref]
        if prepare:
            if known.is_cached():
                upgrade_cached(known.cache_path)
            else:
                prepare_known(ref)
        return ModelSource(ref, "known", str(known.cache_path))

    path = Path(ref).expanduser()
    if path.exists():
        if is_run_dir(path):
            return _resolve_run(ref, path, prepare)
        if gguf_file(ref) is not None:
            out = gguf_cache_path(path)
            if prepare:
                announce(f"Converting {path.name} to a cached Hugging Face folder (once)…")
                convert_gguf(path, out)
            return ModelSource(ref, "gguf", str(out))
        if path.is_dir() and (path / "config.json").exists():
            return ModelSource(ref, "folder", str(path))
        raise ModelNotFound(
            f"{ref}: not a model (expected a run folder with run.json, a Hugging Face folder "
            "with config.json, or a .gguf file)"
        )
    if ref.startswith((".", "/", "~")) or ref.lower().endswith(".gguf") or "\\" in ref:
        raise ModelNotFound(f"{ref}: no such file or folder")
    if _HUB_ID.match(ref):
        return ModelSource(ref, "hub", ref)
    raise ModelNotFound(
        f"unknown model reference {ref!r}: not a known model ({_known_names()}), "
        "not an existing path, not a Hugging Face id (org/name)"
    )


def _resolve_run(ref: str, path: Path, prepare: bool) -> ModelSource:
    run = RunFolder(path)
    base_ref = read_summary(path).base_model
    if (run.model / "config.json").exists():  # full fine-tuning
        return ModelSource(ref, "run", str(run.model), run_dir=path, base_ref=base_ref)
    adapter = run.adapter
    if not (adapter / "adapter_config.json").exists():
        raise ModelNotFound(f"{path}: run folder has neither adapter/ nor model/ (did training finish?)")
    if not base_ref:
        raise ModelNotFound(f"{run.summary}: no base_model recorded")
    base = resolve(base_ref, prepare=prepare)
    return ModelSource(ref, "run", base.weights, adapter=adapter, run_dir=path, base_ref=base_ref)


def prepare_known(name: str) -> Path:
    """Assemble, dequantize and cache a known model. Returns its folder."""
    known = KNOWN_MODELS[name]
    if known.is_cached():
        return known.cache_path
    announce(f"Preparing {name} once: assembling the GGUF and converting it to a cached "
              f"Hugging Face folder at {known.cache_path} (about a minute)…")
    return convert_gguf(known.locate_gguf(), known.cache_path)


def _hub_error(source: ModelSource, exc: Exception) -> ModelNotFound:
    return ModelNotFound(
        f"could not load {source.ref!r} from the Hugging Face Hub ({type(exc).__name__}); "
        "without network access download it elsewhere and pass its local folder "
        "(--model /path/to/folder) or a .gguf file"
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all; checked before a download so an offline
    machine gets one clear line at once instead of minutes of retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _check_hub(source: ModelSource) -> None:
    """For hub ids: use the local HF cache when it has the model, else require the hub."""
    if source.kind != "hub":
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source.weights, "config.json"), str):
        return
    if not hub_reachable():
        raise ModelNotFound(
            f"{source.ref!r} is not in the local Hugging Face cache and the Hub cannot be reached; "
            "download it elsewhere and pass its local folder (--model /path/to/folder) or a .gguf file"
        )


def load_tokenizer(ref: str | ModelSource) -> Any:
    from transformers import AutoTokenizer

    source = ref if isinstance(ref, ModelSource) else resolve(ref)
    _check_hub(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_source, trust_remote_code=False)
    except Exception as exc:
        if source.kind == "hub":
            raise _hub_error(source, exc) from exc
        raise ModelNotFound(f"{source.ref}: cannot load its tokenizer ({exc})") from exc
    ensure_chat_template(tokenizer)
    return tokenizer


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: ModelSource
    device: torch.device
    dtype: torch.dtype
    path: GenerationPath | None = None  # set when loaded for generation (inference.precision)


def _load_weights(source: ModelSource, torch_dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        # safetensors only: a pickled checkpoint (pytorch_model.bin) is never opened, and no
        # code the model folder ships runs (trust_remote_code stays False)
        return AutoModelForCausalLM.from_pretrained(source.weights, dtype=torch_dtype, use_safetensors=True,
                                                    trust_remote_code=False)
    except Exception as exc:
        if source.kind == "hub":
            raise _hub_error(source, exc) from exc
        raise ModelNotFound(f"{source.ref}: cannot load the model ({exc})") from exc


def _adapter_dir(adapter: Path) -> str:
    if not (Path(adapter) / "adapter_model.safetensors").is_file():
        raise ModelNotFound(f"{adapter}: no adapter_model.safetensors (adapters are read from "
                            "safetensors only, never from a pickled .bin)")
    return str(adapter)


def _ready(model: Any, tokenizer: Any, source: ModelSource, dev: torch.device, torch_dtype: torch.dtype) -> LoadedModel:
    model.to(dev)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, source, dev, torch_dtype)


def load_model(
    ref: str | ModelSource,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    merge_adapter: bool = False,
    kept_head: bool = True,
) -> LoadedModel:
    """Load a model for inference (eval mode). A run's adapter is attached (or merged), and a
    run trained with a specialist-sized output head generates with it (models.vocab_head)
    unless `kept_head` is False (exports and their parity check: artefacts hold the full head)."""
    source = ref if isinstance(ref, ModelSource) else resolve(ref)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    tokenizer = load_tokenizer(source)
    model = _load_weights(source, torch_dtype)
    if source.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, _adapter_dir(source.adapter))
        if merge_adapter:
            model = model.merge_and_unload()
    kept = read_kept_vocabulary(source.run_dir) if kept_head and source.run_dir is not None else None
    if kept is not None:
        from specialist.models.vocab_head import use_kept_head

        use_kept_head(model, kept[0], vocab_logits=True, frozen=True)
    return _ready(model, tokenizer, source, dev, torch_dtype)


def _tokenizer_key(source: ModelSource) -> str:
    """The tokenizer files' contents (equal keys: interchangeable tokenizers), else the reference."""
    import hashlib

    folder = Path(source.tokenizer_source)
    if not folder.is_dir():
        return source.tokenizer_source
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name.startswith(("tokenizer", "chat_template", "special_tokens"))):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def load_adapters(sources: list[ModelSource], names: list[str | None], dtype: str | torch.dtype = "auto",
                  device: str = "auto") -> list[LoadedModel]:
    """Sources of one base (the same `weights`), loaded as one model: the base once, each LoRA
    adapter attached beside the others under its name in `names` (not merged: PEFT picks
    each row's adapter at decoding time, `adapter_names`). One LoadedModel per source, all
    holding that model, each with the source's own tokenizer (a run's chat template)."""
    from peft import PeftModel

    if len({s.weights for s in sources}) != 1:
        raise ValueError("load_adapters: the sources do not share one base")
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    # a tokenizer of a 262k vocabulary holds ~270 MB: runs that saved identical files share one
    by_files: dict[str, Any] = {}
    tokenizers = []
    for source in sources:
        key = _tokenizer_key(source)
        if key not in by_files:
            by_files[key] = load_tokenizer(source)
        tokenizers.append(by_files[key])
    model = _load_weights(sources[0], torch_dtype)
    for source, name in zip(sources, names):
        if source.adapter is None:
            continue
        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, _adapter_dir(source.adapter), adapter_name=name)
        else:
            model.load_adapter(_adapter_dir(source.adapter), adapter_name=name)
    return [_ready(model, tok, source, dev, torch_dtype) for source, tok in zip(sources, tokenizers)]
