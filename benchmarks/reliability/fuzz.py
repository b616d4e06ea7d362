"""Fuzzed inputs: mutated real files through every loader, the way the command line reads them.

A corpus of real files (the coffee-shop data, knowledge, eval rules, the test corpus, a
training config) is mutated — byte flips, truncation, insertions and deletions, spliced
lines, other encodings, huge lines, NUL bytes, BOMs, CRLF, deep nesting, wrong types — and
each generated file goes through the command the user would run on it (`data check --json`,
`data convert`, `data split`, `knowledge check --json`, `knowledge search`, `train --config
… --dry-run`), in-process through `specialist.cli.main`, or through the public loader where
the command would go on to load a model (eval rule files, `generate --input` prompts).

Each run must hold four invariants:
  * no traceback: only SpecialistError-style one-line errors (and SystemExit 0/1/2);
  * exit codes as documented: 0 ok, 1 the input has errors, 2 usage or unreadable input;
  * every error located: file:line:field where a line exists, the file otherwise (JSON
    documents: every error carries its file and line; stderr: the error names the input);
  * the input is never modified.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECTION = "fuzz"
DESCRIPTION = "mutated real files through every loader: tracebacks, unlocated errors, exit codes, modified inputs"
GOAL = "0 tracebacks, 0 unlocated errors, 0 bad exit codes, 0 modified inputs"

ROOT = Path(__file__).resolve().parents[2]
COFFEE = ROOT / "examples" / "coffee"
CORPUS = ROOT / "tests" / "data_corpus"
PER_FILE_TIMEOUT = 60  # seconds; a loader that takes longer on a small file is a hang


# ------------------------------------------------------------------ outcomes
@dataclass
class Outcome:
    target: str
    case: str  # the mutation(s) that made the file
    command: str
    exit_code: int | None
    traceback: str | None = None
    unlocated: str | None = None
    bad_exit: bool = False
    modified: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.traceback or self.unlocated or self.bad_exit or self.modified)


@dataclass
class Run:
    """What one in-process command did."""

    exit_code: int | None
    stdout: str
    stderr: str
    traceback: str | None


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_cli(args: list[str]) -> Run:
    """`specialist ARGS` in this process, as the console script runs it (cli.main), with
    stdout/stderr captured; an exception escaping main() is a traceback the user would see."""
    from typer.testing import CliRunner

    from specialist import cli

    runner = CliRunner()
    saved_argv = sys.argv
    tb = None
    code: int | None = 0
    with runner.isolation() as streams:
        out, err = streams[0], streams[1]
        sys.argv = ["specialist", *args]
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(PER_FILE_TIMEOUT)
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except _Timeout:
            code, tb = None, f"hang: no answer within {PER_FILE_TIMEOUT} s"
        except BaseException:  # noqa: BLE001 - anything else reaching the user is the finding
            code, tb = None, traceback.format_exc()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            sys.argv = saved_argv
            sys.stdout.flush()  # the captured streams are buffered text wrappers
            sys.stderr.flush()
        stdout, stderr = out.getvalue(), err.getvalue()
    decode = lambda b: b.decode("utf-8", errors="replace") if isinstance(b, bytes) else b  # noqa: E731
    stdout, stderr = decode(stdout), decode(stderr)
    if tb is None and "Traceback (most recent call last)" in stderr:
        tb = stderr
    return Run(code, stdout, stderr, tb)


def run_api(fn: Callable[[], Any]) -> Run:
    """A public loader called as the command calls it: SpecialistError → its exit code and one
    `error:` line, as cli.main prints it; any other exception is a traceback."""
    from specialist.errors import SpecialistError

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(PER_FILE_TIMEOUT)
    try:
        fn()
        return Run(0, "", "", None)
    except SpecialistError as exc:
        return Run(exc.exit_code, "", f"error: {exc}\n", None)
    except _Timeout:
        return Run(None, "", "", f"hang: no answer within {PER_FILE_TIMEOUT} s")
    except BaseException:  # noqa: BLE001
        return Run(None, "", "", traceback.format_exc())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ locating errors
def _names(path: Path) -> list[str]:
    """The strings an error about `path` may name it by: itself, or a file inside it."""
    if path.is_dir():
        return [str(path)] + [str(p) for p in path.rglob("*")]
    return [str(path)]


def stderr_unlocated(run: Run, path: Path) -> str | None:
    """The error line, if the command failed without naming the input it failed on."""
    if run.exit_code in (0, None):
        return None
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    if not lines:
        return f"exit {run.exit_code} without an `error:` line: {run.stderr[-300:]!r}"
    first = lines[0]
    if not any(name in first for name in _names(path)):
        return f"error does not name the input: {first[:300]!r}"
    if run.exit_code == 1 and not any(name in run.stderr for name in _names(path)):
        return f"exit 1 without a located error: {run.stderr[:300]!r}"
    return None


def json_errors_unlocated(doc: Any, path: Path) -> str | None:
    """A `--json` document whose errors lack a file inside the input or a line ≥ 1."""
    names = set(_names(path))
    for e in doc.get("errors", []) if isinstance(doc, dict) else []:
        if not isinstance(e, dict) or e.get("file") not in names or not isinstance(e.get("line"), int) or e["line"] < 1:
            return f"unlocated error in the JSON document: {json.dumps(e, ensure_ascii=True)[:300]}"
    return None


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode("utf-8", "surrogateescape"))
            h.update(p.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------ mutations
def _json_value(rng: random.Random, depth: int = 0) -> Any:
    """A value of a random JSON type, hostile strings included."""
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 10**400 if rng.random() < 0.1 else 3, 1.5])
    if kind == 3:
        return rng.choice([float("nan"), float("inf"), -0.0, 1e308])
    if kind in (4, 5):
        return rng.choice(HOSTILE_STRINGS)
    if kind in (6, 7):
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["role", "content", "prompt", "completion", "messages", "id", "text", "x", ""]): _json_value(
            rng, depth + 1
        )
        for _ in range(rng.randrange(4))
    }


HOSTILE_STRINGS = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\x1b[31mred\x1b[0m",
    "\u202eevil",
    "\ud800",
    "x\udfffy",
    "\ufeffbom",
    "<start_of_turn>model\n",
    "<|im_start|>assistant\n",
    "<|im_end|>",
    "<eos>",
    "<bos>",
    "### Assistant:\n",
    "[red]markup[/red]",
    "[/]",
    "{{ 7*7 }}",
    "{% raw %}",
    "%s%n",
    "../../etc/passwd",
    "C:\\con\\aux",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ✓ zażółć gęślą jaźń",
    "\r\n\r\n",
    "a" * 5000,
    "ﷺ" * 50,
    "\u0085\u2028\u2029",
]


def _records_mutation(data: bytes, rng: random.Random) -> bytes:
    """Parse JSON lines (or an array), replace one field's value with a wrong type, write back."""
    text = data.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
        records, array = (doc if isinstance(doc, list) else [doc]), True
    except (json.JSONDecodeError, RecursionError):
        records, array = [], False
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError):
                records.append(line)
    dicts = [r for r in records if isinstance(r, dict)]
    if not dicts:
        return data
    target: Any = rng.choice(dicts)
    # descend into a nested object or list now and then (messages[i].content …)
    for _ in range(rng.randrange(3)):
        children = [
            v for v in (target.values() if isinstance(target, dict) else target) if isinstance(v, (dict, list)) and v
        ]
        if not children:
            break
        target = rng.choice(children)
    value = _json_value(rng)
    if isinstance(target, dict):
        key = rng.choice([*list(target), "messages", "prompt", "completion", "instruction", "output", "id", "text"])
        if rng.random() < 0.15:
            target.pop(key, None)
        else:
            target[key] = value
    elif target:
        target[rng.randrange(len(target))] = value
    dumps = lambda r: r if isinstance(r, str) else json.dumps(r, ensure_ascii=rng.random() < 0.5, allow_nan=True)  # noqa: E731
    if array:
        return json.dumps(records, ensure_ascii=False, indent=2, allow_nan=True).encode("utf-8", "surrogatepass")
    return ("\n".join(dumps(r) for r in records) + "\n").encode("utf-8", "surrogatepass")


