"""The run folder's typed summary (run.json) and the atomic writes under it: what train writes
reads back the same, a broken run.json is one located line and exit 2, and a write that fails
half way leaves the old file (or folder) as it was, with no temporary left behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specialist.errors import SpecialistError
from specialist.io import atomic_dir, atomic_write_json
from specialist.run_folder import (
    RunFolder,
    RunSummary,
    is_run_dir,
    plot_loss,
    read_config,
    read_summary,
    write_summary,
)
from tests.helpers import write_run_files

# A completed run with a knowledge base, byte for byte as `specialist train` wrote it before
# run.json had a schema: the schema must not change a byte of it.
TRAINED = """{
  "base_model": "gemma-3-270m",
  "method": "lora",
  "dataset": "/data/train.jsonl",
  "dataset_fingerprint": "sha256:d12735d203ce1f4edbe35c9dd78fa1fd0a1ac74b006cfec75976f718b261584f",
  "examples": 428,
  "eval_data": null,
  "eval_dataset_fingerprint": null,
  "eval_examples": 0,
  "device": "cpu",
  "base_dtype": "bfloat16",
  "mixed_precision": "bf16",
  "processes": 1,
  "threads_per_process": 1,
  "status": "completed",
  "started_at": "2026-11-29T03:23:04Z",
  "training_examples": 492,
  "knowledge": {
    "source": "/data/kb",
    "fingerprint": "sha256:e486ea64c0f475ad6ad1fb37d0bdd9ae14f6c3fdc6955d5542bffba8c208753c",
    "passages": 80,
    "retrieval": {
      "top_k": 3,
      "method": "bm25",
      "language": "auto",
      "embedding_model": null
    },
    "augment": {
      "examples": 428,
      "answer_passage_added": 117,
      "abstentions": 64,
      "abstention_source": "template (pl)",
      "grounded": 225,
      "stating_facts": 256
    }
  },
  "finished_at": "2026-11-29T05:02:44Z",
  "steps": 186,
  "max_steps": 186,
  "epochs": 3.0,
  "train_seconds": 5978.3,
  "train_tokens": 493971,
  "tokens_per_second": 82.7,
  "train_loss": 1.5548617929540656,
  "final_loss": 1.100785732269287,
  "eval_loss": null,
  "best_checkpoint": null
}
"""

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # surrogates are not UTF-8
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=10)


def _field_values(annotation: object) -> st.SearchStrategy:
    kinds = set(getattr(annotation, "__args__", (annotation,))) - {type(None)}
    kind = kinds.pop()
    scalars = {str: text, int: st.integers(), float: st.floats(allow_nan=False)}
    if getattr(kind, "__origin__", kind) is dict:
        _, item = kind.__args__
        return st.none() | st.dictionaries(text, scalars.get(item, json_values), max_size=3)
    return st.none() | scalars[kind]


# any subset of the fields with any value of their type, plus keys of older or newer runs
summaries = st.builds(
    lambda fields, unknown: {**unknown, **fields},
    st.fixed_dictionaries({}, optional={name: _field_values(f.annotation)
                                        for name, f in RunSummary.model_fields.items()}),
    st.dictionaries(text.filter(lambda k: k not in RunSummary.model_fields), json_values, max_size=3),
)


@settings(max_examples=80, deadline=None)
@given(summaries)
def test_a_summary_reads_back_as_written(doc):
    summary = RunSummary.model_validate(doc)
    with tempfile.TemporaryDirectory() as run:
        write_summary(Path(run), summary)
        again = read_summary(run)
        on_disk = json.loads((Path(run) / "run.json").read_text(encoding="utf-8"))
    assert again == summary
    assert again.to_json() == on_disk == doc  # no key added, none dropped, unknown ones kept


def test_a_run_json_train_wrote_keeps_every_byte(tmp_path):
    (tmp_path / "run.json").write_text(TRAINED, encoding="utf-8")
    summary = read_summary(tmp_path)
    assert summary.model_extra == {}  # the schema knows every key training writes
    assert summary.dataset == "/data/train.jsonl" and summary.train_loss == pytest.approx(1.5549, abs=1e-4)
    assert summary.knowledge["retrieval"]["top_k"] == 3
    write_summary(tmp_path, summary)
    assert (tmp_path / "run.json").read_text(encoding="utf-8") == TRAINED


def test_layout_and_the_test_fixture(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert not is_run_dir(run.path)
    written = write_run_files(run.path, config={"system_prompt": "Krótko."}, base_model="tiny", steps=7)
    assert is_run_dir(run.path) and run.summary == run.path / "run.json"
    assert read_summary(run.path) == written and written.steps == 7 and written.status == "completed"
    assert read_config(run.path) == {"system_prompt": "Krótko."}
    assert [p.relative_to(run.path).as_posix() for p in (
        run.config, run.metrics, run.loss_plot, run.adapter, run.model, run.checkpoints, run.eval_json,
        run.knowledge)] == ["config.yaml", "metrics.jsonl", "loss.png", "adapter", "model", "checkpoints",
                            "eval/report.json", "knowledge"]
    with pytest.raises(AssertionError, match="not RunSummary fields"):
        write_run_files(run.path, dataset_path="x")


@pytest.mark.parametrize(("content", "located"), [
    ('{\n  "base_model": "tiny",\n  "steps": \n}', r"run\.json:4:1: not valid JSON"),
    ('{"base_model": "tiny", "steps": "many"}', r"run\.json: steps: .*integer.*'many'"),
    ('[1, 2]', r"run\.json: expected a JSON object"),
    ('', r"run\.json:1:1: not valid JSON"),
])
def test_a_broken_run_json_is_one_located_line(tmp_path, content, located):
    (tmp_path / "run.json").write_text(content, encoding="utf-8")
    with pytest.raises(SpecialistError, match=located) as error:
        read_summary(tmp_path)
    assert error.value.exit_code == 2 and "\n" not in str(error.value)


def test_no_run_json_is_not_a_run_folder(tmp_path):
    with pytest.raises(SpecialistError, match="not a run folder"):
        read_summary(tmp_path)


@pytest.mark.parametrize("case", ["corrupt", "mistyped", "missing"])
def test_generate_with_a_broken_run_says_so_in_one_line(case, tmp_path, monkeypatch, capsys):
    from specialist import cli

    run = tmp_path / "BADRUN"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    content = {"corrupt": '{"base_model": "tiny", ', "mistyped": '{"base_model": ["tiny"]}', "missing": None}[case]
    if content is not None:
        (run / "run.json").write_text(content, encoding="utf-8")
    monkeypatch.setattr("sys.argv", ["specialist", "generate", "--model", str(run), "--prompt", "hi"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    expected = {"corrupt": f"{run / 'run.json'}:1:24: not valid JSON",
                "mistyped": f"{run / 'run.json'}: base_model: ",
                "missing": "expected a run folder with run.json"}[case]
    assert expected in " ".join(lines), err


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_atomic_json_is_the_json_the_project_always_wrote(doc):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "doc.json"
        atomic_write_json(path, doc)
        assert path.read_text(encoding="utf-8") == json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def _fail_encoding_midway(monkeypatch):
    return {"written": list(range(1000)), "unwritable": object()}  # TypeError once the list is out


def _fail_fsync(monkeypatch):
    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    return {"new": True}


def _fail_rename(monkeypatch):
    def broken(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", broken)
    return {"new": True}


@pytest.mark.parametrize("fail", [_fail_encoding_midway, _fail_fsync, _fail_rename])
def test_a_failed_json_write_leaves_the_old_file_and_no_temporary(fail, tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    atomic_write_json(path, {"old": 1})
    before = path.read_bytes()
    doc = fail(monkeypatch)
    with pytest.raises((TypeError, OSError)):
        atomic_write_json(path, doc)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_the_encoding_failure_happens_after_part_of_the_file_was_written(tmp_path, monkeypatch):
    """The case above is a real half-written file, not an error before anything was written."""
    import specialist.io as io

    seen: list[str] = []
    real = open

    def spy(*args, **kwargs):
        handle = real(*args, **kwargs)
        write = handle.write
        handle.write = lambda s: (seen.append(s), write(s))[1]
        return handle

    monkeypatch.setattr(io, "open", spy, raising=False)  # the module's name for the builtin
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "x.json", _fail_encoding_midway(monkeypatch))
    assert len("".join(seen)) > 1000 and list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    final = tmp_path / "adapter"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v1")

    def killed_while_saving() -> None:
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text("v2, half")
            raise RuntimeError("killed while saving")

    with pytest.raises(RuntimeError):
        killed_while_saving()
    assert (final / "weights").read_text() == "v1"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v2")
    assert (final / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary, no old copy
    assert (final.stat().st_mode & 0o777) == 0o777 & ~_umask()


def test_atomic_dir_keeps_the_old_folder_when_the_rename_fails(tmp_path, monkeypatch):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("old")
    real = os.replace

    def fail_moving_the_new_one(src, dst):
        if Path(src).name.startswith(".model.tmp-") and not Path(src).name.endswith(".old"):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_moving_the_new_one)
    with pytest.raises(OSError), atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("new")
    monkeypatch.undo()
    assert (final / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_loss_plot_is_written_whole_with_the_usual_file_mode(tmp_path):
    """loss.png used to keep mkstemp's 0600, unlike every other file in the run folder."""
    old = os.umask(0o022)
    try:
        plot_loss([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.7}], tmp_path / "loss.png", "run")
        atomic_write_json(tmp_path / "run.json", {"a": 1})
    finally:
        os.umask(old)
    png = tmp_path / "loss.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert (png.stat().st_mode & 0o777) == (tmp_path / "run.json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "run.json"]  # no temporary left


