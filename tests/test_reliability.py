"""Hostile inputs: every loader answers with located errors and documented exit codes, never a
traceback. A reduced run of the fuzz benchmark (benchmarks/reliability/fuzz.py), property tests
over arbitrary bytes and JSON values, and one regression test per bug the fuzzing found."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specialist.config import load_train_config
from specialist.data.formats import read_records
from specialist.data.validate import read_dataset, to_example
from specialist.errors import ConfigError, SpecialistError
from specialist.evaluate.rules import load_rules
from specialist.knowledge.passages import read_knowledge
from specialist.serve.batch import read_prompts
from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


fuzz = load_benchmark("reliability/fuzz")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------ the reduced fuzz run
def test_fuzzed_files_through_every_loader_give_no_traceback(tmp_path):
    """A few hundred mutated real files, every format and command: zero tracebacks, every
    error located, exit codes 0/1/2, inputs untouched (the benchmark runs 10,000)."""
    started = time.perf_counter()
    doc = fuzz.run(work=tmp_path, files=300, seed=11)
    assert doc["summary"]["files_fuzzed"] == 300
    assert {r["format"] for r in doc["rows"]} == {t.name for t in fuzz.Fuzzer(tmp_path / "x").targets}
    assert doc["failures"] == [], json.dumps(doc["failures"], indent=1)[:4000]
    assert doc["summary"]["tracebacks"] == doc["summary"]["unlocated_errors"] == 0
    assert doc["summary"]["modified_inputs"] == doc["summary"]["bad_exit_codes"] == 0
    # the mutations reach all three outcomes, or the run tests nothing
    assert (
        sum(r["exit_0"] for r in doc["rows"])
        and sum(r["exit_1"] for r in doc["rows"])
        and sum(r["exit_2"] for r in doc["rows"])
    )
    assert time.perf_counter() - started < 120


def test_the_fuzz_harness_sees_a_traceback_and_an_unlocated_error(tmp_path):
    """The invariants can fail: a loader that crashes or forgets the file name is caught."""

    def crash():
        raise KeyError("boom")

    assert "KeyError" in fuzz.run_api(crash).traceback

    def unlocated():
        raise SpecialistError("something is wrong")

    path = tmp_path / "in.jsonl"
    path.write_text("{}\n")
    assert fuzz.stderr_unlocated(fuzz.run_api(unlocated), path)
    assert fuzz.json_errors_unlocated({"errors": [{"file": str(path), "line": 0}]}, path)
    run = fuzz.run_cli(["data", "check", str(path), "--json"])
    assert run.exit_code == 1 and fuzz.json_errors_unlocated(json.loads(run.stdout), path) is None


def test_a_case_that_kills_its_worker_is_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    """Native crashes (SIGSEGV in a memory-mapped reader) kill the process: the fuzzer runs
    cases in worker processes and records such a case as a crash."""
    monkeypatch.setenv("SPECIALIST_FUZZ_FAULT", "eval-rules:0")
    fuzzer = fuzz.Fuzzer(tmp_path)
    outcomes = fuzzer.run(16, chunk=20)
    failed = [o for o in outcomes if o.traceback]
    assert len(outcomes) == 16 and len(failed) == 1
    assert "SIGSEGV" in failed[0].traceback and "eval-rules-0" in failed[0].traceback
    assert outcomes[-1].target == "jsonl" and not outcomes[-1].traceback  # the run went on after the crash


def test_reliability_benchmark_is_registered_with_its_four_sections():
    from specialist.bench import discover

    found = discover()
    assert "reliability" in found and "reliability_kill" not in found and "server_load" not in found
    module = load_benchmark("bench_reliability")
    assert set(module.sections()) == {"fuzz", "kill", "disk", "server"}


def test_the_benchmark_puts_every_figure_of_every_section_against_its_goal(tmp_path, monkeypatch):
    """Sections join into one table: a figure per line with its goal and whether it is met; one
    missed goal fails the benchmark; options reach their section."""
    module = load_benchmark("bench_reliability")
    for name, figures, ok in (
        ("alpha", [("files", 300, "≥ 300", True, "15 kinds"), ("tracebacks", 0, "0", True)], True),
        ("beta", [("temporaries seen", 3, "", None), ("corrupted", 1, "0", False)], False),
    ):
        (tmp_path / f"{name}.py").write_text(
            f"SECTION = {name!r}\nGOAL = 'g'\n"
            "def run(quick=False, work=None, progress=None, n=1):\n"
            f"    return {{'rows': [{{'n': n}}], 'summary': {{'n': n}}, 'figures': {figures!r}, 'ok': {ok},"
            " 'failures': []}\n"
        )
    monkeypatch.setattr(module, "SECTIONS_DIR", tmp_path)
    doc = module.bench(quick=True, options={"alpha": {"n": 7}})
    assert [(r["section"], r["figure"], r["value"], r["goal"], r["met"]) for r in doc["rows"]] == [
        ("alpha", "files", 300, "≥ 300", "yes"),
        ("alpha", "tracebacks", 0, "0", "yes"),
        ("beta", "temporaries seen", 3, "", ""),
        ("beta", "corrupted", 1, "0", "NO"),
    ]
    assert doc["ok"] is False and doc["summary"] == {"figures": 4, "figures_met": 2, "figures_missed": 1}
    assert doc["sections"]["alpha"]["rows"] == [{"n": 7}] and doc["sections"]["beta"]["ok"] is False
    assert module.bench(only=["alpha"])["ok"] is True
    table = module._table(doc["rows"]).splitlines()
    assert table[0].split() == ["section", "figure", "value", "goal", "met", "note"] and len(table) == 5


# ------------------------------------------------------------------ properties
def _located(errors, path: Path) -> None:
    for e in errors:
        assert e.file == str(path) and e.line >= 1, e


@PROPERTY
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".parquet"]))
def test_any_bytes_as_a_dataset_give_located_errors_or_one_unreadable_error(tmp_path, data, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(data)
    try:
        loaded = read_dataset(path)
    except SpecialistError as exc:  # either outcome is allowed: no pytest.raises
        assert exc.exit_code == 2 and str(path) in str(exc)  # noqa: PT017
        return
    _located(loaded.errors, path)
    assert loaded.errors or loaded.examples
    assert path.read_bytes() == data


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "prompt",
                    "completion",
                    "messages",
                    "role",
                    "content",
                    "instruction",
                    "output",
                    "input",
                    "system",
                    "id",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@PROPERTY
@given(value=JSON)
def test_any_json_value_becomes_an_example_or_located_errors(value):
    from specialist.data.formats import RawRecord

    example, errors = to_example(RawRecord("f.jsonl", 7, value))
    assert (example is None) == bool(errors)
    for e in errors:
        assert (e.file, e.line) == ("f.jsonl", 7) and e.code.startswith("E")
    if example is not None:
        assert example.completion.strip() and example.messages


@PROPERTY
@given(text=st.text(max_size=300))
def test_any_text_as_a_config_or_rules_file_gives_config_errors_only(tmp_path, text):
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for load in (lambda: load_train_config(path, {"data": str(path)}), lambda: load_rules(path)):
        try:
            load()
        except ConfigError as exc:  # valid YAML loads, invalid is refused: either is fine
            assert str(path) in str(exc) and exc.exit_code == 2  # noqa: PT017


@PROPERTY
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".md", ".txt", ".jsonl"]))
def test_any_bytes_as_knowledge_give_located_errors(tmp_path, data, suffix):
    path = tmp_path / f"kb{suffix}"
    path.write_bytes(data)
    kb = read_knowledge(path)
    for e in kb.errors:
        assert e.file == str(path) and e.line >= 1
    for p in kb.passages:
        assert p.file == str(path) and p.line >= 1 and p.text.strip()


# ------------------------------------------------------------------ what the fuzzing found
def test_rules_config_and_prompt_files_that_are_not_utf8_get_a_located_error(tmp_path):
    rules = tmp_path / "eval.yaml"
    rules.write_bytes("rules:\n  - name: grzeczność\n".encode("cp1250") + b"    max_words: 3\n  - name: \xff\n")
    with pytest.raises(ConfigError, match=rf"^{rules}:2: E012 not UTF-8 \(byte 0x9c at column 19\)"):
        load_rules(rules)
    config = tmp_path / "train.yaml"
    config.write_bytes(b"data: t.jsonl\nsystem_prompt: \xb9\n")
    with pytest.raises(ConfigError, match=rf"^{config}:2: E012 not UTF-8"):
        load_train_config(config)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xe6"}\n')
    with pytest.raises(SpecialistError, match=rf"^{prompts}:2: E012 not UTF-8"):
        read_prompts(prompts)


def test_bad_prompt_lines_are_reported_under_the_file_name(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n[1]\n', encoding="utf-8")
    with pytest.raises(SpecialistError) as info:
        read_prompts(prompts)
    assert str(info.value).startswith(f"{prompts}: 1 bad input line(s):\n{prompts}:2:")


@pytest.mark.parametrize("kind", ["parquet", "saved dataset"])
def test_corrupt_strings_in_columnar_data_are_an_unreadable_file_not_a_crash(tmp_path, kind):
    """Bytes that are not UTF-8 inside a Parquet page or an Arrow file fail while decoding
    rows (UnicodeDecodeError, SystemError …): exit 2 naming the file and the row."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "ZZZZZZZZZZZZ", "completion": "ok"}, {"prompt": "Ile kosztuje latte?", "completion": "16 zł."}]
    if kind == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(
            pa.Table.from_pylist(rows), path, compression="none", write_statistics=False, use_dictionary=False
        )
        victim = path
    else:
        path = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
        (victim,) = path.glob("*.arrow")
    victim.write_bytes(victim.read_bytes().replace(b"ZZZZZZZZZZZZ", b"\xff" * 12))
    expected = f"{path}: row 1: unreadable Parquet data" if kind == "parquet" else f"{path}: corrupt Arrow data"
    with pytest.raises(SpecialistError, match=rf"^{expected} \(ArrowInvalid: .*UTF8") as info:
        list(read_records(path))
    assert info.value.exit_code == 2
    run = fuzz.run_cli(["data", "check", str(path), "--json"])
    assert run.traceback is None and run.exit_code == 2 and f"error: {expected}" in run.stderr


