"""A full disk: ENOSPC while saving a checkpoint, writing reports and exporting, on a small tmpfs
mounted for the trial (needs root; the section is skipped, and says so, without it).

Each trial fills a tmpfs of a few megabytes and runs the command a user would run, in its own
process (`train`, `data check --html`, `export --format gguf|merged`; the eval reports through
`write_reports`, the function `specialist eval` writes them with, since a whole eval costs a
minute and writes the same files). A trial passes when:

- the command exits 2 with one last line `error: PATH: no space left on device` (training: and
  the checkpoint it kept), no traceback;
- the earlier file or export, or the last good checkpoint, is intact;
- no temporary file is left on the disk;
- training: with room again, `--resume` finishes the run from the checkpoint kept.

    python benchmarks/bench_reliability.py --section disk [--quick] [--json]
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTION = "disk"
DESCRIPTION = "ENOSPC on a small tmpfs during checkpoint save, report writing and export"
GOAL = "every trial: exit 2 and one line naming the path, the last good file intact, no temporary left"
ROOT = Path(__file__).resolve().parents[2]
TRAIN_ARGS = ["--max-steps", "30", "--batch-size", "2", "--set", "save_steps=2", "--set", "logging_steps=1"]
TRAIN_ARGS += ["--set", "threads=1"]
KINDS = ("checkpoint", "data check --html", "eval reports", "export gguf", "export merged")


# ---------------------------------------------------------------- a small disk
class SmallDisks:
    """Folders on tmpfs mounts of a given size; unmounted on exit."""

    def __init__(self, root: Path) -> None:
        self.root, self.mounts = root, []

    def make(self, size: str) -> Path:
        folder = self.root / f"disk{len(self.mounts)}"
        folder.mkdir(parents=True)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise PermissionError(f"cannot mount a small tmpfs to fill (needs root): {proc.stderr.strip()}")
        self.mounts.append(folder)
        return folder

    def __enter__(self) -> SmallDisks:
        return self

    def __exit__(self, *exc: object) -> None:
        for folder in self.mounts:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def grow(disk: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Take the folder's free space down to about `leave` bytes."""
    free = shutil.disk_usage(folder).free
    with (folder / "filler").open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def full_disk_line(err: str, path: Path, more: str | None = "") -> list[str]:
    """Problems with the command's last line: it must be `error: PATH: no space left on device`
    followed by `more` (None: by anything)."""
    last = err.strip().splitlines()[-1] if err.strip() else ""
    want = f"error: {path}: no space left on device"
    good = last.startswith(want + (more or "")) if more is None or more else last == want
    return ([] if good else [f"last line {last[:200]!r}"]) + (["a traceback"] if "Traceback" in err else [])


# ---------------------------------------------------------------- the trials
# Each trial gets fx: "model" (a tiny model), "data" (a small dataset) and "cli", which runs the
# command line and returns (exit code, stderr): here a process of its own, in the test suite
# the CLI in-process.
def _cli(args: list[str], work: Path) -> tuple[int, str]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.reliability.kill import run_cli  # the command in its own process, as the kill trials run it

    proc = run_cli(args, work)
    return proc.returncode, proc.stderr


def trial_checkpoint(fx: dict, disks: SmallDisks, rng: random.Random) -> list[str]:
    from safetensors.torch import load_file

    from specialist.run_folder import is_complete_checkpoint

    disk = disks.make("9m")  # two checkpoints of the tiny model (~3.9 MB each, mostly tokenizer.json) fit
    data = disk / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}?", "completion": f"a{i}."}) + "\n" for i in range(4)))
    run = disk / "run"
    code, err = fx["cli"](["train", "--data", str(data), "--model", str(fx["model"]), "--out", str(run), *TRAIN_ARGS])
    if code != 2:
        return [f"exit {code}: {err.strip()[-300:]!r}"]
    problems = full_disk_line(err, run, " while saving checkpoints/checkpoint-")
    last = err.strip().splitlines()[-1]
    if "(kept checkpoints/checkpoint-" not in last or not last.endswith("--resume"):
        problems.append(f"the line does not name the checkpoint kept: {last[:200]!r}")
    checkpoints = sorted((run / "checkpoints").iterdir()) if (run / "checkpoints").is_dir() else []
    if not checkpoints or not all(is_complete_checkpoint(p) for p in checkpoints):
        problems.append(f"checkpoints {[p.name for p in checkpoints]}: not all complete")
    else:
        load_file(str(checkpoints[-1] / "adapter_model.safetensors"))
    if json.loads((run / "run.json").read_text())["status"] != "failed":
        problems.append("run.json does not say failed")
    if hidden(run) or (run / "adapter").exists():
        problems.append(f"left behind: {hidden(run)} {'adapter/' if (run / 'adapter').exists() else ''}")
    grow(disk, "24m")
    code, err = fx["cli"](["train", "--out", str(run), "--resume"])
    info = json.loads((run / "run.json").read_text())
    resumed_from = checkpoints[-1].name if checkpoints else None
    if code not in (0, None) or (info["status"], info["steps"], info.get("resumed_from")) != (
        "completed",
        30,
        resumed_from,
    ):
        problems.append(f"--resume with room again: exit {code}, {info}, {err.strip()[-300:]!r}")
    else:
        load_file(str(run / "adapter" / "adapter_model.safetensors"))
    return problems


