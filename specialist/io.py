"""Atomic writes: a temporary file in the same folder, then a rename, so a crash never
leaves a half-written dataset or report."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from specialist.errors import SpecialistError


def refuse_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise SpecialistError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace", exit_code=2)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_lines(path, [text], end="")


def atomic_write_lines(path: Path, lines: Iterable[str], end: str = "\n") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line + end)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_jsonl(path: Path, records: Iterable[dict]) -> None:
    atomic_write_lines(path, (json.dumps(r, ensure_ascii=False) for r in records))
