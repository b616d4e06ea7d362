"""A full disk (a small tmpfs mounted by the test, or ENOSPC injected in-process) while saving a
checkpoint, writing reports and exporting: one line `error: PATH: no space left on device`,
exit 2, the last good checkpoint or file intact, no temporary file left. The tmpfs trials are
the reliability benchmark's disk section (benchmarks/reliability/disk.py), one of each kind."""

from __future__ import annotations

import errno
import json
import os
import random

import pytest

from specialist import cli
from specialist.io import atomic_write_text, is_disk_full
from tests.helpers import load_benchmark

disk = load_benchmark("reliability/disk")


@pytest.fixture
def small_disks(tmp_path):
    """Folders on tmpfs mounts of a given size (unmounted afterwards)."""
    with disk.SmallDisks(tmp_path / "disks") as disks:
        try:
            disks.make("1k")
        except PermissionError as exc:
            pytest.skip(str(exc))
        yield disks


def run_main(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["specialist", *argv])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("kind", disk.KINDS)
def test_a_full_disk_gives_one_line_and_keeps_the_last_good_output(
    kind, tiny_chat_model, small_disks, tmp_path, monkeypatch, capsys
):
    """The benchmark's disk-full trials, the command line in-process: exit 2 and one line
    `error: PATH: no space left on device` (training: naming the checkpoint kept, which
    `--resume` finishes from once there is room), the earlier file intact, no temporary left."""
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"Pytanie {i}?", "completion": f"Odpowiedź {i}."}) + "\n" for i in range(20)),
        encoding="utf-8",
    )
    fx = {"model": tiny_chat_model, "data": data, "cli": lambda args: run_main(monkeypatch, capsys, *args)}
    assert disk.TRIALS[kind](fx, small_disks, random.Random(0)) == []


def test_the_disk_trials_see_a_missing_line_and_a_left_temporary(tmp_path):
    """The trials can fail: a wrong last line, a traceback and a temporary file are found."""
    report = tmp_path / "report.html"
    assert disk.full_disk_line(f"error: {report}: no space left on device\n", report) == []
    assert disk.full_disk_line(f"error: {report}: no space left on device (and more)\n", report)
    assert disk.full_disk_line("Traceback (most recent call last):\nOSError: [Errno 28]\n", report)
    (tmp_path / ".report.html.1-abc.tmp").write_text("half")
    assert disk.hidden(tmp_path) == [".report.html.1-abc.tmp"]


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
