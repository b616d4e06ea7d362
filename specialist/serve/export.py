"""Deployable artefacts of a specialist:

- merged: the LoRA merged into the base, a normal Hugging Face folder (weights + tokenizer with
  the chat template the run trained on) that transformers loads on its own;
- gguf: one GGUF file for llama.cpp (f16, bf16, q8_0 or q4_0), see gguf_export.py;
- ollama: the GGUF plus a Modelfile carrying the TEMPLATE, the stop tokens and the system prompt.

Every export is built in a temporary folder next to --out and renamed into place at the end, so
a crash never leaves a half-written export; an existing --out is replaced only when asked."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import torch

from specialist.errors import SpecialistError
from specialist.models.template import completion_suffix, render_prompt, stop_strings, stop_token_ids

Format = Literal["merged", "gguf", "ollama"]
FORMATS = ("merged", "gguf", "ollama")


@dataclass
class ExportResult:
    format: str
    out: Path
    files: list[str]

    def as_dict(self) -> dict:
        return {"format": self.format, "out": str(self.out), "files": self.files}


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary sibling folder that becomes `out` when the block succeeds."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise SpecialistError(f"{out} already exists; choose another --out or pass --overwrite", exit_code=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def load_merged(model_ref: str) -> Any:
    """The model with its adapter merged, in float32 so the merge itself adds no rounding."""
    from specialist.models.resolve import load_model

    return load_model(model_ref, dtype=torch.float32, device="cpu", merge_adapter=True)


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
    (folder / "specialist.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- Ollama Modelfile
_SYS = "\u2063SPECIALIST_SYSTEM\u2063"
_USER = "\u2063SPECIALIST_PROMPT\u2063"


def ollama_template(tokenizer: Any, bos_added_by_runtime: bool) -> str:
    """The chat template as an Ollama (Go) template with .System, .Prompt and .Response,
    obtained by rendering the real template with markers, so it is byte-identical to what the
    model saw in training. llama.cpp adds BOS itself when the GGUF says so; the template's own
    BOS is then dropped so it is not doubled."""
    with_system = render_prompt(tokenizer, [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}])
    without = render_prompt(tokenizer, [{"role": "user", "content": _USER}])
    bos = tokenizer.bos_token or ""
    if bos_added_by_runtime and bos:
        with_system = with_system.removeprefix(bos)
        without = without.removeprefix(bos)
    if _SYS not in with_system:  # a template that ignores system prompts
        with_system = without
    go_sys = with_system.replace(_SYS, "{{ .System }}").replace(_USER, "{{ .Prompt }}")
    go_user = without.replace(_USER, "{{ .Prompt }}")
    return "{{ if .System }}" + go_sys + "{{ else }}" + go_user + "{{ end }}{{ .Response }}" + completion_suffix(tokenizer)


def _quote(text: str) -> str:
    if '"""' in text:
        raise SpecialistError('the system prompt or template contains """, which a Modelfile cannot hold')
    return '"""' + text + '"""'


def modelfile(tokenizer: Any, gguf_name: str, system: str | None, bos_added_by_runtime: bool) -> str:
    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(tokenizer)]
    stops += [s.strip("\n") for s in stop_strings(tokenizer)]
    lines = [f"FROM ./{gguf_name}", "", f"TEMPLATE {_quote(ollama_template(tokenizer, bos_added_by_runtime))}", ""]
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    lines.append("PARAMETER temperature 0")
    if system:
        lines += ["", f"SYSTEM {_quote(system)}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command
def export(model_ref: str, fmt: str, out: Path, outtype: str = "f16", system: str | None = None,
           overwrite: bool = False, name: str | None = None) -> ExportResult:
    from specialist.serve.gguf_export import OUTTYPES, write_gguf

    if fmt not in FORMATS:
        raise SpecialistError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}", exit_code=2)
    if outtype not in OUTTYPES:
        raise SpecialistError(f"unknown --outtype {outtype!r}; use one of {', '.join(OUTTYPES)}", exit_code=2)
    out = Path(out)
    if out.exists() and not overwrite:  # before minutes of loading and merging
        raise SpecialistError(f"{out} already exists; choose another --out or pass --overwrite", exit_code=2)
    loaded = load_merged(model_ref)
    name = name or Path(str(model_ref).rstrip("/")).name or "specialist"
    with atomic_dir(out, overwrite) as tmp:
        if fmt == "merged":
            save_merged(loaded, tmp)
        else:
            tok_dir = tmp / ".tokenizer"
            loaded.tokenizer.save_pretrained(tok_dir)
            gguf_name = f"{name}-{outtype}.gguf"
            add_bos = write_gguf(loaded.model, loaded.tokenizer, tok_dir, tmp / gguf_name, outtype,
                                 weights_dir=Path(loaded.source.weights), name=name)
            if fmt == "ollama":
                (tmp / "Modelfile").write_text(modelfile(loaded.tokenizer, gguf_name, system, add_bos), encoding="utf-8")
            shutil.rmtree(tok_dir)
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(fmt, out, files)
