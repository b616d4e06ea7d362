"""The run folder (see DESIGN.md): created, refused, resumed, and written atomically.

    RUN/config.yaml  run.json  metrics.jsonl  loss.png  adapter/ | model/  checkpoints/
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError
from specialist.io import atomic_write_text

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def atomic_write_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def replace_dir(tmp_dir: Path, final: Path) -> None:
    """Move a fully written temporary folder into place; an older one is removed only after."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp_dir, final)
    if old.exists():
        shutil.rmtree(old)


def temp_dir_beside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint. A checkpoint cut short by a kill lacks trainer_state.json
    (the Trainer writes it last), so it is skipped in favour of the one before."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in root.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    for _, path in found:
        if (path / "trainer_state.json").exists():
            return path
    return None


def is_used(run_dir: Path) -> bool:
    return run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber an existing run unless told to; --resume needs a run to resume."""
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise SpecialistError(f"{run_dir}: no run to resume (config.yaml missing); start it without --resume")
        return
    if is_used(run_dir):
        if not overwrite:
            raise SpecialistError(f"{run_dir}: a run folder already exists there; use --resume to continue it, "
                                  "--overwrite to replace it, or --out to choose another folder")
        if not (run_dir / "run.json").exists() and not (run_dir / "config.yaml").exists():
            raise SpecialistError(f"{run_dir}: exists and is not a run folder; refusing to delete it even with --overwrite")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def trim_metrics(path: Path, up_to_step: int) -> None:
    """On resume, drop records logged after the checkpoint: the Trainer logs those steps again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= up_to_step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(metrics: list[dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=".loss.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