def test_deeply_nested_json_and_yaml_are_located_errors(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    kb = tmp_path / "kb.jsonl"
    kb.write_text('{"id": "a", "text": "Kawa."}\n' + deep + "\n", encoding="utf-8")
    (error,) = read_knowledge(kb).errors
    assert (error.code, error.line) == ("E001", 2) and "nested too deeply" in error.message
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n' + deep + "\n", encoding="utf-8")
    with pytest.raises(SpecialistError, match=rf"{prompts}:2: invalid JSON \(nested too deeply\)"):
        read_prompts(prompts)
    for path, load in ((tmp_path / "eval.yaml", load_rules), (tmp_path / "train.yaml", load_train_config)):
        path.write_text("rules: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"^{path}: .*nested too deeply"):
            load(path)


def test_lone_surrogate_escapes_are_located_errors_not_a_crash_when_written(tmp_path):
    """json.loads turns "\\ud800" into a string no UTF-8 writer or tokenizer accepts: it was
    accepted by data check, then crashed data convert/split when writing."""
    data = tmp_path / "train.jsonl"
    data.write_text(
        '{"prompt": "Ile kosztuje kawa?", "completion": "10 zł."}\n'
        '{"messages": [{"role": "user", "content": "hej"}, {"role": "assistant", "content": "a\\udfffb"}]}\n'
        '{"prompt": "x\\ud83d\\ude00", "completion": "emoji is a pair, fine"}\n',
        encoding="utf-8",
    )
    loaded = read_dataset(data)
    assert [(e.code, e.line, e.field) for e in loaded.errors] == [("E012", 2, "messages[1].content")]
    assert len(loaded.examples) == 2 and loaded.examples[1].messages[0]["content"] == "x😀"
    array = tmp_path / "train.json"
    array.write_text(
        '[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "\\ud800", "completion": "b"}\n]\n', encoding="utf-8"
    )
    assert [(e.code, e.line, e.field) for e in read_dataset(array).errors] == [("E012", 3, "prompt")]
    run = fuzz.run_cli(["data", "convert", str(data), "--to", "chat", "--out", str(tmp_path / "out.jsonl")])
    assert run.traceback is None and run.exit_code == 1 and f"{data}:2:messages[1].content: E012" in run.stderr
    kb = tmp_path / "kb.jsonl"
    kb.write_text('{"id": "a", "text": "Kawa \\ud800."}\n{"id": "b", "text": "Herbata."}\n', encoding="utf-8")
    (error,) = read_knowledge(kb).errors
    assert (error.code, error.line, error.field) == ("E012", 1, "text")
    run = fuzz.run_cli(["knowledge", "check", str(kb), "--json"])
    assert run.traceback is None and run.exit_code == 1
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "\\udc00"}\n', encoding="utf-8")
    with pytest.raises(SpecialistError, match=rf"{prompts}:1:prompt: a lone surrogate"):
        read_prompts(prompts)


def test_a_saved_dataset_with_corrupt_arrow_offsets_is_an_error_not_a_segfault(tmp_path):
    """Arrow files are memory-mapped and read without checks: an offset pointing far outside
    the file made `data check` die with SIGSEGV (found by the fuzzer). The CLI runs in its own
    process here, so a regression fails this test instead of killing the test run."""
    import struct
    import subprocess

    import datasets

    path = tmp_path / "saved"
    datasets.Dataset.from_list([{"prompt": p, "completion": "ok"} for p in ("aaaa", "bbbb", "cccc")]).save_to_disk(
        str(path)
    )
    (arrow,) = path.glob("*.arrow")
    offsets = struct.pack("<4i", 0, 4, 8, 12)
    assert arrow.read_bytes().count(offsets) == 1
    arrow.write_bytes(arrow.read_bytes().replace(offsets, struct.pack("<4i", 0, 4, 33_554_518, 12)))
    proc = subprocess.run(
        [sys.executable, "-m", "specialist.cli", "data", "check", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-500:]
    assert f"error: {path}: corrupt Arrow data" in proc.stderr and "Traceback" not in proc.stderr


def test_line_separators_inside_json_strings_do_not_split_records(tmp_path):
    """U+2028, U+2029 and U+0085 are valid raw inside JSON strings (json.dumps with
    ensure_ascii=False writes them so). str.splitlines() cut knowledge JSONL, prompt files and
    generate's own output (resume) there; found by the fuzzer through a `data split` output."""
    from specialist.serve.batch import read_answered

    text = "Latte\u2028kosztuje\u0085 16 zł.\u2029"
    kb = tmp_path / "kb.jsonl"
    kb.write_text(
        json.dumps({"id": "a", "text": text}, ensure_ascii=False)
        + "\n"
        + json.dumps({"id": "b", "text": "Herbata."})
        + "\n",
        encoding="utf-8",
    )
    loaded = read_knowledge(kb)
    assert loaded.errors == [] and [(p.id, p.line) for p in loaded.passages] == [("a", 1), ("b", 2)]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"id": 1, "prompt": text}, ensure_ascii=False) + "\n" + json.dumps({"id": 2, "prompt": "ok"}) + "\n",
        encoding="utf-8",
    )
    records = read_prompts(prompts)
    assert [r.line for r in records] == [1, 2] and records[0].messages[-1]["content"] == text
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        json.dumps({"id": 1, "prompt": text, "answer": text}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    assert len(read_answered(answers, records)) == 1
    md = tmp_path / "kb.md"
    md.write_text("# Cennik\u2028ceny\n\nLatte\u0085 16 zł.\n\n## Herbata\n\nHerbata 12 zł.\n", encoding="utf-8")
    assert [(p.title, p.line) for p in read_knowledge(md).passages] == [("Cennik\u2028ceny", 3), ("Herbata", 7)]
