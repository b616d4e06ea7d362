"""The run folders under the studio's runs directory, read as `specialist train` wrote them
(run.json, metrics.jsonl, eval/report.json), so the pages show the truth after a reload or a
restart."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError
from specialist.run_folder import RunFolder, live_status, read_summary

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class RunView:
    name: str
    path: Path
    summary: dict[str, Any]
    status: str  # run.json's status; "running" only while its training process lives (run_folder.live_status)

    @property
    def loadable(self) -> bool:
        return (self.path / "adapter").is_dir() or (self.path / "model").is_dir()

    @property
    def has_report(self) -> bool:
        return (self.path / "eval" / "report.json").exists()


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise SpecialistError(f"{name!r}: a run name is letters, digits, '.', '_' or '-' (no folders)")
    return name


def read_metrics(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete records from byte `offset` on, and the offset after the last complete line
    (a line being written is read next time)."""
    if not path.exists():
        return [], 0
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        if offset > size:  # rewritten shorter (a resume trims records logged after its checkpoint)
            offset = 0
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records, offset + end


def run_view(runs_dir: Path, name: str, locked: bool) -> RunView:
    path = runs_dir / check_name(name)
    summary, status = {}, None
    try:
        if RunFolder(path).summary.exists():
            read = read_summary(path)
            summary, status = read.to_json(), live_status(read)  # "running" only while its process lives
    except SpecialistError:  # a broken run.json shows as "unknown" on the list; its page says why
        pass
    if locked:  # the studio's child holds the run (it may not have written run.json yet)
        status = "running"
    return RunView(name, path, summary, status or ("not started" if (path / "config.yaml").exists() else "unknown"))


def list_runs(runs_dir: Path, locked: Any) -> list[RunView]:
    """Every folder with a run.json or config.yaml, newest first; locked(path) -> bool."""
    if not runs_dir.is_dir():
        return []
    found = [p for p in runs_dir.iterdir() if p.is_dir() and NAME.match(p.name)
             and ((p / "run.json").exists() or (p / "config.yaml").exists())]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [run_view(runs_dir, p.name, locked(p)) for p in found]


def progress(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest step, loss, eval loss, tokens/s and ETA from metrics.jsonl records."""
    out: dict[str, Any] = {"step": 0, "max_steps": None, "loss": None, "eval_loss": None,
                           "tokens_per_second": None, "eta_seconds": None, "percent": None}
    for r in records:
        out["step"] = r.get("step", out["step"])
        out["max_steps"] = r.get("max_steps", out["max_steps"])
        for key in ("loss", "eval_loss", "tokens_per_second"):
            if r.get(key) is not None:
                out[key] = r[key]
    last = records[-1] if records else None
    if last and out["max_steps"] and last.get("train_seconds") and out["step"]:
        per_step = last["train_seconds"] / out["step"]
        out["eta_seconds"] = round(per_step * max(0, out["max_steps"] - out["step"]))
        out["percent"] = round(100 * out["step"] / out["max_steps"])
    return out
