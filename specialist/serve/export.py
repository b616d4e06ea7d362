"""Deployable artefacts of a specialist:

- merged: the LoRA merged into the base, a normal Hugging Face folder (weights + tokenizer with
  the chat template the run trained on) that transformers loads on its own;
- gguf: one GGUF file for llama.cpp (f16, bf16, q8_0 or q4_0), see gguf_export.py;
- ollama: the GGUF plus a Modelfile carrying the TEMPLATE, the stop tokens and the system prompt.

A run trained with a knowledge base exports it too: knowledge/ (its passages.jsonl and
knowledge.json, as in the run folder) next to the artefact, and a README.md (plus a comment in
the Modelfile) giving the context layout the client must put in the user message, because
llama.cpp and Ollama do no retrieval themselves. The Modelfile's TEMPLATE stays the training
template: the context travels inside the user message, as it did in training.

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
from specialist.models.template import (CONTEXT_HEADER, NO_CONTEXT, QUESTION_HEADER, completion_suffix,
                                        format_context, render_prompt, stop_strings, stop_token_ids)

Format = Literal["merged", "gguf", "ollama"]
FORMATS = ("merged", "gguf", "ollama")


@dataclass
class ExportResult:
    format: str
    out: Path
    files: list[str]
    knowledge: dict | None = None  # the exported knowledge base: passages, fingerprint, top_k

    def as_dict(self) -> dict:
        return {"format": self.format, "out": str(self.out), "files": self.files, "knowledge": self.knowledge}


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


def modelfile(tokenizer: Any, gguf_name: str, system: str | None, bos_added_by_runtime: bool,
              knowledge: dict | None = None) -> str:
    """`knowledge` (a run's snapshot summary) adds a comment on how to pass retrieved context."""
    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(tokenizer)]
    stops += [s.strip("\n") for s in stop_strings(tokenizer)]
    lines = [f"FROM ./{gguf_name}", ""]
    if knowledge:
        lines += [f"# {line}".rstrip() for line in _modelfile_note(knowledge).splitlines()] + [""]
    lines += [f"TEMPLATE {_quote(ollama_template(tokenizer, bos_added_by_runtime))}", ""]
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    lines.append("PARAMETER temperature 0")
    if system:
        lines += ["", f"SYSTEM {_quote(system)}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the knowledge base
def _context_layout() -> str:
    """format_context's layout, drawn by format_context itself so the doc cannot drift from it."""
    from types import SimpleNamespace

    example = [SimpleNamespace(title="{title 1}", text="{text 1}"), SimpleNamespace(title="{title 2}", text="{text 2}")]
    return format_context("{the user's question}", example)


def _modelfile_note(knowledge: dict) -> str:
    k = knowledge["retrieval"].get("top_k", 3)
    return (f"This specialist was trained to answer from {k} passages retrieved from its knowledge base\n"
            f"(knowledge/passages.jsonl next to this file). Ollama does no retrieval: search the passages\n"
            f"yourself and send each question as this user message (see README.md):\n\n"
            + "\n".join("  " + line for line in _context_layout().splitlines()))


CLIENT_CODE = f'''import json

passages = [json.loads(line) for line in open("knowledge/passages.jsonl", encoding="utf-8")]


def user_message(question: str, found: list[dict]) -> str:
    """found: the passages your retriever ranks highest for the question, best first."""
    lines = [{CONTEXT_HEADER!r}]
    for i, p in enumerate(found, 1):
        text = " ".join(p["text"].split())
        lines.append(f"[{{i}}] {{p['title']}}: {{text}}" if p.get("title") else f"[{{i}}] {{text}}")
    if not found:
        lines.append({NO_CONTEXT!r})
    return "\\n".join(lines) + f"\\n\\n{QUESTION_HEADER} {{question}}"
'''


def knowledge_readme(knowledge: dict, fmt: str, example: str) -> str:
    r = knowledge["retrieval"]
    runtime = {"merged": "transformers (or any runtime loading this folder)", "gguf": "llama.cpp",
               "ollama": "Ollama"}[fmt]
    return f"""# Knowledge base: how to pass the context

This specialist was trained with retrieval: every training question came with the passages
retrieved for it from its knowledge base, and it answers from them. {runtime} does no retrieval
itself, so the client must do it and put the passages into the user message, exactly in the
layout the specialist was trained on, or it will guess facts instead of reading them.

- `knowledge/passages.jsonl`: the {knowledge["passages"]} passages (`id`, `title`, `text`, …), fingerprint
  `{knowledge["fingerprint"]}`.
- `knowledge/knowledge.json`: where they came from and the retrieval settings of training:
  method `{r.get("method")}`, top {r.get("top_k")} passages, language `{r.get("language")}`.
- For each question, take the top {r.get("top_k")} passages (best first) and send as the **user
  message** (the system prompt, if any, stays the system prompt; earlier turns stay plain):

```
{_context_layout()}
```

  `[n] title: text` per passage, numbered from 1 (just `[n] text` for a passage without a title),
  the text on one line (runs of whitespace become one space); `{NO_CONTEXT}` when nothing was
  found; one empty line; then `{QUESTION_HEADER} ` and the question. Only the last user message
  carries a context.

For example, with the first passages of this knowledge base:

```
{example}
```

In Python:

```python
{CLIENT_CODE}```

Or let specialist retrieve for you: `specialist serve --model <the run>` (it finds its knowledge
base on its own), or `--model <a merged folder, or a .gguf with --engine llama.cpp>
--knowledge knowledge/ --top-k {r.get("top_k")}`, answers plain questions over an OpenAI-compatible
API: the retrieval happens in the server and each answer lists the passage ids it was given
(`/v1/chat/completions` only; `/v1/completions` takes the whole prompt from the client).
`specialist knowledge search --knowledge knowledge/ "question"` previews what is retrieved.
"""


def copy_knowledge(run_dir: Path, dest: Path, fmt: str) -> dict:
    """Copy the run's knowledge snapshot into the export (validated first: a snapshot edited by
    hand would teach clients the wrong passages) and write README.md on passing context."""
    from specialist.knowledge.snapshot import load_snapshot, snapshot_dir

    kb, _, summary = load_snapshot(run_dir)
    shutil.copytree(snapshot_dir(run_dir), dest / "knowledge")
    example = format_context("…", kb.passages[:2])
    (dest / "README.md").write_text(knowledge_readme(summary, fmt, example), encoding="utf-8")
    return summary


def run_knowledge(model_ref: str) -> tuple[Path, dict] | None:
    """(run folder, its snapshot summary) when `model_ref` is a run trained with a knowledge base."""
    from specialist.knowledge.runtime import run_folder_of
    from specialist.knowledge.snapshot import has_snapshot, load_snapshot

    run = run_folder_of(model_ref)
    if run is None or not has_snapshot(run):
        return None
    return run, load_snapshot(run)[2]


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
    knowledge = run_knowledge(model_ref)  # a broken snapshot fails before the model loads
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
                text = modelfile(loaded.tokenizer, gguf_name, system, add_bos, knowledge[1] if knowledge else None)
                (tmp / "Modelfile").write_text(text, encoding="utf-8")
            shutil.rmtree(tok_dir)
        summary = None
        if knowledge is not None:
            copy_knowledge(knowledge[0], tmp, fmt)
            summary = {k: knowledge[1].get(k) for k in ("passages", "fingerprint")}
            summary["top_k"] = knowledge[1].get("retrieval", {}).get("top_k")
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(fmt, out, files, summary)