def test_a_failed_plot_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import matplotlib.figure

    png = tmp_path / "loss.png"
    png.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise OSError("no space")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError):
        plot_loss([{"step": 1, "loss": 2.0}], png, "run")
    assert png.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["loss.png"]


# ------------------------------------------------------------------ the status of a run
def _stamp(seconds: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def test_a_running_run_is_running_only_while_its_process_lives(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    from specialist.run_folder import live_status

    here = socket.gethostname()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = RunSummary(status="running", pid=alive.pid, host=here, started_at=_stamp(time.time()))
        assert live_status(running) == "running"
        # the same pid given to a process that started after the run did (a restart later): not the run's
        assert live_status(running.model_copy(update={"started_at": _stamp(time.time() - 3600)})) == "stopped"
    finally:
        alive.kill()
        alive.wait()
    assert live_status(running) == "stopped"  # killed: run.json still says running
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(1.0)  # ended, not yet reaped
    assert live_status(running.model_copy(update={"pid": zombie.pid})) == "stopped"
    zombie.wait()
    # another machine's process cannot be looked at; a run.json of an older version has no pid
    assert live_status(running.model_copy(update={"host": here + "-elsewhere"})) == "running"
    assert live_status(RunSummary(status="running")) == "stopped"
    for finished in ("completed", "interrupted", "failed"):
        assert live_status(running.model_copy(update={"status": finished})) == finished


def test_train_records_its_process_in_run_json(tmp_path, tiny_chat_model, run_cli):
    import socket

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}?", "completion": f"a{i}."}) + "\n" for i in range(4)))
    result = run_cli("train", "--data", data, "--model", tiny_chat_model, "--out", tmp_path / "run",
                     "--max-steps", "1", "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    summary = read_summary(tmp_path / "run")
    assert summary.pid == os.getpid() and summary.host == socket.gethostname() and summary.status == "completed"
