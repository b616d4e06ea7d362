"""Examples for evaluation: the data stage's loader (every format it reads works here too)
and the checks of what evaluation adds to a record.

Eval records may carry what a right answer must say and whether the question can be answered
at all (examples/coffee/facts.jsonl); data.Example holds them as `facts`, `wrong` and `answerable`:

    {"prompt": …, "completion": …, "facts": ["14[,.]99\\s*(zł|zl)"], "answerable": true}
    {"prompt": …, "completion": …, "facts": ["nespresso"], "wrong": ["(?<!nie )do\\s+dolce\\s+gusto"]}
    {"prompt": …, "completion": …, "answerable": false, "wrong": ["otw\\w*[^.]{0,20}gda[nń]sk"]}

`facts` are regular expressions a right answer must all contain, `wrong` ones it must not
(what a wrong answer says while naming the right keyword: the figure tied to the wrong thing,
a "yes" where the answer is no; for an unanswerable record, the invented answer); all are
case-insensitive searches. A regex that does not compile is a located error
(file:line:facts or :wrong), exit 1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from specialist.data.example import Example
from specialist.errors import SpecialistError


def facts_problems(record: Any, where: str) -> list[str]:
    """Located problems of a record's `facts`, `wrong` and `answerable` fields (empty when fine)."""
    if not isinstance(record, dict):
        return []
    problems = []
    for key in ("facts", "wrong"):
        regexes = record.get(key)
        if regexes is None:
            continue
        if not isinstance(regexes, list) or not all(isinstance(f, str) for f in regexes):
            problems.append(f"{where}:{key}: E007 expected a list of regular expressions (strings)")
            continue
        for regex in regexes:
            try:
                re.compile(regex, re.IGNORECASE)
            except re.error as exc:
                problems.append(f"{where}:{key}: invalid regular expression {regex!r} ({exc})")
            if not regex.strip():
                problems.append(f"{where}:{key}: empty regular expression (it would match every answer)")
    answerable = record.get("answerable")
    if answerable is not None and not isinstance(answerable, bool):
        problems.append(f"{where}:answerable: E007 expected true or false, got {type(answerable).__name__}")
    return problems


def _raise_problems(path: Path, problems: list[str]) -> None:
    if len(problems) == 1:
        raise SpecialistError(problems[0], exit_code=1)
    if problems:
        shown = "\n".join(problems[:10])
        more = f"\n… and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise SpecialistError(f"{path}: {len(problems)} error(s) in facts/wrong/answerable:\n{shown}{more}",
                              exit_code=1)


def load_eval_examples(path: str | Path) -> list[Example]:
    """Every example of a dataset file, or a located error for a bad record or a bad
    `facts`/`wrong`/`answerable` field (exit 1)."""
    from specialist.data import load_examples

    path = Path(path)
    if not path.exists():
        raise SpecialistError(f"{path}: no such file")
    examples = load_examples(path)
    _raise_problems(path, [p for ex in examples for p in facts_problems(ex.source, ex.location)])
    return examples
