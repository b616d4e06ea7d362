"""A full disk (a small tmpfs mounted by the test, or ENOSPC injected in-process) while saving a
checkpoint, writing reports and exporting: one line `error: PATH: no space left on device`,
exit 2, the last good checkpoint or file intact, no temporary file left."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from specialist import cli
from specialist.io import atomic_write_text, is_disk_full


@pytest.fixture
def small_disk(tmp_path):
    """make(size) → a folder on a tmpfs of that size (unmounted afterwards)."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {proc.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Take the folder's free space down to about `leave` bytes."""
    free = shutil.disk_usage(folder).free
    with (folder / "filler").open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def run_main(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["specialist", *argv])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr().err


def test_checkpoint_save_on_a_full_disk_keeps_the_last_good_one_and_resumes(
    tiny_chat_model, small_disk, monkeypatch, capsys
):
    from safetensors.torch import load_file

    from specialist.run_folder import is_complete_checkpoint

    disk = small_disk("9m")  # two checkpoints of the tiny model (~3.9 MB each, mostly tokenizer.json) fit
    data = disk / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}?", "completion": f"a{i}."}) + "\n" for i in range(4)))
    run = disk / "run"
    code, err = run_main(
        monkeypatch,
        capsys,
        "train",
        "--data",
        str(data),
        "--model",
        str(tiny_chat_model),
        "--out",
        str(run),
        "--max-steps",
        "30",
        "--batch-size",
        "2",
        "--set",
        "save_steps=2",
        "--set",
        "logging_steps=1",
        "--set",
        "threads=1",
    )
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: {run}: no space left on device while saving checkpoints/checkpoint-")
    assert "(kept checkpoints/checkpoint-" in line and line.endswith("--resume") and "Traceback" not in err
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert checkpoints and all(is_complete_checkpoint(p) for p in checkpoints)  # the cut-short one is gone
    load_file(str(checkpoints[-1] / "adapter_model.safetensors"))
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert hidden(run) == [] and not (run / "adapter").exists()
    # with room again, --resume finishes the run from the checkpoint kept
    subprocess.run(["mount", "-o", "remount,size=24m", str(disk)], check=True)
    code, err = run_main(monkeypatch, capsys, "train", "--out", str(run), "--resume")
    assert code in (0, None), err[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["steps"] == 30 and info["resumed_from"] == checkpoints[-1].name
    load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_data_check_html_on_a_full_disk_keeps_the_old_report(small_disk, monkeypatch, capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"Pytanie {i}?", "completion": f"Odpowiedź {i}."}) + "\n" for i in range(20)),
        encoding="utf-8",
    )
    disk = small_disk("1m")
    report = disk / "report.html"
    report.write_text("<html>old report</html>\n")
    fill(disk, 4096)
    code, err = run_main(monkeypatch, capsys, "data", "check", str(data), "--html", str(report))
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {report}: no space left on device"
    assert report.read_text() == "<html>old report</html>\n"
    assert hidden(disk) == []


def test_eval_reports_on_a_full_disk_keep_the_old_ones(small_disk):
    from specialist.evaluate.html import write_reports

    disk = small_disk("1m")
    (disk / "report.json").write_text('{"old": 1}\n')
    (disk / "report.html").write_text("<html>old</html>\n")
    fill(disk, 8192)
    with pytest.raises(OSError) as info:
        write_reports({"verdict": "x" * 200_000}, disk / "report.json", disk / "report.html")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(disk / "report.json")
    assert (disk / "report.json").read_text() == '{"old": 1}\n'
    assert (disk / "report.html").read_text() == "<html>old</html>\n"
    assert hidden(disk) == []


@pytest.mark.parametrize("fmt", ["gguf", "merged"])
def test_export_on_a_full_disk_keeps_the_old_export(fmt, tiny_chat_model, small_disk, monkeypatch, capsys):
    """GGUF writes through Python's files, merged through safetensors (its own error type)."""
    disk = small_disk("12m")
    out = disk / "export"
    out.mkdir()
    (out / "old.bin").write_bytes(os.urandom(6 << 20))
    code, err = run_main(
        monkeypatch,
        capsys,
        "export",
        "--model",
        str(tiny_chat_model),
        "--format",
        fmt,
        "--out",
        str(out),
        "--overwrite",
    )
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {out}: no space left on device", err[-2000:]
    assert [p.name for p in out.iterdir()] == ["old.bin"] and (out / "old.bin").stat().st_size == 6 << 20
    assert sorted(p.name for p in disk.iterdir()) == ["export"]  # the temporary folder is gone


def test_atomic_write_fails_whole_when_fsync_reports_enospc(tmp_path, monkeypatch):
    """In-process: the Nth write-side call fails as a full disk would."""
    path = tmp_path / "out.json"
    path.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write_text(path, "new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_disk_full_is_recognised_through_library_wrappers(tmp_path):
    # safetensors' own error type names the OS error in its message
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    # an OSError behind another exception
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)  # noqa: PT017 - the chained exception itself is under test
    # torch.save names no cause: the free space where it wrote decides
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert not is_disk_full(torch_error, tmp_path)  # this disk has room: some other failure
    assert not is_disk_full(ValueError("bad value"), tmp_path)


def test_a_short_write_is_a_full_disk():
    """numpy's tofile (the GGUF writer's tensors) reports a bare short write, errno unset."""
    assert is_disk_full(OSError("3145728 requested and 493136 written"))
