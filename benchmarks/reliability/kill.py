"""Killed at any moment: SIGKILL at random points of `train`, `data split`, `data convert`,
`generate --output`, `eval`, `export` and `models prepare`, then Ctrl-C and SIGTERM.

Each command runs once uninterrupted (the reference: its duration T and its outputs), then in
trials killed after a delay drawn uniformly from [0, T) with a seeded generator. After each
kill the outputs are read as a user would read them:

- every output is absent, the old complete file (an earlier run's, present before the trial)
  or the new complete one: data files byte-equal to the reference, JSON/JSONL that parses,
  YAML that parses, safetensors that load, a GGUF whose header and tensors read;
- `--resume` (train) or the same command again (generate --output) finishes and reaches the
  reference result: the same adapter weights (max |difference|) and loss sequence, the same
  answers;
- no input the user gave changed (SHA-256 of every input file before and after).

Temporary files a SIGKILL leaves (hidden `.NAME.*.tmp` beside an output: the process had no
chance to remove them) are counted, not called corruption. SIGINT/SIGTERM trials expect exit
130/143 and a last line starting with "interrupted" (or exit 0 when the command finished
first); "answered" counts those. Known exceptions, listed under problems: a signal in Python's
own start-up (before any of this package runs) or in its final shutdown after the command
finished and printed its result (outputs complete) ends the process by the signal itself
(exit -2/-15).

The temporaries a SIGKILL leaves are counted again after the next run of the same command
(`--resume`, the rerun of generate, or the command again): it removes those of processes
that are gone.

    python benchmarks/bench_reliability.py --section kill [--quick] [--trials N] [--signal-trials N]
        [--commands "data split,train"] [--seed S] [--json]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTION = "kill"
DESCRIPTION = "SIGKILL/SIGINT/SIGTERM at random moments of 7 commands: corrupted outputs, resume equality, exit codes"
GOAL = (
    "≥ 20 SIGKILL trials per command, 0 corrupted outputs, 0 inputs modified, every resume equal, "
    "every signal answered 130/143 with a line, no temporary left after the next run"
)
ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("data split", "data convert", "generate", "eval", "export", "models prepare", "train")
TRAIN_ARGS = [
    "--max-steps",
    "12",
    "--batch-size",
    "2",
    "--seed",
    "0",
    "--set",
    "save_steps=2",
    "--set",
    "logging_steps=1",
    "--set",
    "threads=1",
]  # fixed threads: the same sums, bit for bit
WEIGHT_TOLERANCE = 1e-6
LOSS_TOLERANCE = 1e-6
OLD_EXPORT = b"GGUF an earlier export"


# ---------------------------------------------------------------- fixtures
def build_fixtures(root: Path) -> dict[str, Path]:
    """A tiny random Llama with SmolLM2's real tokenizer and the data files (run() adds a tiny
    trained run and a GGUF of the tiny model, made by the tool itself)."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import build_tiny_model, save_chat_tokenizer  # the suite's own tiny models

    root.mkdir(parents=True, exist_ok=True)
    fx = {"root": root}
    fx["model"] = build_tiny_model(root / "model", save_chat_tokenizer(root / "tok"), "llama")
    return {**fx, **write_data(root)}


