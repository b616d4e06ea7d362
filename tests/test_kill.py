"""Killed at any moment, in reduced form (the reliability benchmark's kill section,
benchmarks/reliability/kill.py, runs 20 trials of each): SIGKILL at seeded random points of the
seven writing commands leaves no half-written output and no changed input, train --resume
reaches the uninterrupted run's weights and losses, generate --output finishes on a rerun;
Ctrl-C and SIGTERM exit 130/143 with a line saying what was kept."""

from __future__ import annotations

import json
import random
import signal

import pytest

from specialist.errors import Interrupted, Terminated
from tests.helpers import load_benchmark

kill = load_benchmark("reliability/kill")


@pytest.fixture(scope="module")
def fx(tiny_chat_model, tmp_path_factory) -> dict:
    """The benchmark's inputs on the suite's tiny model; the run and the GGUF made in-process."""
    from specialist.config import load_train_config
    from specialist.export.build import export
    from specialist.train import train

    root = tmp_path_factory.mktemp("kill")
    fx = kill.write_data(root, big=6000, prompts=8)
    fx["model"] = tiny_chat_model
    fx["run"] = train(
        load_train_config(
            overrides=dict(data=fx["train"], model=str(tiny_chat_model), out=root / "run", max_steps=2, batch_size=2)
        ),
        show_progress=False,
    )
    fx["gguf"] = next(p for p in export(str(tiny_chat_model), "gguf", root / "gguf").out.glob("*.gguf"))
    return fx


# (command, SIGKILL trials). eval, export and models prepare take half a minute or more per
# trial: the fast suite leaves them (and train's Ctrl-C twin of the SIGTERM test) to the
# benchmark's 20 trials and `make test-slow`.
SLOW = pytest.mark.slow
TRIALS = [
    ("data split", 2),
    ("data convert", 2),
    ("generate", 1),
    ("train", 1),
    pytest.param("eval", 1, marks=SLOW),
    pytest.param("export", 1, marks=SLOW),
    pytest.param("models prepare", 1, marks=SLOW),
]


