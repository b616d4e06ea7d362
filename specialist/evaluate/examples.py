"""Prompt/completion pairs for evaluation, read through the data stage's loader when it is
available so every format it accepts works here too.

Eval records may also carry what a right answer must say and whether the question can be
answered at all (examples/coffee/facts.jsonl):

    {"prompt": …, "completion": …, "facts": ["14[,.]99\\s*(zł|zl)"], "answerable": true}
    {"prompt": …, "completion": …, "answerable": false}

`facts` are regular expressions a right answer must all contain (case-insensitive search);
a regex that does not compile is a located error (file:line:facts), exit 1."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError


@dataclass(frozen=True)
class Pair:
    prompt: str
    completion: str
    system: str | None = None
    history: tuple[dict[str, str], ...] = ()  # earlier turns of a multi-turn example
    facts: tuple[str, ...] = ()  # regexes a right answer must all contain
    answerable: bool = True      # False: the right answer offers to check / hand over


def facts_problems(record: Any, where: str) -> list[str]:
    """Located problems of a record's `facts` and `answerable` fields (empty when fine)."""
    if not isinstance(record, dict):
        return []
    problems = []
    facts = record.get("facts")
    if facts is not None:
        if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
            problems.append(f"{where}:facts: E007 expected a list of regular expressions (strings)")
        else:
            for regex in facts:
                try:
                    re.compile(regex, re.IGNORECASE)
                except re.error as exc:
                    problems.append(f"{where}:facts: invalid regular expression {regex!r} ({exc})")
                if not regex.strip():
                    problems.append(f"{where}:facts: empty regular expression (it would match every answer)")
    answerable = record.get("answerable")
    if answerable is not None and not isinstance(answerable, bool):
        problems.append(f"{where}:answerable: E007 expected true or false, got {type(answerable).__name__}")
    return problems


def _with_facts(pair: Pair, record: Any) -> Pair:
    if not isinstance(record, dict):
        return pair
    facts = tuple(record.get("facts") or ())
    answerable = record.get("answerable")
    return replace(pair, facts=facts, answerable=answerable if isinstance(answerable, bool) else True)


def _raise_problems(path: Path, problems: list[str]) -> None:
    if len(problems) == 1:
        raise SpecialistError(problems[0], exit_code=1)
    if problems:
        shown = "\n".join(problems[:10])
        more = f"\n… and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise SpecialistError(f"{path}: {len(problems)} error(s) in facts/answerable:\n{shown}{more}", exit_code=1)


def load_pairs(path: str | Path) -> list[Pair]:
    path = Path(path)
    if not path.exists():
        raise SpecialistError(f"{path}: no such file")
    try:
        from specialist.data import load_examples  # the data stage's canonical loader
    except ImportError:
        return _read_jsonl(path)
    examples = load_examples(path)
    problems = [p for ex in examples for p in facts_problems(getattr(ex, "source", None), _where(ex, path))]
    _raise_problems(path, problems)
    return [_with_facts(_pair_of(ex), getattr(ex, "source", None)) for ex in examples]


def _where(example: object, path: Path) -> str:
    file, line = getattr(example, "file", None), getattr(example, "line", None)
    return f"{file or path}:{line}" if line else str(file or path)


def _pair_of(example: object) -> Pair:
    """The canonical example's prompt, completion, system prompt and earlier turns."""
    get = example.get if isinstance(example, dict) else lambda k, d=None: getattr(example, k, d)
    history = tuple(dict(m) for m in (get("history") or ()))
    return Pair(str(get("prompt")), str(get("completion")), get("system") or None, history)


def _read_jsonl(path: Path) -> list[Pair]:
    """JSONL with {"prompt", "completion"} or {"messages": [...]} records."""
    pairs: list[Pair] = []
    problems: list[str] = []
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
        pairs.append(_with_facts(_pair_of_record(record, f"{path}:{number}"), record))
        problems += facts_problems(record, f"{path}:{number}")
    _raise_problems(path, problems)
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
