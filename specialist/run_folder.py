"""The run folder (README, "3. Training"): its layout, its typed summary (run.json), and how training
creates, refuses, resumes and fills it. Training writes run.json through `write_summary`;
everything else reads it through `read_summary`.

    RUN/config.yaml  run.json  metrics.jsonl  loss.png  adapter/ | model/  checkpoints/  eval/  knowledge/

    run = RunFolder(path)
    summary = read_summary(run.path)        # RunSummary; SpecialistError (one located line) when unreadable
    summary.base_model, summary.dataset, summary.train_loss, ...
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from specialist.errors import SpecialistError
from specialist.io import atomic_file, atomic_write_json, atomic_write_text

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RunFolder:
    """Where each part of a run lives."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.path / "loss.png"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def model(self) -> Path:
        """The weights of a full fine-tuning run (LoRA/DoRA runs have adapter/ instead)."""
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def eval_json(self) -> Path:
        return self.eval / "report.json"

    @property
    def eval_html(self) -> Path:
        return self.eval / "report.html"

    @property
    def knowledge(self) -> Path:
        return self.path / "knowledge"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def vocabulary(self) -> Path:
        """The kept vocabulary of a specialist-sized output head (models.vocab_head), if any."""
        return self.path / "vocabulary.json"

    def weights(self, full: bool) -> Path:
        return self.model if full else self.adapter


class RunSummary(BaseModel):
    """run.json. Fields are in the order training writes them; every one is optional, because
    run.json is rewritten as the run goes (running → completed, interrupted or failed) and an
    older or newer run may lack a key or carry one this version does not know (kept as is).

    Saved with only the keys that were set, so reading and writing a run.json keeps its keys."""

    model_config = ConfigDict(extra="allow")

    # what was trained, on what
    base_model: str | None = None  # an absolute path for local folders/files, else the name or hub id
    method: str | None = None  # lora | dora | qlora | full
    dataset: str | None = None  # the training data file, as given
    dataset_fingerprint: str | None = None
    examples: int | None = None  # training records (before the knowledge base's abstention examples)
    eval_data: str | None = None
    eval_dataset_fingerprint: str | None = None
    eval_examples: int | None = None
    # where and how
    device: str | None = None
    base_dtype: str | None = None
    mixed_precision: str | None = None  # "bf16" | "fp16" | None
    processes: int | None = None
    threads_per_process: int | None = None  # the torch threads most steps ran with
    threads_used: dict[str, int] | None = None  # steps run at each thread count (they follow the machine's load)
    pid: int | None = None  # the training process (rank 0): a "running" run whose process is gone was killed
    host: str | None = None  # where that process runs (another machine's processes cannot be checked)
    # progress: running → completed | interrupted | failed
    status: str | None = None
    started_at: str | None = None
    training_examples: int | None = None  # with the knowledge base: the examples actually trained on
    knowledge: dict[str, Any] | None = None  # the knowledge snapshot's summary (knowledge/knowledge.json)
    # a specialist-sized output head: {"tokens": kept, "vocabulary": the tokenizer's} (vocabulary.json)
    output_head: dict[str, Any] | None = None
    # --mix-general: source, fingerprint, share, examples drawn (distinct), canary items excluded
    general_mix: dict[str, Any] | None = None
    resumed_from: str | None = None  # the checkpoint a --resume continued from
    error: str | None = None  # why a failed run failed
    finished_at: str | None = None
    # results
    steps: int | None = None
    max_steps: int | None = None
    epochs: float | None = None
    train_seconds: float | None = None  # including the steps a resumed run kept
    train_tokens: int | None = None
    tokens_per_second: float | None = None
    train_loss: float | None = None  # mean over the run, as transformers reports it
    final_loss: float | None = None  # last logged
    eval_loss: float | None = None  # best
    best_checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


def live_status(summary: RunSummary) -> str | None:
    """run.json's status, checked: a "running" run whose training process is gone (killed with
    SIGKILL, out of memory, the machine restarted) is "stopped". A run written on another host
    is taken at its word; one without a pid (an older version's) cannot be checked: "stopped"."""
    if summary.status != "running":
        return summary.status
    if summary.host and summary.host != socket.gethostname():
        return "running"
    if summary.pid is None:
        return "stopped"
    started = _epoch(summary.started_at)
    # the process started before it stamped started_at (to the second; /proc's boot time is too)
    return "running" if process_alive(summary.pid, started_before=started + 5 if started else None) else "stopped"


def process_alive(pid: int, started_before: float | None = None) -> bool:
    """Whether process `pid` exists and is not a zombie. With `started_before` (epoch seconds),
    a process that started later is another one that was given the same id, not the one meant."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:  # Linux: the state and start time; elsewhere existing is all that is known
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(") ", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return True
    if stat[0] == "Z":
        return False
    # field 22 of /proc/PID/stat (index 19 after the name): start time in clock ticks since boot
    return started_before is None or boot + int(stat[19]) / os.sysconf("SC_CLK_TCK") <= started_before


def _epoch(stamp: str | None) -> float | None:
    try:
        return calendar.timegm(time.strptime(stamp or "", "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def is_run_dir(path: str | Path) -> bool:
    path = Path(str(path)).expanduser()
    return path.is_dir() and RunFolder(path).summary.is_file()


def _read_json(path: Path) -> Any:
    """A run folder's JSON file; not JSON, or unreadable, is a located one-line error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecialistError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecialistError(f"{path}: unreadable ({exc})") from None