@pytest.mark.parametrize(("command", "trials"), TRIALS)
def test_sigkill_leaves_whole_outputs_and_untouched_inputs(command, trials, fx, tmp_path):
    sc = kill.scenarios()[command]
    kill.prepare_reference(fx, sc, tmp_path)
    figures = kill.run_trials(fx, sc, tmp_path, trials, random.Random(sum(map(ord, command))), signal.SIGKILL)
    assert figures["signalled"] >= 1 or trials == 0
    assert figures["corrupted"] == 0, figures["problems"]
    assert figures["inputs_modified"] == 0
    if sc.resume is not None:
        assert figures["resumed"] == figures["resume_equal"] == trials, figures


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGINT"],
)
def test_train_interrupted_says_what_was_kept(sig, code, fx, tmp_path):
    """Sent once the first checkpoint exists: the run is marked interrupted, the checkpoint kept."""
    import subprocess
    import time

    run = tmp_path / "run"
    argv = kill.train_argv(fx["train"], fx["model"], run, "--max-steps", "400", "--batch-size", "2")
    argv += ["--set", "save_steps=2", "--set", "logging_steps=1"]
    proc = kill.spawn(argv, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended or hung before the signal"
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at step") and "kept checkpoints/checkpoint-" in last and "--resume" in last
    assert "Traceback" not in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    from specialist.run_folder import is_complete_checkpoint

    assert all(is_complete_checkpoint(p) for p in (run / "checkpoints").iterdir())  # none cut short


def test_generate_sigterm_keeps_the_answers_written(fx, tmp_path):
    import subprocess
    import time

    out = tmp_path / "answers.jsonl"
    argv = kill.scenarios()["generate"].argv(fx, tmp_path)
    argv[argv.index("--batch-size") + 1] = "1"  # one answer per write: the signal lands between or inside them
    proc = kill.spawn(argv, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text(encoding="utf-8").count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    kept = len(out.read_text(encoding="utf-8").splitlines())
    assert err.strip().splitlines()[-1] == (
        f"interrupted: {kept} of 8 answers kept in {out}; run the same command again to answer the rest"
    )
    assert out.read_bytes().endswith(b"\n") and all(json.loads(line) for line in out.read_text().splitlines())


def test_other_commands_end_with_the_exit_code_of_their_signal(monkeypatch, tmp_path, capsys):
    """Typer turns a KeyboardInterrupt into a silent exit 130; the CLI names what was kept and
    gives SIGTERM its own 143."""
    import specialist.data.split as split
    from specialist import cli

    data = kill.write_data(tmp_path, big=10, prompts=1)["big"]
    for exc, code in ((KeyboardInterrupt(), 130), (Terminated(), 143)):

        def stop(*args, _exc=exc, **kwargs):
            raise _exc

        monkeypatch.setattr(split, "split_dataset", stop)
        monkeypatch.setattr(
            "sys.argv",
            ["specialist", "data", "split", str(data), "--eval-fraction", "0.5", "--out", str(tmp_path / "out")],
        )
        with pytest.raises(SystemExit) as info:
            cli.main()
        assert info.value.code == code
        err = capsys.readouterr().err.strip()
        assert err.startswith("interrupted: no output was half-written") and len(err.splitlines()) == 1
    assert signal.getsignal(signal.SIGTERM) is not cli._on_sigterm  # main() gives the handler back


def _lazy_import_interrupted(exc: KeyboardInterrupt):
    """What transformers' lazy import raises when the signal lands inside it (found by the kill
    benchmark: a SIGTERM during `train`'s set-up ended with exit 1 and this error's text)."""

    def stop(*args, **kwargs):
        try:
            raise exc
        except KeyboardInterrupt as inner:
            raise ModuleNotFoundError("Could not import module 'EarlyStoppingCallback'.") from inner

    return stop


def test_a_signal_a_library_reports_as_its_own_error_is_still_the_signal(monkeypatch, tmp_path, capsys):
    import specialist.data.split as split
    from specialist import cli

    data = kill.write_data(tmp_path, big=10, prompts=1)["big"]
    monkeypatch.setattr(split, "split_dataset", _lazy_import_interrupted(Terminated()))
    monkeypatch.setattr(
        "sys.argv", ["specialist", "data", "split", str(data), "--eval-fraction", "0.5", "--out", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 143
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: no output was half-written") and len(err.splitlines()) == 1
    # any other library error is still an error (a traceback, as before: a bug to report)
    monkeypatch.setattr(split, "split_dataset", _boom)
    with pytest.raises(ModuleNotFoundError):
        cli.main()


def _boom(*args, **kwargs):
    raise ModuleNotFoundError("a real missing module")


def test_train_interrupted_inside_a_library_is_interrupted_not_failed(monkeypatch, tiny_chat_model, tmp_path, run_cli):
    from specialist.train.trainer import CompletionTrainer

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}?", "completion": f"a{i}."}) + "\n" for i in range(4)))
    monkeypatch.setattr(CompletionTrainer, "train", _lazy_import_interrupted(Terminated()))
    proc = run_cli("train", "--data", data, "--model", tiny_chat_model, "--out", tmp_path / "run", "--max-steps", "2")
    assert proc.exit_code == 143, proc.stderr
    assert proc.stderr.strip().startswith("interrupted at step 0") and "--resume" in proc.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


def test_interrupted_maps_its_cause_to_the_exit_code():
    assert Interrupted("interrupted", KeyboardInterrupt()).exit_code == 130
    assert Interrupted("interrupted", Terminated()).exit_code == 143
    assert isinstance(Terminated(), KeyboardInterrupt)  # every Ctrl-C path also handles SIGTERM


def test_a_checkpoint_cut_short_is_skipped_and_removed(tmp_path):
    """A kill or a full disk inside trainer_state.json (written last, in place) leaves a torn one."""
    from specialist.run_folder import last_checkpoint, read_metrics, remove_incomplete_checkpoints, trim_metrics

    run = tmp_path / "run"
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st'), (6, None)):
        folder = run / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_checkpoint(run).name == "checkpoint-2"
    assert sorted(p.name for p in remove_incomplete_checkpoints(run)) == ["checkpoint-4", "checkpoint-6"]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-2"]
    # metrics.jsonl is appended to: a torn last line is not a record, and resuming drops it
    metrics = run / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert [m["step"] for m in read_metrics(metrics)] == [1, 2]
    trim_metrics(metrics, 2)
    assert metrics.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


def test_the_next_write_removes_the_temporaries_of_a_killed_process(tmp_path):
    """A SIGKILL leaves the hidden temporary of an atomic write; each names its process, and the
    next write of the same output removes those whose process is gone (not a live one's)."""
    import os
    import subprocess
    import sys

    from specialist.io import atomic_dir, atomic_write_text

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out, folder = tmp_path / "out.json", tmp_path / "adapter"
    dead = [
        tmp_path / f".out.json.{gone.pid}-abc123.tmp",
        tmp_path / f".adapter.tmp-{gone.pid}-x_9",
        tmp_path / f".adapter.tmp-{gone.pid}-y_8.old",
    ]
    alive = [tmp_path / f".out.json.{os.getppid()}-abc123.tmp", tmp_path / f".out.json.{os.getpid()}-own.tmp"]
    other = [tmp_path / f".other.json.{gone.pid}-abc123.tmp"]
    for p in dead + alive + other:
        p.mkdir() if p.suffix != ".tmp" else p.write_text("half")
    folder.mkdir()  # an earlier adapter: its stepped-aside copy (.old) is no longer the only one
    atomic_write_text(out, "{}")
    with atomic_dir(folder) as tmp:
        (tmp / "weights").write_text("w")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["adapter", "out.json", *(p.name for p in alive + other)])


def test_a_signal_while_python_unloads_its_modules_does_not_kill_the_finished_command(tmp_path):
    """Python gives up signal handling before it unloads its modules (seconds with torch loaded):
    a Ctrl-C there would end a finished command by the signal. It is ignored: the command's own
    exit code stands. The signal comes from an object destroyed as its module is unloaded."""
    import subprocess
    import sys

    script = (
        "import os, signal, sys, types\n"
        "class Late:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "holder = types.ModuleType('zz_holder'); holder.late = Late(); sys.modules['zz_holder'] = holder\n"
        "del holder\n"
        "from specialist.__main__ import run\n"
        "sys.argv = ['specialist', 'models', 'list', '--json']\n"
        "run()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=kill._env(tmp_path), timeout=300
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert json.loads(proc.stdout)
