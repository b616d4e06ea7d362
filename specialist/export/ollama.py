"""--format ollama: the GGUF plus a Modelfile carrying the TEMPLATE, the stop tokens and the
system prompt. The TEMPLATE stays the training template: a knowledge base's context travels
inside the user message, as it did in training."""

from __future__ import annotations

import json
from typing import Any

from specialist.errors import SpecialistError
from specialist.export.knowledge import modelfile_note
from specialist.models.template import completion_suffix, render_prompt, stop_strings, stop_token_ids

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
    return ("{{ if .System }}" + go_sys + "{{ else }}" + go_user + "{{ end }}{{ .Response }}"
            + completion_suffix(tokenizer))


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
        lines += [f"# {line}".rstrip() for line in modelfile_note(knowledge).splitlines()] + [""]
    lines += [f"TEMPLATE {_quote(ollama_template(tokenizer, bos_added_by_runtime))}", ""]
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    lines.append("PARAMETER temperature 0")
    if system:
        lines += ["", f"SYSTEM {_quote(system)}"]
    return "\n".join(lines) + "\n"
