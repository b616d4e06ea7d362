"""A knowledge base as passages with stable ids, from Markdown/text files, a folder of them,
or JSONL.

- Markdown (.md, .markdown): cut at headings; each section's paragraphs are passages. The id is
  `<file>#<heading slug>` (`-2`, `-3` … for a section's later paragraphs), so editing one section
  never renames another. The heading is the passage's title.
- Text (.txt): one passage per paragraph (blank-line separated); the id is `<file>#<slug of the
  paragraph's first words>`.
- JSONL: one object per line with "id" and "text" (optional "title").
- A folder: every such file in it, recursively, in name order; ids carry the relative path.

Paragraphs longer than MAX_WORDS are cut at sentence ends (`~2`, `~3` … ids). Bad files get the
data checks' located errors and codes (E001 invalid JSON, E004 missing field, E010 empty,
E012 not UTF-8 or binary, E016 duplicate id)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError
from specialist.io import text_lines

TEXT_SUFFIXES = (".md", ".markdown", ".txt")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl")
MAX_WORDS = 150
MAX_FILE_BYTES = 50 << 20  # a knowledge file larger than this is almost certainly not one

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""
    file: str = ""
    line: int = 0  # where the passage starts in its file

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KnowledgeError:
    """A located problem of a knowledge file: file:line:field, a stable code, one line."""

    code: str
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f":{self.field}" if self.field else "")
        return f"{where}: {self.code} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class KnowledgeBase:
    passages: list[Passage]
    source: str  # the path it was read from
    errors: list[KnowledgeError] = field(default_factory=list)
    files: int = 0

    @property
    def fingerprint(self) -> str:
        """sha256 over the passages (ids, titles, texts): a run records exactly what it knew."""
        h = hashlib.sha256()
        for p in self.passages:
            h.update(json.dumps([p.id, p.title, p.text], ensure_ascii=False).encode("utf-8"))
            h.update(b"\n")
        return "sha256:" + h.hexdigest()

    def by_id(self, passage_id: str) -> Passage | None:
        return next((p for p in self.passages if p.id == passage_id), None)

    def __len__(self) -> int:
        return len(self.passages)


def slug(text: str, max_len: int = 48) -> str:
    """Lower-case ASCII words joined by '-' (Polish ł and the diacritics folded)."""
    folded = unicodedata.normalize("NFKD", text.replace("ł", "l").replace("Ł", "L"))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:max_len].strip("-") or "section"


def _chunks(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """A paragraph as one piece, or cut at sentence ends into pieces of at most max_words."""
    if len(text.split()) <= max_words:
        return [text]
    pieces, current = [], []
    for sentence in _SENTENCE_END.split(text):
        if current and len(" ".join([*current, sentence]).split()) > max_words:
            pieces.append(" ".join(current))
            current = []
        current.append(sentence)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _unique(pid: str, seen: set[str]) -> str:
    candidate, n = pid, 2
    while candidate in seen:
        candidate, n = f"{pid}-{n}", n + 1
    seen.add(candidate)
    return candidate


def _paragraphs(lines: list[str], start: int) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each blank-line separated paragraph."""
    buf: list[str] = []
    first = start
    for offset, line in enumerate([*lines, ""]):
        if line.strip():
            if not buf:
                first = start + offset
            buf.append(line.strip())
        elif buf:
            yield first, " ".join(buf)
            buf = []


def _markdown_passages(text: str, file: str, prefix: str) -> Iterator[Passage]:
    seen: set[str] = set()
    heading, body, body_start = "", [], 1

    def flush() -> Iterator[Passage]:
        base = f"{prefix}#{slug(heading)}" if heading else f"{prefix}#intro"
        for n, (line, paragraph) in enumerate(_paragraphs(body, body_start), 1):
            para_id = base if n == 1 else f"{base}-{n}"
            for piece_no, piece in enumerate(_chunks(paragraph), 1):
                pid = para_id if piece_no == 1 else f"{para_id}~{piece_no}"
                yield Passage(_unique(pid, seen), piece, heading, file, line)

    lines = text_lines(text)
    in_fence = False
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            yield from flush()
            heading, body, body_start = m.group(2).strip(), [], number + 1
        else:
            body.append(line)
    yield from flush()


def _text_passages(text: str, file: str, prefix: str) -> Iterator[Passage]:
    seen: set[str] = set()
    for line, paragraph in _paragraphs(text_lines(text), 1):
        for piece in _chunks(paragraph):
            base = f"{prefix}#{slug(' '.join(piece.split()[:6]))}"
            yield Passage(_unique(base, seen), piece, "", file, line)


