"""The data commands through the real command line: exit codes, the JSON document, the HTML
page, split without leakage, conversion that passes OpenAI's format rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specialist.data.convert import openai_format_errors
from specialist.data.validate import load_examples
from tests.test_data_quality import clean_records, write

CORPUS = Path(__file__).parent / "data_corpus"


def test_check_clean_data_exits_0_with_the_json_document(tmp_path, run_cli):
    path = write(tmp_path / "train.jsonl", clean_records())
    proc = run_cli("data", "check", str(path), "--json")
    assert proc.exit_code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"records", "valid", "errors", "warnings", "stats"} <= set(doc)
    assert doc["records"] == doc["valid"] == 120 and doc["errors"] == [] and doc["warnings"] == []
    assert doc["stats"]["training"]["tokens_per_epoch"] > 0


def test_check_with_warnings_exits_0_and_lists_them(tmp_path, run_cli):
    rows = clean_records()
    rows[10] = dict(rows[0])
    proc = run_cli("data", "check", str(write(tmp_path / "t.jsonl", rows)), "--json")
    assert proc.exit_code == 0
    (warning,) = json.loads(proc.stdout)["warnings"]
    assert set(warning) >= {"code", "kind", "lines", "message", "suggestion"}
    assert (warning["code"], warning["kind"], warning["lines"]) == ("W101", "duplicate", [1, 11])


def test_check_with_errors_exits_1_with_located_errors(run_cli):
    proc = run_cli("data", "check", str(CORPUS / "E007_wrong_type.jsonl"), "--json")
    assert proc.exit_code == 1
    doc = json.loads(proc.stdout)
    assert doc["records"] == 5 and doc["valid"] == 1
    assert doc["errors"][0] == {"code": "E007", "file": str(CORPUS / "E007_wrong_type.jsonl"), "line": 2,
                                "field": "prompt", "message": "'prompt' is a number, expected a string"}
    human = run_cli("data", "check", str(CORPUS / "E007_wrong_type.jsonl"))
    assert human.exit_code == 1 and "E007_wrong_type.jsonl:2:prompt" in human.stdout


@pytest.mark.parametrize("args", [
    ["data", "check", "does-not-exist.jsonl"],
    ["data", "check", str(CORPUS / "E012_cp1250.jsonl")],
    ["data", "check", str(CORPUS / "good.csv"), "--format", "yaml"],
])
def test_check_unreadable_or_usage_exits_2_without_traceback(args, run_cli):
    proc = run_cli(*args)
    assert proc.exit_code == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip()


def test_check_binary_garbage_exits_2(tmp_path, run_cli):
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(bytes(range(256)) * 64)
    proc = run_cli("data", "check", str(path))
    assert proc.exit_code == 2 and "Traceback" not in proc.stderr


def test_check_html_report(tmp_path, run_cli):
    rows = clean_records()
    rows[5]["completion"] += " 🙂"
    out = tmp_path / "report" / "check.html"
    proc = run_cli("data", "check", str(write(tmp_path / "t.jsonl", rows)), "--html", str(out))
    assert proc.exit_code == 0, proc.stderr
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 2  # histograms embedded, no external files
    assert "W109" in page and "Flagged records" in page and "🙂" in page
    assert "<script" not in page and "src=\"http" not in page


def test_check_eval_leakage_and_price(tmp_path, run_cli):
    rows = clean_records()
    train = write(tmp_path / "train.jsonl", rows)
    evaluation = write(tmp_path / "eval.jsonl", [rows[3]])
    proc = run_cli("data", "check", str(train), "--eval-data", str(evaluation), "--json", "--price-per-million", "10",
               "--tokens-per-second", "100", "--epochs", "2")
    doc = json.loads(proc.stdout)
    assert [w["code"] for w in doc["warnings"]] == ["W110"]
    training = doc["stats"]["training"]
    assert training["estimated_api_cost"] == pytest.approx(training["tokens_per_epoch"] * 2 * 10 / 1e6, abs=0.01)
    assert training["estimated_seconds"] == pytest.approx(training["tokens_per_epoch"] * 2 / 100, rel=1e-3)


def test_split_keeps_near_duplicates_on_one_side(tmp_path, run_cli):
    rows = clean_records()
    for k in range(0, 40, 4):  # ten clusters of near-duplicate prompts
        rows[k + 1] = {"prompt": rows[k]["prompt"].replace("?", "??"), "completion": rows[k]["completion"]}
        rows[k + 2] = {"prompt": rows[k]["prompt"].lower(), "completion": rows[k]["completion"] + " Serdecznie!"}
    data = write(tmp_path / "all.jsonl", rows)
    out = tmp_path / "split"
    proc = run_cli("data", "split", str(data), "--eval-fraction", "0.2", "--out", str(out), "--seed", "3")
    assert proc.exit_code == 0, proc.stderr
    train, evaluation = load_examples(out / "train.jsonl"), load_examples(out / "eval.jsonl")
    assert len(train) + len(evaluation) == 120 and 20 <= len(evaluation) <= 24
    eval_prompts = {e.prompt.lower().replace("??", "?") for e in evaluation}
    assert not eval_prompts & {e.prompt.lower().replace("??", "?") for e in train}
    check = run_cli("data", "check", str(out / "train.jsonl"), "--eval-data", str(out / "eval.jsonl"), "--json")
    assert "W110" not in [w["code"] for w in json.loads(check.stdout)["warnings"]]
    # the same seed gives the same split; the output is never overwritten silently
    again = run_cli("data", "split", str(data), "--eval-fraction", "0.2", "--out", str(out), "--seed", "3")
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    run_cli("data", "split", str(data), "--eval-fraction", "0.2", "--out", str(out), "--seed", "3", "--overwrite")
    assert [e.prompt for e in load_examples(out / "eval.jsonl")] == [e.prompt for e in evaluation]


def test_split_refuses_data_with_errors(tmp_path, run_cli):
    proc = run_cli("data", "split", str(CORPUS / "E005_empty_field.jsonl"), "--eval-fraction", "0.5", "--out",
               str(tmp_path / "s"))
    assert proc.exit_code == 1 and "E005" in proc.stderr
    assert not (tmp_path / "s" / "train.jsonl").exists()


def test_convert_to_openai_passes_the_format_rules(tmp_path, run_cli):
    out = tmp_path / "openai.jsonl"
    for source in ("good_chat.jsonl", "good_alpaca.json", "good.csv"):
        proc = run_cli("data", "convert", str(CORPUS / source), "--to", "openai", "--out", str(out), "--overwrite")
        assert proc.exit_code == 0, proc.stderr
        lines = out.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2
        for line in lines:
            record = json.loads(line)
            assert openai_format_errors(record) == [] and list(record) == ["messages"]
            assert record["messages"][-1]["role"] == "assistant"
    assert openai_format_errors({"messages": [{"role": "user", "content": "hi"}]}) == ["no assistant message"]
    assert openai_format_errors({"messages": [{"role": "bot", "content": ""}], "x": 1}) != []


def test_convert_round_trip_prompt_completion_and_chat(tmp_path, run_cli):
    chat = tmp_path / "chat.jsonl"
    assert run_cli("data", "convert", str(CORPUS / "good_array.json"), "--to", "chat", "--out",
                   str(chat)).exit_code == 0
    back = tmp_path / "pc.jsonl"
    assert run_cli("data", "convert", str(chat), "--to", "prompt-completion", "--out", str(back)).exit_code == 0
    original, restored = load_examples(CORPUS / "good_array.json"), load_examples(back)
    assert [(e.messages, e.completion) for e in original] == [(e.messages, e.completion) for e in restored]
    # multi-turn chats have no prompt-completion form: refused with the records named
    proc = run_cli("data", "convert", str(CORPUS / "good_chat.jsonl"), "--to", "prompt-completion", "--out",
               str(tmp_path / "x.jsonl"))
    assert proc.exit_code == 1 and "good_chat.jsonl:2" in proc.stderr and not (tmp_path / "x.jsonl").exists()
    # an existing output file is not overwritten silently
    proc = run_cli("data", "convert", str(CORPUS / "good_array.json"), "--to", "chat", "--out", str(chat))
    assert proc.exit_code == 2


def test_atomic_writes_leave_no_temporary_files_and_a_normal_mode(tmp_path):
    import os
    import stat

    from specialist.io import atomic_write_jsonl

    out = tmp_path / "d.jsonl"
    atomic_write_jsonl(out, [{"a": 1}])
    assert os.listdir(tmp_path) == ["d.jsonl"] and out.read_text() == '{"a": 1}\n'
    assert stat.S_IMODE(out.stat().st_mode) & 0o044  # readable by others, like any file the user writes

    def broken():
        yield {"a": 1}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_jsonl(out, broken())
    assert os.listdir(tmp_path) == ["d.jsonl"] and out.read_text() == '{"a": 1}\n'
