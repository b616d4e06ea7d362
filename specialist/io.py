"""Atomic writes: a temporary file (or folder) in the same folder, then a rename, so a crash
never leaves a half-written dataset, report, adapter or converted model. And the one way small
text inputs (settings, rules, prompt files) are read: UTF-8 or a located error."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError


def read_text(path: Path, what: str | None = None) -> str:
    """A UTF-8 text file (a byte-order mark is dropped), or SpecialistError (exit 2) naming the
    file, what it was read as ("the system prompt") when given, and the line of the first byte
    that is not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecialistError(f"{path}: cannot read{f' the {what}' if what else ''} ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecialistError(f"{path}:{line}: E012 not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
                              "re-save the file as UTF-8") from exc


def text_lines(text: str) -> list[str]:
    """Lines as JSONL and editors count them: cut at "\n" only (a CR before it dropped).
    str.splitlines() also cuts at U+2028, U+0085, form feeds …, which JSON strings may hold raw,
    so it splits valid records and shifts line numbers."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def refuse_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise SpecialistError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace", exit_code=2)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")
# numpy's tofile (the GGUF writer's tensors) reports a short write, errno unset: to a file, only
# a full disk or quota makes one. torch.save's writer says even less.
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_TORCH_WRITER_FAILED = re.compile(r"inline_container|pytorchstreamwriter")


def is_disk_full(exc: BaseException, where: Path | None = None) -> bool:
    """Whether `exc` is a write that failed for lack of space. safetensors and torch.save wrap
    the OSError in their own types, numpy reports a bare short write and torch's message names
    no cause at all (then the free space left where it wrote, `where`, decides): the chain, the
    message and the disk are read."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return True
        if any(t in str(seen).lower() for t in _NO_SPACE_TEXT) or _SHORT_WRITE.search(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    if where is not None and _TORCH_WRITER_FAILED.search(str(exc).lower()):
        try:
            return shutil.disk_usage(where).free < 1 << 20
        except OSError:
            return False
    return False


def disk_full_error(path: Path) -> OSError:
    """The error the CLI reports as one line: `error: PATH: no space left on device` (exit 2)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_lines(path, [text], end="")


def _process_gone(pid: int) -> bool:
    if os.name != "posix" or pid == os.getpid():
        return False  # elsewhere os.kill(pid, 0) is not a question but a Ctrl-C
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # someone else's process: alive
        return False
    return False


def remove_abandoned_temporaries(final: Path) -> list[Path]:
    """The temporaries beside `final` that a killed process left (a SIGKILL gives it no chance
    to remove them): each carries the id of the process that made it, and those whose process
    is gone are removed. Returns what was removed."""
    final = Path(final)
    # atomic_write_lines: .NAME.PID-XXXX.tmp; atomic_dir: .NAME.tmp-PID-XXXX (and its .old)
    own = re.compile(rf"\.{re.escape(final.name)}\.(?:tmp-)?(\d+)-[a-z0-9_]+(?:\.tmp|\.old)?")
    removed = []
    if not final.parent.is_dir():
        return removed
    for p in final.parent.iterdir():
        m = own.fullmatch(p.name)
        if not m or not _process_gone(int(m.group(1))):
            continue
        if p.name.endswith(".old") and not final.exists():
            continue  # killed between two renames: the old folder is the only complete one
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def atomic_write_lines(path: Path, lines: Iterable[str], end: str = "\n") -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + end)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` for a writer that wants a file name (a plot, a library's
    save); it becomes `path` when the block succeeds and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise


def atomic_write_jsonl(path: Path, records: Iterable[dict]) -> None:
    atomic_write_lines(path, (json.dumps(r, ensure_ascii=False) for r in records))


def atomic_write_json(path: Path, doc: Any) -> None:
    """One indented JSON document. Encoded while it is written, so a value JSON cannot hold
    fails the write half way, which leaves the old file as it was."""
    chunks = json.JSONEncoder(ensure_ascii=False, indent=2).iterencode(doc)
    atomic_write_lines(path, itertools.chain(chunks, ["\n"]), end="")


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """A temporary folder beside `final` that becomes `final` when the block succeeds and is
    deleted when it raises. An existing `final` is replaced only once the new one is complete;
    refusing to replace it is the caller's decision (see refuse_overwrite)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give the usual mode
        yield tmp
        _move_into_place(tmp, final)
    except BaseException as exc:
        full = is_disk_full(exc, tmp)  # before the partial files go and free the space again
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(final) from exc
        raise


def _move_into_place(tmp: Path, final: Path) -> None:
    # The old folder steps aside (under a name as unique as tmp's) and is deleted only after
    # the new one has its name, so a failure in between still leaves one complete folder.
    old = tmp.with_name(tmp.name + ".old")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
