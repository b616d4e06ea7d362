"""Long work (train, eval, export) runs as the `specialist` command itself in a child process.

The studio adds no logic to those stages: a job is the CLI invocation a user would type, its
stderr in a log file, and its exit code. Everything about a job lives on disk under
STATE/jobs/<id>/ (job.json, log, rc), so a page reload or a restarted studio sees the truth;
a child keeps running when the studio stops.

One job per key at a time (for training the key is the run folder): the child holds an
exclusive flock on STATE/locks/<key>.lock for as long as it lives, so the lock is released
when the process ends however it ends (even SIGKILL), and a restarted studio still sees it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError
from specialist.io import atomic_write_text
from specialist.run_folder import process_alive

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")
# a rich progress row: "fine-tuned: answering ━━━━╺━━━ 3/8 0:00:05"
_PROGRESS = re.compile(r"^(?P<label>\S.*?)\s+[━╸╺╼╾─ ]+\s+(?P<done>\d+)/(?P<total>\d+)\b")
_start_lock = threading.Lock()


class JobRefused(SpecialistError):
    """A second job for a key that already has one running."""


@dataclass
class Job:
    id: str
    kind: str          # train, eval, export
    key: str           # what is locked (the run folder for training)
    argv: list[str]    # the specialist command line, without the interpreter
    target: str        # the run (or other) the job works on, for the pages
    started: float
    pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    # set from the files, not stored
    status: str = "running"          # running, done, failed, cancelled
    returncode: int | None = None
    error: str | None = None

    @property
    def command(self) -> str:
        return "specialist " + " ".join(_quote(a) for a in self.argv)

    @property
    def running(self) -> bool:
        return self.status == "running"


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:=,+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


class Jobs:
    """Jobs under `state` (STATE/jobs, STATE/locks)."""

    def __init__(self, state: Path) -> None:
        self.root = state / "jobs"
        self.locks = state / "locks"
        self.root.mkdir(parents=True, exist_ok=True)
        self.locks.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ locks
    def _lock_path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.locks / f"{digest}.lock"

    def is_locked(self, key: str) -> bool:
        path = self._lock_path(key)
        if not path.exists():
            return False
        with path.open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    # ------------------------------------------------------------ start
    def start(self, kind: str, key: str, argv: Sequence[str], target: str, refusal: str,
              extra: dict[str, Any] | None = None, cwd: Path | None = None) -> Job:
        """Run `specialist ARGV` in a child holding the lock of `key`; JobRefused(refusal) when
        another job holds it."""
        with _start_lock:
            fh = self._lock_path(key).open("a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                raise JobRefused(refusal) from None
            try:
                return self._spawn(kind, key, list(argv), target, extra or {}, fh.fileno(), cwd)
            finally:
                fh.close()  # the child keeps the lock (its copy of the descriptor)

    def _spawn(self, kind: str, key: str, argv: list[str], target: str, extra: dict[str, Any],
               lock_fd: int, cwd: Path | None) -> Job:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        job_id = f"{stamp}-{kind}-{hashlib.sha1(f'{key}{time.time()}'.encode()).hexdigest()[:6]}"
        folder = self.root / job_id
        folder.mkdir(parents=True)
        job = Job(job_id, kind, key, argv, target, time.time(), extra=extra)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false",
               # rich draws live progress only on a terminal; its rows are parsed from the log
               "TTY_COMPATIBLE": "1", "COLUMNS": "120"}
        # sh records the exit code even when nobody waits for the child (a restarted studio);
        # `trap : INT` keeps sh alive to write it after the command exits on Ctrl-C.
        script = 'trap : INT TERM; "$@"; echo $? > "$SPECIALIST_JOB_RC"'
        cmd = ["sh", "-c", script, "sh", sys.executable, "-m", "specialist", *argv]
        with (folder / "log").open("wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                    env={**env, "SPECIALIST_JOB_RC": str(folder / "rc")}, pass_fds=(lock_fd,),
                                    start_new_session=True, preexec_fn=_default_signals)
        job.pid = proc.pid
        self._write(job)
        threading.Thread(target=proc.wait, daemon=True).start()  # reaps the child: no zombie
        return job

    def _write(self, job: Job) -> None:
        doc = {k: v for k, v in asdict(job).items() if k not in ("status", "returncode", "error")}
        atomic_write_text(self.root / job.id / "job.json", json.dumps(doc, indent=2) + "\n")

    # ------------------------------------------------------------ read
    def get(self, job_id: str) -> Job:
        if not re.fullmatch(r"[\w.-]+", job_id) or not (self.root / job_id / "job.json").exists():
            raise SpecialistError(f"no job {job_id!r}")
        folder = self.root / job_id
        doc = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        job = Job(**doc)
        rc = folder / "rc"
        if rc.exists() and rc.read_text().strip():
            job.returncode = int(rc.read_text().strip())
            cancelled = (folder / "cancelled").exists()
            job.status = "done" if job.returncode == 0 else "cancelled" if cancelled else "failed"
            if job.returncode != 0:
                job.error = error_line(self.log(job)) or f"exited with code {job.returncode}"
        elif not process_alive(job.pid):
            job.status, job.error = "failed", error_line(self.log(job)) or "the process ended without an exit code"
        return job

    def all(self, kind: str | None = None, target: str | None = None) -> list[Job]:
        """Newest first."""
        found = []
        for folder in sorted(self.root.iterdir(), reverse=True):
            if not (folder / "job.json").exists():
                continue
            job = self.get(folder.name)
            if (kind is None or job.kind == kind) and (target is None or job.target == target):
                found.append(job)
        return found

    def latest(self, kind: str, target: str) -> Job | None:
        jobs = self.all(kind, target)
        return jobs[0] if jobs else None

    def log(self, job: Job, tail_bytes: int = 200_000) -> str:
        path = self.root / job.id / "log"
        if not path.exists():
            return ""
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - tail_bytes))
            return fh.read().decode("utf-8", errors="replace")

    def cancel(self, job: Job) -> None:
        """Ctrl-C for the job's process group (training saves its state as interrupted), then
        SIGKILL after `grace` seconds if it is still there."""
        if not job.running:
            return
        (self.root / job.id / "cancelled").touch()
        _signal(job.pid, signal.SIGINT)

        def finish() -> None:
            for _ in range(60):
                time.sleep(0.5)
                if not process_alive(job.pid) or (self.root / job.id / "rc").exists():
                    return
            _signal(job.pid, signal.SIGKILL)

        threading.Thread(target=finish, daemon=True).start()


def _default_signals() -> None:
    """In the child before exec: Ctrl-C's default back. A studio started in the background by a
    shell (`specialist studio &`) ignores SIGINT, children inherit that, and sh cannot trap a
    signal ignored on entry: Stop would do nothing until the SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the child leads its own session: the whole group
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- the log
def clean_lines(text: str) -> list[str]:
    """The log as a terminal would finally show it, roughly: control codes gone, each
    carriage-return overwrite reduced to its last state."""
    out = []
    for raw in _ANSI.sub("", text).split("\n"):
        line = raw.split("\r")[-1] if "\r" in raw.rstrip("\r") else raw.rstrip("\r")
        if line.strip():
            out.append(line.rstrip())
    return out


def progress_rows(text: str) -> list[dict[str, Any]]:
    """The latest state of every rich progress row in the log, in order of appearance."""
    rows: dict[str, dict[str, Any]] = {}
    for line in clean_lines(text):
        m = _PROGRESS.match(line.strip())
        if m:
            done, total = int(m["done"]), int(m["total"])
            rows[m["label"]] = {"label": m["label"], "done": done, "total": total,
                                "percent": round(100 * done / total) if total else 100}
    return list(rows.values())


def error_line(text: str) -> str | None:
    """The one-line message the CLI printed ("error: …"), else the last line of a traceback."""
    lines = clean_lines(text)
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback"):
            tail = [ln for ln in lines[i:] if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)]
            return tail[-1] if tail else None
    if lines and lines[-1].strip().startswith("interrupted"):  # Ctrl-C/SIGTERM: what was kept
        return lines[-1].strip()
    return None


def log_tail(text: str, n: int = 12) -> list[str]:
    return [ln for ln in clean_lines(text) if not _PROGRESS.match(ln.strip())][-n:]
