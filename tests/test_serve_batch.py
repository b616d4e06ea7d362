"""`specialist generate --input/--output`: batched, resumable answering of a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specialist.errors import SpecialistError
from specialist.inference.generator import Generator
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.serve.batch import answer_file, read_prompts

SETTINGS = GenerationSettings(max_new_tokens=6)


def write_prompts(path: Path, n: int = 5) -> Path:
    rows = [{"prompt": f"Question {i}?"} for i in range(n - 2)]
    rows.append({"id": "with-system", "prompt": "Hello", "system": "Answer briefly."})
    rows.append({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "And now?"}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def generator(lively_chat_model) -> Generator:
    return TorchGenerator(load_model(str(lively_chat_model), dtype="float32"))


class CountingGenerator:
    """Wraps the real generator and records what it was asked; can fail on a chosen call."""

    def __init__(self, inner: Generator, fail_on_call: int | None = None) -> None:
        self.inner = inner
        self.asked: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def generate(self, conversations, settings, batch_size=8):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash")
        self.asked += [c[-1]["content"] for c in conversations]
        return self.inner.generate(conversations, settings, batch_size)


def test_answers_every_record_with_its_key(tmp_path, generator):
    src = write_prompts(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    summary = answer_file(generator, src, out, SETTINGS, batch_size=2)
    rows = read_jsonl(out)
    assert summary.answered == 5 and summary.skipped == 0
    assert [r.get("line") for r in rows] == [1, 2, 3, None, 5]
    assert rows[3]["id"] == "with-system" and rows[3]["system"] == "Answer briefly."
    assert rows[4]["messages"][-1]["content"] == "And now?"
    records = read_prompts(src)
    expected = generator.generate([r.messages for r in records], SETTINGS, batch_size=1)
    assert [r["answer"] for r in rows] == [a.text for a in expected]
    assert all(r["completion_tokens"] >= 1 and r["finish_reason"] in ("stop", "length") for r in rows)


def test_resume_skips_answered_and_cuts_a_torn_line(tmp_path, generator):
    src = write_prompts(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    answer_file(generator, src, out, SETTINGS, batch_size=5)
    full = out.read_text(encoding="utf-8").splitlines(keepends=True)
    # a crash after two answers, in the middle of writing the third
    out.write_text("".join(full[:2]) + full[2][:15], encoding="utf-8")
    spy = CountingGenerator(generator)
    summary = answer_file(spy, src, out, SETTINGS, batch_size=2)
    assert summary.skipped == 2 and summary.answered == 3
    assert spy.asked == ["Question 2?", "Hello", "And now?"]
    assert out.read_text(encoding="utf-8").splitlines(keepends=True) == full  # nothing lost, nothing doubled
    again = CountingGenerator(generator)
    assert answer_file(again, src, out, SETTINGS).answered == 0 and again.calls == 0


def test_crash_mid_run_loses_only_the_batch_in_flight(tmp_path, generator):
    src = write_prompts(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        answer_file(CountingGenerator(generator, fail_on_call=2), src, out, SETTINGS, batch_size=2)
    assert len(read_jsonl(out)) == 2  # the first batch is on disk
    answer_file(generator, src, out, SETTINGS, batch_size=2)
    keys = [r.get("id", r.get("line")) for r in read_jsonl(out)]
    assert keys == [1, 2, 3, "with-system", 5]


def test_output_of_another_input_is_refused(tmp_path, generator):
    src = write_prompts(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"line": 1, "prompt": "something else", "answer": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(SpecialistError, match=r"out\.jsonl:1: .*another file"):
        answer_file(generator, src, out, SETTINGS)
    assert len(read_jsonl(out)) == 1


def test_bad_input_lines_are_located(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "ok"}\n\n{oops\n{"system": "s"}\n{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n'
                   '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
                   encoding="utf-8")
    with pytest.raises(SpecialistError) as info:
        read_prompts(src)
    text = str(info.value)
    assert info.value.exit_code == 1
    assert f"{src}:3: invalid JSON" in text
    assert f"{src}:4:prompt" in text
    assert f"{src}:6:id: duplicate id 1 (first on line 5)" in text
    assert f"{src}:7:messages: the last message must be the user's" in text
    assert f"{src}:1" not in text


def test_cli_generate_file_progress_resume_and_errors(tmp_path, lively_chat_model, run_cli):
    src = write_prompts(tmp_path / "in.jsonl", n=4)
    out = tmp_path / "answers" / "out.jsonl"
    args = ["generate", "--model", str(lively_chat_model), "--input", str(src), "--output", str(out),
            "--max-new-tokens", "4", "--batch-size", "3"]
    proc = run_cli(*args)
    assert proc.exit_code == 0, proc.stderr
    assert "answering" in proc.stderr and "4 answered, 0 already" in proc.stderr
    assert len(read_jsonl(out)) == 4
    proc = run_cli(*args, "--json")
    assert proc.exit_code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["answered"] == 0 and doc["skipped"] == 4
    assert len(read_jsonl(out)) == 4

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 3}\n', encoding="utf-8")
    proc = run_cli("generate", "--model", str(lively_chat_model), "--input", str(bad), "--output",
                   str(tmp_path / "o.jsonl"))
    assert proc.exit_code == 1 and f"{bad}:1:prompt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()
    proc = run_cli("generate", "--model", str(lively_chat_model), "--input", str(src))
    assert proc.exit_code == 2 and "--output" in proc.stderr
