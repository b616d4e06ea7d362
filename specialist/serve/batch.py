"""Answer a JSONL file of prompts into a JSONL file of answers, in batches, resumably.

Input: one JSON object per line with "prompt" (and optionally "system") or "messages" (a chat
ending with a user turn), and optionally an "id". Every record is keyed by its "id", or by its
line number when it has none.

Output: one JSON object per answered record, appended and fsync'ed batch by batch, so a crash
loses at most the batch in flight. A rerun reads the output first and skips every key already
answered; a torn last line (the crash hit mid-write) is cut off before appending. An output
written for a different input (a key whose prompt differs) is refused rather than mixed.

With a knowledge base, each record's last user turn gets the passages retrieved for it
(models.template.attach_context, the layout training used) and its output line lists their
ids under "passages". An output answered with a knowledge base is not resumed without one (or
the other way round): the file would mix two kinds of answers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specialist.data.formats import lone_surrogate_field
from specialist.errors import Interrupted, SpecialistError
from specialist.inference.generator import Generator
from specialist.inference.sampling import GenerationSettings
from specialist.io import read_text, text_lines
from specialist.models.template import Message, attach_context, build_messages, last_user_text

if TYPE_CHECKING:
    from specialist.knowledge.retrieve import Hit
    from specialist.knowledge.runtime import KnowledgeContext

MAX_REPORTED_ERRORS = 20


@dataclass
class PromptRecord:
    """A prompt to answer, not a data.Example: it has no completion (the answer is what this
    module produces) and carries what resuming needs, its key and the fields echoed back."""

    key: str  # "id:<id>" or "line:<n>"
    line: int
    id: Any
    messages: list[Message]
    source: dict  # the fields echoed into the output (prompt/system/messages)


@dataclass
class BatchSummary:
    total: int
    skipped: int  # already answered in the output
    answered: int
    completion_tokens: int
    seconds: float

    def as_dict(self) -> dict:
        tps = self.completion_tokens / self.seconds if self.seconds > 0 else 0.0
        return {"total": self.total, "skipped": self.skipped, "answered": self.answered,
                "completion_tokens": self.completion_tokens, "seconds": round(self.seconds, 3),
                "tokens_per_second": round(tps, 2)}


def _record_messages(obj: dict, where: str) -> tuple[list[Message], dict]:
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"{where}:messages: must be a non-empty list")
        out: list[Message] = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise ValueError(f"{where}:messages[{i}]: needs role (system/user/assistant) and string content")
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "user":
            raise ValueError(f"{where}:messages: the last message must be the user's")
        return out, {"messages": out}
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}:prompt: missing or empty (give \"prompt\" or \"messages\")")
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"{where}:system: must be a string")
    source = {"prompt": prompt, **({"system": system} if system else {})}
    return build_messages(prompt, system or None), source


def read_prompts(path: Path, default_system: str | None = None) -> list[PromptRecord]:
    """Read and validate the whole input first: a bad line stops the run before any work."""
    lines = text_lines(read_text(path))
    records: list[PromptRecord] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object")
            surrogate = lone_surrogate_field(obj) if "\\u" in raw else None
            if surrogate is not None:
                raise ValueError(f"{where}:{surrogate}: a lone surrogate escape "
                                 "(\\ud800–\\udfff without its pair): not text")
            messages, source = _record_messages(obj, where)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: invalid JSON ({exc.msg})")
            continue
        except RecursionError:
            errors.append(f"{where}: invalid JSON (nested too deeply)")
            continue
        except ValueError as exc:
            errors.append(str(exc))
            continue
        rid = obj.get("id")
        key = f"id:{json.dumps(rid, ensure_ascii=False)}" if rid is not None else f"line:{n}"
        if key in seen:
            errors.append(f"{where}:id: duplicate id {rid!r} (first on line {seen[key]})")
            continue
        seen[key] = n
        if default_system and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": default_system}, *messages]
        records.append(PromptRecord(key, n, rid, messages, source))
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = f"\n… and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise SpecialistError(f"{path}: {len(errors)} bad input line(s):\n" + "\n".join(shown) + more, exit_code=1)
    if not records:
        raise SpecialistError(f"{path}: no prompts", exit_code=1)
    return records


def _output_key(obj: dict) -> str | None:
    if obj.get("id") is not None:
        return f"id:{json.dumps(obj['id'], ensure_ascii=False)}"
    if isinstance(obj.get("line"), int):
        return f"line:{obj['line']}"
    return None


def _cut_torn_tail(output: Path) -> bytes:
    """The output's bytes up to its last complete line; a partial line after it (a write cut
    short) is cut off the file too."""
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(output, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
        data = data[:end]
    return data


def read_answered(output: Path, records: list[PromptRecord], with_knowledge: bool | None = None) -> set[str]:
    """Keys already answered in `output`. Cuts a torn last line off the file (an interrupted
    write), and refuses an output whose answers belong to another input, or (when
    `with_knowledge` is given) were answered with(out) a knowledge base unlike this run."""
    if not output.exists():
        return set()
    data = _cut_torn_tail(output)
    by_key = {r.key: r for r in records}
    done: set[str] = set()
    for n, raw in enumerate(text_lines(data.decode("utf-8", errors="replace")), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SpecialistError(f"{output}:{n}: not a JSON line of answers ({exc.msg}); "
                                  "choose another --output") from exc
        key = _output_key(obj) if isinstance(obj, dict) else None
        record = by_key.get(key) if key else None
        if record is None or any(obj.get(k) != v for k, v in record.source.items()):
            raise SpecialistError(f"{output}:{n}: this answer does not belong to the input (key {key}); "
                                  "the output was written for another file — choose another --output")
        if with_knowledge is not None and ("passages" in obj) != with_knowledge:
            then, now = ("with", "without") if "passages" in obj else ("without", "with")
            raise SpecialistError(f"{output}:{n}: answered {then} a knowledge base, this run is {now} one; "
                                  "choose another --output (or answer it the same way)")
        done.add(key)
    return done


def with_context(messages: list[Message], knowledge: KnowledgeContext | None) -> tuple[list[Message], list[Hit]]:
    """`messages` with the passages retrieved for the last user turn put into it (the same
    layout build_messages(context=...) gives training), and those hits."""
    question = last_user_text(messages) if knowledge is not None else None
    if question is None:
        return messages, []
    hits = knowledge.retrieve(question)
    return attach_context(messages, [h.passage for h in hits]), hits


def _append(fh, rows: list[dict]) -> None:
    fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    fh.flush()
    os.fsync(fh.fileno())


def answer_file(generator: Generator, input_path: Path, output_path: Path, settings: GenerationSettings,
                batch_size: int = 8, system: str | None = None,
                on_progress: Callable[[int, int], None] | None = None,
                knowledge: KnowledgeContext | None = None) -> BatchSummary:
    """Answer every prompt of `input_path` not yet in `output_path`. on_progress(answered
    in this batch, completion tokens) is called after each batch is safely on disk. With
    `knowledge`, each prompt is answered with the passages retrieved for its last user turn."""
    records = read_prompts(input_path, system)
    done = read_answered(output_path, records, with_knowledge=knowledge is not None)
    todo = [r for r in records if r.key not in done]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tokens = 0
    kept = len(records) - len(todo)
    try:
        with open(output_path, "a", encoding="utf-8") as fh:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                prepared = [with_context(r.messages, knowledge) for r in chunk]
                answers = generator.generate([m for m, _ in prepared], settings, batch_size=batch_size)
                rows = []
                for r, (_, hits), a in zip(chunk, prepared, answers):
                    key_fields = {"id": r.id} if r.id is not None else {"line": r.line}
                    passages = {"passages": [h.passage.id for h in hits]} if knowledge is not None else {}
                    rows.append({**key_fields, **r.source, "answer": a.text, "finish_reason": a.finish_reason,
                                 "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
                                 **passages})
                    tokens += a.completion_tokens
                _append(fh, rows)
                kept += len(rows)
                if on_progress:
                    on_progress(len(chunk), sum(a.completion_tokens for a in answers))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through the CLI's handler
        _cut_torn_tail(output_path)  # the signal may have landed inside a write
        # or between a write and the count: the file says what was kept
        kept = sum(1 for line in output_path.read_bytes().split(b"\n") if line.strip())
        raise Interrupted(f"interrupted: {kept} of {len(records)} answers kept in {output_path}; "
                          "run the same command again to answer the rest", exc) from None
    return BatchSummary(len(records), len(records) - len(todo), len(todo), tokens, time.perf_counter() - t0)