def trial_data_check(fx: dict, disks: SmallDisks, rng: random.Random) -> list[str]:
    disk = disks.make("1m")
    report = disk / "report.html"
    report.write_text("<html>old report</html>\n")
    fill(disk, rng.randrange(0, 4097))
    code, err = fx["cli"](["data", "check", str(fx["data"]), "--html", str(report)])
    problems = [] if code == 2 else [f"exit {code}"]
    problems += full_disk_line(err, report)
    if report.read_text() != "<html>old report</html>\n":
        problems.append("the old report changed")
    return problems + [f"left behind: {hidden(disk)}"] * bool(hidden(disk))


def trial_eval_reports(fx: dict, disks: SmallDisks, rng: random.Random) -> list[str]:
    from specialist.evaluate.html import write_reports

    disk = disks.make("1m")
    (disk / "report.json").write_text('{"old": 1}\n')
    (disk / "report.html").write_text("<html>old</html>\n")
    fill(disk, rng.randrange(0, 8193))
    try:
        write_reports({"verdict": "x" * 200_000}, disk / "report.json", disk / "report.html")
        problems = ["no error on a full disk"]
    except OSError as exc:
        problems = [] if exc.errno == errno.ENOSPC and exc.filename == str(disk / "report.json") else [repr(exc)]
    if (disk / "report.json").read_text() != '{"old": 1}\n' or (
        disk / "report.html"
    ).read_text() != "<html>old</html>\n":
        problems.append("an old report changed")
    return problems + [f"left behind: {hidden(disk)}"] * bool(hidden(disk))


def trial_export(fmt: str) -> Callable[[dict, SmallDisks, random.Random], list[str]]:
    """GGUF writes through Python's files, merged through safetensors (its own error type)."""

    def trial(fx: dict, disks: SmallDisks, rng: random.Random) -> list[str]:
        disk = disks.make("12m")
        out = disk / "export"
        out.mkdir()
        (out / "old.bin").write_bytes(os.urandom(6 << 20))
        fill(disk, rng.randrange(1 << 20, 5 << 20))  # the new export (6 MB and more) does not fit
        code, err = fx["cli"](
            ["export", "--model", str(fx["model"]), "--format", fmt, "--out", str(out), "--overwrite"]
        )
        problems = [] if code == 2 else [f"exit {code}: {err.strip()[-300:]!r}"]
        problems += full_disk_line(err, out)
        if [p.name for p in out.iterdir()] != ["old.bin"] or (out / "old.bin").stat().st_size != 6 << 20:
            problems.append("the old export changed")
        if sorted(p.name for p in disk.iterdir()) != ["export", "filler"]:
            problems.append(f"left behind: {sorted(p.name for p in disk.iterdir())}")
        return problems

    return trial


TRIALS = {
    "checkpoint": trial_checkpoint,
    "data check --html": trial_data_check,
    "eval reports": trial_eval_reports,
    "export gguf": trial_export("gguf"),
    "export merged": trial_export("merged"),
}


# ---------------------------------------------------------------- the section
def run(
    quick: bool = False,
    work: Path | None = None,
    rounds: int | None = None,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The disk section: `rounds` trials of each kind (3; quick 1), the free space left drawn
    with a seeded generator where the trial fills the disk."""
    rounds = rounds or (1 if quick else 3)
    log = progress or (lambda m: None)
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="bench-disk-")) if own else work
    rng = random.Random(seed)
    rows, failures = [], []
    try:
        sys.path.insert(0, str(ROOT))
        from tests.helpers import build_tiny_model, save_chat_tokenizer  # the suite's own tiny models

        (work / "home").mkdir(parents=True, exist_ok=True)
        fx = {
            "cli": lambda args: _cli(args, work),
            "model": build_tiny_model(work / "model", save_chat_tokenizer(work / "tok"), "llama"),
        }
        fx["data"] = work / "d.jsonl"
        fx["data"].write_text(
            "".join(json.dumps({"prompt": f"Pytanie {i}?", "completion": f"Odpowiedź {i}."}) + "\n" for i in range(20)),
            encoding="utf-8",
        )
        with SmallDisks(work / "disks") as disks:
            for kind in kinds:
                failed = 0
                for i in range(rounds):
                    problems = TRIALS[kind](fx, disks, rng)
                    failed += bool(problems)
                    failures += [{"trial": f"{kind} #{i}", "problem": "; ".join(problems)[:1500]}] * bool(problems)
                log(f"disk: {kind}: {rounds} trials, {failed} with problems")
                rows.append({"section": SECTION, "kind": kind, "trials": rounds, "problems": failed})
    except PermissionError as exc:
        figures = [("disk-full trials", 0, f"{rounds} per kind", None, f"skipped: {exc}")]
        return {"rows": rows, "summary": {"skipped": str(exc)}, "figures": figures, "ok": True, "failures": []}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    trials = sum(r["trials"] for r in rows)
    bad = sum(r["problems"] for r in rows)
    figures = [
        ("disk-full trials", trials, f"{rounds} per kind", len(rows) == len(kinds), ", ".join(kinds)),
        ("trials with a problem", bad, "0", bad == 0, "exit 2 + one line, old file intact, no temporary"),
    ]
    return {
        "rows": rows,
        "summary": {"trials": trials, "problems": bad},
        "figures": figures,
        "ok": bad == 0,
        "failures": failures,
    }
