"""Raw records → canonical Examples, or located errors (file:line:field and a reason).

Every record is checked on its own, so one bad record never hides the next; reading stops
only after `max_errors` errors (the file is then most likely in another format)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specialist.data.example import Example
from specialist.data.findings import DataError
from specialist.data.formats import DEFAULT_MAX_RECORD_BYTES, RawRecord, read_records
from specialist.errors import SpecialistError
from specialist.models.template import Message

ROLES = ("system", "user", "assistant")
META_FIELDS = ("label", "labels", "category", "topic", "intent", "id", "tag")
DEFAULT_MAX_ERRORS = 1000


@dataclass
class LoadedData:
    """Everything a check needs from reading one file."""

    file: str
    format: str
    records: int = 0  # records seen (valid or not)
    examples: list[Example] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def valid(self) -> int:
        return len(self.examples)

    @property
    def schemas(self) -> Counter:
        return Counter(e.schema for e in self.examples)


# ---------------------------------------------------------------- one record
def _text_field(rec: dict, name: str, file: str, line: int, required: bool,
                errors: list[DataError], label: str | None = None) -> str | None:
    """A string field: present, a string, not empty, not only whitespace."""
    label = label or name
    if name not in rec:
        if required:
            errors.append(DataError("E004", file, line, label, f"missing field '{label}'"))
        return None
    value = rec[name]
    if value is None and not required:
        return None
    if not isinstance(value, str):
        errors.append(DataError("E007", file, line, label, f"'{label}' is {_type_name(value)}, expected a string"))
        return None
    if value == "":
        if required:
            errors.append(DataError("E005", file, line, label, f"'{label}' is empty"))
        return None
    if not value.strip():
        errors.append(DataError("E006", file, line, label, f"'{label}' holds only whitespace"))
        return None
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def detect_schema(rec: dict) -> str | None:
    if "messages" in rec:
        return "chat"
    if "instruction" in rec:
        return "alpaca"
    if "prompt" in rec or "completion" in rec:
        return "prompt-completion"
    return None


def _meta(rec: dict) -> dict[str, str]:
    out = {}
    for key in META_FIELDS:
        value = rec.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            out[key] = str(value).strip()
    return out


def to_example(raw: RawRecord) -> tuple[Example | None, list[DataError]]:
    """One raw record → (Example, []) or (None, errors)."""
    if raw.error is not None:
        return None, [raw.error]
    file, line, rec = raw.file, raw.line, raw.value
    if not isinstance(rec, dict):
        return None, [DataError("E003", file, line, "", f"the record is {_type_name(rec)}, expected an object")]
    schema = detect_schema(rec)
    errors: list[DataError] = []
    if schema is None:
        keys = ", ".join(sorted(map(str, rec))[:8]) or "none"
        return None, [DataError("E004", file, line, "",
                                f"no prompt/completion, messages or instruction/output fields (keys: {keys})")]
    if schema == "chat":
        messages, completion = _chat(rec, file, line, errors)
    else:
        system = _text_field(rec, "system", file, line, False, errors)
        if schema == "alpaca":
            instruction = _text_field(rec, "instruction", file, line, True, errors)
            extra = _text_field(rec, "input", file, line, False, errors)
            completion = _text_field(rec, "output", file, line, True, errors)
            prompt = instruction if not extra or instruction is None else f"{instruction}\n\n{extra}"
        else:
            prompt = _text_field(rec, "prompt", file, line, True, errors)
            completion = _text_field(rec, "completion", file, line, True, errors)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user",
                                                                                   "content": prompt or ""}]
    if errors:
        return None, errors
    return Example(messages, completion, file, line, schema, _meta(rec), rec, *_eval_fields(rec)), []


def _eval_fields(rec: dict) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """`facts`, `wrong` and `answerable` as the record gives them, when they have their types;
    their located errors are evaluation's (evaluate.examples), data checks accept any value."""
    def regexes(key: str) -> tuple[str, ...]:
        value = rec.get(key)
        return tuple(value) if isinstance(value, list) and all(isinstance(f, str) for f in value) else ()

    answerable = rec.get("answerable")
    return regexes("facts"), regexes("wrong"), answerable if isinstance(answerable, bool) else True


def _chat(rec: dict, file: str, line: int, errors: list[DataError]) -> tuple[list[Message], str]:
    messages = rec["messages"]
    if not isinstance(messages, list):
        errors.append(DataError("E007", file, line, "messages",
                                f"'messages' is {_type_name(messages)}, expected a list"))
        return [], ""
    if not messages:
        errors.append(DataError("E005", file, line, "messages", "'messages' is an empty list"))
        return [], ""
    out: list[Message] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            errors.append(DataError("E007", file, line, where,
                                    f"{where} is {_type_name(msg)}, expected an object with role and content"))
            continue
        role = msg.get("role")
        if "role" not in msg:
            errors.append(DataError("E004", file, line, f"{where}.role", f"missing field '{where}.role'"))
        elif not isinstance(role, str) or role not in ROLES:
            errors.append(DataError("E008", file, line, f"{where}.role",
                                    f"unknown role {role!r} (expected system, user or assistant)"))
        elif role == "system" and i != 0:
            errors.append(DataError("E013", file, line, f"{where}.role", "a system message after the first message"))
        content = _text_field(msg, "content", file, line, True, errors, f"{where}.content")
        if isinstance(role, str) and content is not None:
            out.append({"role": role, "content": content})
    if errors:
        return [], ""
    if out[-1]["role"] != "assistant":
        errors.append(DataError("E009", file, line, f"messages[{len(out) - 1}].role",
                                f"the last message is from {out[-1]['role']!r}, expected 'assistant'"))
    elif not any(m["role"] == "user" for m in out[:-1]):
        errors.append(DataError("E014", file, line, "messages", "no user message before the assistant answer"))
    if errors:
        return [], ""
    return out[:-1], out[-1]["content"]


# ---------------------------------------------------------------- one file
def read_dataset(path: str | Path, format: str | None = None, max_errors: int = DEFAULT_MAX_ERRORS,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> LoadedData:
    """Read and validate a whole file: valid examples plus located errors."""
    from specialist.data.formats import detect_format

    path = Path(path)
    fmt = format or (detect_format(path) if path.exists() else "jsonl")
    data = LoadedData(str(path), fmt)
    for raw in read_records(path, fmt, max_record_bytes):
        data.records += 1
        example, errors = to_example(raw)
        if example is not None:
            data.examples.append(example)
            continue
        data.errors.extend(errors)
        if len(data.errors) >= max_errors:
            data.stopped_early = True
            data.errors.append(DataError("E015", str(path), raw.line, "",
                                         f"stopped after {max_errors} errors; "
                                         f"records after line {raw.line} were not checked"))
            break
    if data.records == 0:
        data.errors.append(DataError("E010", str(path), 1, "", "the file holds no records"))
    return data


def errors_summary(errors: Iterable[DataError], limit: int = 10) -> str:
    errors = list(errors)
    lines = [str(e) for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"… and {len(errors) - limit} more (run `specialist data check` for all)")
    return "\n".join(lines)


def load_examples(path: str | Path, format: str | None = None) -> list[Example]:
    """The training stage's entry point: every example of a dataset file, or SpecialistError
    (exit code 1) listing the located errors when the data has any. Unreadable files raise
    SpecialistError with exit code 2."""
    data = read_dataset(path, format)
    if data.errors:
        raise SpecialistError(
            f"{path}: {len(data.errors)} error(s) in the data ({data.valid} of {data.records} records valid):\n"
            + errors_summary(data.errors), exit_code=1)
    return data.examples