def _jsonl_passages(text: str, file: str, errors: list[KnowledgeError]) -> Iterator[Passage]:
    from specialist.data.formats import lone_surrogate_field

    for number, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(KnowledgeError("E001", file, number, "", f"invalid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            errors.append(KnowledgeError("E001", file, number, "", "invalid JSON: nested too deeply"))
            continue
        if not isinstance(record, dict):
            errors.append(KnowledgeError("E003", file, number, "", "expected an object {\"id\": …, \"text\": …}"))
            continue
        surrogate = lone_surrogate_field(record) if "\\u" in line else None
        if surrogate is not None:
            errors.append(KnowledgeError("E012", file, number, surrogate, "a lone surrogate escape (\\ud800–\\udfff "
                                         "without its pair): not text"))
            continue
        bad = False
        for name in ("id", "text"):
            value = record.get(name)
            if name not in record:
                errors.append(KnowledgeError("E004", file, number, name, "missing (passages need \"id\" and \"text\")"))
                bad = True
            elif not isinstance(value, (str, int)) or isinstance(value,
                                                                 bool) or (name == "text" and not isinstance(value,
                                                                                                             str)):
                errors.append(KnowledgeError("E007", file, number, name,
                                             f"expected a string, got {type(value).__name__}"))
                bad = True
            elif not str(value).strip():
                errors.append(KnowledgeError("E005", file, number, name, "empty"))
                bad = True
        title = record.get("title", "")
        if not isinstance(title, str):
            errors.append(KnowledgeError("E007", file, number, "title",
                                         f"expected a string, got {type(title).__name__}"))
            bad = True
        if not bad:
            yield Passage(str(record["id"]).strip(), " ".join(record["text"].split()), title.strip(), file, number)


def _read_text(path: Path, errors: list[KnowledgeError]) -> str | None:
    from specialist.data.formats import check_text_file

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            errors.append(KnowledgeError("E011", str(path), 1, "", f"larger than {MAX_FILE_BYTES >> 20} MB"))
            return None
        check_text_file(path)
        return path.read_text(encoding="utf-8-sig")
    except SpecialistError as exc:  # binary, UTF-16, not UTF-8: the message is already located
        message = str(exc)
        where, _, rest = message.partition(": E012 ")
        line = int(where.rsplit(":", 1)[1]) if where.count(":") and where.rsplit(":", 1)[1].isdigit() else 1
        errors.append(KnowledgeError("E012", str(path), line, "", rest or message))
    except UnicodeDecodeError as exc:
        errors.append(KnowledgeError("E012", str(path), 1, "", f"not UTF-8 ({exc.reason} at byte {exc.start})"))
    except OSError as exc:
        errors.append(KnowledgeError("E012", str(path), 1, "", f"cannot read ({exc.strerror or exc})"))
    return None


def knowledge_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return [path]


def read_knowledge(path: str | Path) -> KnowledgeBase:
    """Every passage and every located error; never raises for bad content (only for a path
    that does not exist)."""
    root = Path(path)
    if not root.exists():
        raise SpecialistError(f"{root}: no such file or folder (--knowledge takes a Markdown/text file, a folder "
                              "of them, or a JSONL file of passages)")
    errors: list[KnowledgeError] = []
    passages: list[Passage] = []
    files = knowledge_files(root)
    if root.is_dir() and not files:
        errors.append(KnowledgeError("E010", str(root), 1, "",
                                     f"no knowledge files in the folder ({', '.join(SUFFIXES)})"))
    for file in files:
        suffix = file.suffix.lower()
        if suffix not in SUFFIXES:
            errors.append(KnowledgeError("E012", str(file), 1, "", f"unsupported file type {suffix or '(none)'}; "
                                         f"use {', '.join(SUFFIXES)}"))
            continue
        text = _read_text(file, errors)
        if text is None:
            continue
        prefix = (file.relative_to(root).with_suffix("").as_posix() if root.is_dir() else file.stem)
        found = list(_jsonl_passages(text, str(file), errors) if suffix == ".jsonl"
                     else _markdown_passages(text, str(file), prefix) if suffix in (".md", ".markdown")
                     else _text_passages(text, str(file), prefix))
        if not found and not any(e.file == str(file) for e in errors):
            errors.append(KnowledgeError("E010", str(file), 1, "", "the file holds no passages"))
        passages.extend(found)
    seen: dict[str, Passage] = {}
    for p in passages:
        if p.id in seen:
            first = seen[p.id]
            errors.append(KnowledgeError("E016", p.file, p.line, "id",
                                         f"duplicate passage id {p.id!r} (first at {first.location})"))
        else:
            seen[p.id] = p
    return KnowledgeBase(list(seen.values()), str(root), errors, len(files))


def load_knowledge(path: str | Path) -> KnowledgeBase:
    """The knowledge base at `path`, or SpecialistError (exit 1) listing its located errors."""
    kb = read_knowledge(path)
    if kb.errors:
        shown = "\n".join(str(e) for e in kb.errors[:10])
        more = f"\n… and {len(kb.errors) - 10} more (run `specialist knowledge check`)" if len(kb.errors) > 10 else ""
        raise SpecialistError(f"{path}: {len(kb.errors)} error(s) in the knowledge base:\n{shown}{more}", exit_code=1)
    return kb