def read_summary(run_dir: str | Path) -> RunSummary:
    """run.json of a run folder. A missing, corrupt or mistyped one is a SpecialistError of one
    located line (exit 2): `RUN/run.json:3:5: not valid JSON (...)`, `RUN/run.json: steps: ...`."""
    path = RunFolder(Path(run_dir)).summary
    if not path.is_file():
        raise SpecialistError(
            f"{path.parent}: not a run folder (no run.json); give the folder `specialist train` wrote")
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise SpecialistError(f"{path}: expected a JSON object (the run summary), got {type(doc).__name__}")
    try:
        return RunSummary.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        got = repr(first["input"])
        shown = got[:60] + "…" if len(got) > 60 else got
        raise SpecialistError(f"{path}: {field}: {first['msg']} (got {shown})") from None


# What `export --format merged` writes beside the weights: {"base_model", "source", "adapter_merged"};
# it lets eval take a merged export for its run.
MERGED_INFO = "specialist.json"


def read_merged_info(folder: str | Path) -> dict[str, Any] | None:
    """specialist.json of a merged export (None when the folder has none)."""
    path = Path(str(folder)).expanduser() / MERGED_INFO
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecialistError(f"{path}: unreadable ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("base_model"), str):
        raise SpecialistError(f"{path}: base_model: expected the base model the export was merged into")
    return doc


def write_kept_vocabulary(run_dir: Path, kept: list[int], vocab_size: int) -> None:
    """vocabulary.json: the token ids a specialist-sized output head keeps (sorted)."""
    atomic_write_json(RunFolder(run_dir).vocabulary, {"vocabulary": vocab_size, "kept": sorted(kept)})


def read_kept_vocabulary(run_dir: str | Path) -> tuple[list[int], int] | None:
    """(kept token ids, vocabulary size) of a run with a specialist-sized head, else None. A
    damaged file is a located one-line error: generation must not quietly change heads."""
    path = RunFolder(Path(run_dir)).vocabulary
    if not path.is_file():
        return None
    doc = _read_json(path)
    size = doc.get("vocabulary") if isinstance(doc, dict) else None
    kept = doc.get("kept") if isinstance(doc, dict) else None
    if not isinstance(size, int) or size <= 0:
        raise SpecialistError(f"{path}: vocabulary: expected the tokenizer's vocabulary size")
    if (not isinstance(kept, list) or not kept
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in kept)):
        raise SpecialistError(f"{path}: kept: expected a non-empty list of token ids in 0..{size - 1}")
    return kept, size


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    atomic_write_json(RunFolder(run_dir).summary, summary.to_json())


def write_config(run_dir: Path, settings: dict[str, Any]) -> None:
    """config.yaml: the fully resolved settings, in their declared order (TrainConfig.to_yaml_dict)."""
    import yaml

    atomic_write_text(RunFolder(run_dir).config, yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.yaml as written (the resolved settings; {} when the folder has none)."""
    import yaml

    path = RunFolder(Path(run_dir)).config
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecialistError(f"{path}: unreadable ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise SpecialistError(f"{path}: expected a mapping of settings, got {type(doc).__name__}")
    return doc


# ------------------------------------------------------------------ what training does with it


def _checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders, newest first."""
    root = RunFolder(run_dir).checkpoints
    if not root.is_dir():
        return []
    found = sorted(((int(m.group(1)), p) for p in root.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    return [p for _, p in found]


def is_complete_checkpoint(path: Path) -> bool:
    """The Trainer writes trainer_state.json last, in place: a checkpoint cut short (a kill, a
    full disk) lacks it or holds a truncated one."""
    try:
        return isinstance(json.loads((path / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; one cut short is skipped in favour of the one before."""
    return next((p for p in _checkpoints(run_dir) if is_complete_checkpoint(p)), None)


def remove_incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Delete the checkpoints a kill or a full disk cut short (they cannot be resumed from and
    hold space); returns them."""
    removed = [p for p in _checkpoints(run_dir) if not is_complete_checkpoint(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def is_used(run_dir: Path) -> bool:
    return run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber an existing run unless told to; --resume needs a run to resume."""
    run = RunFolder(run_dir)
    if resume:
        if not run.config.exists():
            raise SpecialistError(f"{run_dir}: no run to resume (config.yaml missing); start it without --resume")
        return
    if is_used(run_dir):
        if not overwrite:
            raise SpecialistError(f"{run_dir}: a run folder already exists there; use --resume to continue it, "
                                  "--overwrite to replace it, or --out to choose another folder")
        if not run.summary.exists() and not run.config.exists():
            raise SpecialistError(
                f"{run_dir}: exists and is not a run folder; refusing to delete it even with --overwrite")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def trim_metrics(path: Path, up_to_step: int) -> None:
    """On resume, drop records logged after the checkpoint: the Trainer logs those steps again."""
    if not path.exists():
        return
    kept = [json.dumps(m) for m in read_metrics(path) if m.get("step", 0) <= up_to_step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records. It is appended to as training goes, so a kill or a full disk can
    cut its last line short: a last line without its newline is not a record yet."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    complete = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def plot_loss(metrics: list[dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from specialist.charts import subplots

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = subplots(figsize=(7, 4), dpi=100)
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
    try:
        with atomic_file(out) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
