"""Format conversion: prompt-completion JSONL, chat JSONL, and OpenAI's chat fine-tuning
JSONL (checked against OpenAI's published format rules before it is written)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from specialist.data.example import Example
from specialist.data.validate import load_examples
from specialist.errors import SpecialistError
from specialist.io import atomic_write_jsonl, refuse_overwrite

TARGETS = ("prompt-completion", "chat", "openai")
OPENAI_ROLES = ("system", "user", "assistant")
OPENAI_MESSAGE_KEYS = {"role", "content", "name", "weight"}
OPENAI_MIN_EXAMPLES = 10


def to_prompt_completion(e: Example) -> dict[str, Any]:
    if e.history:
        raise ValueError("multi-turn")
    record: dict[str, Any] = {}
    if e.system:
        record["system"] = e.system
    record.update({"prompt": e.prompt, "completion": e.completion})
    record.update({k: v for k, v in e.meta.items() if k not in record})
    return record


def to_chat(e: Example) -> dict[str, Any]:
    record: dict[str, Any] = {"messages": e.conversation}
    record.update({k: v for k, v in e.meta.items() if k != "messages"})
    return record


def to_openai(e: Example) -> dict[str, Any]:
    # OpenAI rejects keys it does not know, so labels and ids are left out.
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in e.conversation]}


def openai_format_errors(record: Any) -> list[str]:
    """Problems OpenAI's fine-tuning upload would reject a chat record for (the checks of
    OpenAI's data-preparation guide); empty when the record is fine."""
    if not isinstance(record, dict):
        return ["the record is not an object"]
    problems = []
    unknown = set(record) - {"messages", "tools", "functions", "parallel_tool_calls"}
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "'messages' must be a non-empty list"]
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(f"messages[{i}] is not an object")
            continue
        if set(m) - OPENAI_MESSAGE_KEYS:
            problems.append(f"messages[{i}] has unknown keys {sorted(set(m) - OPENAI_MESSAGE_KEYS)}")
        if m.get("role") not in OPENAI_ROLES:
            problems.append(f"messages[{i}] has role {m.get('role')!r}")
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            problems.append(f"messages[{i}] has no text content")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append("no assistant message")
    elif not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        problems.append("the last message is not from the assistant")
    return problems


CONVERTERS: dict[str, Callable[[Example], dict[str, Any]]] = {
    "prompt-completion": to_prompt_completion, "chat": to_chat, "openai": to_openai}


def convert_dataset(path: str | Path, to: str, out: str | Path, format: str | None = None,
                    overwrite: bool = False) -> tuple[int, list[str]]:
    """Write `path` as `to` JSONL at `out`. Returns (records written, notes for the user)."""
    if to not in CONVERTERS:
        raise SpecialistError(f"unknown --to {to!r} (choose from {', '.join(TARGETS)})")
    out = Path(out)
    refuse_overwrite([out], overwrite)
    examples = load_examples(path, format)
    if to == "prompt-completion":
        multi = [e for e in examples if e.history]
        if multi:
            where = ", ".join(e.location for e in multi[:5])
            raise SpecialistError(f"{len(multi)} multi-turn conversation(s) cannot be prompt-completion pairs ({where}"
                                  f"{' …' if len(multi) > 5 else ''}); use --to chat", exit_code=1)
    records = [CONVERTERS[to](e) for e in examples]
    if to == "openai":
        for e, record in zip(examples, records):
            problems = openai_format_errors(record)
            if problems:  # cannot happen for validated examples; guards the converter itself
                raise SpecialistError(f"{e.location}: {'; '.join(problems)}", exit_code=1)
    atomic_write_jsonl(out, records)
    notes = []
    if to == "openai" and len(records) < OPENAI_MIN_EXAMPLES:
        notes.append(f"OpenAI fine-tuning needs at least {OPENAI_MIN_EXAMPLES} examples; this file has {len(records)}")
    return len(records), notes