def write_data(root: Path, big: int = 20000, prompts: int = 24) -> dict[str, Path]:
    """The data files: training and eval pairs, a system prompt, a big file for split/convert
    (so a kill can land inside their work) and a prompt file for generate."""
    fx = {"root": root}
    rows = [
        {"prompt": f"Pytanie {i}: ile kosztuje kawa numer {i}?", "completion": f"Kawa {i} kosztuje {10 + i} zł."}
        for i in range(8)
    ]
    fx["train"] = _jsonl(root / "train.jsonl", rows)
    fx["eval_data"] = _jsonl(
        root / "eval.jsonl",
        [{"prompt": f"Czy kawa {i} jest dobra?", "completion": f"Tak, kawa {i} jest świetna."} for i in range(4)],
    )
    (root / "system_prompt.txt").write_text("Odpowiadaj krótko po polsku.\n", encoding="utf-8")
    fx["big"] = _jsonl(
        root / "big.jsonl",
        [
            {
                "prompt": f"Pytanie {i} o kawę numer {i * 7919 % 100003}?",
                "completion": f"Odpowiedź {i}: kawa {i % 97} z Etiopii.",
            }
            for i in range(big)
        ],
    )
    fx["prompts"] = _jsonl(
        root / "prompts.jsonl", [{"id": i, "prompt": f"Powiedz coś o kawie {i}."} for i in range(prompts)]
    )
    return fx


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- reading outputs as a user would
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_hashes(path: Path) -> dict[str, str]:
    if path.is_file():
        return {path.name: sha256(path)}
    if not path.is_dir():
        return {}
    return {str(p.relative_to(path)): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def temp_leftovers(folder: Path) -> list[Path]:
    """The hidden temporary files and folders the atomic writes make beside an output."""
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


def leftovers(sc: Scenario, work: Path) -> int:
    return sum(len(temp_leftovers(p if p.is_dir() else p.parent)) for p in sc.outputs(work))


def jsonl_problems(path: Path) -> tuple[list[str], bool]:
    """(complete lines that do not parse, whether a torn last line is there)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    bad = []
    for n, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                bad.append(f"{path.name}:{n}: not JSON")
    return bad, end < len(data)


def safetensors_problem(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable in every safetensors version
                f.get_tensor(key)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return f"{path.name}: safetensors does not load ({str(exc)[:80]})"
    return None


def gguf_problem(path: Path, tensors: int | None = None) -> str | None:
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
        found = len(reader.tensors)
        for t in reader.tensors:
            _ = t.data[:1]
    except Exception as exc:  # noqa: BLE001
        return f"{path.name}: GGUF does not read ({str(exc)[:80]})"
    if tensors is not None and found != tensors:
        return f"{path.name}: {found} tensors, expected {tensors}"
    return None


def parse_problem(path: Path, kind: str = "JSON") -> str | None:
    """Why a file that must parse as JSON (or YAML) does not, or None."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        (json.loads if kind == "JSON" else yaml.safe_load)(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        return f"{path.name}: not {kind} ({' '.join(str(exc).split())[:80]})"
    return None


def old_or_new(path: Path, old: dict[str, str], new: dict[str, str]) -> str | None:
    """A file or folder must be absent, exactly the old one or exactly the reference."""
    now = tree_hashes(path)
    if not path.exists() or now in (old, new):
        return None
    return f"{path.name}: neither the old nor the new complete output"


# ---------------------------------------------------------------- scenarios
class Scenario:
    """One command under trial (a plain class: `specialist bench` imports benchmark files
    without registering them as modules, which dataclasses need)."""

    def __init__(
        self,
        name: str,
        argv: Callable[[dict, Path], list[str]],
        inputs: Callable[[dict], list[Path]],
        outputs: Callable[[Path], list[Path]],
        setup: Callable[[dict, Path], None] | None = None,
        check: Callable[[dict, Path, dict], list[str]] | None = None,
        resume: Callable[[dict, Path, dict], dict] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv  # (fixtures, trial folder) -> CLI arguments
        self.inputs = inputs
        self.outputs = outputs  # in the trial folder
        self.setup = setup or (lambda fx, work: None)  # the old outputs, before a trial
        self.check = check  # problems after a kill
        self.resume = resume  # continue, compare with the reference
        self.reference: dict = {}


def scenarios() -> dict[str, Scenario]:
    s: dict[str, Scenario] = {}

    # data split / convert: an earlier output is there (--overwrite): afterwards old or new, byte for byte
    def split_setup(fx: dict, work: Path) -> None:
        (work / "split").mkdir(parents=True)
        _jsonl(work / "split" / "train.jsonl", [{"prompt": "old", "completion": "old"}])
        _jsonl(work / "split" / "eval.jsonl", [{"prompt": "old eval", "completion": "old"}])

    def split_check(fx: dict, work: Path, ref: dict) -> list[str]:
        out = []
        for name in ("train.jsonl", "eval.jsonl"):
            old = {name: ref["old"][name]}
            out += [p for p in [old_or_new(work / "split" / name, old, {name: ref["new"][name]})] if p]
        return out

    s["data split"] = Scenario(
        "data split",
        lambda fx, w: [
            "data",
            "split",
            str(fx["big"]),
            "--eval-fraction",
            "0.1",
            "--out",
            str(w / "split"),
            "--seed",
            "0",
            "--overwrite",
        ],
        lambda fx: [fx["big"]],
        lambda w: [w / "split"],
        split_setup,
        split_check,
    )

    def convert_setup(fx: dict, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        _jsonl(work / "chat.jsonl", [{"messages": [{"role": "user", "content": "old"}]}])

    def convert_check(fx: dict, work: Path, ref: dict) -> list[str]:
        p = old_or_new(work / "chat.jsonl", ref["old"], ref["new"])
        return [p] if p else []

    s["data convert"] = Scenario(
        "data convert",
        lambda fx, w: [
            "data",
            "convert",
            str(fx["big"]),
            "--to",
            "chat",
            "--out",
            str(w / "chat.jsonl"),
            "--overwrite",
        ],
        lambda fx: [fx["big"]],
        lambda w: [w],
        convert_setup,
        convert_check,
    )

    # generate --output: an append-only log; complete lines parse, a rerun finishes it
    def gen_check(fx: dict, work: Path, ref: dict) -> list[str]:
        path = work / "answers.jsonl"
        if not path.exists():
            return []
        bad, torn = jsonl_problems(path)
        ref.setdefault("torn", 0)
        ref["torn"] += int(torn)
        return bad

    def gen_resume(fx: dict, work: Path, ref: dict) -> dict:
        proc = run_cli(s["generate"].argv(fx, work), work)
        answers = {
            json.loads(line)["id"]: json.loads(line)["answer"]
            for line in (work / "answers.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        }
        lines = len((work / "answers.jsonl").read_text(encoding="utf-8").splitlines())
        return {
            "ok": proc.returncode == 0 and lines == len(ref["answers"]),
            "equal": answers == ref["answers"],
            "detail": proc.stderr[-300:] if proc.returncode else "",
        }

    s["generate"] = Scenario(
        "generate",
        lambda fx, w: [
            "generate",
            "--model",
            str(fx["model"]),
            "--input",
            str(fx["prompts"]),
            "--output",
            str(w / "answers.jsonl"),
            "--max-new-tokens",
            "16",
            "--batch-size",
            "4",
            "--threads",
            "1",
        ],
        lambda fx: [fx["prompts"], fx["model"]],
        lambda w: [w],
        check=gen_check,
        resume=gen_resume,
    )

    # eval: report.json/html of an earlier eval are there; afterwards old or new complete ones
    def eval_setup(fx: dict, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        (work / "report.json").write_text('{"old": true}\n', encoding="utf-8")
        (work / "report.html").write_text("<html>old</html>\n", encoding="utf-8")

    def eval_check(fx: dict, work: Path, ref: dict) -> list[str]:
        out = []
        rj, rh = work / "report.json", work / "report.html"
        if rj.read_text(encoding="utf-8") != '{"old": true}\n':
            p = parse_problem(rj)
            if p or "contenders" not in json.loads(rj.read_text(encoding="utf-8")):
                out.append(p or "report.json: parses but is not a report")
        if rh.read_text(encoding="utf-8") != "<html>old</html>\n" and not rh.read_text(
            encoding="utf-8"
        ).rstrip().endswith("</html>"):
            out.append("report.html: cut short")
        return out

    s["eval"] = Scenario(
        "eval",
        lambda fx, w: [
            "eval",
            "--model",
            str(fx["run"]),
            "--data",
            str(fx["eval_data"]),
            "--system-prompt",
            str(fx["root"] / "system_prompt.txt"),
            "--few-shot",
            "1",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "4",
            "--dtype",
            "fp32",
            "--style-negatives",
            "4",
            "--json",
            str(w / "report.json"),
            "--html",
            str(w / "report.html"),
        ],
        lambda fx: [fx["eval_data"], fx["run"] / "adapter", fx["run"] / "run.json", fx["model"], fx["train"]],
        lambda w: [w],
        eval_setup,
        eval_check,
    )

    # export: an earlier export is there (--overwrite); afterwards the old folder or a complete new one
    def export_setup(fx: dict, work: Path) -> None:
        (work / "gguf").mkdir(parents=True)
        (work / "gguf" / "old-f16.gguf").write_bytes(OLD_EXPORT)

    def export_check(fx: dict, work: Path, ref: dict) -> list[str]:
        out = work / "gguf"
        if not out.exists() or tree_hashes(out) == ref["old"]:
            return []
        files = sorted(p.name for p in out.iterdir())
        if files != ref["files"]:
            return [f"gguf/: files {files}, expected {ref['files']}"]
        problems = [gguf_problem(out / ref["gguf"], ref["tensors"])]
        problems += [parse_problem(out / name) for name in ref["files"] if name.endswith(".json")]  # parity.json
        return [p for p in problems if p]

    s["export"] = Scenario(
        "export",
        lambda fx, w: [
            "export",
            "--model",
            str(fx["run"]),
            "--format",
            "gguf",
            "--out",
            str(w / "gguf"),
            "--overwrite",
        ],
        lambda fx: [fx["run"] / "adapter", fx["run"] / "run.json", fx["model"]],
        lambda w: [w],
        export_setup,
        export_check,
    )

    # models prepare: a GGUF converted into the cache; afterwards no folder or a complete one
    def prepare_check(fx: dict, work: Path, ref: dict) -> list[str]:
        out = []
        for folder in (work / "home" / "models").glob("gguf-*") if (work / "home" / "models").is_dir() else []:
            if folder.name.startswith("."):
                continue
            names = sorted(p.name for p in folder.iterdir())
            if names != ref["files"]:
                out.append(f"{folder.name}: files {names}, expected {ref['files']}")
                continue
            out += [
                p
                for p in [parse_problem(folder / "config.json"), safetensors_problem(folder / "model.safetensors")]
                if p
            ]
        return out

    s["models prepare"] = Scenario(
        "models prepare",
        lambda fx, w: ["models", "prepare", str(fx["gguf"])],
        lambda fx: [fx["gguf"]],
        lambda w: [w / "home"],
        check=prepare_check,
    )

    # train: every file of the run folder readable; --resume reaches the uninterrupted run's weights and losses
    def train_check(fx: dict, work: Path, ref: dict) -> list[str]:
        run = work / "run"
        out = []
        if (run / "run.json").exists():
            out += [p for p in [parse_problem(run / "run.json")] if p]
        if (run / "config.yaml").exists():
            out += [p for p in [parse_problem(run / "config.yaml", "YAML")] if p]
        if (run / "metrics.jsonl").exists():
            bad, torn = jsonl_problems(run / "metrics.jsonl")
            out += bad
            ref.setdefault("torn", 0)
            ref["torn"] += int(torn)
        if (run / "adapter").exists():
            out += [p for p in [safetensors_problem(run / "adapter" / "adapter_model.safetensors")] if p]
        return out

    def train_resume(fx: dict, work: Path, ref: dict) -> dict:
        run = work / "run"
        if (run / "config.yaml").exists():
            proc = run_cli(["train", "--out", str(run), "--resume"], work)
        else:  # killed before the run folder was set up: nothing to resume, start it
            proc = run_cli(s["train"].argv(fx, work), work)
        if proc.returncode != 0:
            return {"ok": False, "equal": False, "detail": proc.stderr[-300:]}
        diff = weight_difference(run / "adapter" / "adapter_model.safetensors", ref["adapter"])
        losses = loss_sequence(run / "metrics.jsonl")
        same_losses = len(losses) == len(ref["losses"]) and all(
            abs(a - b) <= LOSS_TOLERANCE for a, b in zip(losses, ref["losses"])
        )
        return {
            "ok": True,
            "equal": diff <= WEIGHT_TOLERANCE and same_losses,
            "max_weight_difference": diff,
            "same_losses": same_losses,
        }

    s["train"] = Scenario(
        "train",
        lambda fx, w: train_argv(fx["train"], fx["model"], w / "run", *TRAIN_ARGS),
        lambda fx: [fx["train"], fx["model"]],
        lambda w: [w / "run"],
        check=train_check,
        resume=train_resume,
    )
    return s


def weight_difference(path: Path, reference: Path) -> float:
    from safetensors.torch import load_file

    a, b = load_file(str(path)), load_file(str(reference))
    if a.keys() != b.keys():
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def loss_sequence(path: Path) -> list[float]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["loss"] for r in records if "loss" in r]


# ---------------------------------------------------------------- running
def _env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "SPECIALIST_HOME": str(work / "home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def train_argv(data: Path, model: Path, out: Path, *more: str) -> list[str]:
    return ["train", "--data", str(data), "--model", str(model), "--out", str(out), *more]


def run_cli(args: list[str], work: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "specialist", *args],
        capture_output=True,
        text=True,
        env=_env(work),
        cwd=work,
        timeout=timeout,
    )


def spawn(args: list[str], work: Path, **kw: Any) -> subprocess.Popen:
    """The command in its own process, with Ctrl-C's default meaning restored: a shell starts
    background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored."""
    return subprocess.Popen(
        [sys.executable, "-m", "specialist", *args],
        env=_env(work),
        cwd=work,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )


def interrupt(args: list[str], work: Path, delay: float, sig: int) -> tuple[int, str, bool]:
    """Start the command, send `sig` after `delay` seconds; (exit code, stderr, signalled)."""
    with tempfile.TemporaryFile() as err:
        proc = spawn(args, work, stdout=subprocess.DEVNULL, stderr=err)
        try:
            proc.wait(timeout=delay)
            signalled = False
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            signalled = True
        try:
            rc = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        err.seek(0)
        return rc, err.read().decode("utf-8", errors="replace"), signalled


def prepare_reference(fx: dict, sc: Scenario, root: Path) -> None:
    """One uninterrupted run: its duration and the outputs trials are compared with."""
    work = root / "reference"
    work.mkdir(parents=True)
    (work / "home").mkdir()
    sc.setup(fx, work)
    old = {p: tree_hashes(p) for p in sc.outputs(work)}
    t0 = time.perf_counter()
    proc = run_cli(sc.argv(fx, work), work)
    sc.reference["seconds"] = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{sc.name}: the reference run failed: {proc.stderr[-2000:]}")
    ref = sc.reference
    if sc.name == "data split":
        ref["old"] = {
            "train.jsonl": old[work / "split"]["train.jsonl"],
            "eval.jsonl": old[work / "split"]["eval.jsonl"],
        }
        ref["new"] = tree_hashes(work / "split")
    elif sc.name == "data convert":
        ref["old"] = {"chat.jsonl": old[work]["chat.jsonl"]}
        ref["new"] = tree_hashes(work / "chat.jsonl")
    elif sc.name == "generate":
        ref["answers"] = {
            json.loads(line)["id"]: json.loads(line)["answer"]
            for line in (work / "answers.jsonl").read_text(encoding="utf-8").splitlines()
        }
    elif sc.name == "export":
        ref["old"] = {"old-f16.gguf": hashlib.sha256(OLD_EXPORT).hexdigest()}
        ref["files"] = sorted(p.name for p in (work / "gguf").iterdir())
        import gguf

        ref["gguf"] = next(name for name in ref["files"] if name.endswith(".gguf"))
        ref["tensors"] = len(gguf.GGUFReader(str(work / "gguf" / ref["gguf"])).tensors)
    elif sc.name == "models prepare":
        folder = next((work / "home" / "models").glob("gguf-*"))
        ref["files"] = sorted(p.name for p in folder.iterdir())
        ref["weights"] = tree_hashes(folder / "model.safetensors")
    elif sc.name == "train":
        ref["adapter"] = work / "run" / "adapter" / "adapter_model.safetensors"
        ref["losses"] = loss_sequence(work / "run" / "metrics.jsonl")


def run_trials(fx: dict, sc: Scenario, root: Path, trials: int, rng: random.Random, sig: int = signal.SIGKILL) -> dict:
    """`trials` runs of the command, each sent `sig` after a random delay; the findings."""
    inputs = list(sc.inputs(fx))
    before = {str(p): tree_hashes(p) for p in inputs}
    figures: dict[str, Any] = {
        "command": sc.name,
        "signal": signal.Signals(sig).name,
        "trials": trials,
        "signalled": 0,
        "corrupted": 0,
        "inputs_modified": 0,
        "temp_left": 0,
        "temp_left_after_next_run": 0,
        "exit_codes": {},
        "problems": [],
    }
    if sc.resume is not None and sig == signal.SIGKILL:
        figures.update(resumed=0, resume_equal=0)
    # Ctrl-C/SIGTERM after the interpreter and the CLI are up (a signal during Python's own start
    # is the interpreter's business); SIGKILL anywhere
    low = 0.0 if sig == signal.SIGKILL else min(2.0, 0.8 * sc.reference["seconds"])
    for i in range(trials):
        work = root / f"{signal.Signals(sig).name.lower()}-{i}"
        work.mkdir(parents=True)
        (work / "home").mkdir()
        sc.setup(fx, work)
        delay = rng.uniform(low, sc.reference["seconds"])
        rc, err, signalled = interrupt(sc.argv(fx, work), work, delay, sig)
        figures["signalled"] += int(signalled)
        figures["exit_codes"][str(rc)] = figures["exit_codes"].get(str(rc), 0) + 1
        problems = sc.check(fx, work, sc.reference) if sc.check else []
        if sig != signal.SIGKILL and signalled:
            want = 130 if sig == signal.SIGINT else 143
            last = err.strip().splitlines()[-1] if err.strip() else ""
            if rc not in (0, want) or (rc == want and not last.startswith("interrupted")) or "Traceback" in err:
                problems.append(f"exit {rc}, last line {last[:120]!r}")
            figures["answered"] = figures.get("answered", 0) + int(rc == want and last.startswith("interrupted"))
            figures["finished_first"] = figures.get("finished_first", 0) + int(rc == 0)
        left = leftovers(sc, work)
        figures["temp_left"] += left
        if sc.resume is None and left:  # the next run of the same command removes what the killed one left
            proc = run_cli(sc.argv(fx, work), work)
            if proc.returncode != 0:
                problems.append(f"the next run: exit {proc.returncode}, {proc.stderr.strip()[-200:]!r}")
        if sc.resume is not None and sig == signal.SIGKILL:
            result = sc.resume(fx, work, sc.reference)
            figures["resumed"] += int(result["ok"])
            figures["resume_equal"] += int(result["ok"] and result["equal"])
            if "max_weight_difference" in result:
                figures["max_weight_difference"] = max(
                    figures.get("max_weight_difference", 0.0), result["max_weight_difference"]
                )
            if not (result["ok"] and result["equal"]):
                problems.append(f"resume: {result}")
            if sc.check:
                problems += [f"after resume: {p}" for p in sc.check(fx, work, sc.reference)]
        figures["temp_left_after_next_run"] += leftovers(sc, work) if left or sc.resume is not None else 0
        if problems:
            figures["corrupted"] += 1
            figures["problems"].append({"trial": i, "delay": round(delay, 2), "exit": rc, "problems": problems})
        after = {str(p): tree_hashes(p) for p in inputs}
        if after != before:
            figures["inputs_modified"] += 1
            before = after
        shutil.rmtree(work, ignore_errors=True)
    if "torn" in sc.reference:
        figures["torn_last_lines"] = sc.reference.pop("torn")
    return figures


def measure(
    trials: int = 20,
    signal_trials: int = 4,
    seed: int = 0,
    commands: tuple[str, ...] = COMMANDS,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """The trials of `commands`: one row per command and signal."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="bench-kill-")) if own else workdir
    try:
        fx = build_fixtures(root / "fixtures")
        # the trained run (eval, export) and the GGUF (models prepare) are outputs of the tool itself
        setup = root / "setup"
        (setup / "home").mkdir(parents=True)
        if {"eval", "export"} & set(commands):
            proc = run_cli(
                train_argv(fx["train"], fx["model"], setup / "run", "--max-steps", "2", "--batch-size", "2"), setup
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            fx["run"] = setup / "run"
        if "models prepare" in commands:
            proc = run_cli(
                ["export", "--model", str(fx["model"]), "--format", "gguf", "--out", str(setup / "gguf")], setup
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            fx["gguf"] = next((setup / "gguf").glob("*.gguf"))
        all_scenarios = scenarios()
        rows = []
        rng = random.Random(seed)
        for name in commands:
            sc = all_scenarios[name]
            base = root / name.replace(" ", "-")
            prepare_reference(fx, sc, base)
            log(f"kill: {name}: reference {sc.reference['seconds']:.1f} s")
            for sig, n in ((signal.SIGKILL, trials), (signal.SIGINT, signal_trials), (signal.SIGTERM, signal_trials)):
                if n:
                    row = run_trials(fx, sc, base, n, rng, sig)
                    row["reference_seconds"] = round(sc.reference["seconds"], 2)
                    rows.append(row)
                    log(f"kill:   {row['signal']}: {row['trials']} trials, {row['corrupted']} with problems")
        return {"rows": rows, "seed": seed}
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def run(
    quick: bool = False,
    work: Path | None = None,
    trials: int | None = None,
    signal_trials: int | None = None,
    seed: int = 0,
    commands: tuple[str, ...] = COMMANDS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The kill section: `trials` SIGKILLs (20; quick 2) and `signal_trials` Ctrl-C and SIGTERM
    (4 each; quick 1) per command."""
    trials = trials if trials is not None else (2 if quick else 20)
    signal_trials = signal_trials if signal_trials is not None else (1 if quick else 4)
    rows = measure(trials, signal_trials, seed, tuple(commands), work, progress or (lambda m: None))["rows"]
    kills = [r for r in rows if r["signal"] == "SIGKILL"]
    signals = [r for r in rows if r["signal"] != "SIGKILL"]
    resumable = [r for r in kills if "resumed" in r]
    summary = {
        "kill_trials": sum(r["trials"] for r in kills),
        "kills_inside_the_command": sum(r["signalled"] for r in kills),
        "corrupted_outputs": sum(r["corrupted"] for r in kills),
        "inputs_modified": sum(r["inputs_modified"] for r in rows),
        "resumed": sum(r["resumed"] for r in resumable),
        "resume_equal": sum(r["resume_equal"] for r in resumable),
        "temporaries_left_by_sigkill": sum(r["temp_left"] for r in kills),
        "temporaries_left_after_next_run": sum(r["temp_left_after_next_run"] for r in kills),
        "signal_trials": sum(r["trials"] for r in signals),
        "signals_landed": sum(r["signalled"] for r in signals),
        "signals_answered": sum(r.get("answered", 0) for r in signals),
        "signals_after_the_command_finished": sum(r.get("finished_first", 0) for r in signals),
        "signal_problems": sum(r["corrupted"] for r in signals),
    }
    per_command = ", ".join(f"{r['command']} {r['trials']}" for r in kills)
    figures = [
        (
            "SIGKILL trials",
            summary["kill_trials"],
            f"≥ {trials} per command",
            all(r["trials"] >= trials for r in kills) and len(kills) == len(commands),
            per_command,
        ),
        ("SIGKILLs that landed inside the command", summary["kills_inside_the_command"], "", None),
        ("corrupted outputs", summary["corrupted_outputs"], "0", summary["corrupted_outputs"] == 0),
        ("inputs modified", summary["inputs_modified"], "0", summary["inputs_modified"] == 0),
        *(
            (
                f"{r['command']}: resumed equal to an uninterrupted run",
                f"{r['resume_equal']}/{r['trials']}",
                "all",
                r["resume_equal"] == r["resumed"] == r["trials"],
            )
            for r in resumable
        ),
        ("temporaries left by SIGKILL", summary["temporaries_left_by_sigkill"], "", None),
        (
            "temporaries left after the next run",
            summary["temporaries_left_after_next_run"],
            "0",
            summary["temporaries_left_after_next_run"] == 0,
        ),
        (
            "Ctrl-C/SIGTERM answered 130/143 with a line",
            f"{summary['signals_answered']}/{summary['signals_landed']}",
            "every one that landed (or exit 0: the command had finished)",
            summary["signal_problems"] == 0,
            f"{summary['signal_trials']} trials, {summary['signals_after_the_command_finished']} landed after "
            f"the command finished (exit 0), {summary['signal_problems']} with another exit",
        ),
    ]
    flat = [
        {"section": SECTION}
        | {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items() if k != "problems"}
        | {"problems": len(r["problems"])}
        for r in rows
    ]
    failures = [
        {"command": r["command"], "signal": r["signal"], **p, "problem": "; ".join(p["problems"])[:1500]}
        for r in rows
        for p in r["problems"]
    ]
    return {
        "rows": flat,
        "summary": summary,
        "figures": figures,
        "ok": all(f[3] is not False for f in figures),
        "failures": failures,
    }
