"""Deployable artefacts of a specialist:

- merged: the LoRA merged into the base, a normal Hugging Face folder (weights + tokenizer with
  the chat template the run trained on) that transformers loads on its own;
- gguf: one GGUF file for llama.cpp (f16, bf16, q8_0 or q4_0), see models/gguf_writer.py;
- ollama: the GGUF plus a Modelfile carrying the TEMPLATE, the stop tokens and the system prompt.

A run trained with a knowledge base exports it too: knowledge/ (its passages.jsonl and
knowledge.json, as in the run folder) next to the artefact, and a README.md (plus a comment in
the Modelfile) giving the context layout the client must put in the user message, because
llama.cpp and Ollama do no retrieval themselves. The Modelfile's TEMPLATE stays the training
template: the context travels inside the user message, as it did in training.

Every export is built in a temporary folder next to --out and renamed into place at the end, so
a crash never leaves a half-written export; an existing --out is replaced only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from specialist.errors import SpecialistError
from specialist.export.knowledge import copy_knowledge, run_knowledge
from specialist.export.merged import MERGED_OUTTYPES, save_merged
from specialist.export.ollama import modelfile
from specialist.export.parity import CheckSettings, Parity, check_export
from specialist.io import atomic_dir
from specialist.models.gguf_writer import OUTTYPES, load_merged, save_gguf

Format = Literal["merged", "gguf", "ollama"]
FORMATS = ("merged", "gguf", "ollama")


@dataclass
class ExportResult:
    format: str
    out: Path
    files: list[str]
    knowledge: dict | None = None  # the exported knowledge base: passages, fingerprint, top_k
    parity: Parity | None = None  # the artefact run against the run (OUT/parity.json)

    def as_dict(self) -> dict:
        return {"format": self.format, "out": str(self.out), "files": self.files, "knowledge": self.knowledge,
                "parity": self.parity.as_dict() if self.parity else None}


def export(model_ref: str, fmt: str, out: Path, outtype: str | None = None, system: str | None = None,
           overwrite: bool = False, name: str | None = None, check: CheckSettings | None = None) -> ExportResult:
    """`check` runs the written artefact against the run (export/parity.py); None skips it.
    `outtype`: GGUF weights (default f16), or the merged folder's dtype (default auto: merged_dtype)."""
    if fmt not in FORMATS:
        raise SpecialistError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}", exit_code=2)
    allowed = MERGED_OUTTYPES if fmt == "merged" else OUTTYPES
    outtype = outtype or ("auto" if fmt == "merged" else "f16")
    if outtype not in allowed:
        raise SpecialistError(f"unknown --outtype {outtype!r} for --format {fmt}; use one of {', '.join(allowed)}",
                              exit_code=2)
    out = Path(out)
    if out.exists() and not overwrite:  # before minutes of loading and merging
        raise SpecialistError(f"{out} already exists; choose another --out or pass --overwrite", exit_code=2)
    knowledge = run_knowledge(model_ref)  # a broken snapshot fails before the model loads
    loaded = load_merged(model_ref)
    name = name or Path(str(model_ref).rstrip("/")).name or "specialist"
    with atomic_dir(out) as tmp:
        if fmt == "merged":
            save_merged(loaded, tmp, outtype)
        else:
            gguf_name = f"{name}-{outtype}.gguf"
            add_bos = save_gguf(loaded, tmp / gguf_name, outtype, name)
            if fmt == "ollama":
                text = modelfile(loaded.tokenizer, gguf_name, system, add_bos, knowledge[1] if knowledge else None)
                (tmp / "Modelfile").write_text(text, encoding="utf-8")
        summary = None
        if knowledge is not None:
            copy_knowledge(knowledge[0], tmp, fmt)
            summary = {k: knowledge[1].get(k) for k in ("passages", "fingerprint")}
            summary["top_k"] = knowledge[1].get("retrieval", {}).get("top_k")
        # the check runs before the folder is moved into place, so an interrupted check leaves
        # the old folder (or none), never an artefact without its parity.json
        parity = check_export(model_ref, fmt, tmp, check) if check is not None else None
        files = sorted(p.name for p in tmp.iterdir())
    result = ExportResult(fmt, out, files, summary)
    result.parity = parity
    return result