def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] = b[i] ^ (1 << rng.randrange(8)) if rng.random() < 0.7 else rng.randrange(256)
    return bytes(b)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _insert(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data) + 1)
    junk = rng.choice(
        [
            b"\x00",
            b"\x00" * 7,
            b"\xff\xfe",
            b"\xc3",
            b"\xed\xa0\x80",
            b'"',
            b"{",
            b"}",
            b"[",
            b",",
            b"\n",
            b"\r",
            b"\\",
            b"\\u",
            b"\\ud800",
            b"\t",
            b"\x1b[2J",
            b"#",
            b"---\n",
            b"- ",
            b": ",
            b"!!python/object/apply:os.system ['true']",
            b"&a [*a]",
            bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))),
        ]
    )
    return data[:i] + junk + data[i:]


def _delete(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 64) :]


def _duplicate_lines(data: bytes, rng: random.Random) -> bytes:
    lines = data.splitlines(keepends=True)
    if not lines:
        return data
    i = rng.randrange(len(lines))
    return b"".join(lines[:i] + [lines[i]] * rng.randint(2, 5) + lines[i + 1 :])


def _shuffle_lines(data: bytes, rng: random.Random) -> bytes:
    lines = data.splitlines(keepends=True)
    rng.shuffle(lines)
    return b"".join(lines)


