"""Prompt/completion pairs for evaluation, read through the data stage's loader when it is
available so every format it accepts works here too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from specialist.errors import SpecialistError


@dataclass(frozen=True)
class Pair:
    prompt: str
    completion: str
    system: str | None = None
    history: tuple[dict[str, str], ...] = ()  # earlier turns of a multi-turn example


def load_pairs(path: str | Path) -> list[Pair]:
    path = Path(path)
    if not path.exists():
        raise SpecialistError(f"{path}: no such file")
    try:
        from specialist.data import load_examples  # the data stage's canonical loader
    except ImportError:
        return _read_jsonl(path)
    return [_pair_of(ex) for ex in load_examples(path)]


def _pair_of(example: object) -> Pair:
    """The canonical example's prompt, completion, system prompt and earlier turns."""
    get = example.get if isinstance(example, dict) else lambda k, d=None: getattr(example, k, d)
    history = tuple(dict(m) for m in (get("history") or ()))
    return Pair(str(get("prompt")), str(get("completion")), get("system") or None, history)


def _read_jsonl(path: Path) -> list[Pair]:
    """JSONL with {"prompt", "completion"} or {"messages": [...]} records."""
    pairs: list[Pair] = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecialistError(f"{path}: cannot read ({exc})") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecialistError(f"{path}:{number}: not valid JSON ({exc.msg})", exit_code=1) from exc
        pairs.append(_pair_of_record(record, f"{path}:{number}"))
    if not pairs:
        raise SpecialistError(f"{path}: no examples", exit_code=1)
    return pairs


def _pair_of_record(record: object, where: str) -> Pair:
    if not isinstance(record, dict):
        raise SpecialistError(f"{where}: expected a JSON object", exit_code=1)
    if "messages" in record:
        msgs = record["messages"]
        if not isinstance(msgs, list) or len(msgs) < 2 or not all(isinstance(m, dict) for m in msgs):
            raise SpecialistError(f"{where}: messages: expected a list of {{role, content}} objects", exit_code=1)
        if msgs[-1].get("role") != "assistant" or msgs[-2].get("role") != "user":
            raise SpecialistError(f"{where}: messages: must end with a user turn then an assistant turn", exit_code=1)
        system = next((m.get("content") for m in msgs if m.get("role") == "system"), None)
        history = tuple({"role": str(m.get("role")), "content": str(m.get("content", ""))}
                        for m in msgs[:-2] if m.get("role") != "system")
        return Pair(str(msgs[-2].get("content", "")), str(msgs[-1].get("content", "")), system, history)
    for field in ("prompt", "completion"):
        if not isinstance(record.get(field), str):
            raise SpecialistError(f"{where}: {field}: missing or not a string", exit_code=1)
    system = record.get("system")
    return Pair(record["prompt"], record["completion"], system if isinstance(system, str) and system else None)