def _encoding(data: bytes, rng: random.Random) -> bytes:
    text = data.decode("utf-8", errors="replace")
    enc = rng.choice(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1250", "latin-1", "utf-8-sig", "utf-7", "cp037"])
    return text.encode(enc, errors="replace")


def _huge_line(data: bytes, rng: random.Random) -> bytes:
    size = rng.choice([(1 << 20) - 20, (1 << 20) + 1, 3 << 20])
    filler = rng.choice([b"a", b"\xc5\x82", b" ", b"\x00", b'{"prompt": "' + b"x" * 10])
    line = (filler * (size // len(filler) + 1))[:size]
    if rng.random() < 0.5:
        line = b'{"prompt": "' + line + b'", "completion": "ok"}'
    lines = data.splitlines(keepends=True)
    i = rng.randrange(len(lines) + 1)
    return b"".join([*lines[:i], line + b"\n", *lines[i:]])


def _nul(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + b"\x00" * rng.randint(1, 4) + data[i:]


def _bom(data: bytes, rng: random.Random) -> bytes:
    bom = rng.choice(
        [codecs.BOM_UTF8, codecs.BOM_UTF8 * 2, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
    )
    return bom + data if rng.random() < 0.8 else data + bom


def _line_ends(data: bytes, rng: random.Random) -> bytes:
    choice = rng.choice([b"\r\n", b"\r", b"\n\n", b"\x85", b"\xe2\x80\xa8", b"\x0b", b"\x0c"])
    return data.replace(b"\r\n", b"\n").replace(b"\n", choice)


def _nesting(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([50, 900, 5000, 100_000])
    nested = rng.choice(
        [
            b"[" * depth + b"]" * depth,
            b'{"a":' * depth + b"1" + b"}" * depth,
            b"[" * depth,
            b"- " * depth + b"x",
            b'{"messages": ' + b"[" * depth + b"]" * depth + b"}",
        ]
    )
    lines = data.splitlines(keepends=True)
    i = rng.randrange(len(lines) + 1)
    return b"".join([*lines[:i], nested + b"\n", *lines[i:]])


def _splice(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    other = rng.choice(others) if others else data
    a, b = rng.randrange(len(data) + 1), rng.randrange(len(other) + 1)
    return data[:a] + other[b:]


def _empty(data: bytes, rng: random.Random) -> bytes:
    return rng.choice([b"", b"\n", b"   \n\n", codecs.BOM_UTF8, b"\x00", b"[]", b"{}", b"null", b'""', b"---\n", b"~"])


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flip": _flip,
    "truncate": _truncate,
    "insert": _insert,
    "delete": _delete,
    "dup-lines": _duplicate_lines,
    "shuffle-lines": _shuffle_lines,
    "encoding": _encoding,
    "huge-line": _huge_line,
    "nul": _nul,
    "bom": _bom,
    "line-ends": _line_ends,
    "nesting": _nesting,
    "wrong-type": _records_mutation,
    "empty": _empty,
}
# the cheap, common mutations more often than the costly ones (huge lines are megabytes each)
WEIGHTS = {
    "flip": 6,
    "truncate": 4,
    "insert": 6,
    "delete": 3,
    "dup-lines": 2,
    "shuffle-lines": 1,
    "encoding": 2,
    "huge-line": 0.4,
    "nul": 2,
    "bom": 2,
    "line-ends": 2,
    "nesting": 1,
    "wrong-type": 8,
    "empty": 0.5,
    "splice": 2,
}


def mutate(data: bytes, rng: random.Random, others: list[bytes] = (), structural: bool = True) -> tuple[bytes, str]:
    """1–3 stacked mutations of `data` and their names."""
    names = [n for n in WEIGHTS if structural or n != "wrong-type"]
    weights = [WEIGHTS[n] for n in names]
    applied = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        name = rng.choices(names, weights)[0]
        if name == "huge-line" and "huge-line" in applied:
            continue
        data = _splice(data, rng, list(others)) if name == "splice" else MUTATORS[name](data, rng)
        applied.append(name)
    return data, "+".join(applied) or "none"


# ------------------------------------------------------------------ seeds
def _head_lines(path: Path, n: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[:n])


def _coffee(n: int = 12, start: int = 0) -> list[dict]:
    lines = (COFFEE / "train.jsonl").read_text(encoding="utf-8").splitlines()[start : start + n]
    return [json.loads(line) for line in lines]


def _jsonl(records: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _csv(records: list[dict], delimiter: str) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["prompt", "completion"], delimiter=delimiter, extrasaction="ignore")
    w.writeheader()
    w.writerows(records)
    return buf.getvalue().encode("utf-8")


def seed_files() -> dict[str, list[bytes]]:
    """The real files each text target mutates (datasets cut to a dozen records, so that a
    file costs milliseconds and the mutations, not the size, decide what is tested)."""
    coffee, more = _coffee(12), _coffee(12, 100)
    system = (COFFEE / "system_prompt.txt").read_text(encoding="utf-8").strip()
    chat = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["completion"]},
            ]
        }
        for r in coffee
    ]
    multi = [
        {
            "messages": [
                {"role": "user", "content": a["prompt"]},
                {"role": "assistant", "content": a["completion"]},
                {"role": "user", "content": b["prompt"]},
                {"role": "assistant", "content": b["completion"]},
            ]
        }
        for a, b in zip(coffee, more)
    ]
    alpaca = [{"instruction": r["prompt"], "input": "", "output": r["completion"]} for r in coffee]
    knowledge = sorted((COFFEE / "knowledge").glob("*.md"))
    passages = [{"id": f"p{i}", "title": f"tytuł {i}", "text": r["completion"]} for i, r in enumerate(coffee)]
    config = (
        "# training settings\ndata: train.jsonl\neval_data: eval.jsonl\nmodel: gemma-3-270m\nmethod: lora\n"
        "epochs: 1\nbatch_size: 4\nlr: 0.0002\nmax_length: 256\nlora_r: 8\nlora_alpha: 16\n"
        "target_modules: [q_proj, v_proj]\nsystem_prompt: |\n  " + system.replace("\n", "\n  ") + "\n"
        "knowledge: knowledge\nknowledge_top_k: 3\nlr_scheduler: cosine\nseed: 7\n"
    ).encode("utf-8")
    return {
        "jsonl": [
            _jsonl(coffee),
            _head_lines(COFFEE / "eval.jsonl", 12),
            _head_lines(COFFEE / "facts.jsonl", 8),
            *(p.read_bytes() for p in sorted(CORPUS.glob("*.jsonl"))),
        ],
        "chat": [_jsonl(chat), _jsonl(multi), (CORPUS / "good_chat.jsonl").read_bytes()],
        "alpaca": [_jsonl(alpaca), (CORPUS / "good_alpaca.json").read_bytes()],
        "json": [
            json.dumps(coffee, ensure_ascii=False, indent=2).encode("utf-8"),
            *(p.read_bytes() for p in sorted(CORPUS.glob("*.json"))),
        ],
        "csv": [_csv(coffee, ","), _csv(coffee, ";"), *(p.read_bytes() for p in sorted(CORPUS.glob("*.csv")))],
        "tsv": [_csv(coffee, "\t"), (CORPUS / "good.tsv").read_bytes()],
        "prompts": [
            _jsonl([{"id": i, "prompt": r["prompt"]} for i, r in enumerate(coffee)]),
            _jsonl([{"messages": m["messages"][:-1]} for m in chat]),
        ],
        "knowledge-md": [p.read_bytes() for p in knowledge],
        "knowledge-txt": [b"\n\n".join(r["completion"].encode("utf-8") for r in coffee)],
        "knowledge-jsonl": [_jsonl(passages)],
        "config": [config],
        "rules": [(COFFEE / "eval.yaml").read_bytes(), (ROOT / "examples" / "legal" / "eval.yaml").read_bytes()],
    }


# ------------------------------------------------------------------ targets
@dataclass
class Target:
    """One input kind: how to make a fuzzed file of it and which command reads it."""

    name: str
    make: Callable[[Path, random.Random], tuple[Path, str]]  # (input path, mutation names)
    check: Callable[[Path, Path, int], tuple[str, Run, str | None]]  # (command, run, unlocated)


class Fuzzer:
    def __init__(self, work: Path, seed: int = 0) -> None:
        self.work = work
        self.seed = seed
        self.seeds = seed_files()
        self.support = work / "support"
        self.support.mkdir(parents=True, exist_ok=True)
        (self.support / "train.jsonl").write_bytes(_jsonl(_coffee(8)))
        self._hf_template: Path | None = None
        self._parquet_template: bytes | None = None
        self.targets = self._targets()
        self._patched = False

    # ---- making files
    def _text(self, kind: str, suffix: str) -> Callable[[Path, random.Random], tuple[Path, str]]:
        def make(dest: Path, rng: random.Random) -> tuple[Path, str]:
            seeds = self.seeds[kind]
            data, case = mutate(rng.choice(seeds), rng, seeds)
            path = dest.with_suffix(suffix)
            path.write_bytes(data)
            return path, case

        return make

    def _make_parquet(self, dest: Path, rng: random.Random) -> tuple[Path, str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = dest.with_suffix(".parquet")
        if rng.random() < 0.5:  # well-formed Parquet, hostile contents and column types
            records = _coffee(rng.randint(0, 12))
            case = "columns"
            for r in records:
                if rng.random() < 0.4:
                    key = rng.choice(["prompt", "completion", "messages", "extra"])
                    r[key] = _json_value(rng)
                    case = "wrong-type"
            try:
                table = pa.Table.from_pylist(records) if records else pa.table({"prompt": pa.array([], pa.string())})
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                table = pa.table({"prompt": [json.dumps(r, default=str) for r in records]})
                case = "stringified"
            try:
                pq.write_table(table, path)
                return path, case
            except (pa.ArrowException, UnicodeEncodeError):
                pass
        if self._parquet_template is None:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(_coffee(12)), buf)
            self._parquet_template = buf.getvalue()
        data, case = mutate(self._parquet_template, rng, structural=False)
        path.write_bytes(data)
        return path, "bytes:" + case

    def _make_hf(self, dest: Path, rng: random.Random) -> tuple[Path, str]:
        import datasets

        if self._hf_template is None:
            self._hf_template = self.support / "hf-template"
            if not (self._hf_template / "dataset_info.json").exists():  # made by an earlier worker
                datasets.Dataset.from_list(_coffee(12)).save_to_disk(str(self._hf_template))
        path = dest.with_suffix("")
        shutil.copytree(self._hf_template, path)
        files = sorted(p for p in path.rglob("*") if p.is_file())
        roll = rng.random()
        if roll < 0.15:
            victim = rng.choice(files)
            victim.unlink()
            return path, f"deleted {victim.name}"
        if roll < 0.3:  # a well-formed dataset with odd columns
            shutil.rmtree(path)
            rows = _coffee(rng.randint(1, 6))
            for r in rows:
                r[rng.choice(["prompt", "completion", "messages"])] = rng.choice([*HOSTILE_STRINGS[:8], None, "x"])
            try:
                ds = datasets.Dataset.from_list(rows)
                if rng.random() < 0.3:
                    ds = datasets.DatasetDict(
                        {"train": ds, "test": ds} if rng.random() < 0.5 else {"other": ds, "x": ds}
                    )
                ds.save_to_disk(str(path))
            except Exception:  # noqa: BLE001 - a value datasets itself refuses: fall back to the template
                shutil.copytree(self._hf_template, path, dirs_exist_ok=True)
            return path, "columns"
        victim = rng.choice(files)
        data, case = mutate(victim.read_bytes(), rng, structural=victim.suffix == ".json")
        victim.write_bytes(data)
        return path, f"{victim.name}:{case}"

    def _make_knowledge_folder(self, dest: Path, rng: random.Random) -> tuple[Path, str]:
        path = dest.with_suffix("")
        path.mkdir()
        cases = []
        for src in rng.sample(sorted((COFFEE / "knowledge").glob("*.md")), rng.randint(1, 4)):
            sub = path / rng.choice(["", "a", "a/b", ".hidden"]) / src.name
            sub.parent.mkdir(parents=True, exist_ok=True)
            data = src.read_bytes()
            if rng.random() < 0.5:
                data, case = mutate(data, rng, self.seeds["knowledge-md"])
                cases.append(case)
            sub.write_bytes(data)
        extra = rng.random()
        if extra < 0.2:
            (path / "binary.md").write_bytes(bytes(rng.randrange(256) for _ in range(200)))
            cases.append("binary.md")
        elif extra < 0.35:
            (path / "passages.jsonl").write_bytes(mutate(self.seeds["knowledge-jsonl"][0], rng)[0])
            cases.append("passages.jsonl")
        elif extra < 0.45:
            (path / "notes.txt").write_bytes(b"")
            cases.append("empty notes.txt")
        elif extra < 0.5:
            (path / "dir.md").mkdir()
            cases.append("folder named dir.md")
        return path, "+".join(cases) or "copy"

    # ---- commands
    def _data_check(self, path: Path, out: Path, i: int) -> tuple[str, Run, str | None]:
        which = i % 6
        if which == 4:
            target = out / "converted.jsonl"
            run = run_cli(
                [
                    "data",
                    "convert",
                    str(path),
                    "--to",
                    ["chat", "openai", "prompt-completion"][i % 3],
                    "--out",
                    str(target),
                    "--overwrite",
                ]
            )
            bad = stderr_unlocated(run, path) or (_jsonl_unreadable(target) if run.exit_code == 0 else None)
            return "data convert", run, bad
        if which == 5:
            run = run_cli(
                ["data", "split", str(path), "--eval-fraction", "0.3", "--out", str(out / "split"), "--overwrite"]
            )
            bad = stderr_unlocated(run, path)
            if run.exit_code == 0:
                bad = (
                    bad
                    or _jsonl_unreadable(out / "split" / "train.jsonl")
                    or _jsonl_unreadable(out / "split" / "eval.jsonl")
                )
            return "data split", run, bad
        run = run_cli(["data", "check", str(path), "--json"])
        return "data check --json", run, self._json_located(run, path)

    def _json_located(self, run: Run, path: Path) -> str | None:
        if run.exit_code == 2:
            return stderr_unlocated(run, path)
        if run.exit_code not in (0, 1):
            return None
        try:
            doc = json.loads(run.stdout)
        except json.JSONDecodeError:
            return f"--json printed no JSON document: {run.stdout[:200]!r}"
        if run.exit_code == 1 and not doc.get("errors"):
            return "exit 1 with no errors in the document"
        if run.exit_code == 0 and doc.get("errors"):
            return "exit 0 with errors in the document"
        return json_errors_unlocated(doc, path)

    def _knowledge(self, path: Path, out: Path, i: int) -> tuple[str, Run, str | None]:
        if i % 4 == 3:
            run = run_cli(["knowledge", "search", "--knowledge", str(path), "ile kosztuje dostawa?", "--json"])
            return "knowledge search --json", run, stderr_unlocated(run, path)
        run = run_cli(["knowledge", "check", str(path), "--json"])
        return "knowledge check --json", run, self._json_located(run, path)

    def _config(self, path: Path, out: Path, i: int) -> tuple[str, Run, str | None]:
        self._patch_dry_run()
        run = run_cli(["train", "--config", str(path), "--dry-run", "--out", str(out / "run")])
        return "train --config --dry-run", run, stderr_unlocated(run, path)

    def _rules(self, path: Path, out: Path, i: int) -> tuple[str, Run, str | None]:
        from specialist.evaluate.rules import load_rules, score_rules

        def load() -> None:
            rules = load_rules(path)
            score_rules(rules[:20], ["Cześć! Mamy kawę z Etiopii, chętnie pomożemy.", ""])

        run = run_api(load)
        return "load_rules (eval --rules)", run, stderr_unlocated(run, path)

    def _prompts(self, path: Path, out: Path, i: int) -> tuple[str, Run, str | None]:
        from specialist.serve.batch import read_prompts

        run = run_api(lambda: read_prompts(path, "system" if i % 2 else None))
        return "read_prompts (generate --input)", run, stderr_unlocated(run, path)

    def _patch_dry_run(self) -> None:
        """`train --dry-run` goes on to tokenize with the model; the settings are what is fuzzed."""
        if not self._patched:
            import specialist.train.cli_support as support

            support.show_dry_run = lambda config: None
            self._patched = True

    def _targets(self) -> list[Target]:
        data = self._data_check
        return [
            Target("jsonl", self._text("jsonl", ".jsonl"), data),
            Target("chat", self._text("chat", ".jsonl"), data),
            Target("alpaca", self._text("alpaca", ".json"), data),
            Target("json-array", self._text("json", ".json"), data),
            Target("csv", self._text("csv", ".csv"), data),
            Target("tsv", self._text("tsv", ".tsv"), data),
            Target("parquet", self._make_parquet, data),
            Target("saved-dataset", self._make_hf, data),
            Target("knowledge-md", self._text("knowledge-md", ".md"), self._knowledge),
            Target("knowledge-txt", self._text("knowledge-txt", ".txt"), self._knowledge),
            Target("knowledge-jsonl", self._text("knowledge-jsonl", ".jsonl"), self._knowledge),
            Target("knowledge-folder", self._make_knowledge_folder, self._knowledge),
            Target("config-yaml", self._text("config", ".yaml"), self._config),
            Target("eval-rules", self._text("rules", ".yaml"), self._rules),
            Target("prompts-jsonl", self._text("prompts", ".jsonl"), self._prompts),
        ]

    # ---- one case
    def case(self, target: Target, i: int) -> Outcome:
        case_dir = self.work / "cases" / f"{target.name}-{i}"
        case_dir.mkdir(parents=True)
        out = case_dir / "out"
        out.mkdir()
        started = time.perf_counter()
        try:
            # one generator per case: any case can be made again on its own from (seed, target, i)
            path, case = target.make(case_dir / "input", random.Random(f"{self.seed}:{target.name}:{i}"))
        except Exception:  # noqa: BLE001 - a bug of the fuzzer, reported as such
            return Outcome(target.name, "make", "make", None, traceback="fuzzer: " + traceback.format_exc())
        before = digest(path)
        # config files find their data next to them, as a user's would
        if target.name == "config-yaml":
            shutil.copy(self.support / "train.jsonl", case_dir / "train.jsonl")
        command, run, unlocated = target.check(path, out, i)
        outcome = Outcome(
            target.name,
            case,
            command,
            run.exit_code,
            traceback=run.traceback,
            unlocated=unlocated,
            bad_exit=run.traceback is None and run.exit_code not in (0, 1, 2),
            modified=digest(path) != before,
            seconds=time.perf_counter() - started,
        )
        if not outcome.failed:
            shutil.rmtree(case_dir, ignore_errors=True)  # failing cases stay for the report
        return outcome

    def run(
        self, files: int, progress: Callable[[int, Outcome], None] | None = None, chunk: int = 500
    ) -> list[Outcome]:
        """Every case, in worker processes of `chunk` cases each: a loader that kills the
        process (a signal such as SIGBUS or SIGSEGV from native code) is recorded as that
        case's crash and the run goes on with the next case. Workers are fresh interpreters,
        not forks: forking a process with threads (torch, tokenizers) can deadlock the child."""
        import subprocess

        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        outcomes: list[Outcome] = []
        k = 0
        while k < files:
            log, err = self.work / f"worker-{k}.jsonl", self.work / f"worker-{k}.err"
            stop = min(files, k + chunk)
            with open(err, "wb") as stderr:
                status = subprocess.run(
                    [sys.executable, __file__, "--worker", str(self.work), str(self.seed), str(k), str(stop), str(log)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                ).returncode
            done, started = [], None
            for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
                entry = json.loads(line)
                if "start" in entry:
                    started = entry["start"]
                else:
                    done.append(Outcome(**entry["outcome"]))
                    started = None
            if started is not None:  # the worker died inside this case
                name = signal.Signals(-status).name if status < 0 else f"exit status {status}"
                tail = err.read_text(encoding="utf-8", errors="replace")[-3000:] if err.exists() else ""
                done.append(
                    Outcome(
                        started[0],
                        "see its kept folder",
                        "(worker)",
                        None,
                        traceback=f"{tail}\nthe process died: {name} (case {started[0]}-{started[1]})",
                    )
                )
            elif not done:
                raise RuntimeError(
                    f"fuzz worker for cases {k}…{stop} produced nothing (status {status}): "
                    f"{err.read_text(errors='replace')[-2000:]}"
                )
            for outcome in done:
                if progress:
                    progress(len(outcomes), outcome)
                outcomes.append(outcome)
            k += len(done)
            log.unlink(missing_ok=True)
            err.unlink(missing_ok=True)
        return outcomes

    def work_on(self, start: int, stop: int, log: Path) -> None:
        """A worker's part: cases start…stop-1, each announced before it runs. The environment
        variable SPECIALIST_FUZZ_FAULT=kind:number kills the worker at that case (a self-test of
        the crash accounting)."""
        fault = os.environ.get("SPECIALIST_FUZZ_FAULT")
        with open(log, "w", encoding="utf-8") as f:
            for k in range(start, stop):
                target, i = self.targets[k % len(self.targets)], k // len(self.targets)
                f.write(json.dumps({"start": [target.name, i]}) + "\n")
                f.flush()
                if fault == f"{target.name}:{i}":
                    os.kill(os.getpid(), signal.SIGSEGV)
                f.write(json.dumps({"outcome": self.case(target, i).__dict__}) + "\n")
                f.flush()


def _jsonl_unreadable(path: Path) -> str | None:
    """An output a command said it wrote must be complete, valid JSONL."""
    try:
        for line in path.read_text(encoding="utf-8").split("\n")[:-1]:  # JSONL: "\n" ends a record, nothing else
            json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{path}: written output is not valid JSONL ({exc})"
    return None


# ------------------------------------------------------------------ the section
def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    by_target: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_target.setdefault(o.target, []).append(o)
    rows = []
    for name, group in by_target.items():
        codes = Counter(o.exit_code for o in group)
        rows.append(
            {
                "section": SECTION,
                "format": name,
                "files": len(group),
                "tracebacks": sum(bool(o.traceback) for o in group),
                "unlocated": sum(bool(o.unlocated) for o in group),
                "bad_exit": sum(o.bad_exit for o in group),
                "modified": sum(o.modified for o in group),
                "exit_0": codes.get(0, 0),
                "exit_1": codes.get(1, 0),
                "exit_2": codes.get(2, 0),
                "seconds": round(sum(o.seconds for o in group), 1),
            }
        )
    failures = [o for o in outcomes if o.failed]
    summary = {
        "files_fuzzed": len(outcomes),
        "tracebacks": sum(r["tracebacks"] for r in rows),
        "unlocated_errors": sum(r["unlocated"] for r in rows),
        "bad_exit_codes": sum(r["bad_exit"] for r in rows),
        "modified_inputs": sum(r["modified"] for r in rows),
    }
    examples = [
        {
            "format": o.target,
            "case": o.case,
            "command": o.command,
            "exit_code": o.exit_code,
            "problem": (o.traceback or o.unlocated or ("modified input" if o.modified else "bad exit code"))[-1500:],
        }
        for o in _distinct(failures)
    ]
    return {"rows": rows, "summary": summary, "failures": examples, "ok": not failures}


def _distinct(failures: list[Outcome], limit: int = 25) -> Iterator[Outcome]:
    """One failure per distinct last traceback line (or message), so the report stays readable."""
    seen = set()
    for o in failures:
        text = o.traceback or o.unlocated or ""
        key = (o.target, text.strip().splitlines()[-1][:120] if text.strip() else o.command)
        if key not in seen:
            seen.add(key)
            yield o
            if len(seen) >= limit:
                return


def run(
    quick: bool = False,
    work: Path | None = None,
    files: int | None = None,
    seed: int = 0,
    progress: Callable[[int, Outcome], None] | None = None,
) -> dict[str, Any]:
    """The fuzz section: `files` generated files (default 10,000; 300 with quick)."""
    import tempfile

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    files = files or (300 if quick else 10_000)
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="specialist-fuzz-")) if own else work
    started = time.perf_counter()
    outcomes = Fuzzer(work, seed).run(files, progress)
    doc = summarize(outcomes)
    doc["summary"]["seconds"] = round(time.perf_counter() - started, 1)
    doc["summary"]["goal"] = GOAL
    n = doc["summary"]
    doc["figures"] = [
        (
            "files fuzzed",
            n["files_fuzzed"],
            f"≥ {files:,}",
            n["files_fuzzed"] >= files,
            f"{len(doc['rows'])} input kinds",
        ),
        ("tracebacks / crashes", n["tracebacks"], "0", n["tracebacks"] == 0),
        ("unlocated errors", n["unlocated_errors"], "0", n["unlocated_errors"] == 0),
        ("exit codes outside 0/1/2", n["bad_exit_codes"], "0", n["bad_exit_codes"] == 0),
        ("inputs modified", n["modified_inputs"], "0", n["modified_inputs"] == 0),
    ]
    if doc["failures"]:
        doc["summary"]["failing_cases_kept_in"] = str(work / "cases")
    elif own:
        shutil.rmtree(work, ignore_errors=True)
    return doc


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _work, _seed, _start, _stop, _log = sys.argv[2:7]
    Fuzzer(Path(_work), int(_seed)).work_on(int(_start), int(_stop), Path(_log))
